"""The files commands read and write: image paths from the command line's patterns, images opened with an
error that names the file, and output folders. What happens to an opened image (channels, resizing,
normalisation) is `image_processing_segformer`'s job, the same for every entry point."""

import glob
import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError, OutputError
from .image_processing_segformer import GREY_MODES, check_channels, to_array

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".npy")
NPY_MAGIC = b"\x93NUMPY"


def open_image(source, name: str | None = None, num_channels: int | None = None):
    """A loaded image from a path, bytes, a `datasets.Image(decode=False)` value ({"bytes", "path"}), a
    PIL image or an array. `name` is how errors refer to it (default: its path).

    Most files give a PIL image. Two give an (H, W, C) numpy array of bands: a `.npy` file (its array as
    saved, (H, W) or (H, W, C)), and a multi-page TIFF whose pages are one-band images of one size (each
    page a band, scaled to 0..255 as `to_array` scales it). With `num_channels`, an image whose channels do
    not fit a model of that many (`image_processing_segformer.check_channels`) is an InputError."""
    if isinstance(source, (Image.Image, np.ndarray)):
        image = source
    else:
        if isinstance(source, dict):
            name = name or source.get("path")
            source = source["bytes"] if source.get("bytes") else source["path"]
        name = name or ("the image" if isinstance(source, bytes) else str(source))
        image = _read(source, name)
    if num_channels is not None:
        try:
            check_channels(image, num_channels)
        except ValueError as error:
            raise InputError(f"{name or 'the image'}: {error}.") from None
    return image


def _read(source, name: str):
    try:
        if isinstance(source, bytes) and source.startswith(NPY_MAGIC) or str(source).lower().endswith(".npy"):
            return _read_npy(io.BytesIO(source) if isinstance(source, bytes) else source, name)
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()
            return _tiff_bands(image) if getattr(image, "n_frames", 1) > 1 and image.format == "TIFF" else image
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"cannot read {name}: no such file.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = "not an image file" if isinstance(error, UnidentifiedImageError) else str(error)
        raise InputError(f"cannot read {name} as an image ({reason}).") from None


def _read_npy(source, name: str) -> np.ndarray:
    array = np.load(source, allow_pickle=False)
    if array.ndim not in (2, 3) or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(
            f"cannot read {name} as an image: it must hold an (H, W) or (H, W, C) array of numbers, got "
            f"{array.dtype} {array.shape}."
        )
    return array


def _tiff_bands(image: Image.Image):
    """A multi-page TIFF of one-band pages of one size as an (H, W, pages) float32 array; any other
    multi-page TIFF (colour pages, a pyramid) as its first page."""
    pages = []
    for index in range(image.n_frames):
        image.seek(index)
        same_size = not pages or pages[0].shape == (image.height, image.width)
        if image.mode not in GREY_MODES or not same_size:
            image.seek(0)
            return image.copy()
        pages.append(to_array(image, 1)[..., 0])
    image.seek(0)
    return np.stack(pages, axis=-1)


def image_size(image) -> tuple:
    """(width, height) of a PIL image or an (H, W[, C]) array, as PIL's `size`."""
    return image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])


def find_images(patterns: list) -> list:
    """Files, folders (their images, sorted) and glob patterns -> image paths, each once, in order."""
    paths, seen = [], set()  # a set: a folder of a million images must not cost a million list scans
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"Folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"{pattern!r} is no file, folder or glob pattern that matches images.")
        for p in found:
            if p not in seen:
                seen.add(p)
                paths.append(p)
    return paths


def output_names(paths: list) -> list:
    """A distinct output name per image: its stem, with the parent folders prepended where stems repeat."""
    names = [path.stem for path in paths]
    for depth in range(1, max(len(path.parts) for path in paths)):
        if len(set(names)) == len(names):
            break
        names = ["_".join(path.with_suffix("").parts[-depth - 1 :]) for path in paths]
    return names


def make_output_dir(path) -> Path:
    """Create the output folder `path` (and its parents) and make sure a file can be written into it, so
    that a command fails before its work, not after."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except FileExistsError:
        raise OutputError(f"cannot write into {path}: it is a file, not a folder; pick another --output-dir") from None
    except OSError as error:
        raise OutputError(f"cannot write into {path}: {error.strerror or error}; pick another --output-dir") from None
    return path
