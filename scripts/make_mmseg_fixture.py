"""Write the mmsegmentation SegFormer fixtures that `tests/test_mmseg.py` checks the package against.

mmsegmentation's SegFormer is its `MixVisionTransformer` encoder with its `SegformerHead` decoder, and
its test protocol is its own: OpenCV's uint8 bilinear resize to `scale=(2048, 512)` with the aspect ratio
kept, logits resized to the resized input and then to the image. This script builds a small seeded
random model with mmsegmentation's own classes (non-trivial BatchNorm statistics), saves it as a full
checkpoint with mmseg 1.x metadata (`meta['dataset_meta']`) and as a 0.x copy (`meta['CLASSES']`,
`meta['PALETTE']`), and records what mmsegmentation computes with it:

  mmseg-segformer/model-1.x.pth, model-0.x.pth   the checkpoints (tensors and plain metadata only)
  mmseg-segformer/logits.safetensors             normalised inputs of odd sizes and the model's logits
  mmseg-segformer/image-{k}.png                  small uint8 RGB images of odd sizes
  mmseg-segformer/image-{k}-labels.png           mmseg's label map of each (its `inference_model`)
  mmseg-segformer/margins.npz                    the top-2 logit margin of mmseg's logits at each pixel
  mmseg-segformer/cv2-resize-{h}x{w}.png         OpenCV's uint8 bilinear resize of image-0, up and down

and checks the package's numpy reproduction of OpenCV's resize against OpenCV on 300 random sizes.

Run it once, in an environment of its own (mmsegmentation 1.2.2 needs mmcv < 2.2 and brings OpenCV; none
of it belongs in the package's environment). The outputs are byte-for-byte reproducible:

    python3 -m venv /tmp/mmseg-venv
    /tmp/mmseg-venv/bin/pip install torch==2.13.0 mmengine==0.10.7 mmcv-lite==2.1.0 scipy prettytable safetensors
    /tmp/mmseg-venv/bin/pip uninstall -y opencv-python  # mmengine's; one OpenCV 4.x without a GUI is enough
    /tmp/mmseg-venv/bin/pip install "opencv-python-headless<5"
    /tmp/mmseg-venv/bin/pip install --no-deps mmsegmentation==1.2.2
    /tmp/mmseg-venv/bin/python scripts/make_mmseg_fixture.py tests/fixtures/mmseg-segformer

mmcv-lite is mmcv without its compiled operators. `import mmseg.models` imports a few of them
(deformable convolutions, point sampling, ...) for models other than SegFormer; `stub_mmcv_ops` puts
placeholders of those names in place so that the import succeeds. SegFormer never calls them.
"""

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# A MiT much narrower than B0 so that the checkpoint is small enough to commit, with B0's heads, patch
# sizes and reduction ratios (mmseg's widths are embed_dims * num_heads).
BACKBONE = dict(
    type="MixVisionTransformer",
    in_channels=3,
    embed_dims=6,
    num_stages=4,
    num_layers=[1, 2, 1, 1],
    num_heads=[1, 2, 5, 8],
    patch_sizes=[7, 3, 3, 3],
    sr_ratios=[8, 4, 2, 1],
    out_indices=(0, 1, 2, 3),
    mlp_ratio=4,
    qkv_bias=True,
    drop_rate=0.0,
    attn_drop_rate=0.0,
    drop_path_rate=0.1,
)
CLASSES = ("sky", "tree", "road", "person", "car")
PALETTE = [[70, 130, 180], [107, 142, 35], [128, 64, 128], [220, 20, 60], [0, 0, 142]]
# As mmseg's SegFormer configs (segformer_mit-b0_8xb2-160k_ade20k-512x512.py), but BN for SyncBN (same keys).
MODEL = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(
        type="SegDataPreProcessor",
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(512, 512),
    ),
    backbone=BACKBONE,
    decode_head=dict(
        type="SegformerHead",
        in_channels=[6, 12, 30, 48],
        in_index=[0, 1, 2, 3],
        channels=32,
        dropout_ratio=0.1,
        num_classes=len(CLASSES),
        norm_cfg=dict(type="BN", requires_grad=True),
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"),
)
# The ADE20K test pipeline of mmseg 1.x's SegFormer configs, without the annotations.
TEST_PIPELINE = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(2048, 512), keep_ratio=True),
    dict(type="PackSegInputs"),
]
# Odd sizes, not square; the third one is long enough that the 2048 cap on the long side decides.
INPUT_SIZES = [(1, 3, 67, 93), (2, 3, 45, 71)]
IMAGE_SIZES = [(97, 131), (120, 77), (45, 301)]
# Sizes the first image is resized to with OpenCV alone: up (not by an integer factor) and down.
CV2_SIZES = [(163, 217), (43, 59)]


