"""The built-in classification set: what the built-in segmentation set asks a model to recognise, as
image classes, drawn by the segmentation set's own code (`segformer.data.builtin`).

The segmentation set's classes are textures (stripes, checkers, dots) on shapes over a smooth noisy
background, in random colours, so only the texture tells them apart. Here an image holds one large shape
(45-80% of the image wide) drawn over 0-2 small distractor shapes of any texture; its class is the large
shape's texture and outline ("dots triangle": 3 textures x 3 shapes = 9 classes). To name it a model must
learn what segmentation needs: texture whatever the colour, and where a region's outline runs.
"""

from __future__ import annotations

import numpy as np

from ..data.builtin import SHAPES, TEXTURES, _shape_mask, background, paint, to_image

BUILTIN_PRETRAIN_CARD_NAME = "segformer-builtin-textures-classification"  # how model cards name it
BUILTIN_CLASSES = [f"{texture} {shape}" for texture in TEXTURES for shape in SHAPES]


def generate_classification_sample(size: int, class_id: int, rng: np.random.Generator):
    """One RGB image of class `class_id` (an index of `BUILTIN_CLASSES`)."""
    texture, shape = divmod(class_id, len(SHAPES))
    image = background(size, rng)
    for _ in range(rng.integers(0, 3)):  # distractors: small, under the main shape
        paint(image, _shape_mask(size, rng, extent=(0.15, 0.3)), TEXTURES[rng.integers(len(TEXTURES))], rng)
    paint(image, _shape_mask(size, rng, shape=shape, extent=(0.45, 0.8)), TEXTURES[texture], rng)
    return to_image(image)


def generate_classification_dataset(num_train: int = 3600, num_validation: int = 450, size: int = 64, seed: int = 0):
    """The built-in classification set as a `datasets.DatasetDict` (`image`, `label` ClassLabel), classes
    balanced in both splits (sample i has class i mod 9)."""
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=BUILTIN_CLASSES)})
    splits = {}
    for offset, (split, count) in enumerate((("train", num_train), ("validation", num_validation))):
        rng = np.random.default_rng([seed, offset, 19])  # apart from the segmentation set's streams
        labels = [index % len(BUILTIN_CLASSES) for index in range(count)]
        images = [generate_classification_sample(size, label, rng) for label in labels]
        splits[split] = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    return datasets.DatasetDict(splits)
