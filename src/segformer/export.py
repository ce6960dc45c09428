"""Export a semantic-segmentation model for deployment: ONNX (onnxruntime) or a `torch.export` program.

The exported graph maps `pixel_values` (batch, 3, height, width) to `logits` (batch, classes, height/4,
width/4); batch, height and width are dynamic. The model is `fuse()`d first (decoder BatchNorm and
fuse conv folded into the stage projections). After writing, the file is run at two input sizes and
compared with PyTorch; the command fails if the logits differ by more than --tolerance.

--output-dir gets model.onnx (or model.pt2), the model's config.json (labels, sizes) and its
preprocessor_config.json (resize and normalisation), so the folder is all a deployment needs.

Faster, smaller files: --dtype fp16 (ONNX, pt2) or bf16 (pt2) exports the model in that precision;
--quantize int8 quantizes the ONNX file's matrix products with ONNX Runtime (dynamic, or static with the
activation ranges of --calibration-images). Such files cannot match fp32 to --tolerance: they are checked
by the share of pixels whose label agrees with PyTorch fp32 (--min-agreement) instead.

examples:
  segformer export MODEL --output-dir out/onnx                 # needs `pip install "segformer[export]"`
  segformer export MODEL --output-dir out/pt2 --format pt2     # load with torch.export.load
  segformer export MODEL --quantize int8 --calibration-images data/val/images   # static int8 ONNX
"""

import argparse
import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

from .cli import add_dtype, add_model_download, add_output_dir
from .errors import ExportError, OptionError
from .files import find_images, make_output_dir, open_image
from .loading import load_image_processor, load_model
from .precision import FLOAT_DTYPES, SpeedSettings, check_dtype, prepare_for_inference
from .quantization import QUANTIZATIONS, quantize_onnx

# Sizes the check runs at: the export's sample size and a second, non-square one.
DEFAULT_CHECK_SIZES = ((512, 512), (384, 640))
DEFAULT_TOLERANCE = 1e-4
DEFAULT_MIN_AGREEMENT = 0.95
MAX_CALIBRATION_IMAGES = 64


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
    input_type = session.get_inputs()[0].type  # "tensor(float)" or "tensor(float16)"
    dtype = torch.float16 if "float16" in input_type else torch.float32

    def run(pixel_values: torch.Tensor) -> torch.Tensor:
        outputs = session.run(None, {"pixel_values": pixel_values.to(dtype).numpy()})
        return torch.from_numpy(outputs[0]).float()

    return run


def pt2_runner(path: Path):
    program = torch.export.load(str(path)).module()
    dtype = next((node.meta["val"].dtype for node in program.graph.nodes if node.op == "placeholder"
                  and node.name == "pixel_values" and "val" in node.meta), torch.float32)
    return lambda pixel_values: program(pixel_values.to(dtype)).float()


# format -> (writer, loader of a callable that runs the written file)
FORMATS = {"onnx": (export_onnx, onnx_runner), "pt2": (export_pt2, pt2_runner)}


def check_inputs(model, sizes, batch_size: int = 2) -> dict:
    """Random normalised images per check size (a fixed seed)."""
    generator = torch.Generator().manual_seed(0)
    channels = model.config.num_channels
    return {size: torch.randn(batch_size, channels, *size, generator=generator) for size in sizes}


@torch.inference_mode()
def compare(model, run_exported, inputs: dict) -> tuple:
    """({key: max |logits difference|}, {key: share of pixels whose label agrees}) between `model` and the
    exported file, per entry of `inputs` (key -> pixel_values)."""
    differences, agreements = {}, {}
    for key, pixel_values in inputs.items():
        reference = model(pixel_values.to(model.dtype)).logits.float()
        exported = run_exported(pixel_values)
        differences[key] = (exported - reference).abs().max().item()
        agreements[key] = (exported.argmax(dim=1) == reference.argmax(dim=1)).float().mean().item()
    return differences, agreements


def max_difference(model, run_exported, sizes, batch_size: int = 2) -> dict:
    """Max |logits difference| between `model` and the exported file, per input size."""
    return compare(model, run_exported, check_inputs(model, sizes, batch_size))[0]


def calibration_inputs(folder, processor, count: int = MAX_CALIBRATION_IMAGES) -> list:
    """(1, C, H, W) inputs of the first `count` images of `folder`, preprocessed as the model's processor does."""
    paths = find_images([str(folder)])[:count]
    return [processor.pixel_values(open_image(path))[None] for path in paths]


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


def check_mode(format: str, dtype: str, quantize: str | None, calibration) -> None:
    check_dtype(dtype)
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise OptionError(f"unknown quantization {quantize!r}: choose {', '.join(QUANTIZATIONS)}")
    if quantize and (format != "onnx" or dtype != "fp32"):
        raise OptionError("--quantize int8 quantizes an fp32 ONNX file with ONNX Runtime: use --format onnx --dtype fp32")
    if calibration is not None and not quantize:
        raise OptionError("--calibration-images is for static int8 quantization: add --quantize int8")
    if format == "onnx" and dtype == "bf16":
        raise OptionError("ONNX Runtime has no bf16 kernels on the CPU: export ONNX in fp16, or bf16 with --format pt2")


def export(model, path, format: str = "onnx", sample_size=(512, 512), check_sizes=DEFAULT_CHECK_SIZES,
           tolerance: float = DEFAULT_TOLERANCE, **mode) -> dict:
    """`export_checked(...)["differences"]`: the max |logits difference| to `model` per check size."""
    return export_checked(model, path, format, sample_size, check_sizes, tolerance, **mode)["differences"]


