"""The web app (`segformer app`) and the Space (`segformer space`).

One tiny model, trained on nothing but saved as the built-in dataset's (its card names the dataset and an
mIoU), with a processor that keeps the image size (as `segformer train` saves for the built-in data):

- in-process: the pass counter of the progress bar counts the model's forward passes, the card's facts are
  read, the examples are the built-in validation images, bad images raise one clear `InputError`;
- the app served by `segformer app` in a subprocess on a free port: `gradio_client` gets, for each protocol,
  the label map `segformer predict` writes with the same protocol, pixel for pixel, and bad uploads end in
  the app's message; headless Chromium (Debian's, driven by Playwright) uploads an image and gets the overlay;
- the Space: `segformer space` pushes a Space to the local Hub, and its app.py, in a process that cannot
  import this package, loads the model by repo id and returns `segformer predict`'s label map.
"""

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from segformer import SegFormerConfig, SegFormerForSemanticSegmentation, SegFormerImageProcessor
from segformer.app.segmenter import (
    MULTI_SCALE_FLIP,
    PROTOCOL_NAMES,
    SLIDING_WINDOW,
    WHOLE_IMAGE,
    CardInfo,
    Segmenter,
    count_passes,
    read_card,
)
from segformer.cli import main as cli
from segformer.data import BUILTIN_CARD_NAME, BUILTIN_ID2LABEL, generate_builtin_dataset, generate_sample
from segformer.errors import InputError
from segformer.hub import push_to_hub, write_model_card
from segformer.visualization import classes_present, default_palette

from conftest import TINY_CONFIG

SRC = Path(__file__).resolve().parents[1] / "src"
CHROMIUM = os.environ.get("SEGFORMER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
# `segformer predict`'s options for each of the app's protocols (the app's window: 512 pixels every 384,
# as the processor keeps the image size).
PREDICT_OPTIONS = {WHOLE_IMAGE: [], SLIDING_WINDOW: ["--window", "512", "--stride", "384"], MULTI_SCALE_FLIP: ["--multi-scale"]}
METRICS = {"mean_iou": 0.4321, "eval_pixel_accuracy": 0.8765}


def tiny_model_folder(folder: Path, **config) -> Path:
    torch.manual_seed(0)
    labels = dict(id2label=BUILTIN_ID2LABEL, label2id={v: k for k, v in BUILTIN_ID2LABEL.items()})
    model_config = SegFormerConfig(**{**TINY_CONFIG, "num_labels": len(BUILTIN_ID2LABEL), **labels, **config})
    SegFormerForSemanticSegmentation(model_config).save_pretrained(folder)
    SegFormerImageProcessor(short_side=None, num_channels=model_config.num_channels).save_pretrained(folder)
    write_model_card(folder, model_config, dataset=BUILTIN_CARD_NAME, metrics=METRICS)
    return folder


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return tiny_model_folder(tmp_path_factory.mktemp("app") / "model")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict:
    """Test images as files: a built-in-like sample, one not square (and not a multiple of 32), one too
    small for the model, and a file that is not an image."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    paths = {"sample": folder / "sample.png", "wide": folder / "wide.png", "small": folder / "small.png", "text": folder / "notes.png"}
    generate_sample(96, rng)[0].save(paths["sample"])
    generate_sample(160, rng)[0].crop((0, 20, 150, 120)).save(paths["wide"])
    Image.new("RGB", (16, 16), (200, 30, 30)).save(paths["small"])
    paths["text"].write_text("not an image\n")
    return paths


@pytest.fixture(autouse=True)
def _one_thread():
    """torch on one thread, as in the app's subprocess (OMP_NUM_THREADS=1): the same float reductions, and
    no slower for tiny models than several threads contending for shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def predicted_label_map(model: Path, image: Path, options: list, folder: Path) -> np.ndarray:
    """The label map that `segformer predict` writes for `image` with `options`."""
    cli(["predict", str(model), str(image), "--output-dir", str(folder), *options])
    with Image.open(folder / f"{image.stem}_labels.png") as written:
        return np.asarray(written)


def loaded(folder: Path) -> Segmenter:
    return Segmenter.load(str(folder), device="cpu")


# --- in-process ------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
@pytest.mark.parametrize("size", [(64, 64), (48, 100)])
def test_the_progress_counter_counts_every_forward_pass(model_folder, protocol, size):
    segmenter = Segmenter.load(str(model_folder), device="cpu", window=64, stride=40)
    calls = []
    hook = segmenter.model.register_forward_pre_hook(lambda *_: calls.append(1))
    progress = []
    segmenter.segment(Image.new("RGB", size[::-1], (90, 120, 30)), protocol, lambda done, total: progress.append((done, total)))
    hook.remove()
    assert len(calls) == count_passes(segmenter.settings(protocol), *size)
    assert progress == [(done, len(calls)) for done in range(len(calls))]
    single = protocol == WHOLE_IMAGE or (protocol == SLIDING_WINDOW and size == (64, 64))  # one 64-pixel window
    assert (len(calls) == 1) if single else (len(calls) > 1)


def test_the_protocols_are_predicts(model_folder):
    segmenter = loaded(model_folder)
    assert segmenter.settings(WHOLE_IMAGE).short_side is None and segmenter.settings(WHOLE_IMAGE).single_pass
    window = segmenter.settings(SLIDING_WINDOW)
    assert (window.window, window.stride) == (512, 384)
    multi = segmenter.settings(MULTI_SCALE_FLIP)
    assert multi.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) and multi.flip
    # A processor that resizes: windows of its short side, every 3/4 of it (the paper's 1024 / 768).
    segmenter.processor = SegFormerImageProcessor(short_side=256)
    assert (segmenter.settings(SLIDING_WINDOW).window, segmenter.settings(SLIDING_WINDOW).stride) == (256, 192)
    assert segmenter.settings(SLIDING_WINDOW).short_side == 256


