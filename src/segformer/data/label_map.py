"""`--label-map`: remapping the values stored in mask files to class ids, and the one order in which a
dataset turns stored values into training targets.

Order (applied once, in `SegmentationDataset.load_pair`): first the label map, on the values as stored in
the files; then `do_reduce_labels` (0 -> ignore, every other id minus one). A value the map does not name
stays as it is. So `--label-map 255:1` on 0/255 binary masks gives ids 0 and 1, and with
`--do-reduce-labels` a map's targets are written in the stored numbering (0 = "other").
"""

import json
from pathlib import Path

import numpy as np

from ..configuration_segformer import IGNORE_INDEX
from ..errors import InputError, OptionError
from ..image_processing_segformer import reduce_labels

OPTION = "--label-map"


def parse_label_map(value) -> dict:
    """{stored value: new value} from 'OLD:NEW,OLD:NEW', a JSON object, a JSON file (*.json), or a mapping
    (as a config file gives it). Every key and value must be a non-negative integer."""
    if value is None or isinstance(value, dict) and not value:
        return {}
    try:
        if isinstance(value, dict):
            pairs = list(value.items())
        elif str(value).endswith(".json"):
            pairs = list(json.loads(Path(value).read_text()).items())
        elif str(value).lstrip().startswith("{"):
            pairs = list(json.loads(value).items())
        else:
            pairs = [item.split(":") for item in str(value).split(",")]
    except FileNotFoundError:
        raise InputError(f"{OPTION} {value}: no such file.") from None
    except (OSError, ValueError, AttributeError) as error:
        raise OptionError(
            f"{OPTION} {value!r} is not a readable JSON object of old -> new mask values ({error})."
        ) from None
    mapping = {}
    for pair in pairs:
        if len(pair) != 2 or not all(_is_integer(part) for part in pair):
            raise OptionError(
                f"{OPTION} {value!r}: {':'.join(map(str, pair))!r} is not OLD:NEW with two non-negative integer "
                "mask values (e.g. 255:1, or 0:255,1:0,2:1)."
            )
        old, new = int(str(pair[0]).strip()), int(str(pair[1]).strip())
        if old in mapping:
            raise OptionError(f"{OPTION} {value!r} maps the mask value {old} twice.")
        mapping[old] = new
    return mapping


def _is_integer(part) -> bool:
    return not isinstance(part, (bool, float)) and str(part).strip().isdigit()


def check_label_map(mapping: dict, num_labels: int, ignore_index: int = IGNORE_INDEX, do_reduce_labels: bool = False):
    """Every target must become a class id (0..num_labels-1) or the ignore index; with do_reduce_labels
    the targets are in the stored numbering, so 1..num_labels (and 0, which reduce-labels ignores)."""
    low, high = (0, num_labels) if do_reduce_labels else (0, num_labels - 1)
    bad = sorted({new for new in mapping.values() if new != ignore_index and not low <= new <= high})
    if bad:
        raise OptionError(
            f"{OPTION} maps mask values to {bad}, but the model has {num_labels} labels: targets must be "
            f"{low}..{high}" + (" (before --do-reduce-labels shifts them down by one)" if do_reduce_labels else "")
            + f" or {ignore_index} (ignored)."
        )


def apply_label_map(label: np.ndarray, mapping: dict) -> np.ndarray:
    """The mask with each value the map names replaced; every lookup reads the original mask, so
    swaps (0:1,1:0) work. Values the map does not name stay as they are."""
    label = np.asarray(label, dtype=np.int64)
    if not mapping:
        return label
    mapped = label.copy()
    for old, new in mapping.items():
        mapped[label == old] = new
    return mapped


def class_ids(stored: np.ndarray, mapping: dict, do_reduce_labels: bool, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Training targets from the mask values as stored: the label map first, then reduce-labels."""
    label = apply_label_map(stored, mapping)
    return reduce_labels(label, ignore_index) if do_reduce_labels else label


BINARY_BACKGROUND = "background"


def mask_classes(id2label: dict) -> dict:
    """The classes the masks hold, id -> name: `id2label` itself, except for a one-label (sigmoid) model,
    whose masks hold 0 (background) and 1 (its one label), as transformers' binary models read them."""
    id2label = {int(key): str(value) for key, value in id2label.items()}
    if len(id2label) == 1:
        return {0: BINARY_BACKGROUND, 1: id2label[0]}
    return id2label
