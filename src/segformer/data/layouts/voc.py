"""Pascal VOC 2012 as unpacked from `VOCtrainval_11-May-2012.tar`:

    VOCdevkit/VOC2012/JPEGImages/NAME.jpg
    VOCdevkit/VOC2012/SegmentationClass/NAME.png           (palette PNGs: the pixel values are the class ids)
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt   (one NAME a line)

21 classes (0 = background), 255 on object borders and difficult regions, ignored. The SegFormer paper has
no VOC run; the preset is mmseg's VOC recipe for the same model family: 512x512 crops, short side 512.
"""

from pathlib import Path

from ...errors import DataError
from .common import LayoutData, first

NAME = "voc"
EXPECTS = "JPEGImages/*.jpg, SegmentationClass/*.png and ImageSets/Segmentation/{train,val}.txt (VOCdevkit/VOC2012)"
SPLITS = {"train": "train", "val": "validation", "trainval": "trainval"}
PRESET = dict(crop_size=[512, 512], scale=[2048, 512], eval_short_side=512, eval_mode="whole")
LISTS = Path("ImageSets", "Segmentation")

CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")  # fmt: skip


def voc_palette(count: int) -> list:
    """VOC's colour map: the bits of the class id spread over the high bits of R, G and B in turn (the
    devkit's `labelcolormap`), so 1 is dark red, 2 dark green, 3 olive."""
    palette = []
    for class_id in range(count):
        rgb, bits = [0, 0, 0], class_id
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((bits >> channel) & 1) << shift
            bits >>= 3
        palette.append(tuple(rgb))
    return palette


PALETTE = tuple(voc_palette(len(CLASSES)))


def find_root(path: Path) -> Path | None:
    for root in (path, path / "VOC2012", path / "VOCdevkit" / "VOC2012"):
        if (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir() and (root / LISTS).is_dir():
            return root
    return None


def load(root: Path) -> LayoutData:
    """The images and masks each split list names; a DataError names the files a list names that are missing."""
    splits = {}
    for list_name, split in SPLITS.items():
        list_file = root / LISTS / f"{list_name}.txt"
        if not list_file.is_file():
            continue
        names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        images = [root / "JPEGImages" / f"{name}.jpg" for name in names]
        labels = [root / "SegmentationClass" / f"{name}.png" for name in names]
        missing = [path.relative_to(root) for path in images + labels if not path.is_file()]
        if missing:
            raise DataError(
                f"{NAME}: {list_file} names {len(missing)} files that do not exist ({first(missing)}). "
                "Unpack the whole VOCtrainval tar, or remove those names from the list."
            )
        if not names:
            raise DataError(f"{NAME}: {list_file} names no images.")
        splits[split] = ([str(p) for p in images], [str(p) for p in labels])
    if not splits:
        raise DataError(f"{NAME}: {root / LISTS} has none of the split lists {[f'{n}.txt' for n in SPLITS]}.")
    return LayoutData(splits, note="palette-PNG masks (pixel values are the class ids, 255 ignored)")
