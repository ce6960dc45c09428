"""The package's own simple layouts: one folder per split with `images/` and `labels/` (masks with the
images' name stems), or `images/` + `labels/` at the top (one training split)."""

from pathlib import Path

from ...files import IMAGE_SUFFIXES
from .common import LayoutData, pair_by_stem

NAME = "folders"
EXPECTS = "SPLIT/images + SPLIT/labels folders (or images/ + labels/), masks named as their images"


def find_root(path: Path) -> Path | None:
    if (path / "images").is_dir() or any((p / "images").is_dir() and (p / "labels").is_dir() for p in path.iterdir() if p.is_dir()):
        return path
    return None


def _files(folder: Path) -> dict:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES} if folder.is_dir() else {}


def load(root: Path) -> LayoutData:
    folders = {p.name: p for p in sorted(root.iterdir()) if (p / "images").is_dir()}
    if (root / "images").is_dir():
        folders["train"] = root
    splits = {
        name: pair_by_stem(_files(folder / "images"), _files(folder / "labels"), f"{folder}: images/ and labels/")
        for name, folder in folders.items()
    }
    return LayoutData(splits)
