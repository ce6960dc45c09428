"""Card metadata as the Hub checks it: the YAML front matter of a README.md and what the Hub would reject in
a model's or a Space's (served by `/api/validate-yaml` and read for `model_info`)."""

import re

import yaml

from .storage import SPACE_SDKS

KNOWN_PIPELINE_TAGS = {
    "image-classification",
    "image-feature-extraction",
    "image-segmentation",
    "depth-estimation",
    "object-detection",
    "mask-generation",
    "zero-shot-image-classification",
}
CARD_LIST_FIELDS = ("tags", "datasets", "metrics", "language")


def parse_card_metadata(content: str) -> dict:
    """The YAML front matter of a README.md (empty when there is none)."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
    if not match:
        return {}
    metadata = yaml.safe_load(match.group(1)) or {}
    if not isinstance(metadata, dict):
        raise ValueError("the metadata block must be a YAML mapping")
    return metadata


def card_metadata_errors(metadata: dict) -> list:
    """What the Hub would reject in a model card's metadata."""
    errors = []
    for name in CARD_LIST_FIELDS:
        value = metadata.get(name)
        if value is not None and not (isinstance(value, str) or all(isinstance(v, str) for v in value)):
            errors.append(f'"{name}" must be a string or a list of strings')
    if "pipeline_tag" in metadata and metadata["pipeline_tag"] not in KNOWN_PIPELINE_TAGS:
        errors.append(f'"pipeline_tag" must be a known task, got {metadata["pipeline_tag"]!r}')
    if metadata.get("license") == "other" and not metadata.get("license_name"):
        errors.append('"license_name" is required when "license" is "other"')
    base_models = metadata.get("base_model") or []
    for base_model in [base_models] if isinstance(base_models, str) else base_models:
        if not re.match(r"^[\w.-]+(/[\w.-]+)?$", str(base_model)):
            errors.append(f'"base_model" must be model ids, got {base_model!r}')
    for entry in metadata.get("model-index") or []:
        errors += model_index_errors(entry)
    return errors


def model_index_errors(entry) -> list:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        return ['"model-index" entries need a "name"']
    errors = []
    for result in entry.get("results") or []:
        task, dataset, metrics = result.get("task"), result.get("dataset"), result.get("metrics")
        if not (isinstance(task, dict) and isinstance(task.get("type"), str)):
            errors.append('"model-index" results need a "task" with a "type"')
        if not (isinstance(dataset, dict) and isinstance(dataset.get("type"), str) and isinstance(dataset.get("name"), str)):
            errors.append('"model-index" results need a "dataset" with a "type" and a "name"')
        if not (isinstance(metrics, list) and metrics and all("type" in m and "value" in m for m in metrics)):
            errors.append('"model-index" results need "metrics", each with a "type" and a "value"')
    return errors


SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")


def space_metadata_errors(metadata: dict) -> list:
    """What the Hub would reject in a Space's README metadata (its configuration reference)."""
    errors = []
    if metadata.get("sdk") not in SPACE_SDKS:
        errors.append(f'"sdk" must be one of {", ".join(SPACE_SDKS)}, got {metadata.get("sdk")!r}')
    if metadata.get("sdk") in ("gradio", "streamlit") and not isinstance(metadata.get("sdk_version"), str):
        errors.append('"sdk_version" must be a version string such as "5.0.0"')
    for name in ("title", "emoji", "app_file", "short_description"):
        if name in metadata and not isinstance(metadata[name], str):
            errors.append(f'"{name}" must be a string')
    if len(metadata.get("short_description") or "") > 60:
        errors.append('"short_description" must be at most 60 characters')
    for name in ("colorFrom", "colorTo"):
        if name in metadata and metadata[name] not in SPACE_COLORS:
            errors.append(f'"{name}" must be one of {", ".join(SPACE_COLORS)}, got {metadata[name]!r}')
    for name in ("models", "datasets"):
        value = metadata.get(name) or []
        if isinstance(value, str) or not all(isinstance(v, str) and re.match(r"^[\w.-]+(/[\w.-]+)?$", v) for v in value):
            errors.append(f'"{name}" must be a list of repository ids')
    return errors
