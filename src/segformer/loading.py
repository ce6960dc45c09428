"""Loading a model and its image processor for a command, and preparing the folder it writes into.

`from_pretrained` reports a missing folder, an unknown Hub repository, a bad revision or a missing token
as an `OSError` (or a Hub HTTP error) of several paragraphs that often blames the wrong thing (an absolute
path is "not a valid repo id"). Here they become an `InputError` with one line that names the model and
says what to do; the `segformer` command prints it as its error line.
"""

import re
from pathlib import Path

import torch
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HFValidationError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError

from .errors import InputError, OptionError, SegFormerError, error_chain
from .image_processing_segformer import SegFormerImageProcessor
from .modeling_segformer import SegFormerForSemanticSegmentation
from .precision import FLOAT_DTYPES, check_dtype
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PROCESSOR_FILE = "preprocessor_config.json"
# What the Hub accepts as a repository id: "name" or "namespace/name".
REPO_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
SAVED_BY = "folders are written by `save_pretrained`, `segformer train` or `segformer convert`"


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def looks_like_repo_id(name: str) -> bool:
    return REPO_ID.fullmatch(name) is not None and not name.startswith((".", "-"))


def why_not_loaded(name: str, error: BaseException, revision: str | None = None) -> str:
    """Why loading `name` (a folder or Hub repo id) failed with `error`, and what to do, in one line."""
    causes = list(error_chain(error))

    def caused_by(kind):
        return next((cause for cause in causes if isinstance(cause, kind)), None)

    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            return f"the folder has no config.json ({SAVED_BY})"
        damaged = caused_by(SafetensorError)
        if damaged is not None:
            return f"its weights cannot be read ({_first_line(damaged)}): the file is truncated or corrupt"
        if "no file named" in str(error):
            return f"the folder has a config.json but no weights ({' or '.join(WEIGHT_FILES)}; {SAVED_BY})"
        return _first_line(error)
    if Path(name).exists():
        return f"it is a file, not a model folder ({SAVED_BY})"
    if not looks_like_repo_id(name) or caused_by(HFValidationError):
        return "there is no such folder (nor is it a Hub repository id, which has the form 'user/name')"
    if caused_by(GatedRepoError):
        return (
            "the Hub repository is gated: accept its conditions on its page, then pass --token or log in with "
            "`hf auth login`"
        )
    if caused_by(RepositoryNotFoundError):
        return (
            "there is no such folder, and no Hub repository of that id was found (a typo? private? pass --token "
            "or log in with `hf auth login`)"
        )
    if caused_by(RevisionNotFoundError):
        return f"the Hub repository has no revision {revision!r}: pass an existing branch, tag or commit to --revision"
    offline = caused_by(LocalEntryNotFoundError)
    if offline is not None or "couldn't connect" in str(error):
        return (
            "there is no such folder, and the Hub could not be reached to download it nor is it in the local cache "
            "(offline? connect once to download it, or check HF_ENDPOINT / HF_HUB_OFFLINE)"
        )
    if caused_by(EntryNotFoundError) or "does not appear to have a file named" in str(error):
        return f"the Hub repository is not a model folder: it has no config.json or no weights ({SAVED_BY})"
    http = caused_by(HfHubHTTPError)
    if http is not None:
        status = getattr(getattr(http, "response", None), "status_code", None)
        if status in (401, 403):
            return f"the Hub refused access ({_first_line(http)}): pass a valid --token with read access"
        return f"the Hub answered with an error: {_first_line(http)}"
    return _first_line(error)


def resolve_device(device=None) -> torch.device:
    """`device` as a torch device; None means cuda when available, else cpu."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise OptionError(f"unknown device {device!r} ({_first_line(error)}): use cpu, cuda, cuda:1, ...") from error


def resolve_dtype(dtype=None) -> torch.dtype | None:
    """A torch dtype, or one of the names fp32, bf16, fp16; None stays None (the weights' own dtype)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    return FLOAT_DTYPES[check_dtype(dtype)]


def load_model(
    name_or_path,
    model_class=SegFormerForSemanticSegmentation,
    *,
    revision: str | None = None,
    token: str | None = None,
    device=None,
    dtype=None,
    **kwargs,
):
    """`model_class.from_pretrained(name_or_path)` on `device` in `dtype`, failing with an `InputError` of
    one line that names the model and says what to do.

    Args:
        name_or_path: a folder written by `save_pretrained` (or `segformer train`/`convert`) or a Hub repo
            id, including transformers' own SegFormer checkpoints (converted on the fly).
        revision, token: of a Hub repository (default: main, the logged-in token).
        device: a torch device or its name; None means cuda when available, else cpu.
        dtype: a torch dtype or "fp32", "bf16", "fp16"; None keeps the weights' own.
        kwargs: more `from_pretrained` arguments; with `output_loading_info=True` the result is
            (model, loading info), as from `from_pretrained`.
    """
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    name = str(name_or_path)
    hub_kwargs = {key: value for key, value in dict(revision=revision, token=token).items() if value is not None}
    try:
        loaded = model_class.from_pretrained(name_or_path, **hub_kwargs, **kwargs)
    except SegFormerError:
        raise
    except (OSError, SafetensorError, HFValidationError) as error:  # the Hub's HTTP errors are OSErrors too
        raise InputError(f"cannot load model {name!r}: {why_not_loaded(name, error, revision)}") from error
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    try:
        model.to(device=device, dtype=dtype)
    except (RuntimeError, AssertionError) as error:  # e.g. "Torch not compiled with CUDA enabled"
        raise OptionError(f"cannot run the model on {device}: {_first_line(error)}") from error
    return loaded


def load_image_processor(name_or_path, *, revision: str | None = None, token: str | None = None):
    """The image processor saved with a model (transformers' own SegFormer processor configs are read as
    the same protocol), or the default `SegFormerImageProcessor` (ImageNet mean/std, short side 512) where
    the model has no preprocessor_config.json."""
    processor_class = SegFormerImageProcessor
    name = str(name_or_path)
    if Path(name).is_dir() and not (Path(name) / PROCESSOR_FILE).is_file():
        return processor_class()
    hub_kwargs = {key: value for key, value in dict(revision=revision, token=token).items() if value is not None}
    try:
        return processor_class.from_pretrained(name_or_path, **hub_kwargs)
    except OSError as error:
        # A repository without the file raises a bare OSError; a missing repository, revision or token raises
        # one caused by the Hub's error.
        causes = error_chain(error)
        if not any(isinstance(c, HfHubHTTPError) and not isinstance(c, EntryNotFoundError) for c in causes):
            return processor_class()
        message = f"cannot load the image processor of {name!r}: {why_not_loaded(name, error, revision)}"
        raise InputError(message) from error
