"""Model cards: the README.md of a saved model folder, with the YAML metadata the Hub indexes (task,
license, datasets, tags, mIoU in `model-index`), runnable usage that ends in a post-processed result,
pictures and hyper-parameters of the run, labels, provenance and license."""

import re
import shutil
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..configuration_segformer import VARIANTS, SegFormerConfig
from ..errors import InputError, OptionError

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
# Pictures are copied into this folder of the model repository, so the card links them relative to it.
IMAGES_FOLDER = "images"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg")


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
        known = ", ".join(TASKS)
        raise OptionError(f"Cannot write a model card for architecture {architectures[0]!r}; known: {known}.")
    return architectures[0]


def _miou(metrics: dict | None):
    for key, value in (metrics or {}).items():
        if key.lower() in MIOU_KEYS:
            return value
    return None


def _tag_list(tags) -> list:
    """`tags` as a list of strings (one string is one tag, as in transformers' `push_to_hub`)."""
    tags = [tags] if isinstance(tags, str) else list(tags or [])
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise OptionError(f"Tags must be non-empty strings, got {tag!r}.")
    return tags


def _card_data(architecture, variant, *, source, dataset, metrics, license, tags, eval_results=None) -> ModelCardData:
    pipeline_tag = TASKS[architecture][0]
    derives_from_nvidia = bool(source and NVIDIA_SOURCE.search(source))
    tags = ["segformer", "vision", pipeline_tag] + ([f"mit-{variant}"] if variant else []) + _tag_list(tags)
    if derives_from_nvidia:
        if license not in (None, NVIDIA_LICENSE["license"], NVIDIA_LICENSE["license_name"]):
            raise OptionError(
                f"The weights derive from NVIDIA's SegFormer ({source}), whose license allows non-commercial use "
                f"only; they cannot be published under license={license!r}. Leave `license` unset."
            )
        license_fields = NVIDIA_LICENSE
        tags.append("non-commercial")
    else:
        license_fields = {"license": license} if license else {}
    miou = _miou(metrics)
    if miou is not None and eval_results is None:
        if not dataset:
            raise OptionError(
                "`metrics` has an mIoU: pass the `dataset` it was measured on, the card's model-index needs it."
            )
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
        tags=list(dict.fromkeys(tags)),  # in order, once each
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


# architecture -> (the snippet's last line: the result, post-processed, from `outputs`; what it is)
READ_OUTPUTS = {
    "SegFormerForSemanticSegmentation": (
        "label_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]",
        "(H, W) class ids at the image's size, named by model.config.id2label",
    ),
    "SegFormerForImageClassification": (
        "label = model.config.id2label[outputs.logits.argmax(-1).item()]",
        "the name of the predicted class",
    ),
    "SegFormerModel": ("features = outputs.hidden_states", "4 maps (1, C, H/s, W/s) at strides s = 4, 8, 16, 32"),
    "SegFormerBackbone": ("features = outputs.feature_maps", "the maps of config.out_features"),
}

# pipeline tag -> (the pipeline's variable, the line that runs it); the encoders have no pipeline of their own.
PIPELINES = {
    "image-segmentation": ("segmenter", 'segments = segmenter("image.jpg")  # one {"label", "mask"} per class present'),
    "image-classification": ("classifier", 'predictions = classifier("image.jpg")  # [{"label", "score"}, ...]'),
}


def _usage(repo_id: str, architecture: str) -> str:
    """Runnable snippets: transformers alone (image in, post-processed result out), the pipeline one-liner
    where transformers has a pipeline for the task, and this package."""
    pipeline_tag, auto_class = TASKS[architecture]
    read_outputs, comment = READ_OUTPUTS[architecture]
    keyword = ", output_hidden_states=True" if architecture == "SegFormerModel" else ""
    text = f"""With `transformers` alone (4.46 or newer); the code comes with the repository:

```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, {auto_class}

processor = AutoImageProcessor.from_pretrained("{repo_id}", trust_remote_code=True)
model = {auto_class}.from_pretrained("{repo_id}", trust_remote_code=True).eval()
image = Image.open("image.jpg").convert("RGB")
inputs = processor(images=image, return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs{keyword})
# {comment}
{read_outputs}
```
"""
    if pipeline_tag in PIPELINES:
        name, result = PIPELINES[pipeline_tag]
        text += f"""
Or in one line with a pipeline:

```python
from transformers import pipeline

{name} = pipeline("{pipeline_tag}", model="{repo_id}", image_processor="{repo_id}", trust_remote_code=True)
{result}
```
"""
    return (
        text
        + f"""
With the `segformer` package:

```python
from segformer import {architecture}

model = {architecture}.from_pretrained("{repo_id}")
```
"""
    )


