"""Write a Hugging Face Space (a Gradio app) for a model on the Hub, and push it.

MODEL is the Hub repo id of a model (push a folder first: `segformer train --push-to-hub`, or
`segformer.hub.push_to_hub`); REPO is the Space's repo id. The folder written to --output-dir holds

  app.py             loads MODEL by repo id with trust_remote_code=True and segments uploaded images with
                     its saved processor (the label map of `segformer predict`); needs only transformers,
                     torch, gradio, pillow and numpy, not this package
  requirements.txt   those packages
  README.md          the Space's metadata (sdk: gradio, sdk_version, app_file, title, emoji, colours,
                     models: [MODEL]) and a description
  examples/          a few images to try (images of the built-in dataset for a model trained on it)

and is uploaded to REPO (a Space, created if missing) unless --no-push.
"""

import argparse
import importlib.metadata
import re
from pathlib import Path

import yaml

from .. import cli
from ..configuration_segformer import SegFormerConfig
from ..errors import HubError, InputError, OptionError, chain_message
from ..files import make_output_dir
from ..loading import looks_like_repo_id, why_not_loaded
from ..visualization import config_palette
from .segmenter import example_images, read_card, trained_on_builtin

TEMPLATE = Path(__file__).with_name("space_app.py")
# The Gradio version app.py was tested with, for the Space's sdk_version when gradio is not installed here.
TESTED_GRADIO = "6.31.0"
REQUIREMENTS = ["transformers>=4.46", "torch", "pillow", "numpy"]
SPACE_LOOK = dict(emoji="🧩", colorFrom="indigo", colorTo="green")


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("model", help="Hub repo id of the model the Space runs.")
    parser.add_argument("repo", help="Hub repo id of the Space (created if missing).")
    cli.add_output_dir(parser, "outputs/space", "for the Space's files")
    cli.add_model_download(parser)  # the Space loads the model at this revision too
    parser.add_argument("--private", action="store_true", help="Create the Space as private.")
    parser.add_argument("--no-push", action="store_true", help="Only write the folder.")
    parser.add_argument("--title", help="The Space's title (default: the model card's model name, else the repo name).")


def gradio_version() -> str:
    try:
        return importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError:
        return TESTED_GRADIO


def fetch_model_config(model: str, revision: str | None, token: str | None) -> dict:
    """The model repository's config.json (which also proves the repository exists and is readable)."""
    import json

    from huggingface_hub import hf_hub_download

    if Path(model).exists() or not looks_like_repo_id(model) or "/" not in model:
        raise OptionError(
            f"MODEL must be the Hub repo id of a model ('user/name'), got {model!r}: a Space loads its model from "
            "the Hub, so push the folder first (segformer train --push-to-hub, or segformer.hub.push_to_hub)."
        )
    try:
        return json.loads(Path(hf_hub_download(model, "config.json", revision=revision, token=token)).read_text())
    except Exception as error:  # noqa: BLE001 - every Hub failure becomes one line that says what to do
        raise InputError(f"cannot read model {model!r}: {why_not_loaded(model, error, revision)}") from error


def render_app(model: str, revision: str | None, title: str, palette: list) -> str:
    """space_app.py with this Space's constants."""
    text = TEMPLATE.read_text()
    for name, value in (("MODEL_ID", model), ("MODEL_REVISION", revision), ("TITLE", title), ("PALETTE", palette)):
        text, count = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", text, count=1, flags=re.MULTILINE)
        assert count == 1, f"the Space template lost its {name} line"
    return text


def render_readme(model: str, title: str, sdk_version: str) -> str:
    metadata = dict(
        title=title[:60],
        **SPACE_LOOK,
        sdk="gradio",
        sdk_version=sdk_version,
        app_file="app.py",
        pinned=False,
        models=[model],
        short_description=f"Semantic segmentation with {model}"[:60],
        tags=["segformer", "image-segmentation"],
    )
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    return (
        f"---\n{front}---\n\n# {title}\n\nUpload or drop an image and see how [`{model}`](https://huggingface.co/{model}) "
        "segments it: the classes over the image, each class's share of the pixels, and the label map as a PNG.\n\n"
        "The app loads the model and its image processor from the model repository (`trust_remote_code=True`) and "
        "needs only `transformers`, `torch`, `gradio`, `pillow` and `numpy`. Written by `segformer space`.\n"
    )


def write_space(folder, model: str, *, revision=None, token=None, title=None) -> Path:
    """Write the Space's files for `model` into `folder` and return it."""
    config = fetch_model_config(model, revision, token)
    card = read_card(model, revision=revision, token=token)
    title = title or card.title or model.split("/")[-1]
    folder = make_output_dir(folder)
    sdk_version = gradio_version()
    palette = config_palette(SegFormerConfig.from_dict(config)).tolist()
    (folder / "app.py").write_text(render_app(model, revision, title, palette))
    (folder / "requirements.txt").write_text("\n".join([*REQUIREMENTS, f"gradio=={sdk_version}"]) + "\n")
    (folder / "README.md").write_text(render_readme(model, title, sdk_version), encoding="utf-8")
    examples = folder / "examples"
    examples.mkdir(exist_ok=True)
    for old in examples.glob("example_*.png"):
        old.unlink()
    for index, image in enumerate(example_images(trained_on_builtin(card, config.get("id2label") or {}))):
        image.save(examples / f"example_{index}.png")
    return folder


def push_space(folder, repo: str, *, private: bool = False, token=None) -> str:
    """Upload the Space folder to `repo` (a Gradio Space, created if missing); returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo, repo_type="space", folder_path=folder, commit_message="Upload SegFormer Space")
    except Exception as error:  # noqa: BLE001 - reported in one line, with its causes
        raise HubError(f"Uploading the Space {folder} to {repo!r} failed: {chain_message(error)}. Fix the cause and run again.") from error
    return commit.commit_url


def main(args: argparse.Namespace):
    if not looks_like_repo_id(args.repo) or "/" not in args.repo:
        raise OptionError(f"REPO must be a Hub repo id of the form 'user/name', got {args.repo!r}.")
    folder = write_space(args.output_dir, args.model, revision=args.revision, token=args.token, title=args.title)
    if args.no_push:
        print(f"Wrote the Space for {args.model} to {folder}")
        return
    url = push_space(folder, args.repo, private=args.private, token=args.token)
    print(f"Wrote the Space for {args.model} to {folder} and uploaded it to {args.repo}: {url}")
