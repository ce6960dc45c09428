"""Which columns of a `datasets` dataset hold the images and the masks: found by feature type and by the
names in common use, or named by the user; and the class names a dataset's features carry.

A column can hold an image when its feature is `datasets.Image`, a {"bytes", "path"} struct (Parquet written
without the `datasets` metadata) or a file path string; a mask column may also be a 2-d array of class ids.
Among those, a name in IMAGE_NAMES / LABEL_NAMES decides; with two image-like columns and one of them named,
the other is the other. Anything left ambiguous is an error that names the candidates.
"""

from ..errors import DataError

IMAGE_NAMES = ("image", "pixel_values", "img", "images", "rgb", "input")
LABEL_NAMES = ("label", "annotation", "semantic_segmentation", "mask", "gt", "labels", "segmentation",
               "seg", "masks", "label_image", "semantic", "ground_truth")  # fmt: skip
OVERRIDE = "Name them with --image-column / --label-column."


def _kind(feature) -> str | None:
    """'image' for image-like features, 'array' for 2-d numeric ones, else None."""
    import datasets

    if isinstance(feature, datasets.Image):
        return "image"
    if isinstance(feature, dict) and "bytes" in feature:
        return "image"
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string", "binary", "large_binary"):
        return "path"
    if isinstance(feature, (datasets.Array2D,)):
        return "array"
    inner = getattr(feature, "feature", None)
    if inner is not None and getattr(inner, "feature", None) is not None:  # a list of lists (of ints)
        return "array"
    return None


def describe(features) -> str:
    return ", ".join(f"{name} ({type(feature).__name__ if not isinstance(feature, dict) else 'struct'})"
                     for name, feature in features.items())  # fmt: skip


def _pick(candidates: list, names: tuple, what: str, features) -> str | None:
    named = [c for c in candidates if c.lower() in names]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise DataError(f"Several columns could hold the {what}: {named}. {OVERRIDE} (columns: {describe(features)})")
    return None


def _the_only(candidates: list, what: str, features, hint: str) -> str:
    """The one column left among `candidates` (no name decided it), else a DataError naming them."""
    if len(candidates) != 1:
        found = f"has no {what} column" if not candidates else f"has several {what} candidates {candidates} and none is named as one"
        raise DataError(f"The dataset {found} (columns: {describe(features)}). {hint}")
    return candidates[0]


def find_columns(features, image_column: str | None = None, label_column: str | None = None) -> tuple:
    """(image column, mask column, how they were found) of a dataset with these `features`."""
    columns = list(features)
    for given, what in ((image_column, "--image-column"), (label_column, "--label-column")):
        if given is not None and given not in columns:
            raise DataError(f"{what} {given!r}: the dataset has no such column; its columns: {describe(features)}.")
    if image_column and label_column:
        return image_column, label_column, "as given"
    kinds = {name: _kind(feature) for name, feature in features.items()}
    images = [n for n, k in kinds.items() if k == "image" or (k == "path" and n.lower() in IMAGE_NAMES + LABEL_NAMES)]
    masks = images + [n for n, k in kinds.items() if k == "array"]
    image = image_column or _pick([c for c in images if c != label_column], IMAGE_NAMES, "images", features)
    label = label_column or _pick([c for c in masks if c != image], LABEL_NAMES, "masks", features)
    image = image or _the_only([c for c in images if c != label], "image", features, OVERRIDE)
    label = label or _the_only([c for c in masks if c != image], "mask", features, f"(Images: {image!r}.) {OVERRIDE}")
    return image, label, "found by type and name"


def find_image_column(features, image_column: str | None = None) -> tuple:
    """(image column, how it was found) of a dataset that may have no masks (images to segment)."""
    if image_column is not None:
        if image_column not in features:
            raise DataError(f"--image-column {image_column!r}: the dataset has no such column; its columns: "
                            f"{describe(features)}.")  # fmt: skip
        return image_column, "as given"
    kinds = {name: _kind(feature) for name, feature in features.items()}
    images = [n for n, k in kinds.items() if k == "image" or (k == "path" and n.lower() in IMAGE_NAMES)]
    image = _pick(images, IMAGE_NAMES, "images", features)
    if image is None:
        rest = [c for c in images if c.lower() not in LABEL_NAMES]
        image = _the_only(rest, "image", features, "Name it with --image-column.")
    return image, "found by type and name"


def class_names(features, label_column: str) -> dict | None:
    """id2label from a `ClassLabel` inside the mask column's feature (a mask stored as class-labelled
    arrays). A ClassLabel column elsewhere is left alone: it labels whole images (ADE20K's scene
    categories in `scene_parse_150`), not mask pixels."""
    import datasets

    feature = features[label_column]
    while feature is not None:
        if isinstance(feature, datasets.ClassLabel):
            return dict(enumerate(feature.names))
        feature = getattr(feature, "feature", None)
    return None
