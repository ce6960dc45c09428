"""Reading ahead of the model: images opened and normalised by DataLoader workers while the model runs,
then grouped into batches of one size.

Each item is read by `segformer.files.open_image` and made model input by `segformer.inference.model_input`
(the model's processor, at the image's own size or at a source framework's protocol), the one path of every
entry point. A bad image does not raise in the worker: it
comes back as a `Read` with the error's message, so the job can name it and go on.
"""

from dataclasses import dataclass

import torch

from ..errors import SegFormerError
from ..files import open_image
from ..inference import image_size, model_input


@dataclass
class Read:
    """One item as read: its output name, its model input (`segformer.inference.model_input`), the image's
    (height, width), the opened image (kept only when an output needs it, e.g. overlays), or the reason it
    could not be read."""

    index: int
    name: str
    pixel_values: torch.Tensor | None = None
    size: tuple | None = None
    image: object = None
    error: str | None = None


class ReadImages(torch.utils.data.Dataset):
    """The items `indices` of `source`, opened and made model input one by one (in a DataLoader worker)."""

    def __init__(self, source, indices, processor, settings, keep_images: bool = False):
        self.source, self.indices, self.keep_images = source, list(indices), keep_images
        self.processor, self.settings = processor, settings

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Read:
        index = self.indices[position]
        name, image_source, display = self.source[index]
        try:
            image = open_image(image_source, name=display, num_channels=self.processor.num_channels)
            pixel_values = model_input(self.processor, self.settings, image)
        except SegFormerError as error:  # open_image's messages name the image
            return Read(index, name, error=str(error))
        except Exception as error:  # noqa: BLE001 - e.g. PIL's DecompressionBombError: one image, not the job
            return Read(index, name, error=f"cannot read {display}: {type(error).__name__}: {error}")
        return Read(index, name, pixel_values, image_size(image), image if self.keep_images else None)


def _as_read(item: Read) -> Read:
    return item  # no collation: batches are formed by size afterwards (`batches_of_one_size`)


def read_ahead(dataset: ReadImages, num_workers: int, prefetch: int = 4):
    """The items of `dataset` in order, read by `num_workers` worker processes (0: in this process),
    each `prefetch` items ahead."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        collate_fn=_as_read,
        num_workers=num_workers,
        prefetch_factor=prefetch if num_workers else None,
        persistent_workers=False,
    )


def batches_of_one_size(reads, batch_size: int, max_waiting: int | None = None):
    """Lists of `Read`s whose images have one size, at most `batch_size` each; a failed read comes alone,
    at once. Images wait for partners of their size until `max_waiting` images wait in all (default: 4
    batches), then the oldest group goes as it is, so memory stays bounded whatever the sizes."""
    max_waiting = max_waiting or 4 * batch_size
    waiting, count = {}, 0
    for read in reads:
        if read.error is not None:
            yield [read]
            continue
        group = waiting.setdefault(tuple(read.pixel_values.shape), [])
        group.append(read)
        count += 1
        if len(group) == batch_size:
            count -= len(group)
            yield waiting.pop(tuple(read.pixel_values.shape))
        elif count > max_waiting:
            oldest = next(iter(waiting))  # dicts keep insertion order
            count -= len(waiting[oldest])
            yield waiting.pop(oldest)
    yield from waiting.values()