def stub_mmcv_ops():
    """Placeholders for the compiled `mmcv.ops` names that `import mmseg.models` reaches."""

    class Missing:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("a compiled mmcv op: not available in mmcv-lite")

    def placeholder(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Missing if name[:1].isupper() else (lambda *args, **kwargs: Missing())

    ops = types.ModuleType("mmcv.ops")
    ops.__getattr__ = placeholder
    sys.modules["mmcv.ops"] = ops
    for sub in ("point_sample", "multi_scale_deform_attn", "merge_cells", "carafe"):
        sys.modules[f"mmcv.ops.{sub}"] = ops


def randomize(model: torch.nn.Module, seed: int):
    """Random values in every float tensor, BatchNorm statistics included: the default init (norms 1/0,
    statistics 0/1) would let a converter that swaps or forgets a norm pass unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            elif name.endswith("running_mean"):
                tensor.copy_(0.3 * noise)
            elif ("norm" in name or ".bn." in name) and name.endswith("weight"):
                tensor.copy_(1.0 + 0.2 * noise)
            else:
                tensor.copy_(0.3 * noise)
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(160000)


def balance_classes(model, image_paths: list, inference_model):
    """Shift the classifier's biases so that every class wins somewhere: a random model otherwise tends to
    predict one class everywhere, and a constant label map would prove little."""
    with torch.no_grad():
        means = torch.stack([inference_model(model, str(path)).seg_logits.data.mean((1, 2)) for path in image_paths])
        model.decode_head.conv_seg.bias -= means.mean(0)


def smooth_image(height: int, width: int, generator: np.random.Generator) -> np.ndarray:
    """A uint8 RGB image with regions and edges (so that label maps have boundaries) that compresses well."""
    coarse = generator.integers(0, 256, (max(2, height // 12), max(2, width // 12), 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
    image += generator.integers(-6, 7, image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def check_opencv_reproduction(cv2, trials: int = 300) -> int:
    """Compare the package's numpy reproduction of OpenCV's uint8 bilinear resize (src/segformer/
    resize_segformer.py, numpy and PIL only, loaded by path) with OpenCV on random sizes, up and down;
    returns the number of values compared, and stops at the first difference."""
    path = Path(__file__).parents[1] / "src" / "segformer" / "resize_segformer.py"
    spec = importlib.util.spec_from_file_location("resize_segformer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rng = np.random.default_rng(3)
    compared = 0
    for _ in range(trials):
        (height, width), (new_height, new_width) = rng.integers(2, 200, 2), rng.integers(2, 400, 2)
        image = rng.integers(0, 256, (height, width, int(rng.choice([1, 3]))), dtype=np.uint8)
        expected = cv2.resize(image, (int(new_width), int(new_height)), interpolation=cv2.INTER_LINEAR)
        ours = module.opencv_bilinear(image, (int(new_height), int(new_width)))
        if not np.array_equal(ours, expected.reshape(ours.shape)):
            raise SystemExit(f"opencv_bilinear differs from OpenCV resizing {image.shape} to {ours.shape}.")
        compared += ours.size
    return compared


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="Folder to write the fixtures into (tests/fixtures/mmseg-segformer).")
    args = parser.parse_args()
    stub_mmcv_ops()
    import cv2
    import mmcv
    import mmengine
    import mmseg
    from mmengine import Config
    from mmseg.apis import inference_model, init_model
    from mmseg.utils import register_all_modules
    from safetensors.torch import save_file

    register_all_modules()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = Config(dict(model=MODEL, test_pipeline=TEST_PIPELINE))
    model = init_model(config, checkpoint=None, device="cpu")
    randomize(model, seed=17)
    model.eval()
    versions = (
        f"mmseg {mmseg.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__}, cv2 {cv2.__version__}"
    )

    rng = np.random.default_rng(2)
    paths = [args.out / f"image-{k}.png" for k in range(len(IMAGE_SIZES))]
    for path, (height, width) in zip(paths, IMAGE_SIZES):
        Image.fromarray(smooth_image(height, width, rng)).save(path, optimize=True)
    balance_classes(model, paths, inference_model)
    state_dict = {key: tensor.clone() for key, tensor in model.state_dict().items()}
    torch.save(
        {
            "meta": {
                "mmseg_version": mmseg.__version__,
                "dataset_meta": {"classes": CLASSES, "palette": PALETTE},
                "iter": 160000,
            },
            "state_dict": state_dict,
        },
        args.out / "model-1.x.pth",
    )
    torch.save(
        {
            "meta": {"mmseg_version": "0.30.0", "CLASSES": CLASSES, "PALETTE": PALETTE, "iter": 160000},
            "state_dict": state_dict,
        },
        args.out / "model-0.x.pth",
    )

    generator = torch.Generator().manual_seed(1)
    reference = {}
    with torch.no_grad():
        for k, shape in enumerate(INPUT_SIZES):
            inputs = torch.randn(shape, generator=generator)
            reference[f"inputs.{k}"] = inputs
            reference[f"logits.{k}"] = model.decode_head(model.backbone(inputs)).contiguous()
    save_file(reference, args.out / "logits.safetensors", metadata={"versions": versions})

    margins = {}
    for k, path in enumerate(paths):
        result = inference_model(model, str(path))
        logits = result.seg_logits.data  # (classes, H, W), at the image's own size
        labels = result.pred_sem_seg.data[0].numpy().astype(np.uint8)
        if not np.array_equal(labels, logits.argmax(0).numpy()):
            raise SystemExit("mmseg's label map is not the argmax of its logits: this script's reading is wrong.")
        top2 = logits.topk(2, dim=0).values
        margins[f"image-{k}"] = (top2[0] - top2[1]).numpy().astype(np.float16)
        Image.fromarray(labels).save(args.out / f"image-{k}-labels.png")
    np.savez_compressed(args.out / "margins.npz", **margins)
    # OpenCV's own uint8 bilinear resize of the first image, up and down, for the package's arithmetic.
    image = np.asarray(Image.open(paths[0]))
    for height, width in CV2_SIZES:
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        Image.fromarray(resized).save(args.out / f"cv2-resize-{height}x{width}.png")
    print(f"Wrote the fixtures to {args.out} ({versions}).")
    print(f"resize_segformer.opencv_bilinear equals OpenCV on {check_opencv_reproduction(cv2):,} random values.")


if __name__ == "__main__":
    main()
