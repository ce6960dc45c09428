"""What a job segments: image files, or the image column of a `datasets` split; each image with the name
its outputs are written under, and this process's share of them.

A source is a list-like of `(name, image source, what errors call it)` triples, indexed so that a reader in another process can
open item i by itself: the image source is a path (files) or a `datasets.Image(decode=False)` value
({"bytes", "path"}), which `segformer.files.open_image` opens in the reader, where a bad one is named and
skipped. `datasets` is imported only for dataset input (the optional `train` extra).
"""

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


def dataset_source(name_or_path: str, split: str, column: str | None = None, config_name: str | None = None) -> DatasetSource:
    """The images of `split` of a dataset that `segformer train` reads too (`segformer.data.open_dataset`: the
    official layouts, `save_to_disk` folders, Parquet files, Hub ids), in `column` (default: found by type
    and name). Masks, if the dataset has them, are not needed."""
    from .. import data

    found = data.open_dataset(name_or_path, config_name=config_name, image_column=column, masks=False)
    dataset = found.split(split)
    description = f"{len(dataset)} image(s) of {name_or_path} [{found.split_name(split)}], column {found.image_column!r}"
    return DatasetSource(dataset, found.image_column, description)


def shard(count: int, process_index: int, num_processes: int) -> range:
    """The indices of `count` items that process `process_index` of `num_processes` segments: every
    `num_processes`-th, so every item is in exactly one shard and the shards differ by at most one item
    (and mix large and small images alike in a sorted folder)."""
    return range(process_index, count, num_processes)
