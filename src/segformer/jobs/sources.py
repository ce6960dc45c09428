"""What a job segments: image files, or the image column of a `datasets` split; each image with the name
its outputs are written under, and this process's share of them.

A source is a list-like of `(name, image source, what errors call it)` triples, indexed so that a reader in another process can
open item i by itself: the image source is a path (files) or a `datasets.Image(decode=False)` value
({"bytes", "path"}), which `segformer.files.open_image` opens in the reader, where a bad one is named and
skipped. `datasets` is imported only for dataset input (the optional `train` extra).
"""

from pathlib import Path

from ..errors import DataError, InputError, OptionError
from ..files import find_images, output_names


class FileSource:
    """Image files from the command line's files, folders and glob patterns, named by their stems."""

    def __init__(self, patterns: list):
        self.paths = find_images(patterns)
        self.names = output_names(self.paths)
        self.description = f"{len(self.paths)} image file(s)"

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple:
        return self.names[index], self.paths[index], str(self.paths[index])


class DatasetSource:
    """The images of one column of a `datasets.Dataset`, named by their row index (zero-padded, so that
    the names sort as the rows do). The column is read undecoded: a reader decodes each image itself."""

    def __init__(self, dataset, image_column: str, description: str):
        import datasets

        self.dataset = dataset.select_columns([image_column]).cast_column(image_column, datasets.Image(decode=False))
        self.column = image_column
        width = max(5, len(str(len(dataset) - 1)))
        self.names = [f"{index:0{width}d}" for index in range(len(dataset))]
        self.description = description

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        value = self.dataset[index][self.column]
        # Errors name the row, and the file it came from where the dataset kept its path.
        origin = f" ({value['path']})" if value.get("path") else ""
        return self.names[index], value, f"row {index}{origin}"


def load_split(name_or_path: str, split: str, config_name: str | None = None, revision: str | None = None,
               token: str | None = None):  # fmt: skip
    """One split of a dataset: a folder written by `save_to_disk`, a local folder `datasets.load_dataset`
    reads (Parquet files, an imagefolder, a `segformer predict --output-format dataset` folder), or a Hub
    dataset id. The one place predict loads a dataset, so that a richer loader can replace it."""
    import datasets

    path = Path(name_or_path)
    try:
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DataError(f"dataset {name_or_path!r} has no split {split!r}; its splits: {list(loaded)}")
                loaded = loaded[split]
            return loaded
        if not path.exists() and name_or_path.startswith((".", "/", "~")):
            raise InputError(f"dataset {name_or_path!r}: no such folder")
        return datasets.load_dataset(name_or_path, config_name, split=split, revision=revision, token=token)
    except ValueError as error:
        if "Unknown split" in str(error):
            raise DataError(f"dataset {name_or_path!r} has no split {split!r} ({error})") from None
        raise InputError(f"cannot load dataset {name_or_path!r}: {error}") from None
    except (OSError, ConnectionError, datasets.exceptions.DatasetsError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(
            f"cannot load dataset {name_or_path!r} ({type(error).__name__}: {error}): check the id, --split and "
            "--dataset-config, pass --token for a private one, or give a local folder"
        ) from None


def image_column(dataset, name: str | None = None) -> str:
    """The column that holds the images: `name` when given, else the one column of `datasets.Image` type."""
    import datasets

    if name is not None:
        if name not in dataset.column_names:
            raise OptionError(f"--image-column {name!r} is not a column of the dataset; its columns: {dataset.column_names}")
        return name
    images = [column for column, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
    if len(images) != 1:
        found = f"several image columns {images}" if images else f"no column of type datasets.Image (columns: {dataset.column_names})"
        raise DataError(f"the dataset has {found}: name the one to segment with --image-column")
    return images[0]


def dataset_source(name_or_path: str, split: str, column: str | None = None, **load_kwargs) -> DatasetSource:
    """The images of `split` of a dataset, in `column` (default: detected by its type)."""
    dataset = load_split(name_or_path, split, **load_kwargs)
    column = image_column(dataset, column)
    return DatasetSource(dataset, column, f"{len(dataset)} image(s) of {name_or_path} [{split}], column {column!r}")


def shard(count: int, process_index: int, num_processes: int) -> range:
    """The indices of `count` items that process `process_index` of `num_processes` segments: every
    `num_processes`-th, so every item is in exactly one shard and the shards differ by at most one item
    (and mix large and small images alike in a sorted folder)."""
    return range(process_index, count, num_processes)
