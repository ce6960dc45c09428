"""Publishing to the Hugging Face Hub: model cards and uploads.

`write_model_card` writes the README.md of a saved model folder (YAML metadata the Hub indexes, usage,
labels, provenance and license); `push_to_hub` uploads a saved folder; `push_model_to_hub` does both for a
model in memory and is what `model.push_to_hub(repo_id)` runs when this package is installed.
"""

import re
import tempfile
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from .configuration_segformer import VARIANTS, SegFormerConfig

# architecture -> (Hub pipeline tag, transformers Auto class that loads it)
TASKS = {
    "SegFormerForSemanticSegmentation": ("image-segmentation", "AutoModelForSemanticSegmentation"),
    "SegFormerForImageClassification": ("image-classification", "AutoModelForImageClassification"),
    "SegFormerModel": ("image-feature-extraction", "AutoModel"),
    "SegFormerBackbone": ("image-feature-extraction", "AutoBackbone"),
}
DEFAULT_ARCHITECTURE = "SegFormerForSemanticSegmentation"

# The released SegFormer weights (and anything fine-tuned from them) are under NVIDIA's license.
NVIDIA_SOURCE = re.compile(r"nvidia|nvlabs", re.IGNORECASE)
NVIDIA_LICENSE = dict(
    license="other",
    license_name="nvidia-source-code-license-segformer",
    license_link="https://github.com/NVlabs/SegFormer/blob/master/LICENSE",
)
MIOU_KEYS = ("miou", "mean_iou", "meaniou")
# A source that names a Hub model ("owner/name") becomes the card's `base_model`.
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def find_variant(config: SegFormerConfig, architecture: str = DEFAULT_ARCHITECTURE) -> str | None:
    """Name of the released variant ("b0".."b5") whose architecture `config` has, else None. The decoder
    width counts only for models that have the decoder."""
    fields = ["hidden_sizes", "depths", "num_attention_heads", "sr_ratios", "patch_sizes", "strides", "mlp_ratios"]
    if architecture == "SegFormerForSemanticSegmentation":
        fields.append("decoder_hidden_size")
    for name in VARIANTS:
        reference = SegFormerConfig.from_variant(name)
        if all(getattr(config, field) == getattr(reference, field) for field in fields):
            return name
    return None


def _architecture(config: SegFormerConfig) -> str:
    architectures = getattr(config, "architectures", None) or [DEFAULT_ARCHITECTURE]
    if architectures[0] not in TASKS:
        raise ValueError(f"Cannot write a model card for architecture {architectures[0]!r}; known: {', '.join(TASKS)}.")
    return architectures[0]


def _miou(metrics: dict | None):
    for key, value in (metrics or {}).items():
        if key.lower() in MIOU_KEYS:
            return value
    return None


def _card_data(architecture, variant, *, source, dataset, metrics, license) -> ModelCardData:
    pipeline_tag = TASKS[architecture][0]
    derives_from_nvidia = bool(source and NVIDIA_SOURCE.search(source))
    tags = ["segformer", "vision", pipeline_tag] + ([f"mit-{variant}"] if variant else [])
    if derives_from_nvidia:
        if license not in (None, NVIDIA_LICENSE["license"], NVIDIA_LICENSE["license_name"]):
            raise ValueError(
                f"The weights derive from NVIDIA's SegFormer ({source}), whose license allows non-commercial use "
                f"only; they cannot be published under license={license!r}. Leave `license` unset."
            )
        license_fields = NVIDIA_LICENSE
        tags.append("non-commercial")
    else:
        license_fields = {"license": license} if license else {}
    eval_results = None
    miou = _miou(metrics)
    if miou is not None:
        if not dataset:
            raise ValueError("`metrics` has an mIoU: pass the `dataset` it was measured on, the card's model-index needs it.")
        eval_results = [
            EvalResult(
                task_type=pipeline_tag,
                dataset_type=dataset,
                dataset_name=dataset,
                metric_type="mean_iou",
                metric_name="mIoU",
                metric_value=miou,
            )
        ]
    return ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=tags,
        datasets=[dataset] if dataset else None,
        base_model=source if source and REPO_ID.match(source) and not Path(source).exists() else None,
        model_name=_model_name(variant, dataset),
        eval_results=eval_results,
        **license_fields,
    )


def _model_name(variant: str | None, dataset: str | None) -> str:
    name = f"SegFormer-{variant.upper()}" if variant else "SegFormer"
    return f"{name} ({dataset})" if dataset else name


def _provenance(source: str | None, dataset: str | None) -> str:
    if source and dataset:
        return f"Fine-tuned on `{dataset}` from `{source}` with the `segformer` package."
    if source:
        return f"Converted from `{source}` with `segformer convert`; the conversion compares the logits of both models."
    if dataset:
        return f"Trained on `{dataset}` with the `segformer` package."
    return "Saved with the `segformer` package (no training data or source checkpoint was recorded)."


def _license_note(card_data: ModelCardData, source: str | None) -> str:
    if card_data.license == NVIDIA_LICENSE["license"]:
        return (
            f"**Non-commercial use only.** These weights derive from NVIDIA's SegFormer (`{source}`), released "
            f"under the [NVIDIA Source Code License for SegFormer]({NVIDIA_LICENSE['license_link']}), which "
            "permits non-commercial (research or evaluation) use only."
        )
    if card_data.license:
        return f"`{card_data.license}`."
    return "Not specified by the uploader."