def _label_table(config: SegFormerConfig) -> str:
    rows = "\n".join(f"| {index} | {label} |" for index, label in sorted(config.id2label.items()))
    return f"| id | label |\n|---:|---|\n{rows}\n"


def _cell(value) -> str:
    """A value as one markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _metric_table(metrics: dict) -> str:
    rows = "\n".join(f"| {_cell(name)} | {_cell(value)} |" for name, value in metrics.items())
    return f"| metric | value |\n|---|---:|\n{rows}\n"


def _hyperparameter_table(hyperparameters: dict) -> str:
    rows = "\n".join(f"| {_cell(name)} | {_cell(value)} |" for name, value in hyperparameters.items())
    return f"| hyper-parameter | value |\n|---|---|\n{rows}\n"


def _copy_picture(path, folder: Path, name: str) -> str:
    """Copy the picture at `path` to `folder/images/<name><suffix>` and return that path relative to the
    folder, the link that works in the card both on the Hub and in the folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The picture {path} for the model card does not exist or is not a file.")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise OptionError(f"The picture {path} must be one of {', '.join(IMAGE_SUFFIXES)} to show in a model card.")
    target = folder / IMAGES_FOLDER / f"{name}{path.suffix.lower()}"
    target.parent.mkdir(exist_ok=True)
    if not (target.exists() and target.samefile(path)):
        shutil.copyfile(path, target)
    return target.relative_to(folder).as_posix()


def write_model_card(
    folder,
    config: SegFormerConfig,
    *,
    source: str | None = None,
    dataset: str | None = None,
    metrics: dict | None = None,
    license: str | None = None,
    repo_id: str | None = None,
    tags: list[str] | str | None = None,
    hyperparameters: dict | None = None,
    prediction_image=None,
    training_curves=None,
    eval_results: list | None = None,
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
        tags: extra Hub tags for the card's metadata (after the ones the card always has).
        hyperparameters: the training settings, e.g. `{"learning_rate": 6e-5, "batch_size": 8}`; shown as a
            table in the order given.
        prediction_image: a picture of the model's predictions (file path); copied to
            `folder/images/prediction.<ext>` and shown at the top of the card.
        training_curves: a picture of the loss / metric curves (file path); copied to
            `folder/images/training_curves.<ext>` and shown with the hyper-parameters.
        eval_results: `huggingface_hub.EvalResult`s for the card's `model-index` (e.g.
            `segformer.hub.results.eval_results` of an evaluation); they replace the one made from the mIoU.
    Returns:
        The path of the written README.md.

    Example:

    ```python
    write_model_card("outputs/train/model", model.config, dataset="my-org/streets", metrics={"mIoU": 41.2},
                     hyperparameters={"learning_rate": 6e-5, "max_steps": 16000}, tags=["streets"],
                     prediction_image="outputs/train/predictions/prediction_0.png",
                     training_curves="outputs/train/training_curves.png", repo_id="me/streets-b0")
    ```
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Cannot write a model card into {folder}: it is not a folder. Save the model first.")
    architecture = _architecture(config)
    variant = find_variant(config, architecture)
    card_data = _card_data(
        architecture, variant, source=source, dataset=dataset, metrics=metrics, license=license, tags=tags,
        eval_results=eval_results,
    )
    variant_text = f"MiT-{variant.upper()}" if variant else "a custom Mix Transformer"
    sections = [
        f"# {card_data.model_name}",
        f"SegFormer ([Xie et al. 2021](https://arxiv.org/abs/2105.15203)) with {variant_text} encoder "
        f"(`{architecture}`, {config.num_labels} labels).",
    ]
    if prediction_image is not None:
        sections.append(f"![Predictions of the model]({_copy_picture(prediction_image, folder, 'prediction')})")
    training = [_provenance(source, dataset)]
    if hyperparameters:
        training.append(f"### Hyper-parameters\n\n{_hyperparameter_table(hyperparameters)}")
    if training_curves is not None:
        link = _copy_picture(training_curves, folder, "training_curves")
        training.append(f"### Training curves\n\n![Training curves]({link})")
    sections += [
        "## How it was made\n\n" + "\n\n".join(part.strip() for part in training),
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
