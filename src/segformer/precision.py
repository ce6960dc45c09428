"""Faster inference modes of a trained model: reduced precision (bf16, fp16), int8 and `torch.compile`.

- bf16/fp16: the weights are cast (not autocast: measured in benchmarks/, casting is faster and as
  accurate). The kernels keep the numerically sensitive parts in fp32 on their own: LayerNorm statistics,
  the softmax of the attention kernel and GELU accumulate in float, and the loss upcasts the logits.
  A CPU without native support for the dtype (AVX512-BF16 or AMX for bf16, AMX-FP16 for fp16) would emulate
  it, slower than fp32: there the model stays in fp32 and the reason is returned for the caller to print.
- int8: dynamic quantization of every Linear (attention, Mix-FFN, the decoder's projections and its
  classifier) on a `fuse()`d copy: int8 weights, activations quantized per call. LayerNorm, softmax, GELU
  and the convolutions stay in float.
- compile: `torch.compile` of the model; its first call (the compilation) is what `warm_up` times.

`FLOAT_DTYPES` is the one table of dtype names, `check_dtype` the one check of a name, and
`prepare_for_inference` the one way predict, the app, export and the benchmark turn a model into a mode.
"""

import time
from dataclasses import dataclass

import torch

from .errors import OptionError
from .quantization import QUANTIZATIONS, quantize_int8

FLOAT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_dtype(dtype: str) -> str:
    """`dtype` if it names one of `FLOAT_DTYPES`, else an `OptionError`: every `--dtype` goes through here."""
    if dtype not in FLOAT_DTYPES:
        raise OptionError(f"unknown dtype {dtype!r}: choose one of {', '.join(FLOAT_DTYPES)}")
    return dtype


def _cpu_has(name: str) -> bool:
    check = getattr(torch.cpu, name, None)  # private helpers: present in recent torch, absent in old ones
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def native_float_dtypes(device) -> dict:
    """{"bf16": bool, "fp16": bool}: whether `device` computes in the dtype natively."""
    device = torch.device(device)
    if device.type == "cuda":
        return {"bf16": torch.cuda.is_bf16_supported(), "fp16": True}
    if device.type != "cpu":
        return {"bf16": True, "fp16": True}  # mps, xpu...: trust the backend
    bf16 = _cpu_has("_is_avx512_bf16_supported") or _cpu_has("_is_amx_tile_supported")
    fp16 = _cpu_has("_is_amx_fp16_supported") or _cpu_has("_is_avx512_fp16_supported")
    return {"bf16": bf16, "fp16": fp16}


def describe_device(device) -> str:
    """One line about what `device` supports, for the logs of predict and the benchmark."""
    device = torch.device(device)
    native = native_float_dtypes(device)
    names = ", ".join(name for name, ok in native.items() if ok) or "none"
    if device.type == "cpu":
        capability = torch.backends.cpu.get_cpu_capability()
        return f"CPU ({capability}, {torch.get_num_threads()} threads), native reduced precision: {names}"
    return f"{device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else device.type}), native: {names}"


def resolve_float_dtype(dtype: str, device, allow_emulated: bool = False) -> tuple:
    """(dtype name to run, message or None). A dtype the device does not support natively falls back to
    fp32 with a message that says why, unless `allow_emulated` (accuracy measurements)."""
    if check_dtype(dtype) == "fp32" or allow_emulated or native_float_dtypes(device)[dtype]:
        return dtype, None
    device = torch.device(device)
    what = "AVX512-BF16 or AMX" if dtype == "bf16" else "AMX-FP16 or AVX512-FP16"
    capability = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else device.type
    return "fp32", (
        f"{dtype} is not native on this {device.type} (it has {capability}, no {what}): emulated, it would be "
        f"slower than fp32, so the model runs in fp32"
    )


@dataclass(frozen=True)
class SpeedSettings:
    """How a model runs: `dtype` (fp32, bf16, fp16), `quantize` (None or "int8", CPU only), `compile`."""

    dtype: str = "fp32"
    quantize: str | None = None
    compile: bool = False

    def __post_init__(self):
        check_dtype(self.dtype)
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise OptionError(f"unknown quantization {self.quantize!r}: choose {', '.join(QUANTIZATIONS)}")
        if self.quantize and self.dtype != "fp32":
            raise OptionError(f"--quantize {self.quantize} runs int8 with float32 around it: leave --dtype at fp32")


def prepare_for_inference(model, settings: SpeedSettings, device="cpu", allow_emulated: bool = False) -> tuple:
    """(model to run, notes): `model` (eval mode) moved to `device` and turned into what `settings` asks for.
    The notes are the lines a command prints: the device and what it supports, then a fallback to fp32 or
    what was done. `allow_emulated` casts even where the device would emulate the dtype (an export, or an
    accuracy measurement)."""
    device = torch.device(device)
    notes = [f"Running on {describe_device(device)}"]
    model = model.eval()
    if settings.quantize:
        if device.type != "cpu":
            raise OptionError(f"--quantize {settings.quantize} runs on the CPU only (PyTorch's int8 kernels), not {device}")
        model = quantize_int8(model)
        notes.append("int8: Linear layers dynamically quantized; LayerNorm, softmax and convolutions in float")
    else:
        dtype, message = resolve_float_dtype(settings.dtype, device, allow_emulated)
        if message:
            notes.append(message)
        model = model.to(device=device, dtype=FLOAT_DTYPES[dtype])
    if settings.compile:
        # Static shapes, one graph per input size: with automatic dynamic shapes, inductor fails to lower the
        # convolutions for a dynamic batch (torch 2.13).
        model = torch.compile(model, dynamic=False)
    return model, notes


def warm_up(model, pixel_values: torch.Tensor) -> float:
    """Seconds of one call (for a compiled model: the compilation), run before timing or serving."""
    start = time.perf_counter()
    with torch.inference_mode():
        model(pixel_values)
    return time.perf_counter() - start
