"""The pretraining loop, on the engine of `segformer train`: its Accelerate setup, batches in resumable
epochs (`train.batches`), atomic checkpoints (`train.checkpoints`) and tracker config; here the classifier's
step (Mixup/CutMix, soft-target cross-entropy, EMA) and the top-1/top-5 evaluation."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..train.batches import build_train_loader, epoch_batches
from ..train.checkpoints import check_steps_left, load_checkpoint, save_checkpoint
from ..train.loop import RunningLoss, every, optimizer_step
from .mixing import Mixing, soft_cross_entropy
from .model import WeightAverage, build_optimizer, cosine_with_warmup


def build_eval_loader(dataset, batch_size: int, num_workers: int, accelerator) -> torch.utils.data.DataLoader:
    """Each process every num_processes-th validation image, none repeated (counts are summed)."""
    shard = torch.utils.data.Subset(dataset, range(accelerator.process_index, len(dataset), accelerator.num_processes))
    return torch.utils.data.DataLoader(shard, batch_size=batch_size, num_workers=num_workers)


@torch.no_grad()
def evaluate(model, loader, accelerator) -> dict:
    """Top-1 and top-5 accuracy (fractions) and the cross-entropy over the whole validation split."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=accelerator.device)  # top-1, top-5, loss sum, images
    for batch in loader:
        pixels, labels = batch["pixel_values"].to(accelerator.device), batch["labels"].to(accelerator.device)
        logits = model(pixel_values=pixels).logits.float()
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices == labels[:, None]
        totals += torch.stack([top[:, 0].sum(), top.any(-1).sum(), F.cross_entropy(logits, labels, reduction="sum"),
                               torch.tensor(len(labels), device=logits.device)]).double()  # fmt: skip
    totals = accelerator.reduce(totals, reduction="sum")
    model.train(was_training)
    count = max(totals[3].item(), 1)
    return {"top1": totals[0].item() / count, "top5": totals[1].item() / count, "loss": totals[2].item() / count}


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of Mixup/CutMix at `step`: a function of (seed, step), so a resumed run mixes alike."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, 7]).generate_state(1)[0]))


def train(accelerator, model, train_data, eval_data, options, num_classes: int) -> tuple:
    """Trains as `options` say; returns (last evaluation, the EMA's or None, trainer state, prepared model,
    EMA or None)."""
    train_loader = build_train_loader(train_data, options)
    global_batch = options.batch_size * options.gradient_accumulation_steps * accelerator.num_processes
    learning_rate = options.learning_rate_for(global_batch)
    optimizer = build_optimizer(model, learning_rate, options.weight_decay)
    ema = None
    if options.ema_decay:  # copied before `prepare`, which wraps the model's forward (autocast) in place
        ema = WeightAverage(model, options.ema_decay)
        ema.model.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    steps_per_epoch = math.ceil(len(train_loader) / options.gradient_accumulation_steps)
    max_steps = options.max_steps or options.num_epochs * steps_per_epoch
    warmup = options.warmup_steps if options.warmup_steps is not None else round(options.warmup_epochs * steps_per_epoch)
    warmup = min(warmup, max_steps - 1)
    scheduler = accelerator.prepare(cosine_with_warmup(optimizer, learning_rate, options.warmup_learning_rate,
                                                       options.min_learning_rate, warmup, max_steps, accelerator.num_processes))  # fmt: skip
    mixing = Mixing(num_classes, options.mixup, options.cutmix, options.mixup_switch_prob, options.label_smoothing)
    eval_loader = build_eval_loader(eval_data, options.eval_batch_size, options.num_workers, accelerator)
    eval_every, save_every = every(options.eval_steps, steps_per_epoch), every(options.checkpointing_steps, steps_per_epoch)

    state = {"step": 0, "history": {"loss": [], "top1": [], "top5": [], "ema_top1": []}}
    if options.resume:
        state = load_checkpoint(accelerator, options.output_dir, options.resume)
        check_steps_left(state["step"], max_steps, options.resume)
    else:  # where the curve starts: chance
        record(accelerator, state, evaluate(model, eval_loader, accelerator), None)
    state.update(learning_rate=learning_rate, max_steps=max_steps, warmup_steps=warmup)  # as resolved, for the card
    accelerator.print(
        f"Training {max_steps} steps: {len(train_data)} images, {steps_per_epoch} steps per epoch, batch "
        f"{options.batch_size} x {options.gradient_accumulation_steps} accumulation x {accelerator.num_processes} "
        f"processes, peak learning rate {learning_rate:.3g}, warmup {warmup} steps."
    )
    progress = tqdm(total=max_steps, initial=state["step"], desc="pretraining", disable=not accelerator.is_local_main_process)
    running_loss = RunningLoss(accelerator)
    evaluation = ema_evaluation = None
    start_time, start_step = time.perf_counter(), state["step"]
    model.train()
    batches = epoch_batches(accelerator, train_loader, train_data, state, steps_per_epoch, max_steps,
                            options.gradient_accumulation_steps)  # fmt: skip
    for micro, batch in enumerate(batches):
        # One generator per batch, from (seed, step, batch within the step, process): reproducible on resume.
        generator = step_generator(options.seed, (state["step"] * options.gradient_accumulation_steps + micro
                                                  % options.gradient_accumulation_steps) * 4096 + accelerator.process_index)  # fmt: skip
        pixels, targets, _, _ = mixing(batch["pixel_values"], batch["labels"], generator)
        with accelerator.accumulate(model):
            loss = soft_cross_entropy(model(pixel_values=pixels).logits, targets)
            optimizer_step(accelerator, model, loss, optimizer, scheduler, options.max_grad_norm)
        running_loss.add(loss)
        if not accelerator.sync_gradients:
            continue
        if ema is not None:
            ema.update(accelerator.unwrap_model(model))
        state["step"] += 1
        step = state["step"]
        progress.update(1)
        if step % options.logging_steps == 0 or step == max_steps:
            running_loss.log(state, progress, scheduler)
        if step % eval_every == 0 or step == max_steps:
            evaluation = evaluate(model, eval_loader, accelerator)
            ema_evaluation = evaluate(ema.model, eval_loader, accelerator) if ema is not None else None
            record(accelerator, state, evaluation, ema_evaluation)
        if step % save_every == 0 and step < max_steps:
            save_checkpoint(accelerator, options.output_dir, state, options.checkpoints_total_limit)
        if step >= max_steps:
            break
    progress.close()
    elapsed = time.perf_counter() - start_time
    state["train_runtime_s"] = round(elapsed, 1)
    state["train_samples_per_second"] = round((state["step"] - start_step) * global_batch / elapsed, 2) if elapsed else None
    return evaluation, ema_evaluation, state, model, ema


def record(accelerator, state: dict, evaluation: dict, ema_evaluation: dict | None):
    """Logs an evaluation into the history, the trackers and the console."""
    step = state["step"]
    for key in ("top1", "top5"):
        state["history"][key].append((step, evaluation[key]))
    logged = {f"eval/{key}": value for key, value in evaluation.items()}
    line = f"step {step}: validation top-1 {evaluation['top1']:.4f}, top-5 {evaluation['top5']:.4f}, loss {evaluation['loss']:.4f}"
    if ema_evaluation is not None:
        state["history"]["ema_top1"].append((step, ema_evaluation["top1"]))
        logged.update({f"eval_ema/{key}": value for key, value in ema_evaluation.items()})
        line += f"; EMA top-1 {ema_evaluation['top1']:.4f}"
    accelerator.log(logged, step=step)
    accelerator.print(line)
