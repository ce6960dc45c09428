"""Export a semantic-segmentation model for deployment: ONNX (onnxruntime) or a `torch.export` program.

The exported graph maps `pixel_values` (batch, 3, height, width) to `logits` (batch, classes, height/4,
width/4); batch, height and width are dynamic. The model is `fuse()`d first (decoder BatchNorm and
fuse conv folded into the stage projections). After writing, the file is run at two input sizes and
compared with PyTorch; the command fails if the logits differ by more than --tolerance.

--output-dir gets model.onnx (or model.pt2), the model's config.json (labels, sizes) and its
preprocessor_config.json (resize and normalisation), so the folder is all a deployment needs.

examples:
  segformer export MODEL --output-dir out/onnx                 # needs `pip install "segformer[export]"`
  segformer export MODEL --output-dir out/pt2 --format pt2     # load with torch.export.load
"""

import argparse
import copy
from pathlib import Path

import torch
from torch import nn

from .cli import add_model_download, add_output_dir
from .errors import ExportError, OptionError
from .files import make_output_dir
from .loading import load_image_processor, load_model

# Sizes the check runs at: the export's sample size and a second, non-square one.
DEFAULT_CHECK_SIZES = ((512, 512), (384, 640))
DEFAULT_TOLERANCE = 1e-4


class LogitsModel(nn.Module):
    """The model as a function of one tensor to one tensor, the signature exporters want."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values, return_dict=True).logits


def dynamic_shapes() -> dict:
    # DYNAMIC, not named Dims: the exporter derives the valid range (at least the model's minimum input
    # size) from the model's own shape arithmetic instead of failing on a range given here.
    dynamic = torch.export.Dim.DYNAMIC
    return {"pixel_values": {0: dynamic, 2: dynamic, 3: dynamic}}


def export_program(model, sample: torch.Tensor) -> torch.export.ExportedProgram:
    return torch.export.export(LogitsModel(model).eval(), (sample,), dynamic_shapes=dynamic_shapes())


def export_onnx(model, sample: torch.Tensor, path: Path, opset: int = 18):
    torch.onnx.export(
        LogitsModel(model).eval(),
        (sample,),
        str(path),
        dynamo=True,
        input_names=["pixel_values"],
        output_names=["logits"],
        dynamic_shapes=dynamic_shapes(),
        opset_version=opset,
        external_data=False,  # one self-contained file (fine below protobuf's 2 GB limit: B5 is 340 MB)
    )


def export_pt2(model, sample: torch.Tensor, path: Path):
    torch.export.save(export_program(model, sample), str(path))


def onnx_runner(path: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda pixel_values: torch.from_numpy(session.run(None, {"pixel_values": pixel_values.numpy()})[0])


def pt2_runner(path: Path):
    return torch.export.load(str(path)).module()


# format -> (writer, loader of a callable that runs the written file)
FORMATS = {"onnx": (export_onnx, onnx_runner), "pt2": (export_pt2, pt2_runner)}


@torch.inference_mode()
def max_difference(model, run_exported, sizes, batch_size: int = 2) -> dict:
    """Max |logits difference| between `model` and the exported file, per input size."""
    generator = torch.Generator().manual_seed(0)
    differences = {}
    for height, width in sizes:
        pixel_values = torch.randn(batch_size, model.config.num_channels, height, width, generator=generator)
        reference = model(pixel_values.to(model.dtype)).logits.float()
        differences[(height, width)] = (run_exported(pixel_values) - reference).abs().max().item()
    return differences


def check_dependencies(format: str):
    """Fail before any work where the packages that `format` needs are not installed."""
    if format != "onnx":
        return
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ExportError(
            f"ONNX export needs onnx, onnxscript and onnxruntime, and {error.name or 'one of them'} is not "
            'installed: pip install "segformer[export]"'
        ) from error


def check_sizes_fit(model, sample_size, check_sizes):
    if len(set(check_sizes)) < 2:
        raise OptionError(
            f"the export is checked at {' '.join(f'{h}x{w}' for h, w in check_sizes)}: give two different sizes at "
            "least (--check-sizes), to show that height and width are dynamic"
        )
    minimum = model.base_model.min_input_size
    too_small = [f"{h}x{w}" for h, w in (sample_size, *check_sizes) if min(h, w) < minimum]
    if too_small:
        raise OptionError(
            f"{', '.join(too_small)} is too small for this model, which needs {minimum}x{minimum} pixels at least "
            "(--sample-size, --check-sizes)"
        )


def export(model, path, format: str = "onnx", sample_size=(512, 512), check_sizes=DEFAULT_CHECK_SIZES,
           tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Fuse a copy of `model`, write it to `path` in `format`, check it against `model` at `check_sizes`
    (at least two: the dynamic shapes must hold) and return the max differences per size.

    Raises `OptionError` for an unknown format or unusable sizes, `OutputError` where `path` cannot be
    written, and `ExportError` where the exporter fails or the logits differ by more than `tolerance`."""
    if format not in FORMATS:
        raise OptionError(f"Unknown export format {format!r}: choose one of {', '.join(FORMATS)}.")
    check_sizes_fit(model, sample_size, check_sizes)
    check_dependencies(format)
    model.eval()
    fused = copy.deepcopy(model).float().fuse()
    write, load = FORMATS[format]
    path = make_output_dir(Path(path).parent) / Path(path).name
    # A batch of 2: tracing with 1 would fix the batch size to 1 (exporters specialise sizes 0 and 1).
    sample = torch.randn(2, model.config.num_channels, *sample_size)
    try:
        write(fused, sample, path)
    except OSError:
        raise
    except Exception as error:  # the exporters raise many kinds; the traceback is there with --debug
        message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        raise ExportError(f"torch could not export the model to {format} ({message})") from error
    differences = max_difference(model, load(path), check_sizes)
    worst = max(differences.values())
    if not worst <= tolerance:
        raise ExportError(
            f"the exported {format} logits differ from PyTorch's by {worst:.2e} > --tolerance {tolerance:.0e}: "
            f"{path} is not faithful to the model"
        )
    return differences


