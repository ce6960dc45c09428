"""Loading a segmentation dataset from any form users have it in, for `segformer train`, `evaluate` and
`predict --dataset` alike: `open_dataset(source)` returns its splits, the image and mask columns, the class
names and colours and how its masks become class ids.

Forms, tried in this order for a local folder (`--dataset-format` names an official layout instead):
a `save_to_disk` folder; the paper's datasets as their archives unpack (ADE20K, Cityscapes, Pascal VOC 2012,
`layouts/`); an imagefolder with metadata.jsonl/csv; `SPLIT/images + SPLIT/labels` folders; a folder of
Parquet / Arrow files (a Hub snapshot, with or without its README's `configs`). Anything else is a Hub
dataset id. Split names are matched with their usual aliases (`train`/`training`, `validation`/`val`/`test`).

`datasets` (the optional `train` extra) is imported where it is used: the `segformer` command imports
this module to build its help, which must work without the extra.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, InputError, OptionError
from ..loading import looks_like_repo_id
from . import layouts
from .builtin import BUILTIN_DATASET, BUILTIN_ID2LABEL, generate_builtin_dataset, image_pairs
from .columns import class_names, find_columns, find_image_column

# A split asked for by the first name also answers to the others, in this order.
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "validation": ("validation", "val", "valid", "dev", "test"),
    "test": ("test", "testing"),
}
STREAM_SHARDS = 64  # a local dataset streamed is cut into this many shards, to spread over processes and workers


@dataclass
class SegmentationData:
    """A dataset as found: `splits` ({name: datasets.Dataset, or IterableDataset when streaming}), the
    `image_column` and `label_column`, `id2label` and `palette` when the dataset names its classes (else
    None), how its masks become class ids (`label_map`: Cityscapes' labelIds; `do_reduce_labels`: ADE20K's
    0 = "other"), `form` (how it was read) and `notes` (what a user should be told: the columns chosen, how
    masks are read)."""

    source: str
    form: str
    splits: dict
    image_column: str = "image"
    label_column: str = "label"
    id2label: dict | None = None
    palette: list | None = None
    label_map: dict = field(default_factory=dict)
    do_reduce_labels: bool = False
    streaming: bool = False
    notes: list = field(default_factory=list)

    def split_name(self, name: str) -> str:
        """The dataset's own name for split `name` (exact, else an alias); a DataError lists the splits."""
        if name in self.splits:
            return name
        # The group a canonical name leads (so an explicit "test" never answers with "validation"), else
        # the group that lists it.
        groups = [SPLIT_ALIASES[name]] if name in SPLIT_ALIASES else [a for a in SPLIT_ALIASES.values() if name in a]
        for aliases in groups[:1]:
            found = next((alias for alias in aliases if alias in self.splits), None)
            if found:
                return found
        raise DataError(f"Dataset {self.source!r} has no split {name!r}; its splits: {list(self.splits)}.")

    def has_split(self, name: str) -> bool:
        try:
            self.split_name(name)
        except DataError:
            return False
        return True

    def split(self, name: str):
        """The split called `name` or one of its aliases."""
        return self.splits[self.split_name(name)]


def open_dataset(
    source: str | None = None,
    *,
    dataset_format: str | None = None,
    config_name: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    streaming: bool = False,
    seed: int = 0,
    masks: bool = True,
) -> SegmentationData:
    """The dataset at `source`: None or "builtin" (the generated set), a local folder in any form of the
    module docstring, or a Hub dataset id. Columns are found (or checked, when given); class names come
    from the official lists, an id2label.json beside the data, or a ClassLabel of the mask column."""
    kind = dataset_source(source)  # decided without the network: a bad path fails before any download
    if kind == "builtin":
        if dataset_format:
            raise OptionError("--dataset-format applies to a local folder, not the built-in dataset.")
        data = SegmentationData(BUILTIN_DATASET, "builtin", dict(generate_builtin_dataset(seed=seed)),
                                id2label=dict(BUILTIN_ID2LABEL))  # fmt: skip
    elif kind == "folder":
        data = _open_local(Path(source), dataset_format, config_name, streaming)
    elif dataset_format:
        raise OptionError(f"--dataset-format {dataset_format} reads a local folder; {source!r} is none.")
    else:
        data = _open_hub(source, config_name, streaming)
    if not data.splits:
        raise DataError(f"Dataset {source!r} holds no split.")
    if streaming:
        data.splits = {name: _to_iterable(split) for name, split in data.splits.items()}
    data.streaming = streaming
    _choose_columns(data, image_column, label_column, masks)
    return data


