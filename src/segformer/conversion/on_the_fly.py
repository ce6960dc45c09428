"""On-the-fly conversion in `from_pretrained`: our classes load transformers' own SegFormer checkpoints
(model type "segformer": the official Hub ones, 4.x or 5.x layout) as if they were ours.

`SegFormerPreTrainedModel.from_pretrained` imports `convert_for_from_pretrained` from here when this
package is installed (the model file's Hub copy runs without it, and then loads only our own checkpoints).
"""

import inspect
import logging
from pathlib import Path

from ..configuration_segformer import SegFormerConfig
from .convert import convert_checkpoint
from ..loading import looks_like_repo_id
from .sources import HUB_KWARGS, fetch, read_checkpoint, read_json

logger = logging.getLogger(__name__)

TRANSFORMERS_MODEL_TYPE = "segformer"
# `from_pretrained` keyword arguments that set config fields, as transformers applies them to a config.
CONFIG_KWARGS = (set(inspect.signature(SegFormerConfig.__init__).parameters) - {"self", "kwargs"}) | {
    "num_labels",
    "id2label",
    "label2id",
    "problem_type",
}


def source_config(source: str, hub_kwargs: dict) -> dict | None:
    """The source's config.json (a folder's, or a Hub repo's without downloading its weights), or None."""
    path = Path(source)
    if path.is_dir():
        config = path / hub_kwargs.get("subfolder", "") / "config.json"
        config = config if config.is_file() else None
    elif path.exists() or source.count("/") != 1 or not looks_like_repo_id(source):
        return None
    else:
        config = fetch(source, "config.json", hub_kwargs)
    return read_json(config) if config is not None else None


def convert_for_from_pretrained(pretrained_model_name_or_path, kwargs: dict):
    """(config, state dict) in our layout for a transformers SegFormer checkpoint, else None.

    Consumes the download and config keyword arguments from `kwargs`; the rest (dtype, device_map,
    ignore_mismatched_sizes, ...) stay for `from_pretrained`, which loads the state dict with its
    usual semantics (e.g. a new decode head on an ImageNet encoder)."""
    source = str(pretrained_model_name_or_path)
    hub_kwargs = {name: kwargs[name] for name in HUB_KWARGS if kwargs.get(name) is not None}
    if (source_config(source, hub_kwargs) or {}).get("model_type") != TRANSFORMERS_MODEL_TYPE:
        return None
    for name in HUB_KWARGS:
        kwargs.pop(name, None)
    if "subfolder" in hub_kwargs and Path(source).is_dir():
        source = str(Path(source) / hub_kwargs.pop("subfolder"))
    conversion = convert_checkpoint(read_checkpoint(source, hub_kwargs), format="hf", check=False)
    logger.warning(
        "Converted %s from the %s layout on the fly; `segformer convert` saves the converted model once.",
        source,
        conversion.layout.description,
    )
    config = kwargs.pop("config", None) or conversion.model.config
    for name in [name for name in kwargs if name in CONFIG_KWARGS]:
        setattr(config, name, kwargs.pop(name))
    return config, conversion.model.state_dict()
