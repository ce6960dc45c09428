"""Converting a SegFormer checkpoint of any layout into this package's models, and proving it.

`convert` reads a source (see `sources.py`), detects its layout, renames its keys with the layout's
table (`mappings.py`), does the layout's tensor surgery (`surgery.py`), infers the architecture from the
tensors, loads them strictly and, when the source can run (transformers' layouts with transformers
installed), compares the logits of both models.
"""

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from ..configuration_segformer import SegFormerConfig
from ..modeling_segformer import (
    SegFormerForImageClassification,
    SegFormerForSemanticSegmentation,
    SegFormerModel,
)
from ..errors import ConversionError, OptionError
from ..image_processing_segformer import SegFormerImageProcessor
from .mappings import FORMATS, LAYOUTS, TRANSFORMERS_CONFIG_FIELDS, Layout
from .renaming import apply_aliases, compile_template, rename_keys
from .sources import Checkpoint, read_checkpoint
from .verification import transformers_model, verify

logger = logging.getLogger(__name__)

MODEL_CLASSES = {
    cls.__name__: cls for cls in (SegFormerForSemanticSegmentation, SegFormerForImageClassification, SegFormerModel)
}
# Logits may differ by float rounding only; the transformers layouts agree to ~1e-6 (see the tests).
DEFAULT_TOLERANCE = 1e-4
# Where an export to transformers records the LayerNorm epsilons of the model it was exported from
# (transformers cannot use them), so that converting it back restores them.
EXPORTED_EPS_KEY = "segformer_mit_layer_norm_eps"
# Image processor settings of the datasets the released models were fine-tuned on, and how to tell them.
DATASET_PROCESSORS = {
    "ade20k": dict(do_reduce_labels=True, short_side=512),
    "cityscapes": dict(short_side=1024),
}
DATASET_NAMES = {"ade20k": re.compile(r"(^|[^a-z])ade(20k)?([^a-z]|$)"), "cityscapes": re.compile(r"cityscapes")}
DATASET_NUM_LABELS = {150: "ade20k", 19: "cityscapes"}
# The test-time protocol each source framework's models were evaluated with (`resize_segformer.PROTOCOLS`).
LAYOUT_PROTOCOLS = {"hf4": "transformers", "hf5": "transformers", "original": "nvlabs", "mmseg": "mmseg"}
# Config fields of a model whose decoder is mmsegmentation's SegformerHead.
MMSEG_DECODER = dict(decoder_type="mmseg")


@dataclass
class Conversion:
    model: torch.nn.Module
    layout: Layout
    checkpoint: Checkpoint
    processor: object  # the image processor to save next to the model
    max_abs_diff: float | None  # logits against the source model, when it could run

    @property
    def source(self) -> str:
        """What the weights were converted from, for the model card."""
        name = self.checkpoint.name
        if self.layout.name == "original":
            return f"NVlabs/SegFormer checkpoint {Path(name).name}"
        if self.layout.name == "mmseg" and isinstance(self.model, SegFormerModel):
            return f"mmsegmentation MiT checkpoint {Path(name).name} (NVlabs/SegFormer weights)"
        if self.layout.name == "mmseg":
            return f"mmsegmentation SegFormer checkpoint {Path(name).name}"
        return name


def detect_layout(state_dict: dict, format: str = "auto") -> Layout:
    """The layout whose signature the keys match; `format` ("hf", "original", "mmseg") restricts it."""
    if format != "auto" and format not in FORMATS:
        raise ConversionError(f"Unknown format {format!r}: choose auto, {', '.join(FORMATS)}.")
    found = [
        layout
        for layout in LAYOUTS.values()
        if any(re.search(layout.signature, key) for key in apply_aliases(state_dict, layout.aliases))
    ]
    allowed = [layout for layout in found if format == "auto" or layout.name in FORMATS[format]]
    if len(allowed) == 1:
        return allowed[0]
    sample = ", ".join(list(state_dict)[:6])
    if found and not allowed:
        raise ConversionError(
            f"--format {format} was given but the keys are those of {found[0].description} ({sample}, ...): "
            "leave --format at auto."
        )
    if len(allowed) > 1:
        raise ConversionError(f"The keys match several layouts ({', '.join(l.name for l in allowed)}): pass --format.")
    raise ConversionError(
        f"The keys ({sample}, ...) are not those of any SegFormer layout this converter knows "
        f"({'; '.join(layout.description for layout in LAYOUTS.values())})."
    )