def _to_iterable(split):
    import datasets

    if isinstance(split, datasets.IterableDataset):
        return split
    return split.to_iterable_dataset(num_shards=max(1, min(STREAM_SHARDS, len(split))))


def _official(module, root: Path) -> SegmentationData:
    found = module.load(root)
    splits = {name: image_pairs(images, labels) for name, (images, labels) in found.splits.items()}
    notes = [f"{module.NAME} layout at {root}" + (f": {found.note}" if found.note else "")]
    return SegmentationData(str(root), module.NAME, splits, id2label=dict(enumerate(module.CLASSES)),
                            palette=[list(color) for color in module.PALETTE], label_map=found.label_map,
                            do_reduce_labels=module.PRESET.get("do_reduce_labels", False), notes=notes)  # fmt: skip


def _open_local(root: Path, dataset_format: str | None, config_name: str | None, streaming: bool) -> SegmentationData:
    import datasets

    if dataset_format is None and ((root / "dataset_dict.json").is_file() or (root / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(root))
        splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
        return SegmentationData(str(root), "save_to_disk", splits, id2label=_local_id2label(root, deep=False))
    official = layouts.find_official(root, dataset_format)
    if official:
        return _official(*official)
    if any(root.rglob("metadata.jsonl")) or any(root.rglob("metadata.csv")):
        splits = dict(datasets.load_dataset("imagefolder", data_dir=str(root)))
        return SegmentationData(str(root), "imagefolder", splits, id2label=_local_id2label(root))
    if layouts.folders.find_root(root):
        splits = {name: image_pairs(*pair) for name, pair in layouts.folders.load(root).splits.items()}
        return SegmentationData(str(root), "folders", splits, id2label=_local_id2label(root))
    if _has_data_files(root):
        try:
            # Streamed, the files are read as they are (no Arrow copy in the cache).
            splits = dict(datasets.load_dataset(str(root), config_name, streaming=streaming))
        except (ValueError, OSError, datasets.exceptions.DatasetsError) as error:
            raise DataError(f"{root}: cannot read its data files with `datasets` ({type(error).__name__}: {error}).") from None
        return SegmentationData(str(root), "files", splits, id2label=_local_id2label(root, deep=False))
    tried = [
        "save_to_disk (dataset_dict.json or state.json)",
        *(f"{name} ({module.EXPECTS})" for name, module in layouts.OFFICIAL.items()),
        "imagefolder (metadata.jsonl pairing image_file_name and label_file_name)",
        f"folders ({layouts.folders.EXPECTS})",
        "data files (*.parquet or *.arrow, or a README.md with `configs`)",
    ]
    raise DataError(f"{root} holds no dataset in a layout this package reads. Tried: {'; '.join(tried)}.")


def _has_data_files(root: Path) -> bool:
    if (root / "README.md").is_file() and "configs:" in (root / "README.md").read_text(errors="replace"):
        return True
    return any(True for suffix in ("parquet", "arrow") for _ in root.rglob(f"*.{suffix}"))


def _open_hub(source: str, config_name: str | None, streaming: bool) -> SegmentationData:
    import datasets

    try:
        loaded = datasets.load_dataset(source, config_name, streaming=streaming)
    except (OSError, ValueError, ConnectionError, datasets.exceptions.DatasetsError) as error:
        raise InputError(
            f"Cannot load dataset {source!r} from the Hub ({type(error).__name__}: {error}). Check the id and "
            "--dataset-config, log in (`hf auth login`) for a private one, or give a local folder."
        ) from None
    return SegmentationData(source, "hub", dict(loaded), id2label=hub_id2label(source))


def _local_id2label(root: Path, deep: bool = True) -> dict | None:
    found = (root / "id2label.json") if (root / "id2label.json").is_file() else None
    if found is None and deep:
        found = next(root.rglob("id2label.json"), None)
    return read_id2label(str(found)) if found else None


def _features(split) -> tuple:
    """(features, declared): the split's features, or for a stream that does not declare them the kinds of
    its first row's values (enough to find the columns)."""
    if split.features is not None:
        return split.features, True
    import datasets

    def kind(value):
        if hasattr(value, "mode") or isinstance(value, dict) and "bytes" in value:
            return datasets.Image()
        return datasets.Value("string") if isinstance(value, str) else None

    return {name: kind(value) for name, value in next(iter(split)).items()}, False


def _choose_columns(data: SegmentationData, image_column: str | None, label_column: str | None, masks: bool = True):
    """Finds the columns in the first split (the others must have them too) and the class names a
    ClassLabel of the mask column carries; without `masks` (images to segment), the image column only."""
    first_name, first = next(iter(data.splits.items()))
    features, declared = _features(first)
    if not masks:
        data.image_column, how = find_image_column(features, image_column)
        data.label_column = None
        data.notes.append(f"images in column {data.image_column!r} ({how}; --image-column overrides)")
        return
    data.image_column, data.label_column, how = find_columns(features, image_column, label_column)
    for name, split in data.splits.items():
        names = list(_features(split)[0]) if split is not first else list(features)
        missing = [c for c in (data.image_column, data.label_column) if c not in names]
        if missing:
            raise DataError(f"Split {name!r} of {data.source!r} has no column {missing} (split {first_name!r} has); "
                            f"its columns: {names}.")  # fmt: skip
    if data.id2label is None and declared:
        data.id2label = class_names(features, data.label_column)
    data.notes.append(f"columns: images {data.image_column!r}, masks {data.label_column!r} ({how}; "
                      "--image-column / --label-column override)")  # fmt: skip


def dataset_source(source: str | None) -> str:
    """Where a dataset is read from, decided without downloading anything: "builtin", "folder" or "hub".
    A local path that is not a folder (absolute, relative, ending in a slash: anything that cannot be a Hub
    dataset id) is an `InputError`, so a typo fails before a run reaches the Hub for anything."""
    if source in (None, BUILTIN_DATASET):
        return "builtin"
    path = Path(source)
    if path.is_dir():
        return "folder"
    if path.exists():
        raise InputError(f"Dataset {source!r} is a file: a local dataset is a folder (an official layout, "
                         "SPLIT/images + SPLIT/labels, a save_to_disk folder or Parquet files).")  # fmt: skip
    if not looks_like_repo_id(source):
        raise InputError(f"Dataset {source!r}: no such folder (a local dataset is a folder; a Hub dataset an id "
                         "like 'owner/name').")  # fmt: skip
    return "hub"


def load_splits(
    source: str = None,
    *,
    config_name: str = None,
    train_split: str = "train",
    eval_split: str = "validation",
    validation_fraction: float = 0.1,
    seed: int = 0,
    dataset_format: str | None = None,
) -> tuple:
    """(train, eval) `datasets.Dataset`s of `open_dataset(source)`. Without an eval split,
    `validation_fraction` of the training split is held out."""
    return train_and_eval(open_dataset(source, dataset_format=dataset_format, config_name=config_name, seed=seed),
                          train_split, eval_split, validation_fraction, seed)  # fmt: skip


def train_and_eval(data: SegmentationData, train_split: str, eval_split: str, validation_fraction: float, seed: int) -> tuple:
    """(train, eval) splits of `data`; a map-style dataset without an eval split holds out
    `validation_fraction` of the training split (a stream cannot: it has no known length)."""
    train = data.split(train_split)
    if data.has_split(eval_split):
        return train, data.split(eval_split)
    if data.streaming:
        raise DataError(f"Dataset {data.source!r} has no split {eval_split!r} to evaluate on, and a stream cannot hold "
                        f"samples out: name one of its splits {list(data.splits)} with --eval-split.")  # fmt: skip
    held_out = train.train_test_split(test_size=validation_fraction, seed=seed)
    data.notes.append(f"no split {eval_split!r}: holding out {len(held_out['test'])} training samples")
    return held_out["train"], held_out["test"]


def read_id2label(value: str) -> dict:
    """`id2label` from a JSON file, a JSON object or comma-separated names ("road,car,sky"): ids 0..N-1,
    each with a name."""
    try:
        if value.endswith(".json"):
            mapping = json.loads(Path(value).read_text())
        elif value.lstrip().startswith("{"):
            mapping = json.loads(value)
        else:
            mapping = dict(enumerate(name.strip() for name in value.split(",")))
        id2label = {int(key): str(name) for key, name in mapping.items()}
    except FileNotFoundError:
        raise InputError(f"id2label file {value}: no such file.") from None
    except (OSError, ValueError, AttributeError) as error:
        raise OptionError(f"id2label {value!r} is no JSON object of id -> name, nor 'name0,name1,...' ({error}).") from None
    if sorted(id2label) != list(range(len(id2label))) or not all(id2label.values()):
        raise OptionError(f"id2label {value!r} must name every class id 0..N-1 once, got ids {sorted(id2label)}.")
    return id2label


def hub_id2label(repo_id: str):
    """The `id2label.json` that many Hub segmentation datasets carry, or None."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return read_id2label(hf_hub_download(repo_id, "id2label.json", repo_type="dataset"))
    except (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError):  # absent, or offline
        return None
