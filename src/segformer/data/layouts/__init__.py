"""Dataset layouts on disk: the paper's datasets as their archives unpack (ADE20K, Cityscapes, Pascal VOC
2012), and the package's own `SPLIT/images + SPLIT/labels` folders.

Each layout module holds `NAME`, `EXPECTS` (what an error says it looked for), `find_root(path)` (the
dataset's folder at or just under `path`, or None: folder names only, so detection is cheap), `load(root)`
(the splits as paired file lists, a `LayoutData`) and, for the official datasets, their `CLASSES`, `PALETTE`
and `PRESET`: the training options of the paper's protocol for that dataset, which the model's image
processor then records.
"""

from pathlib import Path

from ...errors import DataError, OptionError
from . import ade20k, cityscapes, folders, voc
from .common import LayoutData

OFFICIAL = {module.NAME: module for module in (ade20k, cityscapes, voc)}
FORMATS = tuple(OFFICIAL)


def find_official(path: Path, dataset_format: str | None = None) -> tuple | None:
    """(layout module, dataset root) of the official layout at `path`: the one `dataset_format` names (a
    DataError when the folder is not one), else the first that matches, else None."""
    if dataset_format is not None:
        if dataset_format not in OFFICIAL:
            raise OptionError(f"--dataset-format must be one of {', '.join(FORMATS)}, got {dataset_format!r}.")
        module = OFFICIAL[dataset_format]
        root = module.find_root(path)
        if root is None:
            raise DataError(f"--dataset-format {dataset_format}: {path} is no {dataset_format} tree; expected {module.EXPECTS}.")
        return module, root
    for module in OFFICIAL.values():
        root = module.find_root(path)
        if root is not None:
            return module, root
    return None


def preset(source: str | None, dataset_format: str | None = None) -> dict:
    """The paper's training options for the official dataset at `source` (a local folder), or {}: cheap,
    and never raises (a bad folder is reported when the data is loaded)."""
    if dataset_format in OFFICIAL:
        return dict(OFFICIAL[dataset_format].PRESET)
    try:
        found = find_official(Path(source)) if source and Path(source).is_dir() else None
    except OSError:
        return {}
    return dict(found[0].PRESET) if found else {}


__all__ = ["FORMATS", "OFFICIAL", "LayoutData", "ade20k", "cityscapes", "find_official", "folders", "preset", "voc"]
