"""Batch jobs of any size, as `segformer predict` runs them: sources (files or a `datasets` split) sharded
across processes, images read ahead by DataLoader workers, batched by size, segmented by
`segformer.inference`, and written behind by a thread pool, atomically (files or Parquet shards).

- `sources`: what to segment and each process's shard
- `reading`: read-ahead workers and batches of one size
- `segmenting`: the loop, its options and its report
- `writing`: atomic files and the write pool
- `dataset_output`: Parquet shards, the dataset card, the upload
- `processes`: this process's place under `accelerate launch`
"""

from .dataset_output import DatasetWriter, push_dataset, shard_files, write_card
from .processes import Processes
from .reading import Read, ReadImages, batches_of_one_size, read_ahead
from .segmenting import ON_ERROR, JobOptions, JobReport, describe_time, run_job
from .sources import DatasetSource, FileSource, dataset_source, shard
from .writing import OUTPUTS, FileWriter, WritePool, atomic_write, parse_outputs, remove_temporaries

__all__ = [
    "DatasetSource", "DatasetWriter", "FileSource", "FileWriter", "JobOptions", "JobReport", "ON_ERROR", "OUTPUTS",
    "Processes", "Read", "ReadImages", "WritePool", "atomic_write", "batches_of_one_size", "dataset_source",
    "describe_time", "parse_outputs", "push_dataset", "read_ahead",
    "remove_temporaries", "run_job", "shard", "shard_files", "write_card",
]  # fmt: skip
