"""Speed, memory and accuracy of our SegFormer's inference modes against `transformers.SegformerForSemanticSegmentation` (SDPA).

One table: mode (fp32, fp32+compile, bf16, int8, ONNX Runtime fp32/int8; see benchmarks/modes.py) x variant x
batch: milliseconds per batch, images/s, peak memory of one call, and the ratio against transformers in the same
dtype and against transformers fp32 (>1: ours is faster). Both models get identical weights and must produce
the same fp32 logits before anything is timed; all models of one (variant, batch) are timed round-robin in
one process, so that load from other processes hits them alike (medians of the rounds).

Accuracy columns come from the built-in model (`segformer train`, B0 on the generated dataset; trained once
and cached, see benchmarks/accuracy.py): per mode, the share of validation pixels labelled as fp32 labels
them and the validation mIoU change. A mode under 99% agreement or losing over 0.5 mIoU point is flagged.

Goals (CPU): fp32 B0 batch 1 >= 4x and batch 4 >= 2.2x transformers fp32; B2 batch 1 >= 4.5x, batch 4 >=
2.4x; bf16 B0 batch 1 >= 6x transformers fp32 with >= 99.5% agreement; int8 >= 1.3x our fp32, <= 0.5 mIoU
point lost. Also: a training step against transformers', and peak inference memory in fresh processes.

    python benchmarks/benchmark.py                      # everything, CPU
    python benchmarks/benchmark.py --variants b0 --modes fp32 int8 --rounds 5 --skip-train --skip-memory
    python benchmarks/benchmark.py --threads 1 --clock cpu  # on a shared machine: CPU time of one thread
    python benchmarks/benchmark.py --device cuda --modes fp32 fp32+compile bf16 fp16

With more threads than idle cores (other jobs running), OpenMP threads wait for each other and wall
times jump by 5-20x from round to round; `--threads 1 --clock cpu` stays within a few percent.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import accuracy
from benchmarks.common import (
    CLOCKS, PAPER_GMACS, build_models, check_logits, gflops, inference_step, interleaved, memory_status, training_step,
)
from benchmarks.modes import DEFAULT_MODES, MODES, build_ours, build_peer, input_for, peer_dtype, timeable, warm_up_seconds
from segformer.precision import describe_device


def peak_rise_mib(model, pixel_values, device) -> float:
    """How far one call raises memory: the peak resident size (CPU) or allocated CUDA memory, in MiB."""
    pixel_values = input_for(model, pixel_values)
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            model(pixel_values)
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets the peak (VmHWM) to the current resident size
    before = memory_status("VmRSS")
    with torch.inference_mode():
        model(pixel_values)
    return memory_status("VmHWM") - before


def measure_accuracy(args, device) -> dict:
    """{mode: (agreement with fp32, mIoU change)} on the trained built-in model's validation split."""
    model, processor = accuracy.trained_model(Path(args.accuracy_cache))
    samples = accuracy.validation_set(processor)
    settings = accuracy.InferenceSettings.from_processor(processor)
    num_labels = model.config.num_labels
    reference = accuracy.label_maps(model.to(device), samples, settings)
    reference_miou = accuracy.mean_iou(reference, samples, num_labels)
    print(f"\nAccuracy model: built-in B0, {len(samples)} validation images, fp32 mIoU {100 * reference_miou:.2f}")
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for mode in args.modes:
            if mode in ("int8", "ort-fp32", "ort-int8") and device.type != "cpu":
                continue
            run_device = "cpu" if mode.startswith(("int8", "ort")) else device
            built = build_ours(model.cpu(), mode, run_device, Path(scratch), torch.get_num_threads())
            predictions = accuracy.label_maps(built, samples, settings)
            results[mode] = (accuracy.agreement(predictions, reference), accuracy.mean_iou(predictions, samples, num_labels) - reference_miou)
    return results


