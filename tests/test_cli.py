"""The `segformer` command's contract for mistakes a user can make: exit status 2, no traceback, and one
`segformer <command>: error: <message>` line that names the file, model or option at fault (as git, pip
and ruff do); `--debug` shows the traceback instead. And every option's help states its default.

The bad invocations run in-process through `segformer.cli.main` (fast); two run as real processes to prove
the exit status of the entry point. Hub ids resolve against the local test Hub (tests/conftest_hub.py).
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from PIL import Image

import segformer.export
from segformer import SegFormerForSemanticSegmentation
from segformer.cli import COMMANDS, build_parser, main
from segformer.errors import InputError, OptionError
from segformer.export import export_checked
from segformer.loading import load_image_processor, load_model
from segformer.precision import SpeedSettings
from segformer import SegFormerImageProcessor

FIXTURES = Path(__file__).parent / "fixtures"
TF4_FOLDER = FIXTURES / "tf4-segformer-ade"  # a tiny transformers 4.x checkpoint: converts in a second
SRC = Path(__file__).parents[1] / "src"


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_config, hub_server, hub_user):
    """Paths the bad invocations point at, as {name}: formatted into each case's arguments."""
    root = tmp_path_factory.mktemp("cli")
    model = root / "tiny-model"
    SegFormerForSemanticSegmentation(tiny_config()).save_pretrained(model)
    config_only = root / "config-only"
    config_only.mkdir()
    (config_only / "config.json").write_text((model / "config.json").read_text())
    truncated = root / "truncated.pth"
    torch.save({"state_dict": {"backbone.patch_embed1.proj.weight": torch.zeros(64, 3, 7, 7)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    (root / "garbage.safetensors").write_bytes(b"\x00\x01 not safetensors")
    (root / "empty").mkdir()
    (root / "a-file").write_text("not a folder")
    Image.new("RGB", (64, 48)).save(root / "image.png")
    (root / "unknown-key.yaml").write_text("learning_rat: 0.1\n")
    # A public Hub repository with a transformers checkpoint, for the revision that does not exist.
    repo_id = f"{hub_user}/cli-tf4-mit"
    HfApi().create_repo(repo_id, exist_ok=True)
    HfApi().upload_folder(repo_id=repo_id, folder_path=FIXTURES / "tf4-mit")
    return dict(
        tmp=root,
        model=model,
        config_only=config_only,
        truncated=truncated,
        garbage=root / "garbage.safetensors",
        empty=root / "empty",
        a_file=root / "a-file",
        image=root / "image.png",
        unknown_key=root / "unknown-key.yaml",
        tf4=TF4_FOLDER,
        hub_repo=repo_id,
    )


def no_onnx(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError


def export_differs(monkeypatch):
    """An exporter whose output differs from PyTorch's by 1.0, without the cost of a real export."""
    write, load = (lambda model, sample, path: path.write_bytes(b"")), (lambda path: None)
    monkeypatch.setitem(segformer.export.FORMATS, "pt2", (write, load))
    monkeypatch.setattr(segformer.export, "max_difference", lambda model, run, sizes: dict.fromkeys(sizes, 1.0))


# (arguments, what the error line must name, a monkeypatch to apply first); {name} is a path of `files`.
CASES = {
    # convert: the output folder was a positional argument before it became --output-dir
    "convert-extra-positional": ("convert {truncated} {tmp}/old-style-output", "unrecognized arguments", None),
    # convert: sources
    "convert-missing-file": ("convert {tmp}/missing.pth", "missing.pth", None),
    "convert-truncated-pth": ("convert {truncated}", "truncated.pth", None),
    "convert-garbage-safetensors": ("convert {garbage}", "garbage.safetensors", None),
    "convert-an-image": ("convert {image}", "image.png is not a checkpoint: it looks like a PNG image (64x48)", None),
    "convert-folder-without-config": ("convert {empty}", "{empty}", None),
    "convert-unknown-hub-id": ("convert nosuch/model", "nosuch/model", None),
    "convert-unknown-revision": ("convert {hub_repo} --revision nope", "'nope'", None),
    # convert: outputs
    "convert-unwritable-output": ("convert {tf4} --output-dir /proc/nope/x", "/proc/nope/x", None),
    "convert-output-is-a-file": ("convert {tf4} --output-dir {a_file}", "{a_file}", None),
    "convert-push-to-foreign-namespace": (
        "convert {tf4} --output-dir {tmp}/pushed --push-to-hub someone-else/model", "someone-else/model", None
    ),
    # convert: options
    "convert-unknown-variant": ("convert {tf4} --variant b9", "--variant", None),
    "convert-wrong-variant": ("convert {tf4} --output-dir {tmp}/b2 --variant b2", "--variant", None),
    "convert-wrong-format": ("convert {tf4} --output-dir {tmp}/mmseg --format mmseg", "--format", None),
    "convert-above-tolerance": ("convert {tf4} --output-dir {tmp}/eps --layer-norm-eps 0.1", "--tolerance", None),
    "convert-tolerance-not-a-number": ("convert {tf4} --tolerance small", "--tolerance", None),
    # export: models
    "export-unknown-hub-id": ("export nosuch/model", "nosuch/model", None),
    "export-unknown-revision": ("export {hub_repo} --revision nope", "'nope'", None),
    "export-missing-folder": ("export {tmp}/no-such-model", "no-such-model", None),
    "export-missing-relative-folder": ("export ./no-such-model", "./no-such-model", None),
    "export-folder-without-config": ("export {empty}", "{empty}", None),
    "export-folder-without-weights": ("export {config_only}", "{config_only}", None),
    # export: outputs and options
    "export-unwritable-output": ("export {model} --output-dir /proc/nope/x", "/proc/nope/x", None),
    "export-malformed-sample-size": ("export {model} --sample-size 512by512", "--sample-size", None),
    "export-zero-sample-size": ("export {model} --sample-size 0x0", "--sample-size", None),
    "export-sample-size-too-small": ("export {model} --output-dir {tmp}/small --sample-size 16x16", "16x16", None),
    "export-one-check-size": ("export {model} --output-dir {tmp}/one --check-sizes 64x64 64x64", "--check-sizes", None),
    "export-unknown-format": ("export {model} --format tflite", "--format", None),
    "export-without-onnx-extra": ("export {model} --output-dir {tmp}/onnx", 'pip install "segformer[export]"', no_onnx),
    "export-above-tolerance": (
        "export {model} --output-dir {tmp}/pt2 --format pt2 --sample-size 64x64 --check-sizes 64x64 96x160",
        "--tolerance",
        export_differs,
    ),
}
# Commands that other changes are bringing under the same contract.
OTHER_COMMAND_CASES = {
    "predict-unknown-hub-id": ("predict nosuch/model {image}", "nosuch/model", None),
    "predict-missing-image": ("predict {model} {tmp}/missing.png", "missing.png", None),
    "predict-not-an-image": ("predict {model} {a_file}", "a-file", None),
    "predict-folder-without-images": ("predict {model} {empty}", "empty", None),
    "predict-bad-batch-size": ("predict {model} {image} --batch-size 0", "--batch-size", None),
    "predict-bad-alpha": ("predict {model} {image} --alpha 2", "--alpha", None),
    "predict-bad-window": ("predict {model} {image} --window 0", "window", None),
    "predict-unwritable-output": ("predict {model} {image} --output-dir /proc/nope/x", "/proc/nope/x", None),
    "train-missing-dataset": ("train --dataset {tmp}/nonexistent", "nonexistent", None),
    "train-unknown-config-key": ("train --config {unknown_key}", "learning_rat", None),
    "train-missing-config": ("train --config {tmp}/nope.yaml", "nope.yaml", None),
    "train-bad-batch-size": ("train --batch-size 0", "--batch-size", None),
    "train-bad-eval-steps": ("train --eval-steps sometimes", "--eval-steps", None),
    "train-missing-model": ("train --model {tmp}/no-model --max-steps 1", "no-model", None),
    "train-missing-checkpoint": ("train --resume {tmp}/no-checkpoint", "no-checkpoint", None),
    "train-unwritable-output": ("train --output-dir /proc/nope/x", "/proc/nope/x", None),
    "train-label-map-not-integers": ("train --label-map 255:object", "--label-map", None),
    "train-label-map-not-pairs": ("train --label-map 255", "--label-map", None),
    "train-label-map-missing-file": ("train --label-map {tmp}/no-map.json", "no-map.json", None),
    "train-label-map-target-out-of-range": ("train --label-map 255:7", "--label-map", None),
    "demo-missing-image": ("demo --image {tmp}/missing.png", "missing.png", None),
    "demo-not-an-image": ("demo --image {a_file}", "a-file", None),
    "demo-bad-variant": ("demo --variant b9", "b9", None),
    "train-bad-num-channels": ("train --num-channels 0", "--num-channels", None),
    "train-image-mean-count": ("train --num-channels 2 --image-mean 0.5", "--image-mean", None),
    "train-image-std-count-for-rgb": ("train --model b0 --image-std 0.2 0.2", "--image-std", None),
    "train-unknown-loss": ("train --loss lovasz", "--loss", None),
    "train-negative-class-weight": ("train --class-weights 1,-1,1,1", "--class-weights", None),
    "train-class-weights-not-numbers": ("train --class-weights heavy", "--class-weights", None),
    "train-class-weights-count": ("train --class-weights 1,2 --max-steps 1 --output-dir {tmp}/cw", "--class-weights", None),
    "train-bad-focal-gamma": ("train --focal-gamma -1", "--focal-gamma", None),
    "train-bad-ohem-threshold": ("train --ohem-threshold 1.5", "--ohem-threshold", None),
}


def run(argv: list, capsys) -> tuple:
    """(exit status, stderr) of `segformer ARGV` run in this process."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return exited.value.code, capsys.readouterr().err


def assert_one_error_line(command: str, status, stderr: str, names: str):
    assert status == 2, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith(f"segformer {command}: error:")]
    assert len(errors) == 1, stderr
    assert stderr.rstrip().splitlines()[-1] == errors[0], "the error line ends the output"
    assert names in errors[0], errors[0]


def check_case(case, files, capsys, monkeypatch):
    arguments, names, patch = case
    if patch is not None:
        patch(monkeypatch)
    monkeypatch.chdir(files["tmp"])  # the commands' default output folders land in the test's folder
    argv = [argument.format(**files) for argument in arguments.split()]
    status, stderr = run(argv, capsys)
    assert_one_error_line(argv[0], status, stderr, names.format(**files))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_invocation_ends_in_one_error_line(case, files, capsys, monkeypatch):
    check_case(case, files, capsys, monkeypatch)


@pytest.mark.parametrize("case", OTHER_COMMAND_CASES.values(), ids=OTHER_COMMAND_CASES.keys())
def test_bad_invocation_of_other_commands_ends_in_one_error_line(case, files, capsys, monkeypatch):
    check_case(case, files, capsys, monkeypatch)


def run_process(*arguments, cwd) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "segformer.cli", *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, env=environment, cwd=cwd, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize(
    "arguments, names",
    [(("convert", "missing.pth"), "missing.pth"), (("export", "no-such-model"), "no-such-model")],
)
def test_entry_point_exits_with_status_2(arguments, names, tmp_path):
    result = run_process(*arguments, cwd=tmp_path)
    assert_one_error_line(arguments[0], result.returncode, result.stderr, names)


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path):
    result = run_process("convert", "missing.pth", "--debug", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "InputError: cannot read 'missing.pth'" in result.stderr


def test_debug_raises_the_error_in_process(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="missing.pth"):
        main(["convert", "missing.pth", "--debug"])


def subcommand_parsers() -> dict:
    subparsers = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    return subparsers.choices


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_help_states_its_default(command):
    parser = subcommand_parsers()[command]
    formatter = parser._get_formatter()
    without_default = [
        action.option_strings[0]
        for action in parser._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction)
        and "default" not in formatter._expand_help(action)
    ]
    assert not without_default, f"segformer {command}: the help of {without_default} does not state the default"


# -- segformer.loading, which the commands load models through -------------------------------------------


def test_load_model_on_a_device_in_a_dtype(files):
    model = load_model(files["model"], device="cpu", dtype="bf16")
    assert model.dtype == torch.bfloat16 and model.device.type == "cpu" and not model.training
    with pytest.raises(OptionError, match="unknown dtype 'fp8'"):
        load_model(files["model"], dtype="fp8")
    with pytest.raises(OptionError, match="unknown device 'gpu0'"):
        load_model(files["model"], device="gpu0")


UNKNOWN_DTYPE = "unknown dtype 'fp8': choose one of fp32, bf16, fp16"


@pytest.mark.parametrize("command", ["predict {model} {image}", "app {model}", "export {model}"])
def test_every_command_refuses_an_unknown_dtype_with_the_same_message(command, files, capsys, monkeypatch):
    monkeypatch.chdir(files["tmp"])
    argv = [argument.format(**files) for argument in command.split()] + ["--dtype", "fp8"]
    status, stderr = run(argv, capsys)
    assert_one_error_line(argv[0], status, stderr, UNKNOWN_DTYPE)
    assert stderr.rstrip().splitlines()[-1] == f"segformer {argv[0]}: error: {UNKNOWN_DTYPE}"


def test_the_library_refuses_an_unknown_dtype_with_the_commands_message(files):
    for refuse in (lambda: load_model(files["model"], dtype="fp8"), lambda: SpeedSettings("fp8"),
                   lambda: export_checked(load_model(files["model"]), files["tmp"] / "x.onnx", dtype="fp8")):  # fmt: skip
        with pytest.raises(OptionError) as refused:
            refuse()
        assert str(refused.value) == UNKNOWN_DTYPE


def test_load_image_processor_falls_back_to_the_default(files):
    default = SegFormerImageProcessor().to_dict()

    def settings(processor) -> dict:  # what a processor does, without where its code is (`auto_map`)
        return {key: value for key, value in processor.to_dict().items() if key != "auto_map"}

    # A Hub repository (tf4-mit) and a folder without preprocessor_config.json get SegFormer's defaults ...
    assert settings(load_image_processor(files["hub_repo"])) == default
    assert settings(load_image_processor(files["model"])) == default
    # ... one with it gets its own, and a repository that does not exist is an error.
    assert load_image_processor(TF4_FOLDER).do_reduce_labels
    with pytest.raises(InputError, match="no Hub repository of that id"):
        load_image_processor("nosuch/model")
    with pytest.raises(InputError, match="no revision 'nope'"):
        load_image_processor(files["hub_repo"], revision="nope")
