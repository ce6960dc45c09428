"""DeiT's per-image training augmentation with albumentations: RandomResizedCrop, horizontal flip,
RandAugment and random erasing. Normalising is the image processor's (the one path every model input
takes); the validation images go through the saved processor alone (resize, centre crop).

Each image's randomness is a function of (seed, epoch, index), not of a process-wide state: the same run
draws the same augmentations with any number of DataLoader workers, and a resumed run goes on exactly.

RandAugment (Cubuk et al. 2020) as DeiT runs it (timm's "rand-m9-mstd0.5-inc1"): `n` operations drawn with
replacement from the list below, each applied with probability 0.5, at a strength set by the magnitude
m/10. albumentations draws each strength uniformly up to the magnitude's (timm: normal around it, std 0.5);
the maxima at m = 10 are timm's (rotate 30 degrees, shear 0.3 = 16.7 degrees, translate 45%, colour,
contrast and brightness factors 1 +- 0.9, posterize down to 4 bits, solarize from threshold 0).
"""

from __future__ import annotations

import numpy as np

from ..errors import OptionError

OP_PROB = 0.5  # timm's RandAugmentOp default


def randaugment(ops: int, magnitude: int):
    """albumentations' SomeOf over the RandAugment operations at `magnitude` (0-10)."""
    import albumentations as A

    level = magnitude / 10
    factor = 0.9 * level
    jitter = dict(brightness=0, contrast=0, saturation=0, hue=0)

    def colour(**kwargs):
        return A.ColorJitter(**{**jitter, **kwargs}, p=OP_PROB)

    operations = [
        A.AutoContrast(p=OP_PROB),
        A.Equalize(p=OP_PROB),
        A.InvertImg(p=OP_PROB),
        A.Affine(rotate=(-30 * level, 30 * level), p=OP_PROB),
        A.Posterize(num_bits=(8 - round(4 * level), 8), p=OP_PROB),
        A.Solarize(threshold_range=(1 - level, 1.0), p=OP_PROB),
        colour(saturation=(1 - factor, 1 + factor)),
        colour(contrast=(1 - factor, 1 + factor)),
        colour(brightness=(1 - factor, 1 + factor)),
        A.Sharpen(alpha=(0.0, factor), lightness=(1.0, 1.0), p=OP_PROB),
        A.Affine(shear={"x": (-16.7 * level, 16.7 * level), "y": (0, 0)}, p=OP_PROB),
        A.Affine(shear={"x": (0, 0), "y": (-16.7 * level, 16.7 * level)}, p=OP_PROB),
        A.Affine(translate_percent={"x": (-0.45 * level, 0.45 * level), "y": (0, 0)}, p=OP_PROB),
        A.Affine(translate_percent={"x": (0, 0), "y": (-0.45 * level, 0.45 * level)}, p=OP_PROB),
    ]
    return A.SomeOf(operations, n=ops, replace=True, p=1.0)


class TrainAugmentation:
    """(H, W, 3) uint8 image -> augmented (size, size, 3) uint8 image, reproducibly per (epoch, index)."""

    def __init__(self, options, seed: int):
        try:
            import albumentations as A
            import cv2
        except ImportError:
            raise OptionError("`segformer pretrain` augments with albumentations: pip install 'segformer[pretrain]'.") from None

        steps = [
            A.RandomResizedCrop(size=(options.image_size, options.image_size), scale=tuple(options.crop_scale),
                                ratio=(3 / 4, 4 / 3), interpolation=cv2.INTER_CUBIC),
            A.HorizontalFlip(p=options.flip_prob),
        ]
        if options.randaugment_ops:
            steps.append(randaugment(options.randaugment_ops, options.randaugment_magnitude))
        if options.random_erasing:
            # timm's defaults: 2-33% of the area, aspect 0.3-3.3, filled with per-pixel noise ("pixel" mode).
            steps.append(A.Erasing(scale=(0.02, 1 / 3), ratio=(0.3, 3.3), fill="random", p=options.random_erasing))
        self.compose = A.Compose(steps)
        self.seed = seed

    def __call__(self, image: np.ndarray, epoch: int, index: int) -> np.ndarray:
        self.compose.set_random_seed(int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0]))
        return self.compose(image=image)["image"]
