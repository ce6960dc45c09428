"""The training loop: one `accelerator.prepare`, gradient accumulation, logging, periodic evaluation
(keeping the best model) and checkpoints, resumable at any step."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .batches import build_train_loader, epoch_batches, gather_stream_positions, stream_batches
from .checkpoints import check_steps_left, load_checkpoint, save_checkpoint
from .evaluation import evaluate, evaluation_metrics
from .model import build_optimizer, build_scheduler
from .options import TrainingOptions
from .reporting import save_model


def optimizer_step(accelerator, model, loss, optimizer, scheduler, max_grad_norm):
    """Backward, then (under `accelerator.accumulate`, on the micro-batch that completes a step) gradient
    clipping to `max_grad_norm` (None: none), the optimizer and schedule steps and zeroed gradients."""
    accelerator.backward(loss)
    if accelerator.sync_gradients and max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


class RunningLoss:
    """The training loss since it was last logged (summed on the device: no sync per step)."""

    def __init__(self, accelerator):
        self.accelerator, self.total, self.count = accelerator, torch.zeros((), device=accelerator.device), 0

    def add(self, loss: torch.Tensor):
        self.total += loss.detach()
        self.count += 1

    def log(self, state: dict, progress, scheduler):
        """Its mean over the processes into the history, the progress bar and the trackers; then restarts."""
        mean = self.accelerator.reduce(self.total / self.count, reduction="mean").item()
        self.total.zero_()
        self.count = 0
        state["history"]["loss"].append((state["step"], mean))
        progress.set_postfix(loss=f"{mean:.3f}")
        self.accelerator.log({"train/loss": mean, "train/lr": scheduler.get_last_lr()[0]}, step=state["step"])


def every(value, steps_per_epoch: int) -> int:
    """Steps between two events from an option that is a number of steps or 'epoch'."""
    return steps_per_epoch if str(value) == "epoch" else int(value)


def tracker_config(options: TrainingOptions) -> dict:
    """Options as the scalars and strings trackers accept (without the token)."""
    values = {k: v for k, v in asdict(options).items() if k != "token"}
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}


def train(accelerator, model, processor, train_data, eval_loader, settings, options: TrainingOptions, id2label) -> tuple:
    """The training loop; returns the final `Evaluation` (with each image's mIoU, for the report), the
    trainer state and the prepared model."""
    train_loader = build_train_loader(train_data, options)
    optimizer = build_optimizer(model, options)
    if options.streaming:
        # Each process already reads its own part of the stream: the loader is not prepared (Accelerate would
        # dispatch or shard it again), its batches go to the device in `stream_batches`.
        model, optimizer = accelerator.prepare(model, optimizer)
        steps_per_epoch, max_steps = None, options.max_steps
    else:
        model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
        steps_per_epoch = math.ceil(len(train_loader) / options.gradient_accumulation_steps)
        max_steps = options.num_epochs * steps_per_epoch if options.num_epochs else options.max_steps
    scheduler = accelerator.prepare(build_scheduler(optimizer, options, max_steps, accelerator.num_processes))
    eval_every = every(options.eval_steps, steps_per_epoch)
    save_every = every(options.checkpointing_steps, steps_per_epoch)

    state = {"step": 0, "best_mean_iou": None, "best_step": None, "history": {"loss": [], "mean_iou": []}}
    if options.resume:
        state = load_checkpoint(accelerator, options.output_dir, options.resume)
        check_steps_left(state["step"], max_steps, options.resume)  # with --num-epochs, known only now
    size = "a stream" if options.streaming else f"{len(train_data)} samples, {steps_per_epoch} steps per epoch"
    accelerator.print(
        f"Training {max_steps} steps: {size}, batch {options.batch_size} x {options.gradient_accumulation_steps} "
        f"accumulation x {accelerator.num_processes} processes."
    )
    progress = tqdm(
        total=max_steps, initial=state["step"], desc="training", disable=not accelerator.is_local_main_process
    )
    running_loss = RunningLoss(accelerator)
    evaluation = None
    start_time, start_step = time.perf_counter(), state["step"]
    model.train()
    if options.streaming:
        batches = stream_batches(accelerator, train_loader, train_data, state)
    else:
        batches = epoch_batches(accelerator, train_loader, train_data, state, steps_per_epoch, max_steps,
                                options.gradient_accumulation_steps)  # fmt: skip
    for batch in batches:
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            optimizer_step(accelerator, model, loss, optimizer, scheduler, options.max_grad_norm)
        running_loss.add(loss)
        if not accelerator.sync_gradients:
            continue
        state["step"] += 1
        step = state["step"]
        progress.update(1)
        if step % options.logging_steps == 0 or step == max_steps:
            running_loss.log(state, progress, scheduler)
        if step % eval_every == 0 or step == max_steps:
            evaluation = evaluate(model, eval_loader, accelerator, settings, id2label, per_image=step >= max_steps)
            track_evaluation(accelerator, model, processor, state, evaluation_metrics(evaluation), options)
        if step % save_every == 0 and step < max_steps:
            if options.streaming:
                gather_stream_positions(accelerator, state)
            save_checkpoint(accelerator, options.output_dir, state, options.checkpoints_total_limit)
        if step >= max_steps:
            break
    progress.close()
    elapsed = time.perf_counter() - start_time
    samples = (
        (state["step"] - start_step) * options.batch_size * options.gradient_accumulation_steps * accelerator.num_processes
    )
    state["train_runtime_s"] = round(elapsed, 1)
    state["train_samples_per_second"] = round(samples / elapsed, 2) if elapsed else None
    return evaluation, state, model


def track_evaluation(accelerator, model, processor, state: dict, metrics: dict, options: TrainingOptions):
    """Logs an evaluation and keeps the best model so far in OUTPUT_DIR/best."""
    step = state["step"]
    state["history"]["mean_iou"].append((step, metrics["mean_iou"]))
    accelerator.log({f"eval/{k}": v for k, v in metrics.items() if not math.isnan(v)}, step=step)
    accelerator.print(
        f"step {step}: validation mIoU {metrics['mean_iou']:.4f}, pixel accuracy {metrics['overall_accuracy']:.4f}"
    )
    if state["best_mean_iou"] is None or metrics["mean_iou"] > state["best_mean_iou"]:
        state["best_mean_iou"], state["best_step"] = metrics["mean_iou"], step
        save_model(accelerator, model, processor, Path(options.output_dir) / "best")
