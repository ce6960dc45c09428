"""The files commands read and write: image paths from the command line's patterns, images opened with an
error that names the file, and output folders. What happens to an opened image (channels, resizing,
normalisation) is `image_processing_segformer`'s job, the same for every entry point."""

import glob
import io
import tempfile
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import InputError, OutputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def open_image(source, name: str | None = None) -> Image.Image:
    """A loaded PIL image from a path, bytes, a `datasets.Image(decode=False)` value ({"bytes", "path"})
    or a PIL image. `name` is how errors refer to it (default: its path)."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, dict):
        source = io.BytesIO(source["bytes"]) if source.get("bytes") else source["path"]
    name = name or str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()
            return image
    except FileNotFoundError:
        raise InputError(f"cannot read {name}: no such file.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = "not an image file" if isinstance(error, UnidentifiedImageError) else str(error)
        raise InputError(f"cannot read {name} as an image ({reason}).") from None


def find_images(patterns: list) -> list:
    """Files, folders (their images, sorted) and glob patterns -> image paths, each once, in order."""
    paths = []
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
        paths += [p for p in found if p not in paths]
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