def test_the_card_says_what_the_model_is(model_folder, tmp_path):
    card = read_card(str(model_folder))
    assert card.datasets == (BUILTIN_CARD_NAME,)
    assert dict(card.metrics) == {"mean_iou": "0.4321", "eval_pixel_accuracy": "0.8765"}
    assert card.title == f"SegFormer ({BUILTIN_CARD_NAME})"
    assert read_card(str(tmp_path)) == CardInfo()  # no README.md: nothing to show, no error
    segmenter = loaded(model_folder)
    assert segmenter.variant is None and segmenter.id2label == BUILTIN_ID2LABEL and segmenter.is_builtin


def test_examples_are_the_builtin_validation_images_for_a_builtin_model(model_folder, tmp_path):
    segmenter = loaded(model_folder)
    validation = generate_builtin_dataset(num_train=1, num_validation=4)["validation"]
    examples = segmenter.example_images()
    assert len(examples) == 4
    for example, sample in zip(examples, validation):
        assert np.array_equal(np.asarray(example), np.asarray(sample["image"]))
    # Another dataset on the card: generated scenes instead, of more than one size.
    other = tiny_model_folder(tmp_path / "other")
    write_model_card(other, SegFormerConfig.from_pretrained(other), dataset="my-org/streets")
    scenes = loaded(other).example_images()
    assert not loaded(other).is_builtin and len({image.size for image in scenes}) > 1
    # No card at all: the built-in labels decide.
    (other / "README.md").unlink()
    assert loaded(other).is_builtin


def test_bad_images_raise_one_clear_error(model_folder, images, tmp_path):
    segmenter = loaded(model_folder)
    minimum = segmenter.model.base_model.min_input_size
    with pytest.raises(InputError, match=rf"16x16 pixels: too small for this model, which needs at least {minimum}x{minimum}"):
        segmenter.segment(segmenter.open(images["small"]))
    with pytest.raises(InputError, match=r"cannot read notes.png as an image \(not an image file\)"):
        segmenter.open(images["text"], "notes.png")
    with pytest.raises(InputError, match="No image"):
        segmenter.open(None)
    four_channels = loaded(tiny_model_folder(tmp_path / "rgbn", num_channels=4))
    with pytest.raises(InputError, match="The image has 3 channels but the model takes 4"):
        four_channels.segment(four_channels.open(images["sample"]))


def test_a_dtype_the_cpu_would_emulate_falls_back_to_fp32_and_says_so_as_predict_does(model_folder, images, tmp_path,
                                                                                     capsys, monkeypatch):
    from segformer import precision

    monkeypatch.setattr(precision, "native_float_dtypes", lambda device: {"bf16": False, "fp16": False})
    segmenter = Segmenter.load(str(model_folder), device="cpu", dtype="bf16")
    assert segmenter.model.dtype == torch.float32
    assert segmenter.notes[0].startswith("Running on CPU") and "bf16 is not native" in segmenter.notes[-1]
    capsys.readouterr()
    cli(["predict", str(model_folder), str(images["sample"]), "--output-dir", str(tmp_path), "--dtype", "bf16"])
    printed = capsys.readouterr().out.splitlines()
    assert printed[: len(segmenter.notes)] == segmenter.notes  # the same lines, in the same order


