"""The inference modes the benchmark compares, each as a model-like object: called with `pixel_values`, it
returns an object with `.logits`, and has `.dtype` and `.device` (what `segformer.inference.segment` reads).

    fp32          our model, eager
    fp32+compile  torch.compile of it (its compilation is timed apart, as warm-up)
    bf16 / fp16   weights cast (segformer.precision); on a CPU without native support only the accuracy
                  is measured, as emulated timings would say nothing
    bf16-autocast fp32 weights under torch.autocast (the alternative to casting, kept for the comparison)
    int8          dynamic int8 quantization of every Linear (segformer.quantization), CPU
    ort-fp32      the `segformer export` ONNX file in ONNX Runtime, CPU
    ort-int8      that file quantized by ONNX Runtime (dynamic), CPU

Each mode has a transformers peer "in the same dtype": transformers' model in fp32 for the fp32 and ONNX fp32
modes, in bf16/fp16 for those, dynamically quantized the same way for the int8 modes.
"""

import copy
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch

from segformer.export import export_onnx
from segformer.precision import FLOAT_DTYPES, SpeedSettings, native_float_dtypes, prepare_for_inference
from segformer.quantization import quantize_int8, quantize_onnx

MODES = ("fp32", "fp32+compile", "bf16", "bf16-autocast", "fp16", "int8", "ort-fp32", "ort-int8")
DEFAULT_MODES = ("fp32", "fp32+compile", "bf16", "bf16-autocast", "int8", "ort-fp32", "ort-int8")
CPU_ONLY = ("int8", "ort-fp32", "ort-int8")


def peer_dtype(mode: str) -> str:
    """The transformers peer of `mode`: fp32, bf16, fp16 or int8."""
    if mode.startswith(("bf16", "fp16")):
        return mode[:4]
    return "int8" if mode.endswith("int8") else "fp32"


def timeable(mode: str, device) -> tuple:
    """(whether `mode` is timed on `device`, why not)."""
    device = torch.device(device)
    if mode in CPU_ONLY and device.type != "cpu":
        return False, "CPU only"
    if mode.startswith(("bf16", "fp16")) and not native_float_dtypes(device)[mode[:4]]:
        return False, f"{mode[:4]} not native here (emulated: accuracy only)"
    return True, ""


class OrtModel(torch.nn.Module):
    """An ONNX Runtime session with the model-like interface (fp32 in, fp32 logits out)."""

    def __init__(self, path: Path, threads: int):
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False  # its arena would hide each call's memory from the peak reading
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.dtype, self.device = torch.float32, torch.device("cpu")

    def forward(self, pixel_values):
        logits = self.session.run(None, {"pixel_values": pixel_values.float().numpy()})[0]
        return SimpleNamespace(logits=torch.from_numpy(logits))


class Autocast(torch.nn.Module):
    """`model` (fp32 weights) run under `torch.autocast` in `dtype`."""

    def __init__(self, model, dtype: torch.dtype):
        super().__init__()
        self.model, self.autocast_dtype = model, dtype
        self.dtype, self.device = torch.float32, model.device

    def forward(self, pixel_values):
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            return self.model(pixel_values)


def onnx_files(model, folder: Path, size: int = 512) -> dict:
    """{"ort-fp32": path, "ort-int8": path} of `model` exported to `folder` (fused, dynamic shapes)."""
    fused = copy.deepcopy(model).float().eval().fuse()
    paths = {"ort-fp32": folder / "model.onnx", "ort-int8": folder / "model-int8.onnx"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(fused, torch.randn(2, model.config.num_channels, size, size), paths["ort-fp32"])
    quantize_onnx(paths["ort-fp32"], paths["ort-int8"])
    return paths


def build_ours(model, mode: str, device, scratch: Path, threads: int):
    """Our `model` (eval, fp32, CPU) in `mode`, on `device`."""
    if mode in ("fp32", "fp32+compile", "bf16", "fp16"):
        # As `segformer predict` prepares it; emulated dtypes too, whose accuracy is measured (not their time).
        settings = SpeedSettings(dtype=mode.split("+")[0], compile=mode.endswith("+compile"))
        return prepare_for_inference(copy.deepcopy(model), settings, device, allow_emulated=True)[0]
    if mode == "bf16-autocast":
        return Autocast(copy.deepcopy(model).to(device), torch.bfloat16)
    if mode == "int8":
        return quantize_int8(model)
    if mode.startswith("ort-"):
        if not hasattr(model, "_onnx_files"):
            model._onnx_files = onnx_files(model, Path(tempfile.mkdtemp(dir=scratch)))
        return OrtModel(model._onnx_files[mode], threads)
    raise ValueError(f"unknown mode {mode!r}")


def build_peer(theirs, dtype: str, device):
    """transformers' model in `dtype` (fp32, bf16, fp16, or int8: its Linear layers dynamically quantized)."""
    if dtype == "int8":
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return quantize_dynamic(copy.deepcopy(theirs).float().cpu(), {torch.nn.Linear}, dtype=torch.qint8)
    return copy.deepcopy(theirs).to(device, FLOAT_DTYPES[dtype])


def input_for(model, pixel_values):
    return pixel_values.to(model.device, model.dtype)


def warm_up_seconds(model, pixel_values) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model(input_for(model, pixel_values))
    return time.perf_counter() - start