def export_checked(model, path, format: str = "onnx", sample_size=(512, 512), check_sizes=DEFAULT_CHECK_SIZES,
                   tolerance: float = DEFAULT_TOLERANCE, dtype: str = "fp32", quantize: str | None = None,
                   calibration: list | None = None, min_agreement: float = DEFAULT_MIN_AGREEMENT) -> dict:
    """Fuse a copy of `model`, write it to `path` in `format` (in `dtype`, or int8-quantized: `quantize`,
    static with `calibration` inputs), check it against `model` in fp32 at `check_sizes` (at least two: the
    dynamic shapes must hold) and return {"differences": {size: max |logits difference|}, "agreements":
    {size: share of agreeing labels}}. An fp32 file must be within `tolerance`; a reduced one must agree on
    `min_agreement` of the pixels (measured on the calibration images where given).

    Raises `OptionError` for an unknown format or mode or unusable sizes, `OutputError` where `path` cannot
    be written, and `ExportError` where the exporter fails or the check does not pass."""
    if format not in FORMATS:
        raise OptionError(f"Unknown export format {format!r}: choose one of {', '.join(FORMATS)}.")
    check_mode(format, dtype, quantize, calibration)
    check_sizes_fit(model, sample_size, check_sizes)
    check_dependencies(format)
    model.eval()
    reference = copy.deepcopy(model).float()
    # In `dtype` whatever this machine computes natively: the file is for the one it is deployed on.
    settings = SpeedSettings(dtype)
    fused, _ = prepare_for_inference(copy.deepcopy(reference).fuse(), settings, reference.device, allow_emulated=True)
    write, load = FORMATS[format]
    path = make_output_dir(Path(path).parent) / Path(path).name
    # A batch of 2: tracing with 1 would fix the batch size to 1 (exporters specialise sizes 0 and 1).
    sample = torch.randn(2, model.config.num_channels, *sample_size, dtype=FLOAT_DTYPES[dtype])
    with tempfile.TemporaryDirectory() as scratch:
        written = Path(scratch) / "fp32.onnx" if quantize else path
        try:
            write(fused, sample, written)
            if quantize:
                quantize_onnx(written, path, calibration)
        except OSError:
            raise
        except Exception as error:  # the exporters raise many kinds; the traceback is there with --debug
            message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            raise ExportError(f"could not export the model to {format} ({message})") from error
    run_exported = load(path)
    if dtype == "fp32" and not quantize:
        differences, agreements = max_difference(reference, run_exported, check_sizes), {}
        worst = max(differences.values())
        if not worst <= tolerance:
            raise ExportError(
                f"the exported {format} logits differ from PyTorch's by {worst:.2e} > --tolerance {tolerance:.0e}: "
                f"{path} is not faithful to the model"
            )
    else:
        differences, agreements = compare(reference, run_exported, check_inputs(reference, check_sizes))
        if calibration:
            _, on_images = compare(reference, run_exported, dict(enumerate(calibration)))
            agreements = {"calibration images": sum(on_images.values()) / len(on_images)}
        worst = min(agreements.values())
        if not worst >= min_agreement:
            raise ExportError(
                f"the {quantize or dtype} {format} file agrees with PyTorch fp32 on {100 * worst:.2f}% of the pixels "
                f"< --min-agreement {100 * min_agreement:g}%: {path} is not faithful enough"
            )
    return {"differences": differences, "agreements": agreements}


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
    add_dtype(parser)
    parser.add_argument("--quantize", choices=QUANTIZATIONS, help="Quantize the ONNX file with ONNX Runtime (default: none).")
    parser.add_argument(
        "--calibration-images",
        metavar="FOLDER",
        help=f"Static int8: activation ranges from these images (the first {MAX_CALIBRATION_IMAGES}; default: none, dynamic).",
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=DEFAULT_MIN_AGREEMENT,
        help="Smallest share of pixels whose label agrees with PyTorch fp32 that passes the check of a bf16, "
        "fp16 or int8 file (on random inputs, or the calibration images).",
    )
    add_model_download(parser)


def main(args: argparse.Namespace):
    check_mode(args.format, args.dtype, args.quantize, args.calibration_images)
    check_dependencies(args.format)  # fail before loading the model and exporting
    output_dir = make_output_dir(args.output_dir)
    model = load_model(args.model, revision=args.revision, token=args.token, device="cpu", dtype="fp32")
    processor = load_image_processor(args.model, revision=args.revision, token=args.token)
    calibration = None
    if args.calibration_images:
        calibration = calibration_inputs(args.calibration_images, processor)
    path = output_dir / f"model.{args.format}"
    result = export_checked(
        model, path, args.format, args.sample_size, args.check_sizes, args.tolerance,
        dtype=args.dtype, quantize=args.quantize, calibration=calibration, min_agreement=args.min_agreement,
    )
    # Next to the graph: the labels and the preprocessing, as optimum's exports keep them.
    model.config.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    checks = ", ".join(f"{h}x{w}: {difference:.1e}" for (h, w), difference in result["differences"].items())
    print(f"Wrote {path}, config.json and the processor config; max |logits difference| to PyTorch {checks}")
    if args.quantize or args.dtype != "fp32":
        agreements = ", ".join(f"{key if isinstance(key, str) else '%dx%d' % key}: {100 * value:.2f}%"
                               for key, value in result["agreements"].items())
        print(f"{args.quantize or args.dtype}: labels agree with PyTorch fp32 on {agreements} of the pixels")
