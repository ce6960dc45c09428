"""The faster inference modes compute the fp32 function: micro-batching in `segformer.inference` and the fused
deployment head exactly (1e-5), reduced precision and int8 within stated tolerances; the decoder quantizes; dtypes a
CPU lacks fall back to fp32 with a message; predict and export take the modes.

Tolerances, as max |logits - fp32 logits| / max |fp32 logits| on a tiny random model:
    micro-batches, fused head, compile, ONNX Runtime fp32: 1e-5 absolute (1e-4 for ORT, as `export`)
    bf16 (8 mantissa bits): 5e-2    fp16 (11 bits): 1e-2    int8 (PyTorch or ONNX Runtime dynamic): 1e-1
"""

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from segformer import SegFormerForSemanticSegmentation, inference, precision
from segformer.cli import main as cli
from segformer.decode_heads_segformer import DeploymentHead
from segformer.errors import OptionError
from segformer.export import export_checked, onnx_runner
from segformer.quantization import quantize_int8

RELATIVE_TOLERANCE = {"bf16": 5e-2, "fp16": 1e-2, "int8": 1e-1}


@pytest.fixture
def model(tiny_config):
    model = SegFormerForSemanticSegmentation(tiny_config()).eval()
    # Logits of order 1 (the classifier's init gives 1e-2), so that relative errors are those of real models.
    torch.nn.init.normal_(model.decode_head.linear_pred.weight, std=0.5)
    bn = model.decode_head.linear_fuse.bn
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    return model


def relative_error(logits, reference) -> float:
    return ((logits.float() - reference).abs().max() / reference.abs().max()).item()


def test_forward_logits_splits_a_cpu_batch_into_micro_batches_with_the_whole_batch_logits(model, monkeypatch):
    pixel_values = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        whole = model(pixel_values).logits
        monkeypatch.setattr(inference, "CPU_MICRO_BATCH_PIXELS", 64 * 64 * 2)  # batches of 2, then 1
        calls = []
        hook = model.segformer.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
        split = inference.forward_logits(model, pixel_values)
        hook.remove()
    assert calls == [2, 1]
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-5)
    assert split.is_contiguous()


def test_the_fused_head_computes_the_eval_mode_function_with_linear_modules(model):
    pixel_values = torch.randn(2, 3, 64, 96)
    fused = copy.deepcopy(model).fuse()
    assert fused.is_fused and not model.is_fused
    assert isinstance(fused.decode_head, DeploymentHead)
    assert all(type(linear) is torch.nn.Linear for linear in [*fused.decode_head.linear_c, fused.decode_head.linear_pred])
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in fused.decode_head.modules())
    with torch.no_grad():
        reference, logits = model(pixel_values).logits, fused(pixel_values).logits
    assert logits.is_contiguous()
    torch.testing.assert_close(logits, reference, rtol=0, atol=1e-5)
    with pytest.raises(RuntimeError, match="fused for deployment"):
        fused.train()


@pytest.mark.slow  # emulated on CPUs without native bf16/fp16: seconds even for the tiny model
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_reduced_precision_logits_are_close_to_fp32(model, dtype):
    pixel_values = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        reference = model(pixel_values).logits
        prepared, _ = precision.prepare_for_inference(model, precision.SpeedSettings(dtype), "cpu", allow_emulated=True)
        logits = prepared(pixel_values.to(precision.FLOAT_DTYPES[dtype])).logits
    assert logits.dtype == precision.FLOAT_DTYPES[dtype]
    assert relative_error(logits, reference) <= RELATIVE_TOLERANCE[dtype]


def test_int8_quantizes_every_linear_the_decoder_included_and_stays_close(model):
    pixel_values = torch.randn(2, 3, 64, 96)
    quantized = quantize_int8(model)
    decoder = quantized.decode_head
    quantized_linear = torch.ao.nn.quantized.dynamic.Linear
    assert all(isinstance(linear, quantized_linear) for linear in decoder.linear_c)
    assert isinstance(decoder.linear_pred, quantized_linear)
    assert not any(type(module) is torch.nn.Linear for module in quantized.modules())
    assert any(isinstance(module, torch.nn.LayerNorm) for module in quantized.modules())  # norms stay float
    with torch.no_grad():
        reference = model(pixel_values).logits
        logits = quantized(pixel_values).logits
    assert not model.is_fused  # the original is untouched
    assert 0 < relative_error(logits, reference) <= RELATIVE_TOLERANCE["int8"]


@pytest.mark.slow
def test_compiled_logits_equal_fp32(model):
    pixel_values = torch.randn(2, 3, 64, 64)
    compiled, _ = precision.prepare_for_inference(model, precision.SpeedSettings(compile=True))
    with torch.no_grad():
        torch.testing.assert_close(compiled(pixel_values).logits, model(pixel_values).logits, rtol=0, atol=1e-5)