# --- the app in a subprocess -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def app_url(model_folder, tmp_path_factory):
    """`segformer app MODEL --port PORT` running in a subprocess; its URL, as it prints it."""
    log = tmp_path_factory.mktemp("app-log") / "app.log"
    command = [sys.executable, "-m", "segformer.cli", "app", str(model_folder), "--port", str(free_port()), "--device", "cpu"]
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=subprocess_env())
    try:
        deadline = time.monotonic() + 120
        while "Serving" not in log.read_text():
            assert process.poll() is None, f"segformer app exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"segformer app did not start:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        line = next(line for line in log.read_text().splitlines() if line.startswith("Serving"))
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:"), line  # never another interface
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False, analytics_enabled=False)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOL_NAMES)
def test_the_app_returns_predicts_label_map(client, model_folder, images, protocol, tmp_path):
    from gradio_client import handle_file

    for name in ("sample", "wide"):
        overlay, shares, labels, *_ = client.predict(handle_file(str(images[name])), protocol, 0.5, api_name="/segment")
        with Image.open(labels) as written:
            label_map = np.asarray(written)
        expected = predicted_label_map(model_folder, images[name], PREDICT_OPTIONS[protocol], tmp_path / name)
        assert label_map.shape == expected.shape == Image.open(images[name]).size[::-1]
        assert np.array_equal(label_map, expected), f"{name}: {(label_map != expected).sum()} pixels differ"
        assert Path(labels).name == f"{images[name].stem}_labels.png"
        # The shares are those of the label map, the largest first.
        expected_shares = [(BUILTIN_ID2LABEL[i], share) for i, share in classes_present(expected)]
        assert [(c["label"], pytest.approx(c["confidence"])) for c in shares["confidences"]] == expected_shares
        with Image.open(overlay) as picture, Image.open(images[name]) as image:
            factor = -(-384 // min(image.size))  # enlarged for legibility, with the legend to the right
            assert picture.height == image.height * factor and picture.width > image.width * factor


@pytest.mark.slow
def test_bad_uploads_show_the_apps_message(client, images):
    from gradio_client import handle_file

    with pytest.raises(Exception, match=r"Cannot read notes.png as an image \(not an image file\)"):
        client.predict(handle_file(str(images["text"])), WHOLE_IMAGE, 0.5, api_name="/segment")
    with pytest.raises(Exception, match=r"16x16 pixels: too small for this model"):
        client.predict(handle_file(str(images["small"])), WHOLE_IMAGE, 0.5, api_name="/segment")
    with pytest.raises(Exception, match="No image"):
        client.predict(None, WHOLE_IMAGE, 0.5, api_name="/segment")


@pytest.mark.slow
def test_a_browser_uploads_an_image_and_sees_the_overlay(app_url, model_folder, images, tmp_path):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"No Chromium at {CHROMIUM}: apt-get install -y chromium (or set SEGFORMER_TEST_CHROMIUM)"
    shot = tmp_path / "app.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app_url, wait_until="domcontentloaded", timeout=60_000)
            page.get_by_text("mIoU 0.4321").first.wait_for(timeout=60_000)  # the card's
            page.locator("#input-image input[type=file]").set_input_files(str(images["sample"]))
            overlay = page.locator("#overlay img")
            overlay.wait_for(state="visible", timeout=90_000)
            page.wait_for_function("() => document.querySelector('#overlay img')?.naturalWidth > 0", timeout=30_000)
            overlay_shot = np.asarray(Image.open(io.BytesIO(overlay.screenshot())).convert("RGB"))
            # The picture the page shows, as the browser fetched it.
            source = urllib.parse.urljoin(page.url, overlay.get_attribute("src"))
            with urllib.request.urlopen(source) as response:
                shown = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))
            page.locator("#shares dt").first.wait_for(timeout=30_000)  # the shares of the classes present
            assert set(page.locator("#shares dt").all_inner_texts()) <= set(BUILTIN_ID2LABEL.values())
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 10, "the screenshot of the page is blank"
    # The overlay itself has the image's texture and several colours, not an empty frame.
    assert overlay_shot.std() > 20 and len(np.unique(overlay_shot.reshape(-1, 3), axis=0)) > 50
    # And it is `segformer predict`'s segmentation of the upload, pixel for pixel: its label map in the class
    # colours at the page's default opacity (0.5), with the legend, as the app draws it.
    label_map = predicted_label_map(model_folder, images["sample"], [], tmp_path / "predict")
    with Image.open(images["sample"]) as image:
        expected = np.asarray(loaded(model_folder).overlay(image.convert("RGB"), label_map, 0.5).convert("RGB"))
    assert shown.shape == expected.shape
    assert np.array_equal(shown, expected), f"{(shown != expected).any(-1).mean():.1%} of the pixels differ"
    if os.environ.get("SEGFORMER_APP_SCREENSHOT"):
        shutil.copy(shot, os.environ["SEGFORMER_APP_SCREENSHOT"])