def parse_size(text: str) -> tuple:
    try:
        height, width = (int(side) for side in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are HEIGHTxWIDTH, e.g. 512x512; got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"sizes are positive, e.g. 512x512; got {text!r}")
    return height, width


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("model", help="Model folder or Hub repo id (a SegFormerForSemanticSegmentation).")
    add_output_dir(parser, "outputs/export", "for model.onnx (or .pt2), config.json and preprocessor_config.json")
    parser.add_argument("--format", choices=list(FORMATS), default="onnx", help="Export format.")
    parser.add_argument(
        "--sample-size", type=parse_size, default=(512, 512), metavar="HxW", help="Size traced with (default: 512x512)."
    )
    parser.add_argument(
        "--check-sizes",
        type=parse_size,
        nargs="+",
        default=list(DEFAULT_CHECK_SIZES),
        metavar="HxW",
        help="Sizes the export is checked at against PyTorch, two different ones at least (default: 512x512 384x640).",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"Largest max |logits difference| to PyTorch that passes the check (default: {DEFAULT_TOLERANCE:g}).",
    )
    add_model_download(parser)


def main(args: argparse.Namespace):
    check_dependencies(args.format)  # fail before loading the model and exporting
    output_dir = make_output_dir(args.output_dir)
    model = load_model(args.model, revision=args.revision, token=args.token, device="cpu", dtype="fp32")
    processor = load_image_processor(args.model, revision=args.revision, token=args.token)
    path = output_dir / f"model.{args.format}"
    differences = export(model, path, args.format, args.sample_size, args.check_sizes, args.tolerance)
    # Next to the graph: the labels and the preprocessing, as optimum's exports keep them.
    model.config.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    checks = ", ".join(f"{h}x{w}: {difference:.1e}" for (h, w), difference in differences.items())
    print(f"Wrote {path}, config.json and the processor config; max |logits difference| to PyTorch {checks}")
