"""This process's place in a job run by several processes (`accelerate launch`), or the only process.

Under a launcher (torchrun-style WORLD_SIZE, or MPI) the processes join through Accelerate's
`PartialState` (gloo on CPUs, NCCL on GPUs); each segments its shard and they meet only at the start
(the output folder is ready) and at the end (the failures gathered, the dataset card written once).
A plain run imports no Accelerate at all.
"""

import os

import torch

# The variables launchers set for the number of processes (torchrun, Intel MPI / MPICH, Open MPI, MVAPICH).
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_processes() -> int:
    """How many processes the launcher started (1 without one)."""
    return max([int(os.environ.get(name, "1")) for name in WORLD_SIZE_VARIABLES])


class Processes:
    """`index` of `count` processes, `device` (the one Accelerate gives this process; None alone),
    `barrier()` and `gather(obj)` (the objects of every process, on every process)."""

    def __init__(self):
        self.state = None
        self.index, self.count, self.device = 0, 1, None
        if launched_processes() > 1:
            from accelerate import PartialState
            from accelerate.utils import parse_flag_from_env

            # As `Accelerator` does: `accelerate launch --cpu` (or ACCELERATE_USE_CPU=1) means processes on the
            # CPU, joined by gloo; so does a machine without a GPU.
            cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
            self.state = PartialState(cpu=cpu)
            self.index, self.count, self.device = self.state.process_index, self.state.num_processes, self.state.device

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def barrier(self):
        if self.state is not None:
            self.state.wait_for_everyone()

    def gather(self, obj) -> list:
        if self.state is None:
            return [obj]
        gathered = [None] * self.count
        torch.distributed.all_gather_object(gathered, obj)
        return gathered

    def describe(self) -> str:
        return "" if self.count == 1 else f" (process {self.index} of {self.count})"
