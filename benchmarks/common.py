"""What the benchmark's sections share: the two models on the same weights, the logits check, round-robin
timing on a chosen clock, FLOP counting and resident-memory readings; drawn scenes with their label maps, and
a model fitted to them for the end-to-end benchmarks (label maps with a trained model's regions)."""

import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from transformers import SegformerForSemanticSegmentation as TransformersSegformer

from segformer import SegFormerConfig, SegFormerForSemanticSegmentation
from segformer.conversion.to_transformers import transformers_config, transformers_state_dict
from segformer.inference import forward_logits

# wall: elapsed time, what a user waits. cpu: CPU seconds this process used (all threads), which other
# processes on a shared machine disturb far less; with --threads 1 it is close to the work done.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
PAPER_GMACS = {"b0": 8.4, "b1": 15.9, "b2": 62.4, "b3": 79.0, "b4": 95.7, "b5": 183.3}  # 512x512, ADE20K


def build_models(variant: str, num_labels: int = 150, seed: int = 0, fitted: bool = False):
    """Ours and transformers' with the same random weights (transformers' LayerNorm epsilon); with `fitted`,
    the decode head trained on drawn scenes first (`fit_to_scenes`)."""
    torch.manual_seed(seed)
    ours = SegFormerForSemanticSegmentation(
        SegFormerConfig.from_variant(variant, num_labels=num_labels, layer_norm_eps=1e-5)
    )
    if fitted:
        fit_to_scenes(ours)
    else:
        # Non-trivial BatchNorm statistics, so that the comparison covers them.
        bn = ours.decode_head.linear_fuse.bn
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    theirs = TransformersSegformer._from_config(transformers_config(ours), attn_implementation="sdpa")
    theirs.load_state_dict(transformers_state_dict(ours, layout="5"), strict=True)
    return ours.eval(), theirs.eval()


# A script running `segformer predict` (its arguments after REPORT) with the model's forward timed; each
# process writes {"forward": seconds, "calls": n} to REPORT.RANK (`forward_report` adds them up).
PREDICT_RUNNER = """
import json, os, sys, time
from segformer.cli import main
from segformer.modeling_segformer import SegFormerForSemanticSegmentation
forward, spent = SegFormerForSemanticSegmentation.forward, [0.0, 0]
def timed(self, *args, **kwargs):
    start = time.perf_counter()
    try:
        return forward(self, *args, **kwargs)
    finally:
        spent[0] += time.perf_counter() - start
        spent[1] += 1
SegFormerForSemanticSegmentation.forward = timed
try:
    main(sys.argv[2:])
finally:
    rank = os.environ.get("RANK", "0")
    open(sys.argv[1] + "." + rank, "w").write(json.dumps({"forward": spent[0], "calls": spent[1]}))
"""


def forward_report(report: Path) -> dict:
    """{"forward": seconds, "calls": n} of a `PREDICT_RUNNER` run, summed over its processes."""
    reports = [json.loads(path.read_text()) for path in report.parent.glob(report.name + ".*")]
    return {key: sum(part[key] for part in reports) for key in ("forward", "calls")}


# The scenes' colours, each the colour of one class (at most this many classes appear in a scene).
SCENE_COLOURS = 16


def scene(height: int, width: int, seed: int, num_labels: int = 150) -> tuple:
    """A drawn photo stand-in and its (H, W) label map: a background and a dozen flat rectangles and
    ellipses, each in one of `SCENE_COLOURS` colours; a colour is always the same class (of `num_labels`)."""
    palette = np.random.default_rng(1234).integers(0, 256, (SCENE_COLOURS, 3))
    classes = np.random.default_rng(1235).permutation(num_labels)[:SCENE_COLOURS] if num_labels > 1 else np.zeros(SCENE_COLOURS, int)
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height))
    labels = Image.new("L", (width, height))  # colour indices
    shapes = [[0, 0, width, height]]
    for _ in range(12):
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, 2))
        shapes.append([x0, y0, x1, y1])
    for number, box in enumerate(shapes):
        colour = int(rng.integers(0, SCENE_COLOURS))
        kind = "rectangle" if number == 0 or rng.random() < 0.5 else "ellipse"
        getattr(ImageDraw.Draw(image), kind)(box, fill=tuple(int(v) for v in palette[colour]))
        getattr(ImageDraw.Draw(labels), kind)(box, fill=colour)
    return image, classes[np.asarray(labels)]


def fit_to_scenes(model, size: tuple = (256, 320), scale: float = 8.0):
    """Fits the classifier of `model` (a least-squares fit of its decoder's features to the scenes' classes,
    in place) so that its label maps have regions and boundaries where drawn scenes do, with decisive
    logits, as a trained model's. A random model's logits are nearly tied everywhere, its maps fragmented,
    and post-processing works far harder on them than on any trained model's outputs (`--random-weights`
    measures that worst case)."""
    pictures = [scene(*size, 10_000 + index, model.config.num_labels) for index in range(8)]
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    images = torch.stack([(torch.from_numpy(np.array(image)).permute(2, 0, 1) / 255 - mean) / std for image, _ in pictures])
    labels = torch.stack([torch.from_numpy(label[2::4, 2::4]).long() for _, label in pictures])  # at the logits' size
    features = []
    hook = model.decode_head.dropout.register_forward_hook(lambda module, inputs, output: features.append(output))
    with torch.no_grad():
        model.eval()(images)
        hook.remove()
        x = torch.cat([features[0].permute(0, 2, 3, 1).reshape(-1, features[0].shape[1]), torch.ones(labels.numel(), 1)], 1)
        targets = F.one_hot(labels.flatten(), model.config.num_labels).float() * scale
        solution = torch.linalg.solve(x.T @ x + 1e-3 * torch.eye(x.shape[1]), x.T @ targets)  # ridge regression
        classifier = model.decode_head.linear_pred
        classifier.weight.copy_(solution[:-1].T.reshape(classifier.weight.shape))
        classifier.bias.copy_(solution[-1])
    return model


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
