"""The training batches in order from where a run stands: epochs of a map-style dataset (resumed with
Accelerate's `skip_first_batches`), or an endless stream (`--streaming`, resumed at each DataLoader
worker's position, which the trainer state carries into every checkpoint)."""

from __future__ import annotations

import math

import torch

from .. import data
from ..data.streaming import POSITION, consumed
from ..errors import DataError, OptionError
from .options import TrainingOptions


def build_train_loader(train_data, options: TrainingOptions) -> torch.utils.data.DataLoader:
    """Shuffled batches of a map-style dataset; a stream's own order (`StreamingSegmentation` shuffles)."""
    streaming = isinstance(train_data, data.StreamingSegmentation)
    loader = torch.utils.data.DataLoader(
        train_data,
        batch_size=options.batch_size,
        shuffle=not streaming,
        drop_last=True,
        num_workers=options.num_workers,
        # Its own generator keeps worker seeding off the global RNG, which dropout draws from.
        generator=torch.Generator().manual_seed(options.seed),
    )
    if not streaming and len(loader) == 0:
        raise DataError(
            f"The training split has {len(train_data)} samples, fewer than one batch of {options.batch_size}."
        )
    return loader


def epoch_batches(accelerator, loader, train_data, state: dict, steps_per_epoch: int, max_steps: int, accumulation: int):
    """A prepared loader's batches, epoch after epoch, from step `state["step"]` on."""
    for epoch in range(state["step"] // steps_per_epoch, math.ceil(max_steps / steps_per_epoch)):
        loader.set_epoch(epoch)
        train_data.set_epoch(epoch)
        done_in_epoch = state["step"] - epoch * steps_per_epoch
        yield from accelerator.skip_first_batches(loader, done_in_epoch * accumulation) if done_in_epoch else loader


def stream_batches(accelerator, loader, train_data, state: dict):
    """A stream's batches on this process's device, without end: a new epoch (a new shuffle) whenever the
    stream runs out. `state["stream"]["ranks"][rank]` ({"epoch", "positions": {worker: samples}}) says what
    this process consumed, updated as each batch is handed out, so a checkpoint taken after the step
    resumes right after it. Processes run their parts independently: each makes the same number of steps,
    whatever its length."""
    layout = {"processes": accelerator.num_processes, "workers": loader.num_workers}
    stream = state.setdefault("stream", {**layout, "ranks": {}})
    if {key: stream[key] for key in layout} != layout:
        raise OptionError(
            f"The checkpoint's stream positions are those of {stream['processes']} processes with {stream['workers']} "
            f"DataLoader workers each; resume a --streaming run with the same (now {layout['processes']} and "
            f"{layout['workers']}: --num-workers {stream['workers']})."
        )
    mine = stream["ranks"].setdefault(str(accelerator.process_index), {"epoch": 0, "positions": {}})
    while True:
        train_data.set_epoch(mine["epoch"])
        train_data.skip = {int(worker): count for worker, count in mine["positions"].items()}
        count = 0
        for batch in loader:
            count += 1
            mine["positions"] = consumed(mine["positions"], batch)
            batch.pop(POSITION)
            yield {key: value.to(accelerator.device) for key, value in batch.items()}
        if count == 0 and not mine["positions"]:
            raise DataError(f"The training stream gave fewer samples than one batch of {loader.batch_size} on this process.")
        mine["epoch"] += 1
        mine["positions"] = {}


def gather_stream_positions(accelerator, state: dict):
    """Every process's stream position into `state` (the main process writes the checkpoint)."""
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        rank = str(accelerator.process_index)
        for shard in gather_object([{rank: state["stream"]["ranks"][rank]}]):
            state["stream"]["ranks"].update(shard)