# --- the Space ------------------------------------------------------------------------------------

# Runs in a fresh interpreter that cannot import `segformer`: the Space's app.py (argv[1]) as a module, its
# `segment` and `predict` on the image argv[2]; the label maps go to argv[3], the errors are printed.
SPACE_RUN = """
import json, runpy, sys
sys.modules["segformer"] = None
import numpy as np
from PIL import Image

app, image, output = sys.argv[1:4]
space = runpy.run_path(app, run_name="space")
assert type(space["model"]).__module__.startswith("transformers_modules."), type(space["model"]).__module__
direct = space["segment"](Image.open(image))
_, shares, png, _ = space["predict"](image, 0.5)
np.savez(output, direct=direct, png=np.asarray(Image.open(png)))
errors = []
for bad in sys.argv[4:]:
    try:
        space["predict"](bad, 0.5)
    except Exception as error:
        errors.append(str(error))
import transformers
print(json.dumps({"errors": errors, "shares": shares, "blocks": type(space["demo"]).__name__,
                  "transformers": transformers.__version__}))
"""


@pytest.fixture(scope="module")
def space(hub_server, hub_user, model_folder, tmp_path_factory):
    """The model pushed to the local Hub, and a Space for it written and pushed by `segformer space`."""
    model_repo, space_repo = f"{hub_user}/app-model", f"{hub_user}/app-space"
    push_to_hub(model_folder, model_repo)
    folder = tmp_path_factory.mktemp("space") / "folder"
    cli(["space", model_repo, space_repo, "--output-dir", str(folder)])
    return model_repo, space_repo, folder


def test_space_repository_holds_the_app_and_its_metadata(hub_server, space):
    from huggingface_hub import HfApi, SpaceCard

    model_repo, space_repo, folder = space
    files = hub_server.files(space_repo, repo_type="space")
    assert {"app.py", "requirements.txt", "README.md", ".gitattributes"} <= set(files)
    assert sorted(path for path in files if path.startswith("examples/")) == [f"examples/example_{i}.png" for i in range(4)]
    assert files["app.py"] == (folder / "app.py").read_bytes()
    app = files["app.py"].decode()
    assert f"MODEL_ID = {model_repo!r}" in app and "trust_remote_code=True" in app
    assert "import segformer" not in app and "from segformer" not in app
    # The class colours are segformer predict's, written as data.
    assert f"PALETTE = {default_palette(len(BUILTIN_ID2LABEL)).tolist()!r}" in app
    requirements = {line.split("=")[0].split(">")[0].strip() for line in files["requirements.txt"].decode().splitlines()}
    assert requirements == {"transformers", "torch", "gradio", "pillow", "numpy"}
    metadata = yaml.safe_load(files["README.md"].decode().split("---")[1])
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py" and metadata["models"] == [model_repo]
    assert {"title", "emoji", "colorFrom", "colorTo", "sdk_version"} <= set(metadata)
    SpaceCard(files["README.md"].decode()).validate(repo_type="space")  # the (local) Hub accepts the metadata
    info = HfApi().space_info(space_repo)
    assert info.sdk == "gradio" and info.id == space_repo
    # The examples are the built-in validation images: the model's card names the built-in dataset.
    validation = generate_builtin_dataset(num_train=1, num_validation=4)["validation"]
    assert np.array_equal(np.asarray(Image.open(folder / "examples" / "example_0.png")), np.asarray(validation[0]["image"]))
    # A model repository of the same id is another repository.
    assert not hub_server.store.repos.get(space_repo) and model_repo in hub_server.store.repos


