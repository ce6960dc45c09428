"""Loading segmentation datasets: the built-in one, local folders and Hub datasets, as `datasets`
splits; and class names (`id2label`) from the forms users give them in.

`datasets` (the optional `train` extra) is imported where it is used: the `segformer` command imports
this module to build its help, which must work without the extra.
"""

import json
from pathlib import Path

from ..errors import DataError, InputError, OptionError
from ..files import IMAGE_SUFFIXES
from ..loading import looks_like_repo_id
from .builtin import BUILTIN_DATASET, generate_builtin_dataset, image_pairs


def _paired_folder_split(folder: Path):
    """`folder/images/NAME.*` paired with `folder/labels/NAME.png` (the same stem)."""
    images = {p.stem: p for p in sorted((folder / "images").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    labels = {p.stem: p for p in sorted((folder / "labels").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    unpaired = sorted(set(images) ^ set(labels))
    if unpaired:
        raise DataError(
            f"{folder}: {len(unpaired)} files have no partner in images/ and labels/ (same name stem), e.g. "
            f"{unpaired[:5]}. Every image needs a mask with the same stem."
        )
    return image_pairs([str(images[stem]) for stem in images], [str(labels[stem]) for stem in images])


def load_local_folder(root: Path):
    """A local dataset: either `imagefolder` with a metadata.jsonl/csv whose `image_file_name` and
    `label_file_name` columns pair the files, or one folder per split with `images/` and `labels/`."""
    import datasets

    if any(root.rglob("metadata.jsonl")) or any(root.rglob("metadata.csv")):
        return datasets.load_dataset("imagefolder", data_dir=str(root))
    splits = {p.name: _paired_folder_split(p) for p in sorted(root.iterdir()) if (p / "images").is_dir()}
    if (root / "images").is_dir():
        splits["train"] = _paired_folder_split(root)
    if not splits:
        raise DataError(
            f"{root} holds no dataset: expected SPLIT/images + SPLIT/labels folders (or images/ + labels/), "
            "or an imagefolder with metadata.jsonl pairing `image_file_name` and `label_file_name`."
        )
    return datasets.DatasetDict(splits)


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
        raise InputError(f"Dataset {source!r} is a file: a local dataset is a folder (SPLIT/images + SPLIT/labels).")
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
) -> tuple:
    """(train, eval) `datasets.Dataset`s from the built-in set (None or "builtin"), a local folder or
    a Hub dataset id. Without an eval split, `validation_fraction` of the training split is held out."""
    import datasets

    kind = dataset_source(source)
    if kind == "builtin":
        splits = generate_builtin_dataset(seed=seed)
    elif kind == "folder":
        splits = load_local_folder(Path(source))
    else:
        try:
            splits = datasets.load_dataset(source, config_name)
        except (OSError, ValueError, ConnectionError, datasets.exceptions.DatasetsError) as error:
            raise InputError(
                f"Cannot load dataset {source!r} from the Hub ({type(error).__name__}: {error}). Check the id and "
                "--dataset-config, log in (`hf auth login`) for a private one, or give a local folder."
            ) from None
    if train_split not in splits:
        raise DataError(f"Dataset {source!r} has no split {train_split!r}; its splits: {list(splits)}.")
    train = splits[train_split]
    if eval_split in splits:
        return train, splits[eval_split]
    held_out = train.train_test_split(test_size=validation_fraction, seed=seed)
    print(f"Dataset {source!r} has no split {eval_split!r}: holding out {len(held_out['test'])} training samples.")
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
