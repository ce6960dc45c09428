"""Does `segformer pretrain` help segmentation? The built-in segmentation run from scratch against the same run
started from a `segformer pretrain` encoder, three seeds each (issue 19, item 5).

  1. `segformer pretrain --output-dir OUT/pretrain --seed 0`: the bare command, on its built-in
     classification data, once.
  2. For seeds 0, 1, 2: `segformer train --seed S` (the bare built-in run, what the README's first command
     runs: a B0 from scratch) and the same with `--model OUT/pretrain/model --drop-path 0.1` (the scratch
     B0's stochastic depth). Every other option is the built-in preset's, so both arms train the same steps
     on the same data order and augmentation.

Each run is a subprocess of the `segformer` command in its own folder; a run whose all_results.json exists is
not redone, so a killed benchmark resumes. The table (markdown, also written to OUT/results.md) gives each
seed's validation mIoU (`eval_mean_iou`), each arm's mean ± sample standard deviation, and the paired
difference (pretrained - scratch). `--quick` makes every run a few steps: a smoke test of the plumbing whose
numbers mean nothing.

    python benchmarks/pretraining_benefit.py            # about 3 x 2 x 2 min + the pretraining, 2-core CPU
    python benchmarks/pretraining_benefit.py --quick
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

SEEDS = (0, 1, 2)
ARMS = {"scratch": "from scratch (B0)", "pretrained": "from `segformer pretrain`"}
# --quick: each run only proves that it starts, trains, evaluates and writes its results.
QUICK_PRETRAIN = ["--max-steps", "3"]
QUICK_TRAIN = ["--max-steps", "3", "--max-train-samples", "16", "--max-eval-samples", "8", "--num-overlays", "0"]


def segformer(*arguments: str, log=print) -> float:
    """Run `segformer ARGUMENTS` with this Python; its output goes to the console. Seconds taken."""
    command = [sys.executable, "-m", "segformer.cli", *arguments]
    log("$ segformer " + " ".join(arguments))
    start = time.perf_counter()
    status = subprocess.run(command).returncode
    if status != 0:
        raise SystemExit(f"`segformer {arguments[0]}` ended with status {status} (its output is above).")
    return time.perf_counter() - start


def results_of(folder: Path) -> dict:
    return json.loads((folder / "all_results.json").read_text())


def run_once(folder: Path, arguments: list, log=print) -> dict:
    """The all_results.json of the run writing into `folder`, running it unless a previous run finished."""
    if not (folder / "all_results.json").is_file():
        segformer(*arguments, "--output-dir", str(folder), log=log)
    else:
        log(f"{folder}: done before, not rerun")
    return results_of(folder)


def mean_and_spread(values: list) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def summary_table(results: dict) -> str:
    """Markdown table of `results` = {arm: {seed: mIoU}} (arms "scratch" and "pretrained", same seeds): one row
    per seed with the paired difference, then each column's mean ± sample standard deviation."""
    seeds = sorted(results["scratch"])
    if sorted(results["pretrained"]) != seeds:
        raise ValueError(f"The arms ran different seeds: {sorted(results['scratch'])} vs {sorted(results['pretrained'])}.")
    differences = [results["pretrained"][seed] - results["scratch"][seed] for seed in seeds]
    lines = [
        f"| seed | {ARMS['scratch']} | {ARMS['pretrained']} | difference |",
        "|---|---:|---:|---:|",
    ]
    for seed, difference in zip(seeds, differences):
        lines.append(f"| {seed} | {results['scratch'][seed]:.3f} | {results['pretrained'][seed]:.3f} | {difference:+.3f} |")
    columns = [mean_and_spread([results[arm][seed] for seed in seeds]) for arm in ARMS]
    spread = statistics.stdev(differences) if len(differences) > 1 else float("nan")
    lines.append(f"| mean ± std | {columns[0]} | {columns[1]} | {statistics.mean(differences):+.3f} ± {spread:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", help="Folder of every run (default: outputs/benchmarks/pretraining_benefit, "
                        "with -quick appended under --quick).")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="A few steps per run: a smoke test, not a measurement.")
    args = parser.parse_args(argv)
    output = Path(args.output_dir or "outputs/benchmarks/pretraining_benefit" + ("-quick" if args.quick else ""))
    pretrain_extra, train_extra = (QUICK_PRETRAIN, QUICK_TRAIN) if args.quick else ([], [])

    pretraining = run_once(output / "pretrain", ["pretrain", "--seed", "0", *pretrain_extra])
    encoder = output / "pretrain" / "model"
    results = {arm: {} for arm in ARMS}
    for seed in SEEDS:
        common = ["train", "--seed", str(seed), *train_extra]
        results["scratch"][seed] = run_once(output / f"scratch-seed{seed}", common)["eval_mean_iou"]
        # The scratch B0's stochastic depth (0.1), not the pretraining config's: the arms differ in the encoder only.
        pretrained = run_once(output / f"pretrained-seed{seed}", [*common, "--model", str(encoder), "--drop-path", "0.1"])
        results["pretrained"][seed] = pretrained["eval_mean_iou"]

    top = ", ".join(f"{name} {pretraining[name]:.3f}" for name in ("eval_top1", "eval_top5") if name in pretraining)
    report = "\n".join([
        f"Validation mIoU of the built-in segmentation run{' (--quick: NOT a measurement)' if args.quick else ''}; "
        f"the encoder: `segformer pretrain --seed 0` ({top or 'no top-1/top-5 reported'}).",
        "",
        summary_table(results),
    ])  # fmt: skip
    (output / "results.md").write_text(report + "\n")
    (output / "results.json").write_text(json.dumps({"pretraining": pretraining, "eval_mean_iou": results}, indent=2))
    print(report)


if __name__ == "__main__":
    main()