def benchmark_table(args, device):
    accuracies = {} if args.skip_accuracy else measure_accuracy(args, device)
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="segformer-benchmark-"))
    for variant in args.variants:
        ours, theirs = build_models(variant)
        pixel_values = torch.randn(1, 3, args.size, args.size)
        difference = check_logits(ours, theirs, pixel_values)
        flops = gflops(ours, pixel_values)
        print(f"\n{variant.upper()} {args.size}x{args.size}: fp32 logits max |diff| {difference:.1e}; {flops:.1f} GFLOP "
              f"= {flops / 2:.1f} G multiply-adds (paper {PAPER_GMACS[variant]} G at 512x512)")
        modes = {}
        for mode in args.modes:
            ok, why = timeable(mode, device)
            if not ok:
                print(f"  {mode}: not timed ({why})")
                continue
            modes[mode] = build_ours(ours, mode, device if mode not in ("int8",) else "cpu", scratch, torch.get_num_threads())
        peers = {dtype: build_peer(theirs, dtype, device) for dtype in {"fp32"} | {peer_dtype(m) for m in modes}}
        for batch in args.batches:
            pixel_values = torch.randn(batch, 3, args.size, args.size)
            if "fp32+compile" in modes:
                seconds = warm_up_seconds(modes["fp32+compile"], pixel_values)
                print(f"  fp32+compile warm-up (compilation) at batch {batch}: {seconds:.1f} s")
            functions = {("ours", m): inference_step(model, pixel_values, device) for m, model in modes.items()}
            functions.update({("transformers", d): inference_step(model, pixel_values, device) for d, model in peers.items()})
            seconds = interleaved(functions, args.rounds, CLOCKS[args.clock])
            memory = {mode: peak_rise_mib(model, pixel_values, device) for mode, model in modes.items()}
            theirs_memory = peak_rise_mib(peers["fp32"], pixel_values, device)
            for mode in modes:
                mine, same, fp32 = seconds[("ours", mode)], seconds[("transformers", peer_dtype(mode))], seconds[("transformers", "fp32")]
                rows.append((variant, batch, mode, mine, memory[mode], same / mine, fp32 / mine, seconds[("ours", "fp32")] / mine if "fp32" in modes else float("nan")))
            rows.append((variant, batch, "transformers fp32", seconds[("transformers", "fp32")], theirs_memory, 1.0, 1.0, float("nan")))
    print_table(rows, accuracies, args)


def print_table(rows, accuracies, args):
    print(f"\n{'variant':<7} {'batch':>5} {'mode':<18} {'ms':>8} {'img/s':>7} {'peak MiB':>9} {'vs tf same':>10} {'vs tf fp32':>10} "
          f"{'vs our fp32':>11} {'agree %':>8} {'dmIoU pt':>8}  accuracy (trained B0)")
    for variant, batch, mode, seconds, memory, same, fp32, own in rows:
        agree, change = accuracies.get(mode, (None, None))
        accuracy_columns = (f"{100 * agree:8.2f} {100 * change:+8.2f}  {accuracy.flag(agree, change)}" if agree is not None
                            else f"{'-':>8} {'-':>8}")
        print(f"{variant.upper():<7} {batch:>5} {mode:<18} {1000 * seconds:8.1f} {batch / seconds:7.2f} {memory:9.1f} "
              f"{same:9.2f}x {fp32:9.2f}x {own:10.2f}x {accuracy_columns}")
    untimed = [mode for mode in accuracies if mode not in {row[2] for row in rows}]
    for mode in untimed:
        agree, change = accuracies[mode]
        print(f"{'B0':<7} {'-':>5} {mode:<18} {'not timed here':>58} {100 * agree:8.2f} {100 * change:+8.2f}  {accuracy.flag(agree, change)}")


def report(label: str, seconds: dict, batch: int, extra: str = ""):
    ours, theirs = seconds["ours"], seconds["transformers"]
    print(
        f"{label:<34} ours {1000 * ours:8.1f} ms ({batch / ours:6.2f} img/s)   transformers "
        f"{1000 * theirs:8.1f} ms ({batch / theirs:6.2f} img/s)   ratio {theirs / ours:5.2f}x{extra}"
    )


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
    parser.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES), choices=MODES, help="inference modes of the table")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per model (median reported)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall", help="what is timed (default: wall)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--accuracy-cache", default=str(accuracy.DEFAULT_CACHE), help="where the built-in model is trained once")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--train-variant", default="b0", choices=list(PAPER_GMACS))
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-memory", action="store_true", help="skip the fresh-process fp32 memory comparison")
    parser.add_argument("--peak-memory", choices=["ours", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--peak-memory-variant", default="b0", help=argparse.SUPPRESS)
    parser.add_argument("--peak-memory-batch", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    if argv is None and os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        # glibc keeps freed small-to-medium blocks for reuse, so the resident peak of a second call would not
        # rise: with every block over 64 KiB mapped and unmapped, each call's temporaries show in VmHWM.
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_memory:
        return peak_memory(args)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, {describe_device(device)}, {args.clock} clock, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    benchmark_table(args, device)
    if not args.skip_train:
        benchmark_training(args, device)
    if not args.skip_memory and device.type == "cpu":
        benchmark_memory(args)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
