"""Segment images with a trained model: label maps, overlays or class probabilities, for jobs of any size.

MODEL is anything `SegFormerForSemanticSegmentation.from_pretrained` accepts: a folder written by
`save_pretrained` (or `segformer train`/`convert`), or a Hub repo id. IMAGES are files, folders (their
images, sorted) or quoted glob patterns; or --dataset NAME_OR_PATH --split S segments the image column of a
`datasets` split (rows named by their index). For every image NAME it writes, into --output-dir, what
--outputs asks for:

  NAME_labels.png          the class id of every pixel (palette PNG in the class colours; 16-bit past 256 classes)
  NAME_overlay.png         the colours over the image, with a legend of the classes present and their share
  NAME_probabilities.npy   float16 (classes, height, width) class probabilities (the label map is their argmax)

--output-format dataset writes the label maps (and overlays) as Parquet shards with id2label.json and a
dataset card instead, which `datasets.load_dataset(OUTPUT_DIR)` reads and --push-to-hub publishes.

Jobs of any size: images are read ahead by --num-workers processes and outputs written behind by threads,
every file atomically; --skip-existing resumes a killed job; a bad image is named and skipped (the job ends
with exit status 1 and the list in failed.txt), or ends the job with --on-error stop. Several processes
(GPUs, machines) share the images: `accelerate launch -m segformer.predict MODEL IMAGES ...`.

Default protocol: the one the model's saved image processor describes, which is what training evaluated
and what `pipeline("image-segmentation")` runs (short side resized, sides rounded up to a multiple of 32).
--protocol picks the paper's settings by dataset name (ade20k: short side 512; cityscapes: 1024 windows
every 768 pixels); --short-side, --window/--stride, --scales and --flip override single settings.

Speed: --dtype bf16/fp16 casts the weights where the device computes in that precision natively (a CPU
without AVX512-BF16/AMX keeps fp32 and says so); --quantize int8 runs int8 Linear layers on the CPU;
--compile uses torch.compile (its warm-up is printed apart). benchmarks/benchmark.py measures each mode's
speed and its agreement with fp32. docs/predict.md tells more.
"""

import argparse
import sys
from pathlib import Path

from . import cli
from .cli import settings_from_args  # noqa: F401  (predict.settings_from_args, as before)
from .errors import IncompleteError, OptionError
from .files import make_output_dir
from .jobs import (
    ON_ERROR,
    DatasetWriter,
    FileSource,
    FileWriter,
    JobOptions,
    Processes,
    atomic_write,
    dataset_source,
    describe_time,
    parse_outputs,
    push_dataset,
    remove_temporaries,
    run_job,
    shard,
    shard_files,
    write_card,
)
from .loading import load_image_processor, load_model, resolve_device
from .precision import QUANTIZATIONS, SpeedSettings, prepare_for_inference
from .visualization import config_palette

FAILED_FILE = "failed.txt"
NAMED_FAILURES = 5  # in the error line; failed.txt lists them all


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("model", help="Model folder or Hub repo id.")
    parser.add_argument("images", nargs="*", help="Image files, folders or quoted glob patterns (or --dataset).")
    data = parser.add_argument_group("dataset input (instead of IMAGES)")
    data.add_argument("--dataset", metavar="NAME_OR_PATH", help="A Hub dataset id or a local dataset folder in any form `segformer train` reads (default: none).")
    data.add_argument("--split", default="train", help="The split of --dataset to segment.")
    data.add_argument("--dataset-config", help="The configuration of --dataset (default: its only or default one).")
    data.add_argument("--image-column", help="The column of images (default: found by type and name, as train finds it).")
    cli.add_output_dir(parser, "outputs/predict", "for the outputs")
    parser.add_argument("--outputs", default="labels,overlays", help="Comma-separated: labels, overlays, probabilities.")
    parser.add_argument("--output-format", default="files", choices=("files", "dataset"),
                        help="One file per output and image, or Parquet shards that datasets.load_dataset reads.")  # fmt: skip
    cli.add_push_to_hub(parser, "the --output-format dataset folder as a Hub dataset")
    cli.add_model_download(parser)
    cli.add_device(parser)
    cli.add_dtype(parser)
    speed = parser.add_argument_group("speed (see `segformer.precision`)")
    speed.add_argument("--quantize", choices=QUANTIZATIONS, help="int8 Linear layers (dynamic quantization, CPU) (default: none).")
    speed.add_argument("--compile", action="store_true", help="torch.compile the model; the first batch compiles it.")
    job = parser.add_argument_group("job")
    job.add_argument("--batch-size", type=int, default=1, help="Images of the same size run together.")
    job.add_argument("--num-workers", type=int, default=2, help="Processes that read images ahead (0: read in this one).")
    job.add_argument("--write-threads", type=int, default=2, help="Threads that encode and write the outputs.")
    job.add_argument("--skip-existing", action="store_true", help="Skip images whose outputs exist (resume a killed job).")
    job.add_argument("--on-error", default="skip", choices=ON_ERROR, help="What a bad image does: skipped and named, or the job stops.")
    job.add_argument("--png-compression", type=int, default=1, choices=range(10), metavar="0..9",
                     help="zlib level of the PNGs: 1 writes fast, 6 (PIL's default) writes smaller files.")  # fmt: skip
    job.add_argument("--shard-size", type=int, default=1000, help="Rows per Parquet shard of --output-format dataset.")
    job.add_argument("--no-progress", action="store_true", help="No progress bar (logs of batch jobs).")
    cli.add_protocol_arguments(parser)
    parser.add_argument("--alpha", type=float, default=0.5, help="Opacity of the colours in the overlay.")


