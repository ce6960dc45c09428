"""Evaluation results in a model card's `model-index` metadata, the form the Hub shows and
`huggingface_hub.ModelCard` parses back as `EvalResult`s; and updating the card of a local model folder or
of a Hub repository with them, without touching anything else (weights, config, other results)."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..errors import HubError, InputError
from ..evaluation.metrics import SUMMARY

TASK = ("semantic-segmentation", "Semantic Segmentation")
# Results key -> the metric's type in model-index (the `evaluate` library's names where it has them).
METRIC_TYPES = {"mIoU": "mean_iou", "aAcc": "accuracy", "mAcc": "mean_accuracy", "mDice": "dice", "mFscore": "f1",
                "mPrecision": "precision", "mRecall": "recall", "fwIoU": "frequency_weighted_iou"}  # fmt: skip
BINARY_TYPES = {"foreground_iou": "iou", "foreground_dice": "dice", "foreground_precision": "precision",
                "foreground_recall": "recall"}  # fmt: skip


def eval_results(results: dict, dataset_name: str | None = None) -> list:
    """`EvalResult`s of an evaluation's results (`evaluation.report.build_results`): the foreground's
    numbers first for a one-label model, then mmseg's set; the protocol is each metric's `metric_config`."""
    dataset = dataset_name or results["dataset"]
    common = dict(
        task_type=TASK[0], task_name=TASK[1], dataset_type=dataset, dataset_name=dataset,
        dataset_split=results["split"], metric_config=results["protocol"]["description"],
    )  # fmt: skip
    entries = []
    binary = results.get("binary") or {}
    for key, metric_type in BINARY_TYPES.items():
        if binary.get(key) is not None:
            name = f"foreground {metric_type} (threshold {binary['threshold']:g})"
            entries.append(
                EvalResult(metric_type=metric_type, metric_name=name, metric_value=round(binary[key], 4), **common)
            )
    for key in sorted(SUMMARY, key=lambda key: key != "mIoU"):  # the headline first: the Hub shows it
        value = results["metrics"][key]
        if value is not None:
            entries.append(
                EvalResult(metric_type=METRIC_TYPES[key], metric_name=key, metric_value=round(value, 4), **common)
            )
    return entries


def _same_evaluation(old: EvalResult, new: EvalResult) -> bool:
    """Results of the same task, dataset, split and protocol: the new ones replace them."""
    keys = ("task_type", "dataset_type", "dataset_name", "dataset_split", "metric_config")
    return all(getattr(old, key) == getattr(new, key) for key in keys)


def merge(card: ModelCard, entries: list, model_name: str) -> ModelCard:
    """`card` with `entries` in its model-index, replacing earlier results of the same evaluation."""
    kept = [old for old in card.data.eval_results or [] if not any(_same_evaluation(old, new) for new in entries)]
    card.data.eval_results = kept + entries
    card.data.model_name = card.data.model_name or model_name
    return card


def update_card(target: str, results: dict, *, token: str | None = None) -> str:
    """Put `results` into the model-index of the card of `target`: a local model folder (its README.md,
    created if missing) or a Hub model repository (only README.md is uploaded, in one commit; the
    repository must exist). Returns the card's path or the commit URL."""
    entries = eval_results(results)
    folder = Path(target)
    if folder.is_dir():
        path = folder / "README.md"
        card = ModelCard.load(path) if path.is_file() else ModelCard(f"---\n{ModelCardData().to_yaml()}\n---\n")
        merge(card, entries, folder.name).save(path)
        return str(path)
    if target.startswith((".", "/", "~")):
        raise InputError(f"--push-to-hub {target}: no such folder (a Hub repository is named 'owner/name').")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import EntryNotFoundError

    api = HfApi(token=token)
    try:
        try:
            card = ModelCard.load(target, token=token)
        except EntryNotFoundError:  # a repository without a card gets one holding the results
            card = ModelCard(f"---\n{ModelCardData().to_yaml()}\n---\n")
        merge(card, entries, target.split("/")[-1])
        commit = api.upload_file(
            path_or_fileobj=str(card).encode(), path_in_repo="README.md", repo_id=target,
            commit_message=f"Evaluation results on {results['dataset']} ({results['split']})",
        )  # fmt: skip
    except Exception as error:
        raise HubError(
            f"Updating the model card of the Hub repository {target!r} failed ({type(error).__name__}: {error}). "
            "Check the id and that --token can write to it; the weights were not touched."
        ) from error
    return commit.commit_url if hasattr(commit, "commit_url") else str(commit)