def _stage_tensor(state_dict: dict, key: str) -> torch.Tensor:
    if key not in state_dict:
        raise ConversionError(f"Cannot infer the architecture: the checkpoint has no tensor for {key} (our name).")
    return state_dict[key]


def _indices(state_dict: dict, pattern: str) -> list:
    return sorted({int(m[1]) for key in state_dict if (m := re.match(pattern, key))})


def infer_architecture(state_dict: dict) -> tuple:
    """(model class name, config fields) that the tensors (in our key names) determine."""
    stages = _indices(state_dict, r"segformer\.stages\.(\d+)\.")
    if not stages or stages != list(range(len(stages))):
        raise ConversionError(f"The checkpoint's encoder stages are {stages}, not 0..N-1: it is incomplete.")
    patch_convs = [_stage_tensor(state_dict, f"segformer.stages.{i}.patch_embed.proj.weight") for i in stages]
    hidden_sizes = [conv.shape[0] for conv in patch_convs]
    depths, sr_ratios, mlp_ratios = [], [], []
    for i, width in zip(stages, hidden_sizes):
        blocks = _indices(state_dict, rf"segformer\.stages\.{i}\.blocks\.(\d+)\.")
        if not blocks or blocks != list(range(len(blocks))):
            raise ConversionError(f"Stage {i} of the checkpoint has blocks {blocks}, not 0..N-1: it is incomplete.")
        depths.append(len(blocks))
        reduction = state_dict.get(f"segformer.stages.{i}.blocks.0.attn.sr.weight")
        sr_ratios.append(1 if reduction is None else reduction.shape[-1])
        hidden = _stage_tensor(state_dict, f"segformer.stages.{i}.blocks.0.mlp.fc1.weight").shape[0]
        if hidden % width:
            raise ConversionError(f"Stage {i}'s Mix-FFN width {hidden} is not a multiple of its width {width}.")
        mlp_ratios.append(hidden // width)
    fields = dict(
        num_channels=patch_convs[0].shape[1],
        hidden_sizes=hidden_sizes,
        patch_sizes=[conv.shape[-1] for conv in patch_convs],
        depths=depths,
        sr_ratios=sr_ratios,
        mlp_ratios=mlp_ratios,
    )
    if any(key.startswith("decode_head.") for key in state_dict):
        mmseg_head = any(key.startswith(("decode_head.convs.", "decode_head.fusion_conv.")) for key in state_dict)
        stage_projection = "decode_head.convs.0.conv.weight" if mmseg_head else "decode_head.linear_c.0.weight"
        missing = [key for key in (stage_projection, "decode_head.linear_pred.weight") if key not in state_dict]
        if missing:
            raise ConversionError(
                f"The checkpoint's decode head is incomplete: it has no {' or '.join(missing)} (our names). "
                "Pass --encoder-only (encoder_only=True) to keep only the encoder."
            )
        fields["decoder_hidden_size"] = state_dict[stage_projection].shape[0]
        fields["num_labels"] = state_dict["decode_head.linear_pred.weight"].shape[0]
        fields.update(MMSEG_DECODER if mmseg_head else {})
        return "SegFormerForSemanticSegmentation", fields
    if "classifier.weight" in state_dict:
        fields["num_labels"] = state_dict["classifier.weight"].shape[0]
        return "SegFormerForImageClassification", fields
    return "SegFormerModel", fields


def _variant_fields(variant: str, inferred: dict) -> dict:
    try:
        preset = SegFormerConfig.from_variant(variant)
    except ValueError as error:
        raise OptionError(str(error)) from error
    for name in ("hidden_sizes", "depths"):
        if getattr(preset, name) != inferred[name]:
            raise ConversionError(
                f"The checkpoint is not MiT-{variant.upper()}: its tensors have {name}={inferred[name]}, the "
                f"variant {getattr(preset, name)}. Leave out --variant, the architecture is read from the tensors."
            )
    return dict(num_attention_heads=preset.num_attention_heads, strides=preset.strides)


def mmseg_dataset_meta(meta: dict) -> tuple:
    """(classes, palette) of an mmcv/mmseg checkpoint's `meta`: mmseg 1.x (mmengine) keeps them in
    `meta['dataset_meta']`, 0.x (and NVlabs) in `meta['CLASSES']` / `meta['PALETTE']`."""
    dataset_meta = meta.get("dataset_meta") if isinstance(meta.get("dataset_meta"), dict) else {}
    classes = dataset_meta.get("classes") or meta.get("CLASSES")
    palette = dataset_meta.get("palette") or meta.get("PALETTE")
    return (list(classes) if classes else None), (list(palette) if palette else None)


def _labels(checkpoint: Checkpoint, num_labels: int | None) -> dict:
    """id2label (and palette) from the source's config or an mmseg checkpoint's metadata, when they fit."""
    classes, palette = mmseg_dataset_meta(checkpoint.meta)
    if "id2label" in checkpoint.config:
        id2label = {int(index): label for index, label in checkpoint.config["id2label"].items()}
    elif classes:
        id2label = dict(enumerate(classes))
    else:
        return {}
    if num_labels is not None and len(id2label) != num_labels:
        logger.warning("Ignoring the source's %d label names: the head has %d outputs.", len(id2label), num_labels)
        return {}
    fields = dict(id2label=id2label, label2id={label: index for index, label in id2label.items()})
    if palette and "id2label" not in checkpoint.config:
        if len(palette) == len(id2label) and all(len(colour) == 3 for colour in palette):
            fields["palette"] = [[int(value) for value in colour] for colour in palette]
        else:
            logger.warning("Ignoring the source's palette: %d colours for %d classes.", len(palette), len(id2label))
    return fields


def build_config(checkpoint: Checkpoint, layout: Layout, architecture: str, inferred: dict, variant=None, **overrides):
    """Config of the converted model. Later sources win: the variant's heads and strides, the source
    config, the LayerNorm epsilons the source ran with, the tensors' shapes, the caller's overrides."""
    fields = _variant_fields(variant, inferred) if variant else {}
    fields.update({name: checkpoint.config[name] for name in TRANSFORMERS_CONFIG_FIELDS if name in checkpoint.config})
    fields.update(layout.config)
    fields.update(checkpoint.config.get(EXPORTED_EPS_KEY, {}))
    fields.update(_labels(checkpoint, inferred.get("num_labels")))
    fields.update(inferred)
    fields.update(overrides)
    try:
        return SegFormerConfig(**fields, architectures=[architecture])
    except ValueError as error:
        raise ConversionError(f"The converted configuration is invalid: {error}") from error


def load_strict(model: torch.nn.Module, state_dict: dict):
    """Load every tensor into `model`, failing with the full list of missing, unexpected or misshapen ones."""
    if isinstance(model, SegFormerModel):
        state_dict = {key.removeprefix("segformer."): tensor for key, tensor in state_dict.items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshapen = [
        f"{key} {tuple(state_dict[key].shape)} (model: {tuple(tensor.shape)})"
        for key, tensor in expected.items()
        if key in state_dict and state_dict[key].shape != tensor.shape
    ]
    problems = [
        f"{title}: {', '.join(keys)}"
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen))
        if keys
    ]
    if problems:
        raise ConversionError(
            "The converted tensors do not fill the model exactly. " + "; ".join(problems) + ". The checkpoint is "
            "incomplete or damaged, or --num-heads/--variant do not describe it."
        )
    model.load_state_dict(state_dict, strict=True)


