"""Proving a conversion: run the converted model and the source's own on the same input and compare."""

import logging
from pathlib import Path

import torch
import transformers

from ..errors import ConversionError
from .mappings import TRANSFORMERS_CLASSES

logger = logging.getLogger(__name__)


def model_output(outputs) -> torch.Tensor:
    return outputs.logits if hasattr(outputs, "logits") else outputs.last_hidden_state


def max_abs_difference(model: torch.nn.Module, reference: torch.nn.Module, seed: int = 0) -> float:
    """Run both models on the same random input; the largest absolute difference of their outputs."""
    config = model.config
    size = max(64, model.base_model.min_input_size)
    generator = torch.Generator().manual_seed(seed)
    # Not square, so that a height/width mix-up shows.
    pixel_values = torch.randn(1, config.num_channels, size, size * 3 // 2, generator=generator)
    with torch.no_grad():
        ours, theirs = model_output(model(pixel_values)), model_output(reference(pixel_values))
    if ours.shape != theirs.shape:
        raise ConversionError(f"The outputs differ in shape: {tuple(ours.shape)} vs the source's {tuple(theirs.shape)}.")
    return (ours - theirs).abs().max().item()


def transformers_model(folder: Path, architecture: str):
    """transformers' own model of a folder in its layout, or None when the installed transformers
    cannot load it exactly (a 5.x layout on transformers 4.x)."""
    model_class = getattr(transformers, TRANSFORMERS_CLASSES[architecture])
    model, info = model_class.from_pretrained(folder, output_loading_info=True)
    problems = {name: keys for name, keys in info.items() if keys and name != "error_msgs"}
    if problems:
        logger.warning("transformers %s cannot load %s exactly: %s", transformers.__version__, folder, problems)
        return None
    return model.eval()


def verify(model, reference, tolerance: float, what: str) -> float:
    difference = max_abs_difference(model, reference)
    logger.info("Max abs difference of the outputs against %s: %.3g (tolerance %.3g)", what, difference, tolerance)
    if not difference <= tolerance:
        raise ConversionError(
            f"The converted model does not compute what {what} computes: max abs difference of the outputs "
            f"{difference:.3g} > tolerance {tolerance:.3g}. If you changed `layer_norm_eps`, the difference comes "
            "from that: raise --tolerance; otherwise the checkpoint does not fit this architecture."
        )
    return difference
