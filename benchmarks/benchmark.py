"""Speed and memory of our SegFormer against `transformers.SegformerForSemanticSegmentation` (SDPA).

Both models get identical weights and must produce the same logits before anything is timed. Timings
interleave the two models round by round in one process, so that load from other processes hits both
alike; each line prints the median of the rounds and the ratio (>1: ours is faster). Peak memory is
measured in a fresh process per model. Targets (CPU, eager fp32): B0 batch 1 >= 3x, batch 4 >= 1.6x;
B2 batch 1 >= 3.5x, batch 4 >= 1.8x; training step >= 1.5x; peak inference memory no higher.

    python benchmarks/benchmark.py                      # everything, CPU fp32
    python benchmarks/benchmark.py --variants b0 --rounds 5 --skip-train --skip-memory
    python benchmarks/benchmark.py --fuse --compile     # also time `fuse()` and `torch.compile`
    python benchmarks/benchmark.py --threads 1 --clock cpu  # on a shared machine: CPU time of one thread
    python benchmarks/benchmark.py --device cuda --dtype bf16

With more threads than idle cores (other jobs running), OpenMP threads wait for each other and wall
times jump by 5-20x from round to round; `--threads 1 --clock cpu` stays within a few percent.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from transformers import SegformerForSemanticSegmentation as TransformersSegformer

from segformer import SegFormerConfig, SegFormerForSemanticSegmentation
from segformer.conversion.export import transformers_config, transformers_state_dict

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
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
    def step():
        with torch.inference_mode():
            model(pixel_values).logits
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


def report(label: str, seconds: dict, batch: int, extra: str = ""):
    ours, theirs = seconds["ours"], seconds["transformers"]
    print(
        f"{label:<34} ours {1000 * ours:8.1f} ms ({batch / ours:6.2f} img/s)   transformers "
        f"{1000 * theirs:8.1f} ms ({batch / theirs:6.2f} img/s)   ratio {theirs / ours:5.2f}x{extra}"
    )


def benchmark_inference(args, device, dtype):
    for variant in args.variants:
        ours, theirs = build_models(variant)
        pixel_values = torch.randn(1, 3, args.size, args.size)
        difference = check_logits(ours, theirs, pixel_values)
        flops = gflops(ours, pixel_values)
        print(
            f"\n{variant.upper()} {args.size}x{args.size}: logits max |diff| {difference:.1e}; ours "
            f"{flops:.1f} GFLOP = {flops / 2:.1f} G multiply-adds (paper {PAPER_GMACS[variant]} G at 512x512)"
        )
        ours.to(device, dtype)
        theirs.to(device, dtype)
        candidates = {"ours": ours, "transformers": theirs}
        for batch in args.batches:
            pixel_values = torch.randn(batch, 3, args.size, args.size, device=device, dtype=dtype)
            functions = {name: inference_step(model, pixel_values, device) for name, model in candidates.items()}
            if args.fuse:
                functions["fused"] = inference_step(fused_copy(ours), pixel_values, device)
            if args.compile:
                functions["compiled"] = inference_step(torch.compile(ours, fullgraph=True), pixel_values, device)
            seconds = interleaved(functions, args.rounds, CLOCKS[args.clock])
            extra = f"   ours {batch * flops / seconds['ours']:.0f} GFLOP/s"
            for name in ("fused", "compiled"):
                if name in seconds:
                    extra += f"   {name} {1000 * seconds[name]:.1f} ms ({seconds['transformers'] / seconds[name]:.2f}x)"
            report(f"{variant.upper()} batch {batch} inference", seconds, batch, extra)


def fused_copy(model):
    fused = SegFormerForSemanticSegmentation(model.config).to(model.device, model.dtype).eval()
    fused.load_state_dict(model.state_dict())
    return fused.fuse()


def benchmark_training(args, device):
    ours, theirs = build_models(args.train_variant)
    pixel_values = torch.randn(args.train_batch, 3, args.size, args.size, device=device)
    labels = torch.randint(0, 150, (args.train_batch, args.size, args.size), device=device)
    candidates = {"ours": ours, "transformers": theirs}
    for model in candidates.values():
        model.to(device).train()
    # Dropout and stochastic depth draw different random numbers in each model: compare gradients
    # of one step in eval mode (same function), then time in train mode.
    losses = {}
    for name, model in candidates.items():
        model.eval()
        losses[name] = model(pixel_values, labels=labels).loss.item()
        model.train()
    functions = {name: training_step(model, pixel_values, labels, device) for name, model in candidates.items()}
    seconds = interleaved(functions, max(args.rounds // 2, 3), CLOCKS[args.clock], warmup=1)
    print(f"\n{args.train_variant.upper()} training step: loss ours {losses['ours']:.6f} transformers {losses['transformers']:.6f}")
    report(f"{args.train_variant.upper()} batch {args.train_batch} train step (AdamW)", seconds, args.train_batch)


def memory_status(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak since the last reset), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_memory(args):
    """Run one inference in this (fresh) process; print how far it raised the resident memory, in MiB."""
    ours, theirs = build_models(args.peak_memory_variant)
    model = ours if args.peak_memory == "ours" else theirs
    del ours, theirs
    pixel_values = torch.randn(args.peak_memory_batch, 3, args.size, args.size)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets the peak (VmHWM) to the current resident size
    before = memory_status("VmRSS")
    with torch.inference_mode():
        model(pixel_values)
    print(json.dumps({"peak_rise_mib": memory_status("VmHWM") - before}))


def benchmark_memory(args):
    print()
    for variant in args.variants:
        for batch in args.batches:
            rises = {}
            for name in ("ours", "transformers"):
                command = [sys.executable, __file__, "--peak-memory", name, "--peak-memory-variant", variant,
                           "--peak-memory-batch", str(batch), "--size", str(args.size)]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                rises[name] = json.loads(output.strip().splitlines()[-1])["peak_rise_mib"]
            print(
                f"{variant.upper()} batch {batch} peak inference memory (rise of RSS)   ours {rises['ours']:7.1f} MiB"
                f"   transformers {rises['transformers']:7.1f} MiB   ratio {rises['transformers'] / max(rises['ours'], 1e-9):5.2f}x"
            )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["b0", "b2"], choices=list(PAPER_GMACS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per model (median reported)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall", help="what is timed (default: wall)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--fuse", action="store_true", help="also time our model after `fuse()`")
    parser.add_argument("--compile", action="store_true", help="also time `torch.compile(fullgraph=True)`")
    parser.add_argument("--train-variant", default="b0", choices=list(PAPER_GMACS))
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--peak-memory", choices=["ours", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--peak-memory-variant", default="b0", help=argparse.SUPPRESS)
    parser.add_argument("--peak-memory-batch", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_memory:
        return peak_memory(args)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    print(
        f"torch {torch.__version__}, device {device}, {args.dtype}, {torch.get_num_threads()} threads, {args.clock} clock, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    benchmark_inference(args, device, dtype)
    if not args.skip_train:
        benchmark_training(args, device)
    if not args.skip_memory and device.type == "cpu":
        benchmark_memory(args)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
