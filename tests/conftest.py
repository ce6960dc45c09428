"""Shared fixtures: a tiny SegFormer config (widths 8-32) that keeps every test fast on a CPU."""

import pytest
import torch

from segformer import SegFormerConfig

# Four stages as in the real models, with the released sr ratios / patch sizes / strides, but 8-32
# channels and one head dimension of 8. Stage 2 has two blocks so per-block schedules are visible.
TINY_CONFIG = dict(
    hidden_sizes=[8, 16, 24, 32],
    depths=[1, 2, 1, 1],
    num_attention_heads=[1, 2, 3, 4],
    mlp_ratios=[2, 2, 2, 2],
    decoder_hidden_size=16,
    num_labels=5,
)


@pytest.fixture(scope="session")
def tiny_config():
    """Factory: `tiny_config(**overrides)` returns a fresh tiny `SegFormerConfig`."""

    def make(**overrides) -> SegFormerConfig:
        return SegFormerConfig(**{**TINY_CONFIG, **overrides})

    return make


@pytest.fixture(autouse=True)
def _seed():
    # Every test starts from the same random state, so failures reproduce.
    torch.manual_seed(0)
