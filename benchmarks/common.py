"""What the benchmark's sections share: the two models on the same weights, the logits check, round-robin
timing on a chosen clock, FLOP counting and resident-memory readings."""

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from transformers import SegformerForSemanticSegmentation as TransformersSegformer

from segformer import SegFormerConfig, SegFormerForSemanticSegmentation
from segformer.conversion.to_transformers import transformers_config, transformers_state_dict
from segformer.inference import forward_logits

# wall: elapsed time, what a user waits. cpu: CPU seconds this process used (all threads), which other
# processes on a shared machine disturb far less; with --threads 1 it is close to the work done.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
PAPER_GMACS = {"b0": 8.4, "b1": 15.9, "b2": 62.4, "b3": 79.0, "b4": 95.7, "b5": 183.3}  # 512x512, ADE20K


def build_models(variant: str, num_labels: int = 150, seed: int = 0):
    """Ours and transformers' with the same random weights (transformers' LayerNorm epsilon)."""
    torch.manual_seed(seed)
    ours = SegFormerForSemanticSegmentation(
        SegFormerConfig.from_variant(variant, num_labels=num_labels, layer_norm_eps=1e-5)
    )
    # Non-trivial BatchNorm statistics, so that the comparison covers them.
    bn = ours.decode_head.linear_fuse.bn
    bn.running_mean.normal_(0, 0.1)
    bn.running_var.uniform_(0.5, 1.5)
    theirs = TransformersSegformer._from_config(transformers_config(ours), attn_implementation="sdpa")
    theirs.load_state_dict(transformers_state_dict(ours, layout="5"), strict=True)
    return ours.eval(), theirs.eval()


def check_logits(ours, theirs, pixel_values, tolerance=1e-4) -> float:
    with torch.inference_mode():
        difference = (ours(pixel_values).logits - theirs(pixel_values).logits).abs().max().item()
    if not difference <= tolerance:
        raise SystemExit(f"Logits differ by {difference:.2e} > {tolerance:.0e}: the timings would compare different functions.")
    return difference


def interleaved(functions: dict, rounds: int, clock, warmup: int = 2) -> dict:
    """Median seconds per call of each function on `clock`, timed round-robin (the order alternates
    per round)."""
    names = list(functions)
    for _ in range(warmup):
        for name in names:
            functions[name]()
    times = {name: [] for name in names}
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            start = clock()
            functions[name]()
            times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def inference_step(model, pixel_values, device):
    # As `segformer.inference` runs a batch (micro-batches on a CPU), for every model alike.
    def step():
        with torch.inference_mode():
            forward_logits(model, pixel_values.to(model.device))
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def training_step(model, pixel_values, labels, device):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(pixel_values, labels=labels).loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


# torch's counter knows the CUDA attention kernels only; the CPU one does the same two matmuls.
FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention_flops}


def gflops(model, pixel_values) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
        model(pixel_values)
    return counter.get_total_flops() / 1e9


def memory_status(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak since the last reset), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")
