"""Export an encoder to NVlabs/SegFormer's ImageNet layout: the `mit_bX.pth` files that the original code
(`mmseg/models/backbones/mix_transformer.py` of github.com/NVlabs/SegFormer), mmsegmentation's
`tools/model_converters/mit2mmseg.py` and other frameworks start from.

Such a file is a plain state dict (`torch.save` of a dict of tensors): `patch_embed1.proj.weight`,
`block1.0.attn.q.weight`, `block1.0.attn.kv.weight`, `norm1.weight`, ... and, for an ImageNet classifier,
`head.weight`/`head.bias`. It holds no configuration: the original code builds the architecture from the
class name (`mit_b0` ... `mit_b5`), so the file is named after the variant the encoder is. The key table is
`mappings.ORIGINAL_KEYS`, read backwards; the file is read back through this package's NVlabs import and
must give the same tensors and outputs.
"""

import logging
from pathlib import Path

import torch

from ..errors import ConversionError
from ..hub.card import find_variant
from ..modeling_segformer import SegFormerForImageClassification, SegFormerForSemanticSegmentation, SegFormerModel
from .convert import convert
from .mappings import LAYOUTS
from .renaming import inverse, rename_keys
from .verification import max_abs_difference

logger = logging.getLogger(__name__)

# What the original MixVisionTransformer hard-codes: GELU, overlapping patch embeddings of 7x7/4 then
# 3x3/2, and LayerNorm eps 1e-6 in the blocks (its `mit_bX` classes) but torch's 1e-5 after the convs.
NVLABS_ARCHITECTURE = dict(hidden_act="gelu", patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2])
NVLABS_EPS = LAYOUTS["original"].config
# The round trip moves no tensor, so the outputs must agree to float rounding of identical computations.
ROUND_TRIP_TOLERANCE = 1e-6


def encoder_model(model) -> torch.nn.Module:
    """The part of `model` that the NVlabs file holds: a classifier whole (encoder and `head`), a
    segmentation model's encoder (the original's ImageNet files have no decoder), an encoder as it is."""
    if isinstance(model, (SegFormerForImageClassification, SegFormerModel)):
        return model
    if isinstance(model, SegFormerForSemanticSegmentation):
        return model.segformer
    raise ConversionError(
        f"Cannot export a {type(model).__name__} to the NVlabs MiT layout: export a SegFormerForImageClassification, "
        "SegFormerForSemanticSegmentation (its encoder) or SegFormerModel."
    )


def check_expressible(config):
    """Fail where the original MixVisionTransformer cannot build this encoder; warn where it computes
    slightly differently (other LayerNorm epsilons)."""
    differences = [
        f"{name}={getattr(config, name)!r} (NVlabs: {value!r})"
        for name, value in NVLABS_ARCHITECTURE.items()
        if getattr(config, name) != value
    ]
    if differences:
        raise ConversionError(
            f"NVlabs' MixVisionTransformer cannot build this encoder: {', '.join(differences)}. Export it to "
            "transformers (--to transformers) or keep this package's format."
        )
    eps = {name: getattr(config, name) for name in NVLABS_EPS if getattr(config, name) != NVLABS_EPS[name]}
    if eps:
        logger.warning(
            "This model runs its LayerNorms with %s; NVlabs' code runs %s, so it computes slightly different "
            "outputs with these weights.",
            eps,
            NVLABS_EPS,
        )


def nvlabs_state_dict(model) -> dict:
    """The tensors of `encoder_model(model)` under NVlabs' key names."""
    model = encoder_model(model)
    state_dict = model.state_dict()
    if isinstance(model, SegFormerModel):  # the table names the encoder with its `segformer.` prefix
        state_dict = {f"segformer.{key}": tensor for key, tensor in state_dict.items()}
    renamed, _ = rename_keys(state_dict, inverse(LAYOUTS["original"].keys))
    return {key: tensor.detach().cpu().contiguous() for key, tensor in renamed.items()}


def nvlabs_file_name(config) -> str:
    """`mit_b0.pth` ... `mit_b5.pth` for a released variant's encoder (the original's own names), else `mit.pth`."""
    variant = find_variant(config, "SegFormerModel")
    return f"mit_{variant}.pth" if variant else "mit.pth"


def read_back(path: Path, config):
    """The exported file converted back by this package's NVlabs import, with the settings the file cannot
    carry (attention heads, LayerNorm epsilons) taken from `config`."""
    settings = dict(
        num_attention_heads=config.num_attention_heads,
        layer_norm_eps=config.layer_norm_eps,
        patch_layer_norm_eps=config.patch_layer_norm_eps,
    )
    return convert(str(path), format="original", check=False, **settings).model


def export_to_nvlabs(model, output_dir) -> tuple:
    """Write `model`'s encoder (with its classifier as `head`, for an image classifier) as an NVlabs
    `mit_bX.pth` into `output_dir`, then read it back and compare.

    Returns:
        (path of the file, max abs difference of the outputs of the read-back model and `model`'s encoder).
    Raises:
        ConversionError: the original code cannot build this encoder, or the file does not read back to the
            same tensors and outputs.
    """
    encoder = encoder_model(model)
    check_expressible(encoder.config)
    state_dict = nvlabs_state_dict(encoder)
    path = Path(output_dir) / nvlabs_file_name(encoder.config)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, path)
    back = read_back(path, encoder.config)
    if type(back) is not type(encoder):
        raise ConversionError(f"{path} reads back as a {type(back).__name__}, not a {type(encoder).__name__}.")
    ours = encoder.state_dict()
    different = [key for key, tensor in back.state_dict().items() if not torch.equal(tensor, ours[key])]
    if different or set(back.state_dict()) != set(ours):
        raise ConversionError(f"{path} does not read back to the same tensors: {', '.join(different[:8])}.")
    training = encoder.training
    try:
        difference = max_abs_difference(back.eval(), encoder.eval())
    finally:
        encoder.train(training)
    if not difference <= ROUND_TRIP_TOLERANCE:
        raise ConversionError(f"{path} read back computes other outputs: max abs difference {difference:.3g}.")
    return path, difference
