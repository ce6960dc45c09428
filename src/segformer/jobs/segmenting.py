"""The job loop: read ahead, segment, write behind.

Workers read and normalise the images (`reading`), this process groups them by size and runs the model
through `segformer.inference` (the label maps of training evaluation and `pipeline()`), and a thread pool
encodes and writes the outputs (`writing`, `dataset_output`). A bad image is named and skipped (or, with
`on_error="stop"`, ends the job as an InputError); the report says what was done and where the time went.
"""

import sys
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..errors import InputError
from ..inference import InferenceSettings, segment_inputs, segment_probabilities
from .reading import ReadImages, batches_of_one_size, read_ahead

ON_ERROR = ("skip", "stop")


@dataclass
class JobOptions:
    """How the loop runs: images per batch (of one size), reader processes, what a bad image does, and
    whether to write the class probabilities (then the label maps are their argmax) and keep the opened
    images (overlays need them)."""

    batch_size: int = 1
    num_workers: int = 2
    on_error: str = "skip"
    probabilities: bool = False
    keep_images: bool = False
    skip_existing: bool = False
    progress: bool = True
    description: str = "segmenting"
    time_first_batch: bool = False  # say how long the first batch took (torch.compile compiles there)


@dataclass
class JobReport:
    """What a job did: images written, skipped as done before, and (name, reason) of each that failed;
    seconds spent waiting for images, segmenting, and waiting for writes, and in all."""

    written: int = 0
    skipped: int = 0
    failures: list = field(default_factory=list)
    seconds: dict = field(default_factory=lambda: dict(reading=0.0, segmenting=0.0, writing=0.0, total=0.0))


def _timed(iterable, seconds: dict, key: str):
    iterator = iter(iterable)
    while True:
        began = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            return
        finally:
            seconds[key] += time.perf_counter() - began
        yield item


@torch.inference_mode()
def segment_to_outputs(batch: list, model, processor, settings: InferenceSettings, probabilities: bool) -> list:
    """(label map, probabilities or None) as numpy arrays for a batch of `Read`s of one size."""
    pixel_values = torch.stack([read.pixel_values for read in batch]).to(model.device)
    if not probabilities:
        label_maps = segment_inputs(model, processor, settings, pixel_values, [read.size for read in batch])
        return [(label_map.cpu().numpy(), None) for label_map in label_maps]
    # The label maps are the argmax of the probabilities written, so the two files always agree.
    scores = segment_probabilities(model, pixel_values, settings)
    return [(score.argmax(dim=0).cpu().numpy(), score.half().cpu().numpy()) for score in scores]


def run_job(model, processor, settings: InferenceSettings, source, indices, writer, options: JobOptions) -> JobReport:
    """Segment the items `indices` of `source` and hand each result to `writer` (`FileWriter` or
    `DatasetWriter`, closed here); with `skip_existing`, items whose outputs the writer has are skipped."""
    report = JobReport()
    began = time.perf_counter()
    if options.skip_existing:
        finished = writer.finished()
        todo = [index for index in indices if source.names[index] not in finished]
        report.skipped = len(indices) - len(todo)
    else:
        todo = list(indices)
    reads = read_ahead(ReadImages(source, todo, processor, settings, options.keep_images), options.num_workers)
    progress = tqdm(total=len(todo), desc=options.description, unit="img", disable=not options.progress, file=sys.stderr)
    try:
        for batch in batches_of_one_size(_timed(reads, report.seconds, "reading"), options.batch_size):
            if batch[0].error is not None:
                if options.on_error == "stop":
                    raise InputError(f"{batch[0].error} (--on-error stop: the job ends at the first bad image)")
                report.failures.append((batch[0].name, batch[0].error))
                progress.write(f"Skipped {batch[0].error}", file=sys.stderr)
                progress.update(1)
                continue
            start = time.perf_counter()
            results = segment_to_outputs(batch, model, processor, settings, options.probabilities)
            seconds = time.perf_counter() - start
            report.seconds["segmenting"] += seconds
            if options.time_first_batch and report.written == 0:
                progress.write(f"First batch (with torch.compile: compilation and first run): {seconds:.1f} s")
            for read, (label_map, scores) in zip(batch, results):
                writer.submit(read.name, label_map, read.image, scores)
            report.written += len(batch)
            progress.update(len(batch))
    finally:
        progress.close()
        writer.close()
        report.seconds["writing"] = writer.pool.waited
        report.seconds["total"] = time.perf_counter() - began
    return report


def describe_time(report: JobReport) -> str:
    """'N img/s; of T s, a s waiting for images, b s segmenting, c s waiting for writes'."""
    seconds = report.seconds
    rate = report.written / seconds["total"] if seconds["total"] else 0.0
    return (
        f"{rate:.2f} images/s; of {seconds['total']:.1f} s, {seconds['segmenting']:.1f} s segmenting, "
        f"{seconds['reading']:.1f} s waiting for images, {seconds['writing']:.1f} s waiting for writes"
    )