@pytest.mark.slow
@pytest.mark.parametrize("transformers_version", ["5", "4.46"])
def test_space_app_without_the_package_returns_predicts_label_map(space, model_folder, images, tmp_path, transformers_version, request):
    from huggingface_hub import hf_hub_download

    python = sys.executable if transformers_version == "5" else request.getfixturevalue("transformers_4_python")
    model_repo, space_repo, _ = space
    app = Path(hf_hub_download(space_repo, "app.py", repo_type="space", local_dir=tmp_path / "space"))
    command = [str(python), "-c", SPACE_RUN, str(app), str(images["wide"]), str(tmp_path / "out.npz"),
               str(images["text"]), str(images["small"])]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.splitlines()[-1])
    expected = predicted_label_map(model_folder, images["wide"], [], tmp_path / "predicted")
    maps = np.load(tmp_path / "out.npz")
    assert np.array_equal(maps["direct"], expected) and np.array_equal(maps["png"], expected)
    assert report["blocks"] == "Blocks" and report["transformers"].startswith(transformers_version)
    assert report["shares"] == pytest.approx({BUILTIN_ID2LABEL[i]: share for i, share in classes_present(expected)})
    assert "notes.png as an image (not an image file)" in report["errors"][0]
    assert "16x16 pixels: too small for this model" in report["errors"][1]


def test_space_needs_a_hub_model(model_folder, capsys):
    with pytest.raises(SystemExit) as exit:
        cli(["space", str(model_folder), "user/space", "--no-push"])
    assert exit.value.code == 2
    assert "MODEL must be the Hub repo id of a model" in capsys.readouterr().err


# --- bad invocations: one error line, exit status 2 ------------------------------------------------


def run_cli(argv: list, capsys) -> str:
    """The one error line of `segformer ARGV` run in this process, which must end with exit status 2."""
    with pytest.raises(SystemExit) as exited:
        cli(argv)
    stderr = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith(f"segformer {argv[0]}: error:")]
    assert len(errors) == 1 and stderr.rstrip().splitlines()[-1] == errors[0], stderr
    return errors[0]


@pytest.mark.parametrize(
    "arguments, names",
    [
        ("app {tmp}/no-such-model", "no-such-model"),
        ("app {model} --port 0", "--port"),
        ("app {model} --port 70000", "--port"),
        ("app {model} --window 0", "window"),
        ("app {model} --stride -1", "stride"),
        ("space {model} user/space", "MODEL must be the Hub repo id"),
        ("space nosuch/model user/space", "nosuch/model"),
        ("space user/model not/a/repo", "REPO"),
    ],
)
def test_bad_invocations(arguments, names, model_folder, tmp_path, capsys, hub_server, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [argument.format(model=model_folder, tmp=tmp_path) for argument in arguments.split()]
    assert names in run_cli(argv, capsys)


def test_app_without_gradio_says_which_extra(model_folder, capsys, monkeypatch):
    import segformer.app

    monkeypatch.setitem(sys.modules, "gradio", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "segformer.app.ui", raising=False)  # imported afresh, also if it was
    monkeypatch.delattr(segformer.app, "ui", raising=False)
    assert "pip install 'segformer[app]'" in run_cli(["app", str(model_folder)], capsys)


def test_the_app_keeps_the_users_gradio_analytics_setting(monkeypatch):
    import segformer.app
    from segformer.app.command import import_ui

    for setting, expected in (("True", "True"), (None, "False")):  # the user's, else off
        monkeypatch.delitem(sys.modules, "segformer.app.ui", raising=False)  # imported afresh
        monkeypatch.delattr(segformer.app, "ui", raising=False)
        if setting is None:
            monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
        else:
            monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", setting)
        import_ui()
        assert os.environ["GRADIO_ANALYTICS_ENABLED"] == expected


def test_space_upload_failure_is_one_line(hub_server, hub_user, space, capsys, tmp_path):
    model_repo, _, _ = space
    hub_server.inject_failure("POST", r"/api/spaces/.*/commit/", status=500)
    line = run_cli(["space", model_repo, f"{hub_user}/failing-space", "--output-dir", str(tmp_path / "s")], capsys)
    assert "Uploading the Space" in line and "failing-space" in line and (tmp_path / "s" / "app.py").is_file()


@pytest.mark.slow
def test_app_on_a_busy_port_is_one_line(model_folder, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = run_cli(["app", str(model_folder), "--port", str(port)], capsys)
    assert str(port) in line
