"""Reading a checkpoint from wherever it is: a Hub repository, a folder or a single file.

Nothing here executes code from the checkpoint: safetensors files are read as such and PyTorch pickles
with `torch.load(weights_only=True)`, which refuses any file that would need pickled code.
"""

import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import hf_hub_download
from PIL import Image, UnidentifiedImageError
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import ConversionError, InputError
from ..loading import looks_like_repo_id, why_not_loaded

# Weight files of a transformers folder, in order of preference.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# `from_pretrained` keyword arguments that say where and how to download.
HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "subfolder")
SOURCES = "a .pth/.bin/.safetensors checkpoint, a transformers model folder or a Hub repo id"
# First bytes of files that are not checkpoints, for saying what a file given as one is (PIL names images).
FILE_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x89HDF", "an HDF5 file (Keras or TensorFlow weights?)"),
    (b"\x93NUMPY", "a NumPy array file"),
)


@dataclass
class Checkpoint:
    """The raw content of a source: its tensors, and what it says about itself."""

    state_dict: dict
    name: str  # Hub id or path, for messages and the model card
    folder: Path | None = None  # the transformers-style folder, when the source is one
    config: dict = field(default_factory=dict)  # its config.json
    meta: dict = field(default_factory=dict)  # an mmcv/mmseg checkpoint's `meta`


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ConversionError(f"Cannot read {path} as JSON ({error}): the file is damaged or not a config.") from error


def fetch(repo_id: str, filename: str, hub_kwargs: dict) -> Path | None:
    """A file of a Hub repository through the Hub cache (`hf_hub_download`); None when it does not exist."""
    try:
        return Path(hf_hub_download(repo_id, filename, **hub_kwargs))
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None


def transformers_folder(source: str, hub_kwargs: dict) -> Path | None:
    """The local folder of a transformers-style source (a folder, or a Hub repo fetched into the cache)
    holding config.json and one weight file; None when `source` is not such a folder or repo."""
    path = Path(source)
    if path.is_dir():
        return path if (path / "config.json").is_file() else None
    if path.exists() or source.count("/") != 1 or not looks_like_repo_id(source):
        return None
    config = fetch(source, "config.json", hub_kwargs)
    if config is None:
        return None
    fetch(source, "preprocessor_config.json", hub_kwargs)
    for filename in WEIGHT_FILES:
        if fetch(source, filename, hub_kwargs) is not None:
            break
    return config.parent  # every file of a revision sits in the same snapshot folder


def read_folder(folder: Path, name: str) -> Checkpoint:
    for filename in WEIGHT_FILES:
        if (folder / filename).is_file():
            state_dict, _ = read_weights(folder / filename)
            return Checkpoint(state_dict, name, folder=folder, config=read_json(folder / "config.json"))
    if any(folder.glob("*.index.json")):
        raise ConversionError(
            f"{name} holds a sharded checkpoint; SegFormer models fit in one file: re-save the source with "
            "`save_pretrained(folder, max_shard_size='10GB')` and convert that."
        )
    raise ConversionError(f"{name} has a config.json but no weights: expected one of {', '.join(WEIGHT_FILES)}.")


def checkpoint_format(path: Path) -> str | None:
    """"safetensors" or "pytorch" from the first bytes of the file at `path`, or None for anything else."""
    with open(path, "rb") as file:
        head = file.read(9)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save's zip archive, or its older pickle
        return "pytorch"
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: the JSON header's length (8 bytes), then the header
        return "safetensors"
    return None


def describe_file(path: Path) -> str:
    """What a file looks like, for an error message: "a JPEG image (640x480)", "a PDF document", "a text
    file", "an empty file" or "a file of an unknown format"."""
    with open(path, "rb") as file:
        head = file.read(512)
    if not head:
        return "an empty file"
    try:
        with Image.open(path) as image:
            return f"a {image.format} image ({image.width}x{image.height})"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        pass
    for signature, what in FILE_SIGNATURES:
        if head.startswith(signature):
            return what
    text = head.decode("utf-8", errors="replace")[:-1]  # the read may cut the last character in two
    if all(character != "\ufffd" and (character.isprintable() or character in "\t\n\r") for character in text):
        return "a text file"
    return "a file of an unknown format"


def read_weights(path: Path) -> tuple:
    """(state dict, meta) of a safetensors or PyTorch file, with a clear error for anything else."""
    kind = "safetensors" if path.suffix == ".safetensors" else checkpoint_format(path)
    if kind is None:
        raise InputError(f"{path} is not a checkpoint: it looks like {describe_file(path)}. Give {SOURCES}.")
    if kind == "safetensors":
        try:
            return load_file(path), {}
        except (SafetensorError, OSError) as error:
            raise ConversionError(
                f"{path} is not a readable safetensors file ({error}). It may be truncated or corrupt: "
                "download it again."
            ) from error
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error):
            raise ConversionError(
                f"{path} needs to run pickled code to load, which this converter refuses (it could execute "
                "anything). If you trust the file, re-save its tensors alone: "
                "`torch.save(torch.load(path, weights_only=False)['state_dict'], 'clean.pth')`."
            ) from error
        raise _unreadable(path, error) from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise _unreadable(path, error) from error
    return unwrap(checkpoint, path)


def _unreadable(path: Path, error: Exception) -> ConversionError:
    # torch's first sentence says what failed; the rest of its message is advice that follows here anyway.
    reason = str(error).strip().split(". ")[0].splitlines()[0] if str(error).strip() else "no message"
    return ConversionError(
        f"Cannot read {path} as a PyTorch checkpoint ({type(error).__name__}: {reason}). The file is "
        "truncated, corrupt or of another format: download it again, or give a .pth/.bin/.safetensors file."
    )


def unwrap(checkpoint, path: Path) -> tuple:
    """The state dict inside a loaded checkpoint: mmcv/mmseg files wrap it with `meta` (and an optimizer)."""
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"{path} holds a {type(checkpoint).__name__}, not a dict of tensors.")
    meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), dict) else {}
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    not_tensors = [key for key, value in checkpoint.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ConversionError(
            f"{path} is not a state dict: {', '.join(map(str, not_tensors[:5]))} are not tensors (top-level "
            "keys of a checkpoint should be parameter names, or `state_dict`/`meta`)."
        )
    return checkpoint, meta


def read_checkpoint(source, hub_kwargs: dict | None = None) -> Checkpoint:
    """Read `source`: a Hub repo id or folder in transformers' layout, or a .pth/.bin/.safetensors file."""
    hub_kwargs = hub_kwargs or {}
    source = str(source)
    try:
        folder = transformers_folder(source, hub_kwargs)
    except OSError as error:  # the Hub's errors: no such repository or revision, no access
        reason = why_not_loaded(source, error, hub_kwargs.get("revision"))
        raise InputError(f"cannot read {source!r}: {reason}") from error
    if folder is not None:
        return read_folder(folder, source)
    path = Path(source)
    if path.is_file():
        state_dict, meta = read_weights(path)
        return Checkpoint(state_dict, source, meta=meta)
    if path.is_dir():
        raise InputError(f"cannot read {source!r}: the folder has no config.json (is it a transformers model folder?)")
    if not looks_like_repo_id(source) or path.suffix in (".pth", ".pt", ".bin", ".safetensors"):
        raise InputError(f"cannot read {source!r}: there is no such file or folder")
    raise InputError(
        f"cannot read {source!r}: there is no such file or folder, and the Hub repository of that id has no "
        "config.json or could not be reached (offline?)"
    )
