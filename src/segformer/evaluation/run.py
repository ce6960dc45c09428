"""`segformer evaluate` from start to end: every check that can fail on the options, the model or the data
first (one error line, status 2), then the threshold search of a one-label model, the evaluation and the
report; and `write_outputs`, the report that `segformer train`'s final evaluation writes too."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from .. import cli, data
from ..errors import DataError, InputError, OptionError
from ..loading import PROCESSOR_FILE, load_image_processor, load_model
from . import engine, metrics, plots, report

PROTOCOL_OPTIONS = ("protocol", "short_side", "no_resize", "window", "scales", "multi_scale")


def has_processor(name: str, revision: str | None = None, token: str | None = None) -> bool:
    """Whether the model folder or Hub repository has a saved image processor."""
    if Path(name).is_dir():
        return (Path(name) / PROCESSOR_FILE).is_file()
    from huggingface_hub import file_exists

    try:
        return file_exists(name, PROCESSOR_FILE, revision=revision, token=token)
    except Exception:  # noqa: BLE001 - unreachable or private: loading the processor says why
        return True


def dataset_id2label(args: argparse.Namespace) -> dict | None:
    """The class names the dataset comes with (--id2label, the built-in set's, an id2label.json), or None."""
    if args.id2label:
        return data.read_id2label(args.id2label)
    if args.dataset == data.BUILTIN_DATASET:
        return dict(data.BUILTIN_ID2LABEL)
    if Path(args.dataset).is_dir():
        found = next(Path(args.dataset).rglob("id2label.json"), None)
        return data.read_id2label(str(found)) if found else None
    return data.hub_id2label(args.dataset)


def check_classes(args: argparse.Namespace, id2label: dict):
    """A dataset made for another label count than the model's stops here."""
    given = dataset_id2label(args)
    if given is None or len(given) in (len(id2label), len(data.mask_classes(id2label))):
        return
    where = "--id2label" if args.id2label else f"dataset {args.dataset!r}"
    raise DataError(
        f"{where} has {len(given)} classes but the model has {len(id2label)} labels: it was not trained for this "
        "dataset. Evaluate a model trained on it, or give the dataset's classes in the model's numbering with "
        "--label-map."
    )


def load_dataset(args: argparse.Namespace, processor, classes: dict, label_map: dict, do_reduce_labels: bool):
    """The split to evaluate as a `SegmentationDataset`, loaded as `segformer train` loads its splits."""
    _, split = data.load_splits(
        args.dataset, config_name=args.dataset_config, train_split=args.split, eval_split=args.split, seed=args.seed
    )
    name = args.split
    if args.max_samples and args.max_samples < len(split):
        split = split.select(range(args.max_samples))
        name = f"{args.split}[:{args.max_samples}]"  # `datasets`' slice syntax: the report and card say so
    transform = data.EvalTransform(mean=tuple(processor.image_mean), std=tuple(processor.image_std))
    return data.SegmentationDataset(
        split, transform, num_labels=len(classes), image_column=args.image_column, label_column=args.label_column,
        do_reduce_labels=do_reduce_labels, label_map=label_map, split=name, seed=args.seed,
    )  # fmt: skip


def write_outputs(model, dataset, settings, evaluation, folder, *, model_name: str, dataset_name: str,
                  worst_images: int = 6, label_map: dict | None = None, do_reduce_labels: bool = False,
                  processor=None) -> dict:  # fmt: skip
    """The report of an evaluation into `folder` (eval_results.json, eval_report.md, pictures); returns
    the results. Call on the main process only."""
    results = report.build_results(
        evaluation, model=model_name, dataset=dataset_name, split=dataset.split, settings=settings,
        num_images=len(dataset), label_map=label_map, do_reduce_labels=do_reduce_labels,
    )  # fmt: skip
    pictures = plots.draw_pictures(
        model, dataset, settings, evaluation, results["classes"], Path(folder), worst_images, processor
    )
    report.write_report(results, folder, pictures)
    return results


def save_threshold(folder: str, threshold: float):
    """The threshold into the model folder's config.json and preprocessor_config.json (which `pipeline()`
    reads), nothing else of them changed."""
    for name in ("config.json", PROCESSOR_FILE):
        path = Path(folder) / name
        if path.is_file():
            values = json.loads(path.read_text())
            values["threshold"] = threshold
            path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")


def run_evaluation(args: argparse.Namespace, model_name: str, threshold) -> dict:
    """Everything `segformer evaluate` does; returns the results (on the main process, else None)."""
    from accelerate import Accelerator

    from ..train.datasets import check_samples

    accelerator = Accelerator(cpu=args.device == "cpu")
    hub = dict(revision=args.revision, token=args.token)
    model = load_model(model_name, device=accelerator.device, **hub).eval()
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    one_label = model.config.num_labels == 1
    if threshold is not None and not one_label:
        raise OptionError(f"--threshold is for one-label (sigmoid) models; {model_name} has {len(id2label)} labels.")
    if args.save_threshold and not one_label:
        raise OptionError("--save-threshold is for one-label (sigmoid) models.")
    if not has_processor(model_name, **hub) and not any(getattr(args, name) for name in PROTOCOL_OPTIONS):
        raise InputError(
            f"model {model_name!r} has no {PROCESSOR_FILE}, so how its images were resized is unknown: give the "
            "protocol with --protocol or --short-side (or --no-resize), or save the model's image processor."
        )
    processor = load_image_processor(model_name, **hub)
    settings = cli.settings_from_args(args, processor)
    check_classes(args, id2label)
    classes = data.mask_classes(id2label)
    label_map = data.parse_label_map(args.label_map)
    reduce = processor.do_reduce_labels if args.do_reduce_labels is None else args.do_reduce_labels
    data.check_label_map(label_map, len(classes), do_reduce_labels=reduce)
    dataset = load_dataset(args, processor, classes, label_map, reduce)
    # Every mask read and checked before any image is segmented: bad masks stop the run now.
    audit = check_samples(dataset, accelerator)
    for warning in data.check_audits({"validation": audit}, classes, label_map=label_map,
                                     allow_missing_classes=args.allow_missing_classes):  # fmt: skip
        accelerator.print(f"Warning: {warning}")
    loader = engine.build_loader(dataset, accelerator, args.batch_size, args.num_workers)
    if threshold == "auto":
        foreground, background = engine.foreground_histograms(model, loader, accelerator, settings)
        threshold, best = metrics.best_threshold(foreground, background, engine.THRESHOLDS)
        accelerator.print(f"Best-IoU threshold on {dataset.split}: {threshold:g} (foreground IoU {best:.4f}).")
    if threshold is not None:
        settings = replace(settings, threshold=threshold)
    evaluation = engine.evaluate(model, loader, accelerator, settings, id2label, per_image=True, processor=processor)
    dataset_name = data.BUILTIN_CARD_NAME if args.dataset == data.BUILTIN_DATASET else args.dataset
    results = None  # written and returned by the main process
    if accelerator.is_main_process:
        results = write_outputs(model, dataset, settings, evaluation, args.output_dir, model_name=model_name,
                                dataset_name=dataset_name, worst_images=args.worst_images, label_map=label_map,
                                do_reduce_labels=reduce, processor=processor)  # fmt: skip
        print(report.summary_table(results))
        print(f"{model_name} on {dataset_name} ({dataset.split}, {len(dataset)} images, {results['protocol']['description']}): "
              f"{report.headline(results)}. Wrote {args.output_dir}/{report.REPORT_FILE}")  # fmt: skip
        if args.save_threshold:
            save_threshold(model_name, evaluation.threshold)
            print(f"Saved threshold {evaluation.threshold:g} in {model_name}/config.json and its image processor.")
        if args.push_to_hub:
            from ..hub.results import update_card

            where = update_card(args.push_to_hub, results, token=args.token)
            print(f"Results in the model card's model-index: {where}")
    accelerator.wait_for_everyone()
    return results
