"""`segformer predict` as a job of any size: bad images named and skipped (exit status 1) or the job
stopped, resuming with --skip-existing, atomic writes, the outputs (label maps equal to
`segment_images`, probabilities whose argmax they are), batches of one size, dataset input and output
read back by `datasets.load_dataset` and published to the (local test) Hub, and two processes under
`accelerate launch` writing exactly the files of one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from segformer import SegFormerForSemanticSegmentation, SegFormerImageProcessor
from segformer.cli import main
from segformer.errors import OutputError
from segformer.inference import segment_images
from segformer.jobs import Read, atomic_write, batches_of_one_size

SRC = Path(__file__).parents[1] / "src"
# Two sizes, so that batches of one size are formed and flushed.
GOOD = {"a": (48, 64), "b": (40, 56), "c": (48, 64), "d": (48, 64), "e": (40, 56)}


def photo(seed: int, size: tuple) -> Image.Image:
    """A smooth random picture (JPEG-friendly)."""
    small = np.random.default_rng(seed).integers(0, 256, (size[0] // 8, size[1] // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size[::-1], Image.BILINEAR)


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_config):
    folder = tmp_path_factory.mktemp("model") / "tiny"
    torch.manual_seed(0)
    SegFormerForSemanticSegmentation(tiny_config(id2label={i: f"class{i}" for i in range(5)})).save_pretrained(folder)
    SegFormerImageProcessor(short_side=64).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    for seed, (name, size) in enumerate(GOOD.items()):
        photo(seed, size).save(folder / f"{name}.jpg", quality=90)
    return folder


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, good_folder):
    """The good images and three bad ones: a truncated JPEG, a text file named .png, and a .npy array of two
    channels (the model takes three)."""
    folder = tmp_path_factory.mktemp("mixed")
    for path in good_folder.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    jpeg = (good_folder / "a.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "notes.png").write_text("not an image")
    np.save(folder / "two_bands.npy", np.zeros((32, 32, 2), np.float32))
    return folder


def predict(capsys, *arguments) -> tuple:
    """(exit status, stdout, stderr) of `segformer predict ARGUMENTS` in this process."""
    try:
        main(["predict", *map(str, arguments), "--no-progress"])
        status = 0
    except SystemExit as exited:
        status = exited.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def labels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_bad_images_are_named_and_skipped_and_the_job_ends_with_status_1(model, mixed_folder, tmp_path, capsys):
    status, out, err = predict(capsys, model, mixed_folder, "--output-dir", tmp_path, "--batch-size", "2")
    assert status == 1, err
    bad = ["broken.jpg", "notes.png", "two_bands.npy"]
    skipped = [line for line in err.splitlines() if line.startswith("Skipped")]
    assert len(skipped) == 3 and all(any(name in line for line in skipped) for name in bad), err
    assert "truncated" in err and "not an image" in err and "2 channels" in err
    error_lines = [line for line in err.splitlines() if line.startswith("segformer predict: error:")]
    assert len(error_lines) == 1 and err.rstrip().splitlines()[-1] == error_lines[0]
    assert "3 of 8 image(s)" in error_lines[0] and all(name in error_lines[0] for name in bad)
    assert "Traceback" not in err
    assert sorted(line.split("\t")[0] for line in (tmp_path / "failed.txt").read_text().splitlines()) == [
        "broken", "notes", "two_bands"]  # fmt: skip
    # Every good image is written, with the label map `segment_images` gives (the one inference path).
    written = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("failed"))
    assert written == sorted(f"{name}_{kind}.png" for name in GOOD for kind in ("labels", "overlay"))
    processor = SegFormerImageProcessor.from_pretrained(model)
    network = SegFormerForSemanticSegmentation.from_pretrained(model).eval()
    images = [Image.open(mixed_folder / f"{name}.jpg") for name in GOOD]
    for name, expected in zip(GOOD, segment_images(network, processor, images)):
        assert np.array_equal(labels(tmp_path / f"{name}_labels.png"), expected), name


def test_on_error_stop_ends_at_the_first_bad_image_with_status_2(model, mixed_folder, tmp_path, capsys):
    status, out, err = predict(capsys, model, mixed_folder, "--output-dir", tmp_path, "--on-error", "stop",
                               "--outputs", "labels", "--num-workers", "0")  # fmt: skip
    assert status == 2 and "broken.jpg" in err.splitlines()[-1] and "--on-error stop" in err.splitlines()[-1], err
    # Sorted, a.jpg and b.jpg come before broken.jpg: they are written, nothing after it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_labels.png", "b_labels.png"]


def test_skip_existing_resumes_without_redoing_finished_images(model, good_folder, tmp_path, capsys):
    assert predict(capsys, model, good_folder, "--output-dir", tmp_path, "--outputs", "labels")[0] == 0
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    # A killed job: two images not done, one left only a temporary file.
    (tmp_path / "b_labels.png").unlink()
    (tmp_path / "d_labels.png").unlink()
    (tmp_path / ".d_labels.png.4242-1.tmp").write_bytes(b"half a PNG")
    status, out, err = predict(capsys, model, good_folder, "--output-dir", tmp_path, "--outputs", "labels", "--skip-existing")
    assert status == 0, err
    assert "Segmented 2 of 5" in out and "3 skipped, done before" in out
    after = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert sorted(after) == sorted(before), "the temporary file is gone, the missing outputs are back"
    assert all(after[name] == before[name] for name in ("a_labels.png", "c_labels.png", "e_labels.png"))
    # An image counts as done only when every output asked for is there: overlays are new, so all run.
    status, out, err = predict(capsys, model, good_folder, "--output-dir", tmp_path, "--skip-existing")
    assert status == 0 and "Segmented 5 of 5" in out, err


def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path):
    target = tmp_path / "x_labels.png"
    target.write_bytes(b"old")

    def half_then_fail(file):
        file.write(b"half")
        raise KeyboardInterrupt  # as a kill would, in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x_labels.png"]
    atomic_write(target, lambda file: file.write(b"new"))
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["x_labels.png"]
    with pytest.raises(OutputError, match="missing-folder"):
        atomic_write(tmp_path / "missing-folder" / "y.png", lambda file: file.write(b"y"))


def test_probabilities_are_float16_and_the_label_maps_their_argmax(model, good_folder, tmp_path, capsys):
    status, _, err = predict(capsys, model, good_folder, "--output-dir", tmp_path, "--outputs", "probabilities,labels")
    assert status == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{name}_{kind}" for name in GOOD for kind in ("labels.png", "probabilities.npy"))  # fmt: skip
    for name, (height, width) in GOOD.items():
        scores = np.load(tmp_path / f"{name}_probabilities.npy")
        assert scores.dtype == np.float16 and scores.shape == (5, height, width)
        assert np.allclose(scores.astype(np.float32).sum(axis=0), 1, atol=5e-3)
        label_map = labels(tmp_path / f"{name}_labels.png")
        top = scores.max(axis=0)
        # float16 rounding can tie the top two; elsewhere the label is the most probable class
        clear = np.sort(scores.astype(np.float32), axis=0)[-2] < top
        assert np.array_equal(label_map[clear], scores.argmax(axis=0)[clear]) and clear.mean() > 0.9


def read(index: int, size: tuple) -> Read:
    return Read(index, str(index), torch.zeros(3, *size))


def test_batches_hold_one_size_and_memory_stays_bounded():
    sizes = [(8, 8), (8, 16), (8, 8), (8, 8), (8, 16), (16, 16), (8, 8)]
    reads = [read(i, size) for i, size in enumerate(sizes)]
    reads.insert(3, Read(99, "bad", error="cannot read bad"))
    batches = list(batches_of_one_size(reads, batch_size=2))
    for batch in batches:
        assert len(batch) <= 2 and len({tuple(r.pixel_values.shape) for r in batch if r.error is None}) <= 1
    assert sorted(r.index for batch in batches for r in batch) == [0, 1, 2, 3, 4, 5, 6, 99]
    assert [r.index for r in batches[0]] == [0, 2] and [r.index for r in batches[1]] == [99]
    # Never more than max_waiting images held back for partners of their size.
    many = [read(i, (8, 8 * (i + 1))) for i in range(10)]
    batches = list(batches_of_one_size(many, batch_size=4, max_waiting=3))
    assert [r.index for batch in batches for r in batch] == list(range(10))


@pytest.fixture(scope="module")
def input_dataset(tmp_path_factory, good_folder):
    """A `save_to_disk` dataset with the good images in split "validation" and one row of bad bytes."""
    rows = [{"image": {"bytes": (good_folder / f"{name}.jpg").read_bytes(), "path": None}, "id": name} for name in GOOD]
    rows.insert(2, {"image": {"bytes": b"garbage", "path": "broken.jpg"}, "id": "bad"})
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image()})
    folder = tmp_path_factory.mktemp("input-dataset")
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows, features=features)}).save_to_disk(folder)
    return folder


@pytest.mark.slow
def test_dataset_in_dataset_out_round_trip_and_push(model, input_dataset, good_folder, tmp_path, capsys, hub_server, hub_repo_id):
    out = tmp_path / "out"
    status, _, err = predict(capsys, model, "--dataset", input_dataset, "--split", "validation", "--output-dir", out,
                             "--output-format", "dataset", "--outputs", "labels", "--shard-size", "2",
                             "--push-to-hub", hub_repo_id)  # fmt: skip
    assert status == 1 and "row 2 (broken.jpg)" in err.splitlines()[-1], err
    assert len(list((out / "data").glob("validation-*.parquet"))) == 3
    assert json.loads((out / "id2label.json").read_text()) == {str(i): f"class{i}" for i in range(5)}
    expected_dir = tmp_path / "files"
    assert predict(capsys, model, good_folder, "--output-dir", expected_dir, "--outputs", "labels")[0] == 0
    expected = {f"{i if i < 2 else i + 1:05d}": labels(expected_dir / f"{name}_labels.png") for i, name in enumerate(GOOD)}
    for source in (str(out), hub_repo_id):  # the folder, and the dataset pushed to the (local) Hub
        rows = datasets.load_dataset(source, split="validation")
        assert set(rows.column_names) == {"name", "label"}
        assert sorted(rows["name"]) == sorted(expected)
        for row in rows:
            assert np.array_equal(np.asarray(row["label"]), expected[row["name"]]), (source, row["name"])
    # Resuming writes only the row that failed (it fails again): no shard is redone.
    shards = {p.name: p.stat().st_mtime_ns for p in (out / "data").iterdir()}
    status, out_text, err = predict(capsys, model, "--dataset", input_dataset, "--split", "validation", "--output-dir",
                                    out, "--output-format", "dataset", "--outputs", "labels", "--skip-existing")  # fmt: skip
    assert status == 1 and "5 skipped, done before" in out_text, err
    assert {p.name: p.stat().st_mtime_ns for p in (out / "data").iterdir()} == shards
    # Without --skip-existing a second job into the same folder would mix two runs: refused.
    status, _, err = predict(capsys, model, "--dataset", input_dataset, "--split", "validation", "--output-dir", out,
                             "--output-format", "dataset")  # fmt: skip
    assert status == 2 and "--skip-existing" in err.splitlines()[-1]


def test_dataset_input_finds_the_image_column_as_train_does_and_asks_when_it_cannot(model, tmp_path, capsys, good_folder):
    image = {"bytes": (good_folder / "a.jpg").read_bytes(), "path": None}
    # "image" is a name in common use for images, "mask" one for masks: found without help.
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    datasets.Dataset.from_list([{"image": image, "mask": image}], features=features).save_to_disk(tmp_path / "named")
    status, _, err = predict(capsys, model, "--dataset", tmp_path / "named", "--output-dir", tmp_path / "named-out",
                             "--outputs", "labels")  # fmt: skip
    assert status == 0 and (tmp_path / "named-out" / "00000_labels.png").is_file(), err
    # Two image columns named neither way: an error naming them, until --image-column picks one.
    features = datasets.Features({"left": datasets.Image(), "right": datasets.Image()})
    datasets.Dataset.from_list([{"left": image, "right": image}], features=features).save_to_disk(tmp_path / "two")
    status, _, err = predict(capsys, model, "--dataset", tmp_path / "two", "--output-dir", tmp_path / "out")
    assert status == 2 and "--image-column" in err.splitlines()[-1] and "'right'" in err.splitlines()[-1]
    status, out, err = predict(capsys, model, "--dataset", tmp_path / "two", "--image-column", "left", "--output-dir",
                               tmp_path / "out", "--outputs", "labels")  # fmt: skip
    assert status == 0 and (tmp_path / "out" / "00000_labels.png").is_file(), err


def launch(arguments: list, processes: int) -> subprocess.CompletedProcess:
    """`segformer predict` as `accelerate launch -m segformer.predict` runs it, on the CPU, one thread each."""
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "segformer.predict"]
    if processes > 1:
        # `accelerate launch --cpu --num_processes 2` starts one process unless MPI is set up; torchrun-style
        # processes on the CPU are --multi_gpu with ACCELERATE_USE_CPU (what `--cpu` sets), joined by gloo.
        environment["ACCELERATE_USE_CPU"] = "1"
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "segformer.predict"]  # fmt: skip
    return subprocess.run(command + [str(a) for a in arguments], capture_output=True, text=True, env=environment, timeout=300)


@pytest.mark.slow
def test_two_processes_write_the_files_of_one(model, mixed_folder, tmp_path):
    runs = {}
    for processes in (1, 2):
        folder = tmp_path / f"processes-{processes}"
        result = launch([model, mixed_folder, "--output-dir", folder, "--batch-size", "2", "--no-progress"], processes)
        assert result.returncode != 0 and "3 of 8 image(s)" in result.stderr, result.stderr[-3000:]
        runs[processes] = {p.name: p.read_bytes() for p in folder.iterdir()}
        if processes == 2:
            assert "(process 1 of 2)" in result.stdout, result.stdout
    assert sorted(runs[2]) == sorted(runs[1]) and len(runs[1]) == 2 * len(GOOD) + 1
    assert all(runs[2][name] == runs[1][name] for name in runs[1]), "every file equals the one-process run's"
