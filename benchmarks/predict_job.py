"""How much of a `segformer predict` job is the model: the share of its wall time, start-up included, that
the model's forward pass takes.

It writes N drawn 480x640 scenes as JPEGs and a B0 with 150 classes (ADE20K's count) whose classifier is
fitted to such scenes (`benchmarks.common`: label maps with a trained model's regions; `--random-weights`
keeps the random classifier, post-processing's worst case), then runs `segformer predict MODEL FOLDER
--outputs labels` in a fresh process (or several, `--processes`, under `accelerate launch`), as a user would,
with the model's forward timed inside it. The goals of issue 16: at least 70% in the forward pass, and two
processes on two cores at least as fast as one with two threads.

    python benchmarks/predict_job.py --images 200 --threads 2 [-- more predict options]
    python benchmarks/predict_job.py --images 200 --threads 1 --processes 2
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import PREDICT_RUNNER, build_models, forward_report, scene  # noqa: E402

def write_inputs(folder: Path, count: int, num_labels: int, fitted: bool):
    from segformer import SegFormerImageProcessor

    model, _ = build_models("b0", num_labels, fitted=fitted)
    model.save_pretrained(folder / "model")
    SegFormerImageProcessor(short_side=512).save_pretrained(folder / "model")
    (folder / "images").mkdir()
    for index in range(count):
        scene(480, 640, index, num_labels)[0].save(folder / "images" / f"{index:04d}.jpg", quality=90)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--num-labels", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of each predict process.")
    parser.add_argument(
        "--processes", type=int, default=1,
        help="Processes of the job (more than 1: `accelerate launch` on the CPU, joined by gloo).",
    )  # fmt: skip
    parser.add_argument("--random-weights", action="store_true", help="Keep the random classifier (nearly tied logits).")
    parser.add_argument("predict_options", nargs="*", help="More `segformer predict` options (after --).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        write_inputs(folder, args.images, args.num_labels, not args.random_weights)
        report, child = folder / "forward.json", folder / "child.py"
        child.write_text(PREDICT_RUNNER)
        launcher = [sys.executable, str(child)]
        if args.processes > 1:
            launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                        str(args.processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(child)]  # fmt: skip
        command = [*launcher, str(report), "predict", str(folder / "model"), str(folder / "images"),
                   "--output-dir", str(folder / "out"), "--outputs", "labels", "--no-progress", *args.predict_options]  # fmt: skip
        environment = dict(os.environ, OMP_NUM_THREADS=str(args.threads), ACCELERATE_USE_CPU="1")
        start = time.perf_counter()
        result = subprocess.run(command, env=environment, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(result.stderr[-3000:])
        forward = forward_report(report)
    print(result.stdout.strip())
    print(
        f"{args.images} images 480x640, B0 with {args.num_labels} classes "
        f"({'random weights' if args.random_weights else 'classifier fitted to the scenes'}), "
        f"{args.processes} process(es) x {args.threads} thread(s), "
        f"options {' '.join(args.predict_options) or '(defaults)'}: {wall:.1f} s in all ({args.images / wall:.2f} images/s), "
        f"forward passes {forward['forward']:.1f} s ({forward['calls']} calls) = "
        f"{100 * forward['forward'] / (wall * args.processes):.0f}% of the time of the processes"
    )


if __name__ == "__main__":
    main()
