"""Uploads to the Hub: a saved folder (`push_to_hub`), or a model in memory with its card
(`push_model_to_hub`, what `model.push_to_hub(repo_id)` runs when this package is installed; it takes
every argument of transformers' `push_to_hub`)."""

import contextlib
import inspect
import tempfile
import warnings
from pathlib import Path

import transformers
from huggingface_hub import HfApi

from ..errors import HubError, OptionError, chain_message
from ..image_processing_segformer import SegFormerImageProcessor
from .card import REPO_ID, _tag_list, write_model_card


def push_to_hub(
    folder,
    repo_id: str,
    *,
    token: bool | str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    commit_description: str | None = None,
) -> str:
    """Upload a saved model folder to `repo_id` (created if missing) and return the commit or PR URL.

    Files the repository already has unchanged are not re-uploaded, and an upload of nothing new makes no
    commit. `revision` is a branch (created from main if missing) or a PR's `refs/pr/N`; `create_pr` opens a
    pull request against it instead of committing to it. The local folder is only read.
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
            commit_description=commit_description,
        )
    except Exception as error:
        raise HubError(
            f"Uploading {folder} to the Hub repository {repo_id!r} failed: {chain_message(error)}. "
            f"The local folder {folder} is unchanged; fix the cause and run the upload again (files "
            "already uploaded are skipped)."
        ) from error
    return commit.pr_url or commit.commit_url


def _legacy_arguments(repo_id: str, token, legacy: dict) -> tuple:
    """(repo_id, token) after transformers 4.x's deprecated `push_to_hub` keywords, which it took as
    `**deprecated_kwargs`, with 4.46's meaning; other names are refused as Python would."""
    legacy = dict(legacy)
    use_auth_token = legacy.pop("use_auth_token", None)
    if use_auth_token is not None:
        if token is not None:
            raise OptionError("`token` and `use_auth_token` are both specified. Please set only the argument `token`.")
        warnings.warn("`use_auth_token` is deprecated (gone in transformers 5): use `token`.", FutureWarning, 3)
        token = use_auth_token
    organization = legacy.pop("organization", None)
    if organization is not None:
        warnings.warn("`organization` is deprecated (gone in transformers 5): use `repo_id='org/x'`.", FutureWarning, 3)
        if not repo_id.startswith(organization):
            repo_id = f"{organization}/{repo_id.split('/')[-1]}"
    # It concerns the repository's existing card, which transformers loads and tags; ours is written anew.
    legacy.pop("ignore_metadata_errors", None)
    for name in ("repo_url", "repo_path_or_name"):
        if legacy.pop(name, None) is not None:
            raise OptionError(f"`repo_id` and `{name}` are both specified. Please set only the argument `repo_id`.")
    if legacy:
        raise TypeError(f"push_to_hub() got unexpected keyword arguments: {', '.join(map(repr, legacy))}")
    return repo_id, token


def _save_arguments(max_shard_size, safe_serialization: bool) -> dict:
    arguments = {"max_shard_size": max_shard_size}
    if not safe_serialization:
        # transformers 5 writes safetensors only: its `save_pretrained` has no such switch.
        if "safe_serialization" not in inspect.signature(transformers.PreTrainedModel.save_pretrained).parameters:
            raise OptionError(
                f"safe_serialization=False: transformers {transformers.__version__} saves safetensors only."
            )
        arguments["safe_serialization"] = False
    return arguments


def push_model_to_hub(
    model,
    repo_id: str,
    use_temp_dir: bool | None = None,
    commit_message: str | None = None,
    private: bool | None = None,
    token: bool | str | None = None,
    max_shard_size: int | str | None = "50GB",
    create_pr: bool = False,
    safe_serialization: bool = True,
    revision: str | None = None,
    commit_description: str | None = None,
    tags: list[str] | str | None = None,
    *,
    source: str | None = None,
    dataset: str | None = None,
    metrics: dict | None = None,
    license: str | None = None,
    hyperparameters: dict | None = None,
    prediction_image=None,
    training_curves=None,
    **deprecated_kwargs,
) -> str:
    """Save `model` (weights, config with `auto_map`, code, preprocessor config), write its model card and
    upload it all to `repo_id`; return the commit or PR URL. This is `model.push_to_hub`.

    The arguments up to `tags` are transformers' `PushToHubMixin.push_to_hub` (4.46's order, so positional
    calls mean the same; 5.x takes them by keyword), with its meaning:

    Args:
        repo_id: the repository, `owner/name` (created if missing).
        use_temp_dir: `False` saves into the folder `./<name>` (kept) and uploads it; `None` or `True` use a
            temporary folder (transformers 5's only behaviour; 4.x also used `./<name>` when it existed).
        commit_message: the commit's title (default "Upload SegFormer model").
        private: whether a newly created repository is private (ignored when it exists).
        token: Hub token (`None`/`True`: the logged-in one, `False`: anonymous).
        max_shard_size: the largest weights file before the checkpoint is sharded (int bytes or "5GB").
        create_pr: open a pull request instead of committing.
        safe_serialization: `False` writes `pytorch_model.bin` (transformers 4.x only).
        revision: the branch to commit to (created from main if missing) or to open the PR against.
        commit_description: the commit's (or pull request's) description.
        tags: Hub tags added to the card's metadata, after `model.model_tags` (`add_model_tags`).
        source, dataset, metrics, license, hyperparameters, prediction_image, training_curves: the card's,
            see `write_model_card`. Without `source`, a model loaded from a Hub repository records that one.
        deprecated_kwargs: transformers 4.x's deprecated `use_auth_token`, `organization`,
            `ignore_metadata_errors`, `repo_url` and `repo_path_or_name`.
    """
    repo_id, token = _legacy_arguments(repo_id, token, deprecated_kwargs)
    save_arguments = _save_arguments(max_shard_size, safe_serialization)
    if source is None and REPO_ID.match(model.name_or_path or "") and not Path(model.name_or_path).exists():
        source = model.name_or_path
    tags = list(dict.fromkeys(_tag_list(getattr(model, "model_tags", None)) + _tag_list(tags)))
    if use_temp_dir is False:
        working_folder = contextlib.nullcontext(repo_id.split("/")[-1])
    else:
        working_folder = tempfile.TemporaryDirectory()
    with working_folder as folder:
        processor = source_processor(model)
        if processor is not None:  # before the model, whose save_pretrained writes the default one otherwise
            processor.save_pretrained(folder)
        model.save_pretrained(folder, **save_arguments)
        write_model_card(
            folder,
            model.config,
            source=source,
            dataset=dataset,
            metrics=metrics,
            license=license,
            repo_id=repo_id,
            tags=tags,
            hyperparameters=hyperparameters,
            prediction_image=prediction_image,
            training_curves=training_curves,
        )
        return push_to_hub(
            folder,
            repo_id,
            token=token,
            private=private,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message,
            commit_description=commit_description,
        )


def source_processor(model):
    """The image processor saved beside the checkpoint `model` was loaded from (a folder or a Hub repository),
    or None: a pushed model keeps its protocol (resize, normalisation, threshold), not the default one."""
    name = getattr(model, "name_or_path", None)
    if not name:
        return None
    try:
        return SegFormerImageProcessor.from_pretrained(name)
    except (OSError, ValueError):  # no processor there (a bare checkpoint): the default is written
        return None


__all__ = ["push_model_to_hub", "push_to_hub"]