def _check_source(model, checkpoint: Checkpoint, layout: Layout, check, tolerance: float) -> float | None:
    runnable = checkpoint.folder is not None and layout.name in ("hf4", "hf5")
    reference = transformers_model(checkpoint.folder, type(model).__name__) if runnable and check is not False else None
    if reference is not None:
        return verify(model, reference, tolerance, f"transformers {transformers.__version__} on the source")
    if check:
        raise ConversionError(
            f"Cannot check the conversion of {checkpoint.name}: there is no runnable reference for "
            f"{layout.description} here (only transformers' layouts can be run). Leave out --check; the "
            "mapping of this layout is verified by the test-suite against transformers."
        )
    if check is None:
        logger.info("Not checked against the source: no runnable reference for %s.", layout.description)
    return None


def guess_dataset(name: str, num_labels: int) -> str | None:
    lowered = name.lower()
    named = [dataset for dataset, pattern in DATASET_NAMES.items() if pattern.search(lowered)]
    return named[0] if named else DATASET_NUM_LABELS.get(num_labels)


def image_processor_for(checkpoint: Checkpoint, layout: Layout, config: SegFormerConfig):
    """A segmentation model gets its source framework's test protocol (`LAYOUT_PROTOCOLS`) with the source's
    own processor config, else the settings of the dataset it was fine-tuned on; an encoder gets this
    package's protocol (there are no label maps of its source to reproduce)."""
    processor_class = SegFormerImageProcessor
    segmentation = config.architectures == ["SegFormerForSemanticSegmentation"]
    protocol = dict(resize_protocol=LAYOUT_PROTOCOLS[layout.name]) if segmentation else {}
    if checkpoint.folder is not None and (checkpoint.folder / "preprocessor_config.json").is_file():
        processor = processor_class.from_pretrained(checkpoint.folder)
        for name, value in protocol.items():  # not as a keyword: transformers 5 warns about unknown ones
            setattr(processor, name, value)
        return processor
    dataset = guess_dataset(checkpoint.name, config.num_labels) if segmentation else None
    settings = {**DATASET_PROCESSORS.get(dataset, {}), **protocol}
    if settings:
        logger.info("Writing the image processor settings%s: %s", f" of {dataset}" if dataset else "", settings)
    return processor_class(**settings)


