"""Training from a stream (`--streaming`): a `datasets.IterableDataset` read as it downloads, for datasets
bigger than the disk.

Each process reads its own part (`datasets.distributed.split_dataset_by_node`: whole shards when their
number divides by the processes, else every N-th sample), shuffled through a buffer whose order depends on
the seed and the epoch; DataLoader workers split the process's shards again (`datasets` does that). Every
sample carries (worker, position in that worker's stream), so the training loop knows exactly how far
each worker got in the batches it consumed; a checkpoint saves that, and a resumed run skips those samples
without decoding them and goes on with the same order and the same augmentations.
"""

from __future__ import annotations

from itertools import islice

import torch

from ..configuration_segformer import IGNORE_INDEX
from .dataset import SampleReader, image_columns_undecoded

POSITION = "stream_position"  # the batch key of (worker, samples that worker has delivered)


class StreamingSegmentation(SampleReader, torch.utils.data.IterableDataset):
    """A stream of checked, transformed samples: this process's part of `stream`, shuffled with a buffer
    of `buffer_size` samples. `skip` ({worker id: samples}) resumes each worker where it stopped."""

    def __init__(self, stream, transform, *, num_labels: int, image_column: str = "image", label_column: str = "label",
                 do_reduce_labels: bool = False, label_map: dict = None, ignore_index: int = IGNORE_INDEX, split: str = "train",
                 seed: int = 0, rank: int = 0, world_size: int = 1, buffer_size: int = 1000):  # fmt: skip
        from datasets.distributed import split_dataset_by_node

        stream = image_columns_undecoded(stream.select_columns([image_column, label_column]), (image_column, label_column))
        self.node_stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)
        self.stream = self.node_stream.shuffle(seed=seed, buffer_size=buffer_size)
        self.skip = {}
        self.configure(transform, num_labels=num_labels, image_column=image_column, label_column=label_column,
                       do_reduce_labels=do_reduce_labels, label_map=label_map, ignore_index=ignore_index, split=split,
                       seed=seed)  # fmt: skip

    def set_epoch(self, epoch: int):
        super().set_epoch(epoch)
        self.stream.set_epoch(epoch)  # a new shuffle (shard order and buffer) each epoch

    def _name(self, row: dict, where: str) -> str:
        value = row[self.image_column]
        path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
        return f"{self.split}[{where}]" + (f" ({path})" if path else "")

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        skip = self.skip.get(worker, 0)
        for position, row in enumerate(self.stream, start=1):
            if position <= skip:
                continue  # delivered before the checkpoint: not decoded again
            image, _, label = self.read_row(row, self._name(row, f"worker {worker}, sample {position}"))
            sample = self.sample(image, label, worker, position)
            sample[POSITION] = torch.tensor([worker, position])
            yield sample

    def first_samples(self, count: int):
        """(stored mask, class ids) of the first `count` samples of this process's part, unshuffled: what
        the audit of a stream reads."""
        for index, row in enumerate(islice(self.node_stream, count)):
            _, stored, label = self.read_row(row, self._name(row, f"sample {index + 1}"))
            yield stored, label


def take(stream, count: int | None, columns: tuple):
    """The first `count` rows (all without a count) of a stream as an in-memory `datasets.Dataset`, images
    kept as their encoded bytes: the validation split of a streamed run, evaluated again and again."""
    import datasets

    stream = image_columns_undecoded(stream.select_columns(list(columns)), columns)
    rows = list(islice(stream, count))
    features = datasets.Features({column: stream.features[column] for column in columns}) if stream.features else None
    return datasets.Dataset.from_list(rows, features=features)


def consumed(positions: dict, batch: dict) -> dict:
    """{worker: samples delivered} after `batch`, from its (worker, position) pairs (keys as strings, as a
    checkpoint's JSON stores them)."""
    positions = dict(positions)
    for worker, position in batch[POSITION].tolist():
        positions[str(worker)] = max(positions.get(str(worker), 0), position)
    return positions