def check_arguments(args: argparse.Namespace) -> tuple:
    """The outputs asked for; an OptionError for any option out of range or combination that cannot work."""
    for name in ("batch_size", "write_threads", "shard_size"):
        if getattr(args, name) < 1:
            raise OptionError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if args.num_workers < 0:
        raise OptionError(f"--num-workers must be 0 or more, got {args.num_workers}.")
    if not 0.0 <= args.alpha <= 1.0:
        raise OptionError(f"--alpha must be between 0 and 1, got {args.alpha}.")
    if bool(args.images) == bool(args.dataset):
        raise OptionError("give IMAGES (files, folders, glob patterns) or --dataset, one of the two")
    if args.push_to_hub and args.output_format != "dataset":
        raise OptionError("--push-to-hub publishes a dataset: add --output-format dataset")
    return parse_outputs(args.outputs)


def job_device(device: str | None, processes: Processes):
    """--device, except that under a multi-process launcher each process takes the device Accelerate
    gives it (its own GPU) unless --device cpu is asked for."""
    if processes.count > 1 and (device is None or resolve_device(device).type == processes.device.type):
        return processes.device
    return resolve_device(device)


def build_writer(args: argparse.Namespace, folder: Path, outputs: tuple, palette, id2label: dict, process_index: int):
    """The `FileWriter`, or the `DatasetWriter` of --output-format dataset (split: --split for dataset
    input, "train" for files), which refuses to add a second run's shards unless --skip-existing."""
    look = dict(outputs=outputs, palette=palette, id2label=id2label, alpha=args.alpha, threads=args.write_threads,
                compress_level=args.png_compression)  # fmt: skip
    if args.output_format == "files":
        return FileWriter(folder, **look)
    split = args.split if args.dataset else "train"
    if shard_files(folder, split) and not args.skip_existing:
        raise OptionError(f"{folder} holds shards of split {split!r} already: add --skip-existing to resume that job, "
                          "or pick another --output-dir")  # fmt: skip
    return DatasetWriter(folder, split, **look, process_index=process_index, shard_size=args.shard_size)


def main(args: argparse.Namespace):
    speed = SpeedSettings(args.dtype, args.quantize, args.compile)  # checked before anything is read
    outputs = check_arguments(args)
    processes = Processes()
    if args.dataset:
        source = dataset_source(args.dataset, args.split, args.image_column, config_name=args.dataset_config)
    else:
        source = FileSource(args.images)
    hub = dict(revision=args.revision, token=args.token)
    device = job_device(args.device, processes)
    model = load_model(args.model, device=device, dtype="fp32", **hub)
    model, notes = prepare_for_inference(model, speed, device)
    notes[0] += processes.describe()  # "Running on ...", and which process this is
    for note in notes:
        print(note)
    processor = load_image_processor(args.model, **hub)
    settings = settings_from_args(args, processor)
    if "probabilities" in outputs and settings.resize_protocol != "segformer":
        raise OptionError(
            f"--outputs probabilities averages this package's passes, but the model's processor runs "
            f"{settings.resize_protocol}'s protocol: give --short-side (or another protocol option) to use this "
            "package's, or leave probabilities out."
        )
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    palette = config_palette(model.config)

    folder = make_output_dir(args.output_dir)
    writer = build_writer(args, folder, outputs, palette, id2label, processes.index)
    if processes.is_main:
        remove_temporaries(folder)  # of a killed run; before any process writes
    processes.barrier()

    options = JobOptions(
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        on_error=args.on_error,
        probabilities="probabilities" in outputs,
        keep_images="overlays" in outputs,
        skip_existing=args.skip_existing,
        progress=processes.is_main and not args.no_progress,
        description=f"segmenting{processes.describe()}",
        time_first_batch=args.compile,
    )
    report = run_job(model, processor, settings, source, shard(len(source), processes.index, processes.count), writer, options)
    reports = processes.gather(report)
    if processes.is_main:
        finish(args, folder, source, outputs, id2label, reports)


def finish(args: argparse.Namespace, folder: Path, source, outputs: tuple, id2label: dict, reports: list):
    """The summary of all processes, the dataset card and upload, failed.txt; an IncompleteError (exit
    status 1) when images failed."""
    written, skipped = sum(r.written for r in reports), sum(r.skipped for r in reports)
    failures = sorted(failure for r in reports for failure in r.failures)
    if args.output_format == "dataset":
        write_card(folder, id2label, args.model, overlays="overlays" in outputs)
    done = f"; {skipped} skipped, done before" if skipped else ""
    print(f"Segmented {written} of {source.description} with {args.model}{done}; wrote {', '.join(outputs)} to {folder}")
    print(f"Time{' of process 0' if len(reports) > 1 else ''}: {describe_time(reports[0])}")
    failed_file = folder / FAILED_FILE
    if failures:
        lines = "".join(f"{name}\t{reason}\n" for name, reason in failures)
        atomic_write(failed_file, lambda file: file.write(lines.encode()))
    else:
        failed_file.unlink(missing_ok=True)  # the failures of an earlier run, now resolved
    if args.push_to_hub:
        url = push_dataset(folder, args.push_to_hub, private=args.private, token=args.token)
        print(f"Pushed the dataset to {url}")
    if failures:
        named = "; ".join(reason.rstrip(".") for _, reason in failures[:NAMED_FAILURES])
        more = f"; and {len(failures) - NAMED_FAILURES} more" if len(failures) > NAMED_FAILURES else ""
        raise IncompleteError(
            f"{len(failures)} of {written + len(failures)} image(s) could not be read and were skipped (all listed "
            f"in {failed_file}; the others are written): {named}{more}"
        )


if __name__ == "__main__":  # `python -m segformer.predict`, as `accelerate launch -m segformer.predict` runs it
    sys.exit(cli.main(["predict", *sys.argv[1:]]))