def test_dtype_without_native_support_falls_back_to_fp32_with_a_reason(monkeypatch, model):
    monkeypatch.setattr(precision, "native_float_dtypes", lambda device: {"bf16": False, "fp16": False})
    dtype, message = precision.resolve_float_dtype("bf16", "cpu")
    assert dtype == "fp32" and "bf16 is not native" in message and "runs in fp32" in message
    assert precision.resolve_float_dtype("bf16", "cpu", allow_emulated=True) == ("bf16", None)
    prepared, notes = precision.prepare_for_inference(model, precision.SpeedSettings("fp16"), "cpu")
    assert prepared.dtype == torch.float32 and "fp16 is not native" in notes[-1]
    monkeypatch.setattr(precision, "native_float_dtypes", lambda device: {"bf16": True, "fp16": True})
    assert precision.resolve_float_dtype("bf16", "cpu") == ("bf16", None)


def test_native_support_is_detected_without_error():
    native = precision.native_float_dtypes("cpu")
    assert set(native) == {"bf16", "fp16"} and all(isinstance(value, bool) for value in native.values())
    assert "native reduced precision" in precision.describe_device("cpu")


def test_bad_mode_combinations_are_refused(model):
    with pytest.raises(OptionError, match="leave --dtype at fp32"):
        precision.SpeedSettings("bf16", quantize="int8")
    with pytest.raises(OptionError, match="CPU only"):
        precision.prepare_for_inference(model, precision.SpeedSettings(quantize="int8"), "meta")


@pytest.mark.slow
def test_onnx_int8_dynamic_and_static_exports_agree_with_fp32(model, tmp_path):
    import onnx

    sizes = dict(sample_size=(64, 64), check_sizes=[(64, 64), (48, 80)])
    dynamic = export_checked(model, tmp_path / "dynamic.onnx", quantize="int8", min_agreement=0.9, **sizes)
    calibration = [torch.randn(1, 3, 64, 64) for _ in range(4)]
    static = export_checked(model, tmp_path / "static.onnx", quantize="int8", calibration=calibration,
                            min_agreement=0.9, **sizes)
    assert min(dynamic["agreements"].values()) >= 0.9 and list(static["agreements"]) == ["calibration images"]
    operators = {name: {node.op_type for node in onnx.load(tmp_path / f"{name}.onnx").graph.node} for name in ("dynamic", "static")}
    assert {"MatMulInteger", "DynamicQuantizeLinear", "LayerNormalization", "Softmax"} <= operators["dynamic"]
    assert {"QuantizeLinear", "DequantizeLinear", "LayerNormalization", "Softmax"} <= operators["static"]
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(pixel_values).logits
    logits = onnx_runner(tmp_path / "dynamic.onnx")(pixel_values)
    assert 0 < relative_error(logits, reference) <= RELATIVE_TOLERANCE["int8"]


@pytest.mark.slow
def test_export_checks_reduced_files_by_agreement_and_refuses_bad_combinations(model, tmp_path, capsys):
    result = export_checked(model, tmp_path / "model.onnx", sample_size=(64, 64), check_sizes=[(64, 64), (48, 80)],
                            dtype="fp16", min_agreement=0.95)
    assert min(result["agreements"].values()) >= 0.95
    for kwargs, message in (
        (dict(format="pt2", quantize="int8"), "use --format onnx"),
        (dict(dtype="bf16"), "no bf16 kernels"),
        (dict(calibration=[torch.randn(1, 3, 64, 64)]), "add --quantize int8"),
    ):
        with pytest.raises(OptionError, match=message):
            export_checked(model, tmp_path / "x.onnx", **kwargs)


# The share of pixels whose int8 label agrees with fp32's that `predict --quantize int8` must keep: the bound
# `export` applies to its reduced files by default (`--min-agreement`). Measured on the model below: 0.985.
MIN_INT8_AGREEMENT = 0.95


def test_predict_int8_and_fallback_dtype(model, tmp_path, capsys, monkeypatch):
    model.save_pretrained(tmp_path / "model")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8))
    image.save(tmp_path / "a.png")

    def predict(name, *options):
        cli(["predict", str(tmp_path / "model"), str(tmp_path / "a.png"), "--output-dir", str(tmp_path / name),
             "--short-side", "64", *options])  # fmt: skip
        with Image.open(tmp_path / name / "a_labels.png") as written:
            return np.asarray(written)

    fp32 = predict("fp32")
    assert fp32.shape == (64, 80) and len(np.unique(fp32)) > 1  # a map with something to get wrong
    capsys.readouterr()
    int8 = predict("int8", "--quantize", "int8")
    assert "int8: Linear layers dynamically quantized" in capsys.readouterr().out
    assert int8.shape == fp32.shape
    assert (int8 == fp32).mean() >= MIN_INT8_AGREEMENT, f"int8 agrees with fp32 on {(int8 == fp32).mean():.3f}"
    monkeypatch.setattr(precision, "native_float_dtypes", lambda device: {"bf16": False, "fp16": False})
    fallback = predict("bf16", "--dtype", "bf16")
    assert "bf16 is not native" in capsys.readouterr().out
    assert np.array_equal(fallback, fp32)  # the fallback is fp32: the same label map
