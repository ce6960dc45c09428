"""Deployment: `fuse()`, ONNX export (run in onnxruntime), `torch.export`, and `segformer export`."""

import pytest
import torch

from segformer import SegFormerConfig, SegFormerForSemanticSegmentation
from segformer.cli import main as cli
from segformer.export import export, onnx_runner
from segformer import SegFormerImageProcessor


# Max |logits difference| the tests hold, on logits of order 1 (the fixture's): float32 rounding. Measured:
# fuse() and the torch.export program 0, ONNX Runtime 9.5e-7 (the README: "< 1e-6"; `segformer export`'s own
# rejection bound, --tolerance, is 1e-4). An eps slip in the graph's LayerNorms (x10) moves them by ~1e-5.
FUSE_BOUND = 1e-6
PT2_BOUND = 1e-6
ONNX_BOUND = 3e-6


@pytest.fixture
def model(tiny_config):
    """A tiny model whose BatchNorm is far from identity, so that folding it is visible, with logits of order 1
    (the classifier's init gives 0.05), so that the absolute bounds above are relative ones too."""
    model = SegFormerForSemanticSegmentation(tiny_config()).eval()
    torch.nn.init.normal_(model.decode_head.linear_pred.weight, std=0.5)
    bn = model.decode_head.linear_fuse.bn
    with torch.no_grad():
        for scale in (bn.running_var, bn.weight):
            scale.uniform_(0.5, 2.0)
        for shift in (bn.running_mean, bn.bias):
            shift.normal_(0, 0.5)
    return model


def fused_copy(model):
    fused = SegFormerForSemanticSegmentation(model.config).eval()
    fused.load_state_dict(model.state_dict())
    return fused.fuse()


@pytest.mark.parametrize("size", [(64, 64), (45, 61)])
def test_fuse_keeps_the_logits_and_drops_the_batch_norm(model, size):
    fused = fused_copy(model)
    assert fused.is_fused and not model.is_fused
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in model.parameters())
    pixel_values = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = model(pixel_values).logits
        assert 0.5 < expected.abs().max() < 5
        torch.testing.assert_close(fused(pixel_values).logits, expected, rtol=0, atol=FUSE_BOUND)


def test_fused_model_cannot_be_saved_or_trained_and_fuse_needs_eval(model, tmp_path):
    fused = fused_copy(model)
    with pytest.raises(ValueError, match="Save the model before calling `fuse\\(\\)`"):
        fused.save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="fused for deployment .* can no longer be trained"):
        fused.train()(torch.randn(1, 3, 64, 64))
    with pytest.raises(RuntimeError, match="call `model.eval\\(\\)` first"):
        model.train().fuse()


@pytest.mark.slow
def test_torch_export_program_has_dynamic_batch_height_and_width(model, tmp_path):
    differences = export(model, tmp_path / "model.pt2", "pt2", sample_size=(64, 64), check_sizes=[(64, 64), (96, 160)])
    assert set(differences) == {(64, 64), (96, 160)}
    assert max(differences.values()) <= PT2_BOUND
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    pixel_values = torch.randn(3, 3, 72, 88)
    with torch.no_grad():
        torch.testing.assert_close(program(pixel_values), model(pixel_values).logits, rtol=0, atol=PT2_BOUND)


@pytest.mark.slow
def test_export_command_writes_onnx_that_onnxruntime_runs_at_any_size(model, tmp_path, capsys):
    model.save_pretrained(tmp_path / "model")
    SegFormerImageProcessor(short_side=64, align=16).save_pretrained(tmp_path / "model")
    out = tmp_path / "export"
    cli(["export", str(tmp_path / "model"), "--output-dir", str(out), "--format", "onnx", "--sample-size", "64x64",
         "--check-sizes", "64x64", "96x160"])
    assert "max |logits difference| to PyTorch 64x64" in capsys.readouterr().out
    # Self-contained for deployment: the labels and the preprocessing travel with the graph.
    config = SegFormerConfig.from_pretrained(out)
    assert (config.id2label, config.hidden_sizes) == (model.config.id2label, model.config.hidden_sizes)
    assert SegFormerImageProcessor.from_pretrained(out).input_size(96, 200) == (64, 144)
    run = onnx_runner(out / "model.onnx")
    for batch, height, width in ((1, 64, 64), (3, 72, 120)):
        pixel_values = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            expected = model(pixel_values).logits
        torch.testing.assert_close(run(pixel_values), expected, rtol=0, atol=ONNX_BOUND)


def test_export_rejects_unknown_formats_and_single_check_sizes(model, tmp_path):
    with pytest.raises(ValueError, match="Unknown export format 'tflite'"):
        export(model, tmp_path / "m", "tflite")
    with pytest.raises(ValueError, match="two different sizes"):
        export(model, tmp_path / "m.onnx", "onnx", check_sizes=[(64, 64), (64, 64)])


def test_export_command_rejects_malformed_sizes(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli(["export", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--sample-size", "512by512"])
    assert "sizes are HEIGHTxWIDTH" in capsys.readouterr().err
