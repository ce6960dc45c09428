"""int8 inference: dynamic quantization of a PyTorch model, and ONNX Runtime quantization of an exported
ONNX file (dynamic, or static with calibration images).

Only matrix products are quantized (PyTorch: every `nn.Linear`, the decoder's included; ONNX: the MatMul
and Gemm nodes): LayerNorm, softmax, GELU, the resizes and the convolutions (patch embeddings, key/value
reduction, the Mix-FFN's depthwise conv) stay in float, where int8 costs accuracy for little speed.
"""

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

QUANTIZATIONS = ("int8",)
ONNX_QUANTIZED_OPS = ["MatMul", "Gemm"]


def quantize_int8(model) -> nn.Module:
    """An int8 copy of an eval-mode `SegFormerForSemanticSegmentation` for the CPU: `fuse()`d (its decode head
    becomes the deployment module, whose projections and classifier are Linear modules), and every Linear
    dynamically quantized (int8 weights, one scale per tensor; activations quantized at each call)."""
    from torch.ao.quantization import quantize_dynamic  # deprecated in favour of torchao, still in torch 2.x

    quantized = copy.deepcopy(model).float().cpu().eval().fuse()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
        return quantize_dynamic(quantized, {nn.Linear}, dtype=torch.qint8, inplace=True)


class CalibrationReader:
    """ONNX Runtime's calibration data reader over a list of (1, C, H, W) float tensors."""

    def __init__(self, pixel_values: list):
        self.inputs = iter([{"pixel_values": tensor.numpy()} for tensor in pixel_values])

    def get_next(self):
        return next(self.inputs, None)

    def rewind(self):  # not needed by the min/max calibration; part of the interface
        pass


def quantize_onnx(source: Path, target: Path, calibration: list | None = None):
    """Write an int8 copy of the ONNX file `source` to `target`: dynamic quantization (weights int8,
    activations quantized at run time) or, with `calibration` inputs, static QDQ quantization whose
    activation ranges come from running them."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if calibration is None:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=ONNX_QUANTIZED_OPS)
        return
    reader = type("Reader", (CalibrationReader, CalibrationDataReader), {})(calibration)
    quantize_static(
        str(source),
        str(target),
        reader,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=ONNX_QUANTIZED_OPS,
    )
