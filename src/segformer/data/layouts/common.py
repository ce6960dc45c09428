"""What every layout module returns, and the file pairing they share."""

from dataclasses import dataclass, field
from pathlib import Path

from ...errors import DataError

SHOWN = 5  # unpaired or missing files named in an error


@dataclass
class LayoutData:
    """A layout's splits as {split: (image paths, mask paths)} in matching order, the `label_map` its masks
    need ({stored value: class id}; Cityscapes' labelIds) and a note on how the masks were read."""

    splits: dict
    label_map: dict = field(default_factory=dict)
    note: str = ""


def require(path: Path, message: str):
    if not path.is_dir():
        raise DataError(f"{message}: expected the folder {path}.")


def first(names) -> str:
    names = sorted(map(str, names))
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def pair_by_stem(images: dict, labels: dict, where: str) -> tuple:
    """(image paths, mask paths) of the stems both dicts ({stem: path}) hold; a DataError names the first
    unpaired files of either side."""
    missing, orphans = set(images) - set(labels), set(labels) - set(images)
    if missing or orphans:
        parts = [f"{len(missing)} images without a mask ({first(images[s].name for s in missing)})"] if missing else []
        if orphans:
            parts.append(f"{len(orphans)} masks without an image ({first(labels[s].name for s in orphans)})")
        raise DataError(f"{where} do not pair: {'; '.join(parts)}. Every image needs a mask with the same name stem.")
    if not images:
        raise DataError(f"{where} hold no images.")
    stems = sorted(images)
    return [str(images[s]) for s in stems], [str(labels[s]) for s in stems]
