"""End-to-end inference speed as a user gets it, in one table: images/s and the share of the time spent in
the model's forward pass, for every way of running a SegFormer-B0 on the same weights and threads.

Rows, each at 19 and 150 classes, on 480x640 photos (whole image, short side 512) and on 1024x2048 images
(the Cityscapes protocol: short side 1024, 1024 windows every 768 pixels):

- transformers `pipeline("image-segmentation")` with its own `SegformerForSemanticSegmentation` and
  `SegformerImageProcessor` (its resize to 512x512, or 1024x1024 for Cityscapes, as the official checkpoints);
- our model through `pipeline("image-segmentation", model=folder, trust_remote_code=True)` (the saved
  processor's protocol: whole image; no sliding windows in a pipeline);
- `segformer.inference.segment_images` (the protocol of the row);
- `segformer predict` in a subprocess, start-up included, writing label maps only, and label maps and
  overlays (`--outputs`; the current CLI's default when it has no such option).

The forward time is measured by wrapping the model's `forward` (in the subprocess too). The images are drawn
scenes saved as JPEGs (flat shapes on a background, `benchmarks.common.scene`), and the B0's classifier is
fitted to such scenes (`benchmarks.common.fit_to_scenes`), so that its label maps have regions and boundaries
and its logits are decisive, as a trained model's; `--random-weights` keeps the random classifier, whose
nearly tied logits give fragmented maps (post-processing's worst case).

    python benchmarks/end_to_end.py            # 12 photos and 3 large images per setting
    python benchmarks/end_to_end.py --quick    # 3 photos and 1 large image: a short run
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import PREDICT_RUNNER, build_models, forward_report, scene
from segformer import SegFormerImageProcessor
from segformer.inference import PROTOCOLS, segment_images

SETTINGS = {  # name -> (image size (H, W), our protocol, transformers' processor size)
    "photos 480x640": ((480, 640), "ade20k", 512),
    "cityscapes 1024x2048": ((1024, 2048), "cityscapes", 1024),
}
# Rows of `segformer predict`: the --outputs value of each; None: the CLI's default outputs.
PREDICT_ROWS = {"segformer predict (labels)": "labels", "segformer predict (labels + overlays)": "labels,overlays"}

class ForwardTimer:
    """Wraps a model's `forward` and adds up the seconds spent in it."""

    def __init__(self, model):
        self.seconds, self._forward = 0.0, model.forward
        model.forward = self

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self._forward(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def timed_row(run, images: list, model) -> tuple:
    """(images/s, forward share) of `run(image)` over `images`, after one warm-up call."""
    timer = ForwardTimer(model)
    run(images[0])
    timer.seconds = 0.0
    start = time.perf_counter()
    for image in images:
        run(image)
    total = time.perf_counter() - start
    return len(images) / total, timer.seconds / total


def predict_row(folder: Path, image_folder: Path, outputs: str, protocol: str, threads: int, scratch: Path) -> tuple:
    """(images/s, forward share) of `segformer predict` in a fresh process, start-up included."""
    show_help = "from segformer.cli import main; main(['predict', '--help'])"
    help_text = subprocess.run([sys.executable, "-c", show_help], capture_output=True, text=True, check=False).stdout
    report = scratch / f"{folder.name}-predict-{outputs.replace(',', '-')}.json"  # one per row
    command = [sys.executable, "-c", PREDICT_RUNNER, str(report), "predict", str(folder), str(image_folder),
               "--output-dir", str(scratch / f"predict-{outputs}"), "--protocol", protocol]  # fmt: skip
    if "--outputs" in help_text:
        command += ["--outputs", outputs]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    total = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"segformer predict failed:\n{result.stderr[-2000:]}")
    forward = forward_report(report)["forward"]
    count = len(list(image_folder.iterdir()))
    return count / total, forward / total


def benchmark_setting(name: str, num_labels: int, count: int, threads: int, scratch: Path, fitted: bool) -> list:
    from transformers import SegformerImageProcessor, pipeline

    (height, width), protocol, their_side = SETTINGS[name]
    ours, theirs = build_models("b0", num_labels, fitted=fitted)
    folder = scratch / f"ours-{num_labels}-{protocol}"
    processor = SegFormerImageProcessor(short_side=PROTOCOLS[protocol].short_side)
    ours.save_pretrained(folder)
    processor.save_pretrained(folder)
    image_folder = scratch / f"images-{protocol}"
    if not image_folder.is_dir():
        image_folder.mkdir()
        for index in range(count):
            scene(height, width, index)[0].save(image_folder / f"{index:03d}.jpg", quality=90)
    images = [Image.open(path).convert("RGB") for path in sorted(image_folder.iterdir())]

    their_processor = SegformerImageProcessor(size={"height": their_side, "width": their_side})
    their_pipeline = pipeline("image-segmentation", model=theirs, image_processor=their_processor, device="cpu")
    our_pipeline = pipeline("image-segmentation", model=str(folder), trust_remote_code=True, device="cpu")
    rows = [
        ("transformers pipeline()", *timed_row(their_pipeline, images, their_pipeline.model)),
        ("our pipeline()", *timed_row(our_pipeline, images, our_pipeline.model)),
        (
            "segment_images",
            *timed_row(lambda image: segment_images(ours, processor, [image], PROTOCOLS[protocol]), images, ours),
        ),
    ]
    for row, outputs in PREDICT_ROWS.items():
        rows.append((row, *predict_row(folder, image_folder, outputs, protocol, threads, scratch)))
    return [(name, num_labels, *row) for row in rows]


def print_table(rows: list):
    print("\n| images | classes | path | images/s | forward share | vs transformers |")
    print("|---|---|---|---|---|---|")
    baseline = {(name, classes): speed for name, classes, path, speed, _ in rows if path == "transformers pipeline()"}
    for name, classes, path, speed, share in rows:
        print(
            f"| {name} | {classes} | {path} | {speed:.2f} | {100 * share:.0f}% | {speed / baseline[(name, classes)]:.2f}x |"
        )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 photos and 1 large image per setting")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every row (default: 2)")
    parser.add_argument("--classes", type=int, nargs="+", default=[19, 150], help="head sizes (default: 19 150)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument(
        "--random-weights", action="store_true",
        help="keep the random classifier (nearly tied logits, fragmented maps: post-processing's worst case) "
        "instead of fitting it to the scenes",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    weights = "random weights" if args.random_weights else "classifier fitted to drawn scenes"
    print(f"torch {torch.__version__}, {args.threads} threads, B0 with {weights}, load average {os.getloadavg()[0]:.2f}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="segformer-end-to-end-") as scratch:
        for name in args.settings:
            count = (3 if "photos" in name else 1) if args.quick else (12 if "photos" in name else 3)
            for num_labels in args.classes:
                rows += benchmark_setting(name, num_labels, count, args.threads, Path(scratch), not args.random_weights)
                print(f"  done: {name}, {num_labels} classes", flush=True)
    print_table(rows)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
