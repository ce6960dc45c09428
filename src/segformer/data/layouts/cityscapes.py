"""Cityscapes as unpacked from `leftImg8bit_trainvaltest.zip` and `gtFine_trainvaltest.zip`:

    leftImg8bit/{train,val,test}/CITY/CITY_SEQ_FRAME_leftImg8bit.png
    gtFine/{train,val,test}/CITY/CITY_SEQ_FRAME_gtFine_labelTrainIds.png   (cityscapesScripts' createTrainIdLabelImgs)
    gtFine/{train,val,test}/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png        (as shipped)

The 19 evaluated classes are the train ids 0..18, 255 ignored. Where the `labelTrainIds` masks have not been
made, the shipped `labelIds` masks are read through the official id -> train-id table (cityscapesScripts'
`labels.py`). The paper's protocol: 1024x1024 crops; evaluation on the full 1024x2048 image in 1024x1024
sliding windows every 768 pixels (Xie et al. 2021, section 4.1).
"""

from pathlib import Path

from ...errors import DataError
from .common import LayoutData, first, require

NAME = "cityscapes"
EXPECTS = "leftImg8bit/{train,val}/CITY/*_leftImg8bit.png and gtFine/{train,val}/CITY/*_gtFine_labelTrainIds.png or *_gtFine_labelIds.png"
SPLITS = {"train": "train", "val": "validation", "test": "test"}
PRESET = dict(crop_size=[1024, 1024], scale=[2048, 1024], eval_short_side=1024, eval_mode="slide", slide_stride=768)
IGNORE = 255

CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
           "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")  # fmt: skip
PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip
# The official label id -> train id table: ids 0..33 of `labelIds` masks; every id not evaluated -> 255.
ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14,
    28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
LABEL_IDS_MAP = {label_id: ID_TO_TRAIN_ID.get(label_id, IGNORE) for label_id in range(34)}

IMAGE_SUFFIX = "_leftImg8bit.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"


def find_root(path: Path) -> Path | None:
    """`path` when it holds leftImg8bit/ (a missing gtFine/ is then an error that says so)."""
    return path if (path / "leftImg8bit").is_dir() else None


def _images(root: Path) -> dict:
    """{split: [(image path, gtFine path without its suffix)]} of the split folders present."""
    found = {}
    for folder, split in SPLITS.items():
        images_dir = root / "leftImg8bit" / folder
        if not images_dir.is_dir():
            continue
        require(root / "gtFine" / folder, f"{NAME}: {images_dir} has no masks")
        found[split] = [
            (image, root / "gtFine" / folder / image.parent.name / image.name[: -len(IMAGE_SUFFIX)])
            for image in sorted(images_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        ]
        if not found[split]:
            raise DataError(f"{NAME}: {images_dir} holds no CITY/*{IMAGE_SUFFIX} images.")
    return found


def load(root: Path) -> LayoutData:
    """labelTrainIds masks where every image has one; else labelIds through the official table (one choice
    for the whole dataset, since the label map applies to every split)."""
    found = _images(root)
    if not found:
        raise DataError(f"{NAME}: {root / 'leftImg8bit'} has none of the split folders {list(SPLITS)}.")
    pairs = [pair for split_pairs in found.values() for pair in split_pairs]
    for suffix, label_map, note in (
        (TRAIN_IDS_SUFFIX, {}, "labelTrainIds masks (train ids 0..18, 255 ignored)"),
        (LABEL_IDS_SUFFIX, LABEL_IDS_MAP, "labelIds masks through the official id -> train-id table"),
    ):
        if all(Path(f"{stem}{suffix}").is_file() for _, stem in pairs):
            splits = {
                split: ([str(image) for image, _ in items], [f"{stem}{suffix}" for _, stem in items])
                for split, items in found.items()
            }
            return LayoutData(splits, label_map, note)
    neither = [image.name for image, stem in pairs if not any(Path(f"{stem}{s}").is_file() for s in (TRAIN_IDS_SUFFIX, LABEL_IDS_SUFFIX))]
    if neither:
        raise DataError(
            f"{NAME}: {len(neither)} images have neither a *{TRAIN_IDS_SUFFIX} nor a *{LABEL_IDS_SUFFIX} mask in gtFine/ "
            f"({first(neither)}). Unpack gtFine_trainvaltest.zip into {root}."
        )
    raise DataError(
        f"{NAME}: some images have only *{TRAIN_IDS_SUFFIX} masks and others only *{LABEL_IDS_SUFFIX}: run "
        "cityscapesScripts' createTrainIdLabelImgs for all of them, or delete the partial *labelTrainIds.png files."
    )
