"""Export to stock transformers: a folder that `transformers.SegformerFor*.from_pretrained` loads.

transformers runs every LayerNorm at eps 1e-5 and cannot be configured otherwise, so a model with the
original epsilons (1e-6 in the blocks) gives slightly different logits there; `layer_norm_eps=1e-5`
models export exactly. The exported config records our epsilons, so converting the folder back restores
them and the round trip is exact.
"""

import logging
from pathlib import Path

import transformers
from safetensors.torch import save_file

from ..image_processing_segformer import SegFormerImageProcessor
from ..modeling_segformer import SegFormerModel
from .convert import EXPORTED_EPS_KEY
from .renaming import inverse, rename_keys
from .verification import transformers_model, verify
from ..errors import ConversionError
from .mappings import LAYOUTS, TRANSFORMERS_CLASSES, TRANSFORMERS_CONFIG_FIELDS

logger = logging.getLogger(__name__)

# transformers version -> the layout of its keys. 4.x is the default: transformers 5.x loads it too (it
# renames the keys on load) and its own `save_pretrained` writes it, so the 5.x layout exists only in memory.
EXPORT_LAYOUTS = {"4": "hf4", "5": "hf5"}
# transformers' fixed LayerNorm eps against ours: the logits move by about this much per unit of
# activation, so the export check allows for it when the epsilons differ.
EPS_MISMATCH_TOLERANCE = 1e-3


def transformers_config(model) -> transformers.SegformerConfig:
    config = model.config
    architecture = TRANSFORMERS_CLASSES[type(model).__name__]
    return transformers.SegformerConfig(
        **{name: getattr(config, name) for name in TRANSFORMERS_CONFIG_FIELDS},
        num_encoder_blocks=config.num_stages,
        id2label=config.id2label,
        label2id=config.label2id,
        architectures=[architecture],
        **{EXPORTED_EPS_KEY: dict(layer_norm_eps=config.layer_norm_eps, patch_layer_norm_eps=config.patch_layer_norm_eps)},
    )


def transformers_state_dict(model, layout: str = "4") -> dict:
    """Our model's tensors under transformers' key names."""
    target = LAYOUTS[EXPORT_LAYOUTS[layout]]
    state_dict = model.state_dict()
    if isinstance(model, SegFormerModel):  # the tables name the encoder with its `segformer.` prefix
        state_dict = {f"segformer.{key}": tensor for key, tensor in state_dict.items()}
    for surgery in target.from_ours:
        state_dict = surgery(state_dict)
    state_dict, _ = rename_keys(state_dict, inverse(target.keys))
    if isinstance(model, SegFormerModel):
        state_dict = {key.removeprefix("segformer."): tensor for key, tensor in state_dict.items()}
    return {key: tensor.contiguous() for key, tensor in state_dict.items()}


def transformers_image_processor(processor: SegFormerImageProcessor | None = None):
    """transformers' own SegFormer image processor (no remote code) closest to `processor`: it can only
    resize to a fixed size, so it takes the square of the short side."""
    try:  # the PIL backend on 5.x, which needs no torchvision and saves itself as `SegformerImageProcessor`
        from transformers import SegformerImageProcessorPil as processor_class
    except ImportError:
        from transformers import SegformerImageProcessor as processor_class
    processor = processor or SegFormerImageProcessor()
    side = processor.short_side or 512
    return processor_class(
        size={"height": side, "width": side},
        do_reduce_labels=processor.do_reduce_labels,
        image_mean=processor.image_mean,
        image_std=processor.image_std,
    )


def export_to_transformers(model, output_dir, *, layout: str = "4", processor=None, check: bool = True, tolerance=None):
    """Write `model` as a transformers SegFormer checkpoint into `output_dir`.

    Args:
        model: a `SegFormerForSemanticSegmentation`, `SegFormerForImageClassification` or `SegFormerModel`.
        layout: "4" (4.x keys, which 4.x and 5.x both load and 5.x saves) or "5" (5.x keys).
        processor: the package's image processor whose settings to save, as transformers' own processor.
        check: load the folder with the installed transformers and compare the outputs.
        tolerance: of the check; defaults to float rounding when the LayerNorm epsilons are transformers'
            1e-5, else to `EPS_MISMATCH_TOLERANCE`.
    Returns:
        The max abs difference of the outputs (None without the check).
    """
    if type(model).__name__ not in TRANSFORMERS_CLASSES:
        raise ConversionError(f"Cannot export a {type(model).__name__}: export one of {', '.join(TRANSFORMERS_CLASSES)}.")
    if layout not in EXPORT_LAYOUTS:
        raise ConversionError(f"Unknown transformers layout {layout!r}: choose {' or '.join(EXPORT_LAYOUTS)}.")
    if getattr(model.config, "decoder_type", "all_mlp") != "all_mlp" and "decode_head" in dict(model.named_children()):
        raise ConversionError(
            f"transformers' SegFormer has only the All-MLP decoder, not this model's {model.config.decoder_type!r} "
            "decode head: keep this package's format (Hub custom code, which stock transformers loads with "
            "trust_remote_code=True), or export the encoder (convert the source with --encoder-only)."
        )
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_file(transformers_state_dict(model, layout), output_dir / "model.safetensors", metadata={"format": "pt"})
    transformers_config(model).save_pretrained(output_dir)
    transformers_image_processor(processor).save_pretrained(output_dir)
    logger.info("Exported to %s in the transformers %s.x layout", output_dir, layout)
    if not check:
        return None
    reference = transformers_model(output_dir, type(model).__name__)
    if reference is None:
        raise ConversionError(
            f"transformers {transformers.__version__} cannot load the exported {layout}.x layout (see the warning "
            "above); export with the layout of your transformers version."
        )
    exact_eps = model.config.layer_norm_eps == model.config.patch_layer_norm_eps == 1e-5
    if tolerance is None:
        tolerance = 1e-4 if exact_eps else EPS_MISMATCH_TOLERANCE
    return verify(model, reference, tolerance, f"transformers {transformers.__version__} on the export")
