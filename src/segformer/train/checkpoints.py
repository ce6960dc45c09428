"""Resumable training state: atomic `accelerator.save_state` checkpoints, the newest K kept, and resuming
from a folder or the latest one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import InputError, OptionError

TRAINER_STATE = "trainer_state.json"


def checkpoint_dirs(output_dir) -> list:
    """Complete checkpoints, oldest first. A checkpoint is complete once it has its final name:
    `save_checkpoint` writes into a hidden partial folder and renames it at the end."""
    root = Path(output_dir) / "checkpoints"
    found = [p for p in root.glob("step_*") if (p / TRAINER_STATE).is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def save_checkpoint(accelerator, output_dir, state: dict, limit: int = None) -> Path:
    """`save_state` into `.partial_step_N`, then an atomic rename to `step_N`: a kill during the save
    leaves the previous checkpoints as they were. Keeps the newest `limit` checkpoints."""
    root = Path(output_dir) / "checkpoints"
    final = root / f"step_{state['step']}"
    partial = root / f".partial_step_{state['step']}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)  # left over by a killed save
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / TRAINER_STATE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in checkpoint_dirs(output_dir)[: -limit if limit else 0]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def checkpoint_path(output_dir, resume: str) -> Path:
    """The checkpoint folder that --resume names: a folder, or 'latest' in OUTPUT_DIR/checkpoints."""
    if resume == "latest":
        found = checkpoint_dirs(output_dir)
        if not found:
            raise InputError(f"--resume latest: no checkpoint in {Path(output_dir) / 'checkpoints'}.")
        path = found[-1]
    else:
        path = Path(resume)
        if not (path / TRAINER_STATE).is_file():
            raise InputError(f"--resume {resume}: not a complete checkpoint folder (no {TRAINER_STATE}).")
    return path


def checkpoint_step(path) -> int:
    """The step a complete checkpoint folder was saved at."""
    return json.loads((Path(path) / TRAINER_STATE).read_text())["step"]


def check_steps_left(step: int, max_steps: int, resume: str):
    """An `OptionError` when a checkpoint at `step` leaves nothing to train in a run of `max_steps`."""
    if step >= max_steps:
        raise OptionError(
            f"--resume {resume}: the checkpoint is at step {step} and this run ends at step {max_steps} "
            f"(--max-steps, or --num-epochs): nothing is left to train. Raise --max-steps (or --num-epochs) past "
            f"{step} to train on from it."
        )


def load_checkpoint(accelerator, output_dir, resume: str) -> dict:
    """Restores model, optimizer, scheduler and RNG states; returns the trainer state (step, history)."""
    path = checkpoint_path(output_dir, resume)
    accelerator.load_state(str(path), load_kwargs={"weights_only": True})
    accelerator.print(f"Resumed from {path}.")
    return json.loads((path / TRAINER_STATE).read_text())
