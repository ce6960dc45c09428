"""Label maps as a dataset (`--output-format dataset`): Parquet shards that `datasets.load_dataset(folder)`
reads back and `--push-to-hub` publishes.

    OUT/README.md                             the dataset card: which files are which split, the columns
    OUT/id2label.json                         the class names, {"0": "wall", ...}
    OUT/data/SPLIT-PPP-NNNNN.parquet          shard NNNNN of process PPP: columns `name` (string) and
                                              `label` (datasets.Image: the label map as PNG bytes, the
                                              file `--outputs labels` writes), and `overlay` if asked for

Each shard is written whole and atomically once it holds `shard_size` rows (the last one at the end), so
a killed job loses at most the rows of its unfinished shard; `--skip-existing` reads the names of the
shards present and resumes after them.
"""

import json
from pathlib import Path

from ..errors import HubError, OptionError, OutputError
from ..visualization import label_image, overlay_with_legend
from .writing import PNG_COMPRESSION, WritePool, atomic_write, png_bytes

SHARD_SIZE = 1000


def shard_files(folder: Path, split: str | None = None) -> list:
    """The Parquet shards in OUT/data, of one split or of all."""
    files = sorted((Path(folder) / "data").glob("*.parquet"))
    return [file for file in files if split is None or split_of(file) == split]


def split_of(file: Path) -> str:
    return file.stem.rsplit("-", 2)[0]


class DatasetWriter:
    """Label maps (and overlays) of one split as rows of Parquet shards in `folder`/data."""

    def __init__(self, folder: Path, split: str, outputs: tuple, palette, id2label: dict, alpha: float, threads: int,
                 process_index: int = 0, shard_size: int = SHARD_SIZE, compress_level: int = PNG_COMPRESSION):  # fmt: skip
        if "probabilities" in outputs:
            raise OptionError("--output-format dataset holds label maps and overlays: write probabilities as files")
        self.folder, self.split, self.outputs = Path(folder), split, outputs
        self.palette, self.id2label, self.alpha = palette, id2label, alpha
        self.process_index, self.shard_size, self.compress_level = process_index, shard_size, compress_level
        (self.folder / "data").mkdir(exist_ok=True)
        self.pool = WritePool(threads)
        self.rows = []
        mine = [file for file in shard_files(folder, split) if file.stem.rsplit("-", 2)[1] == f"{process_index:03d}"]
        self.next_number = 1 + max((int(file.stem.rsplit("-", 1)[1]) for file in mine), default=-1)

    def finished(self) -> set:
        """The names in the shards of this split already written (by any process)."""
        import pyarrow.parquet as pq

        return {name for file in shard_files(self.folder, self.split) for name in pq.read_table(file, columns=["name"])["name"].to_pylist()}

    def submit(self, name: str, label_map, image=None, probabilities=None):
        self.rows.append(self.pool.executor.submit(self._row, name, label_map, image))
        if len(self.rows) >= self.shard_size:
            self.pool.submit(self._write_shard, self.rows, self.next_number)
            self.rows, self.next_number = [], self.next_number + 1

    def _row(self, name: str, label_map, image) -> dict:
        row = {"name": name, "label": {"bytes": png_bytes(label_image(label_map, self.palette), self.compress_level), "path": None}}
        if "overlays" in self.outputs:
            overlay = overlay_with_legend(image, label_map, self.palette, self.id2label, self.alpha)
            row["overlay"] = {"bytes": png_bytes(overlay, self.compress_level), "path": None}
        return row

    def _write_shard(self, rows: list, number: int):
        import datasets

        features = {"name": datasets.Value("string"), "label": datasets.Image()}
        if "overlays" in self.outputs:
            features["overlay"] = datasets.Image()
        import pyarrow.parquet as pq

        # The Arrow table of a `datasets.Dataset` carries the features in its schema metadata, so the shard
        # reads back with `label` as an image column.
        table = datasets.Dataset.from_list([row.result() for row in rows], features=datasets.Features(features)).data.table
        path = self.folder / "data" / f"{self.split}-{self.process_index:03d}-{number:05d}.parquet"
        atomic_write(path, lambda file: pq.write_table(table, file))

    def close(self):
        if self.rows:
            self.pool.submit(self._write_shard, self.rows, self.next_number)
            self.rows = []
        self.pool.close()


def write_card(folder: Path, id2label: dict, model: str, overlays: bool = False):
    """README.md (the dataset card: one split per SPLIT-*.parquet family) and id2label.json, for every
    split in the folder. Run by one process once the shards are written."""
    folder = Path(folder)
    splits = sorted({split_of(file) for file in shard_files(folder)})
    configs = "\n".join(f"  - split: {split}\n    path: data/{split}-*.parquet" for split in splits)
    card = (
        f"---\nconfigs:\n- config_name: default\n  data_files:\n{configs}\ntags:\n- image-segmentation\n- segformer\n---\n\n"
        f"# Label maps predicted by `{model}`\n\n"
        "Written by `segformer predict --output-format dataset`. Each row: `name` (the input image: its file "
        "stem, or its row index in the input dataset) and `label`, the label map as a PNG whose pixel values are "
        "class ids (8-bit palette PNG in the class colours; 16-bit greyscale past 256 classes)"
        + (", and `overlay`, the colours over the image" if overlays else "")
        + ". `id2label.json` names the classes.\n\n"
        "```python\nimport datasets, numpy as np\n\n"
        f"rows = datasets.load_dataset(\"path/or/repo\", split=\"{splits[0] if splits else 'train'}\")\n"
        "label_map = np.array(rows[0][\"label\"])  # (H, W) class ids\n```\n"
    )
    atomic_write(folder / "README.md", lambda file: file.write(card.encode()))
    names = json.dumps({str(key): value for key, value in sorted(id2label.items())}, indent=1)
    atomic_write(folder / "id2label.json", lambda file: file.write(names.encode()))


def push_dataset(folder: Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload the dataset folder (card, id2label.json, shards) to the Hub dataset `repo_id`, created if
    missing; returns the commit URL."""
    from huggingface_hub import HfApi

    if not (Path(folder) / "README.md").is_file():
        raise OutputError(f"{folder} holds no dataset card: nothing to push")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(folder),
            allow_patterns=["README.md", "id2label.json", "data/*.parquet"],
            commit_message="Upload label maps predicted by segformer",
        )
    except Exception as error:  # the client's errors are of many kinds; all mean the upload failed
        raise HubError(f"cannot push {folder} to the Hub dataset {repo_id!r}: {type(error).__name__}: {error}") from error
    return str(getattr(commit, "commit_url", commit))


__all__ = ["DatasetWriter", "push_dataset", "shard_files", "write_card"]
