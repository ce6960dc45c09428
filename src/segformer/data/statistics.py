"""Per-channel mean and standard deviation of a dataset's images, for `segformer train --image-stats auto`.

Measured on the images as the processor reads them (`to_array`, then the 1/255 rescale), before any
augmentation, so the numbers go straight into `SegFormerImageProcessor(image_mean=..., image_std=...)`.
Sums are kept in float64 and summed across processes, so two processes give what one gives.
"""

import numpy as np
import torch

from ..image_processing_segformer import to_array


def channel_sums(dataset, indices) -> torch.Tensor:
    """(3, C) float64: per channel the sum of the values, the sum of their squares and the pixel count,
    over the images of `dataset` (a SegmentationDataset) at `indices`, in the processor's 0..1 scale."""
    channels = getattr(dataset.transform, "num_channels", 3)
    totals = torch.zeros(3, channels, dtype=torch.float64)
    for index in indices:
        image, _ = dataset.load_pair(index)
        array = to_array(image, channels).astype(np.float64).reshape(-1, channels) / 255.0
        totals[0] += torch.from_numpy(array.sum(axis=0))
        totals[1] += torch.from_numpy(np.square(array).sum(axis=0))
        totals[2] += len(array)
    return totals


def image_statistics(dataset, process_index: int = 0, num_processes: int = 1, reduce=None) -> tuple:
    """(mean, std) lists, one value per channel, over every image of `dataset`. With several processes each
    reads its share (every `num_processes`-th image) and `reduce` sums the (3, C) tensors of all
    (e.g. `lambda t: accelerator.reduce(t, "sum")`)."""
    totals = channel_sums(dataset, range(process_index, len(dataset), num_processes))
    if reduce is not None:
        totals = reduce(totals)
    sums, squares, count = totals
    mean = sums / count
    # A constant channel would divide by 0 when normalising: its std is taken as 1.
    std = (squares / count - mean**2).clamp(min=0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return [round(v, 6) for v in mean.tolist()], [round(v, 6) for v in std.tolist()]