def _usage(repo_id: str, architecture: str) -> str:
    auto_class = TASKS[architecture][1]
    return f"""With `transformers` alone (4.46 or newer); the model code comes with the repository:

```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, {auto_class}

processor = AutoImageProcessor.from_pretrained("{repo_id}")
model = {auto_class}.from_pretrained("{repo_id}", trust_remote_code=True).eval()
image = Image.open("image.jpg").convert("RGB")
with torch.no_grad():
    outputs = model(**processor(images=image, return_tensors="pt"))
```

With the `segformer` package:

```python
from segformer import {architecture}

model = {architecture}.from_pretrained("{repo_id}")
```
"""


def _label_table(config: SegFormerConfig) -> str:
    rows = "\n".join(f"| {index} | {label} |" for index, label in sorted(config.id2label.items()))
    return f"| id | label |\n|---:|---|\n{rows}\n"


def _metric_table(metrics: dict) -> str:
    rows = "\n".join(f"| {name} | {value} |" for name, value in metrics.items())
    return f"| metric | value |\n|---|---:|\n{rows}\n"


def write_model_card(
    folder,
    config: SegFormerConfig,
    *,
    source: str | None = None,
    dataset: str | None = None,
    metrics: dict | None = None,
    license: str | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write `folder/README.md`: the model card of a saved SegFormer.

    Args:
        folder: the saved model folder.
        config: the model's configuration (its `architectures` picks the task; segmentation by default).
        source: the checkpoint the weights come from (Hub id, URL or file name). A source that mentions
            NVIDIA / NVlabs marks the weights as under NVIDIA's non-commercial license.
        dataset: the dataset the model was trained or evaluated on (a Hub dataset id where there is one).
        metrics: evaluation results, e.g. `{"mIoU": 42.1}`; an mIoU goes into the card's `model-index`.
        license: license of the weights when they do not derive from NVIDIA's.
        repo_id: the repository the usage snippets load from (defaults to the folder name).
    Returns:
        The path of the written README.md.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Cannot write a model card into {folder}: it is not a folder. Save the model first.")
    architecture = _architecture(config)
    variant = find_variant(config, architecture)
    card_data = _card_data(architecture, variant, source=source, dataset=dataset, metrics=metrics, license=license)
    variant_text = f"MiT-{variant.upper()}" if variant else "a custom Mix Transformer"
    sections = [
        f"# {card_data.model_name}",
        f"SegFormer ([Xie et al. 2021](https://arxiv.org/abs/2105.15203)) with {variant_text} encoder "
        f"(`{architecture}`, {config.num_labels} labels).",
        f"## How it was made\n\n{_provenance(source, dataset)}",
        f"## Usage\n\n{_usage(repo_id or folder.name, architecture)}",
    ]
    if metrics:
        sections.append(f"## Evaluation\n\n{_metric_table(metrics)}")
    sections += [
        f"## Labels\n\n{_label_table(config)}",
        f"## License\n\n{_license_note(card_data, source)}",
    ]
    body = "\n\n".join(section.strip() for section in sections)
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}\n")
    path = folder / "README.md"
    card.save(path)
    return path


def _causes(error: BaseException) -> str:
    """The message of an error and of the errors that caused it (the client wraps HTTP errors)."""
    messages = []
    while error is not None:
        messages.append(f"{type(error).__name__}: {error}")
        error = error.__cause__
    return "\n  caused by ".join(messages)


def push_to_hub(
    folder,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
) -> str:
    """Upload a saved model folder to `repo_id` (created if missing) and return the commit or PR URL.

    Files the repository already has unchanged are not re-uploaded, and an upload of nothing new makes no
    commit. The local folder is only read.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: push a folder written by `save_pretrained`.")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        # A commit to a branch needs the branch; a PR's refs/pr/N revision exists already.
        if revision is not None and not revision.startswith("refs/pr/"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message or "Upload SegFormer model",
        )
    except Exception as error:
        raise RuntimeError(
            f"Uploading {folder} to the Hub repository {repo_id!r} failed: {_causes(error)}\n"
            f"The local folder {folder} is unchanged; fix the cause and run the upload again (files "
            "already uploaded are skipped)."
        ) from error
    return commit.pr_url or commit.commit_url


def push_model_to_hub(
    model,
    repo_id: str,
    *,
    source: str | None = None,
    dataset: str | None = None,
    metrics: dict | None = None,
    license: str | None = None,
    max_shard_size="50GB",
    **push_kwargs,
) -> str:
    """Save `model` (weights, config with `auto_map`, code, preprocessor config), write its model card and
    upload it all to `repo_id`. `push_kwargs` are those of `push_to_hub`. Without `source`, a model loaded
    from a Hub repository records that repository."""
    if source is None and REPO_ID.match(model.name_or_path or "") and not Path(model.name_or_path).exists():
        source = model.name_or_path
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        write_model_card(
            folder, model.config, source=source, dataset=dataset, metrics=metrics, license=license, repo_id=repo_id
        )
        return push_to_hub(folder, repo_id, **push_kwargs)


__all__ = ["push_model_to_hub", "push_to_hub", "write_model_card"]
