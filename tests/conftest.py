"""Shared fixtures: a tiny SegFormer config (widths 8-32) that keeps every test fast on a CPU, and a
Python with transformers 4.46 (and without this package) for the tests of the Hub files on 4.x."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from segformer import SegFormerConfig

TRANSFORMERS_4 = "4.46.3"

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


# The files `save_pretrained` copies next to the weights, so that Hub code runs without this package.
HUB_FILES = (
    "configuration_segformer.py",
    "modeling_segformer.py",
    "decode_heads_segformer.py",
    "image_processing_segformer.py",
    "resize_segformer.py",
    "postprocessing_segformer.py",
    "loss_segformer.py",
)

# A small model that a few steps on the built-in data train (end-to-end runs: train, evaluate).
TRAINABLE_CONFIG = dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 2],
                        decoder_hidden_size=64)  # fmt: skip


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests, as their subprocesses get: on two shared cores, more threads
    only wait. Modules take it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A small random SegFormer with the built-in dataset's labels, saved as a starting checkpoint."""
    from segformer import SegFormerForSemanticSegmentation, data

    torch.manual_seed(0)
    labels = data.BUILTIN_ID2LABEL
    config = SegFormerConfig(**TRAINABLE_CONFIG, id2label=labels, label2id={v: k for k, v in labels.items()})
    folder = tmp_path_factory.mktemp("tiny")
    SegFormerForSemanticSegmentation(config).save_pretrained(folder)
    return str(folder)


def square(value: int, corner: int = 10, background: int = 0, size: int = 48, side: int = 20) -> np.ndarray:
    """A (size, size) mask of `background` with a `side`-pixel square of `value` at (corner, corner)."""
    mask = np.full((size, size), background, np.uint8)
    mask[corner : corner + side, corner : corner + side] = value
    return mask


def write_masks(root: Path, splits: dict, size: int = 48, bright_objects: bool = False):
    """A local folder dataset: SPLIT/images/N.png and SPLIT/labels/N.png (the given masks). The images are
    noise; with `bright_objects` the masks' non-zero pixels are brighter, so that a few steps learn them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, masks in splits.items():
        for folder in ("images", "labels"):
            (root / split / folder).mkdir(parents=True)
        for index, mask in enumerate(masks):
            if bright_objects:
                image = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
                image[np.asarray(mask) > 0] += 120
            else:
                image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"{index}.png")
            Image.fromarray(np.asarray(mask, np.uint8)).save(root / split / "labels" / f"{index}.png")


@pytest.fixture(autouse=True)
def _seed():
    # Every test starts from the same random state, so failures reproduce.
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def transformers_4_python(pytestconfig, tmp_path_factory) -> Path:
    """A virtual environment with transformers 4.46.3 over this environment's torch (and without the
    segformer package), built once and kept in pytest's cache."""
    cache = getattr(pytestconfig, "cache", None)
    folder = cache.mkdir(f"venv-transformers-{TRANSFORMERS_4}") if cache else tmp_path_factory.mktemp("venv")
    python, ready = folder / "bin" / "python", folder / "ready"
    base = sysconfig.get_paths()["purelib"]
    if ready.exists() and ready.read_text() == base:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(folder)], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # This environment's packages come after the venv's own, so the venv's transformers 4 and its
    # huggingface_hub 0.x win; .pth files of the base (the editable segformer) are not processed.
    Path(site, "base-environment.pth").write_text(base + "\n")
    torch_version = torch.__version__.split("+")[0]
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", f"transformers=={TRANSFORMERS_4}"]
    result = subprocess.run([*install, f"torch=={torch_version}"], capture_output=True, text=True)
    assert result.returncode == 0, f"Installing transformers {TRANSFORMERS_4} failed:\n{result.stdout}\n{result.stderr}"
    ready.write_text(base)
    return python