def encoder_table(table: dict) -> dict:
    """`table` with every key that does not map into the encoder dropped (`--encoder-only`)."""
    return {source: target if target and target.startswith("segformer.") else None for source, target in table.items()}


def drop_unknown(state_dict: dict, table: dict) -> tuple:
    """(the keys some template of `table` matches, the others): with `--encoder-only` an unknown head
    (an FCN auxiliary head, another decoder) is dropped with the rest of the decoder, not an error."""
    rules = [compile_template(source) for source in table]
    known = {key: tensor for key, tensor in state_dict.items() if any(rule.fullmatch(key) for rule in rules)}
    return known, [key for key in state_dict if key not in known]


def convert_checkpoint(
    checkpoint: Checkpoint,
    *,
    format: str = "auto",
    variant: str | None = None,
    check: bool | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    encoder_only: bool = False,
    **overrides,
) -> Conversion:
    """Convert what `read_checkpoint` read; see `convert`."""
    layout = detect_layout(checkpoint.state_dict, format)
    logger.info("Converting %s from the %s layout", checkpoint.name, layout.description)
    state_dict, table, unknown = apply_aliases(checkpoint.state_dict, layout.aliases), layout.keys, []
    if encoder_only:
        table = encoder_table(table)
        state_dict, unknown = drop_unknown(state_dict, table)
    state_dict, dropped = rename_keys(state_dict, table)
    if encoder_only and (dropped or unknown):
        outside = dropped + unknown
        logger.warning("--encoder-only: dropped the %d tensors outside the encoder: %s", len(outside), ", ".join(outside))
    elif dropped:
        logger.warning("Dropped %d tensors (%s): %s", len(dropped), layout.dropped, ", ".join(dropped))
    for surgery in layout.to_ours:
        state_dict = surgery(state_dict)
    architecture, inferred = infer_architecture(state_dict)
    config = build_config(checkpoint, layout, architecture, inferred, variant, **overrides)
    model = MODEL_CLASSES[architecture](config).eval()
    load_strict(model, state_dict)
    difference = _check_source(model, checkpoint, layout, check, tolerance)
    return Conversion(model, layout, checkpoint, image_processor_for(checkpoint, layout, config), difference)


def convert(
    source,
    *,
    format: str = "auto",
    variant: str | None = None,
    check: bool | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    hub_kwargs: dict | None = None,
    encoder_only: bool = False,
    **overrides,
) -> Conversion:
    """Convert a SegFormer checkpoint into this package's model.

    Args:
        source: a Hub repo id or folder in transformers' 4.x/5.x layout, an NVlabs/SegFormer `.pth`
            (segmentation or ImageNet `mit_b*`), or an mmsegmentation `.pth` (a full SegFormer, 0.x or
            1.x metadata, or its MiT encoder).
        format: "auto" (detected from the keys), "hf", "original" or "mmseg".
        variant: "b0".."b5": takes the attention heads and strides from that preset and checks that the
            tensors are that variant. The rest of the architecture always comes from the tensors.
        check: compare the logits with the source model: None = when the source can run (transformers'
            layouts), True = required, False = never.
        tolerance: largest max-abs difference of the logits the check accepts.
        hub_kwargs: `revision`, `token`, `cache_dir`, `local_files_only`, ... for Hub sources.
        encoder_only: keep only the encoder (a `SegFormerModel`), dropping any decoder and head, known or
            not. Without it every tensor of the source must find its place.
        overrides: config fields to set, e.g. `num_attention_heads=[1, 2, 5, 8]`, `layer_norm_eps=1e-6`.
    """
    checkpoint = read_checkpoint(source, hub_kwargs)
    return convert_checkpoint(
        checkpoint,
        format=format,
        variant=variant,
        check=check,
        tolerance=tolerance,
        encoder_only=encoder_only,
        **overrides,
    )
