"""Convert a SegFormer checkpoint into a Hub-ready folder, checking it against its source.

SOURCE is any of:
  - a Hub repo id or folder in transformers' layout (4.x, as nvidia/mit-b0 and
    nvidia/segformer-b0-finetuned-ade-512-512, or 5.x);
  - an NVlabs/SegFormer .pth (segmentation checkpoint, or ImageNet mit_b*.pth encoder);
  - an mmsegmentation .pth: a full SegFormer (MiT + SegformerHead; 0.x or 1.x metadata), or its MiT;
  - a folder of this package (with --to transformers).
The architecture is read from the tensors, and every tensor must find its place (--encoder-only keeps
only the encoder). --output-dir gets config.json (with auto_map), model.safetensors,
preprocessor_config.json and a README.md model card. A segmentation model's image processor runs its
source's own test protocol (mmseg's Resize, NVlabs' AlignedResize, transformers' square, each with its
uint8 resize arithmetic; ADE20K / Cityscapes sizes where the source is one), so that `segformer predict`
and pipeline() give the source framework's label maps. With --to transformers, it gets a folder for stock
transformers instead; with --to nvlabs-mit, the encoder as NVlabs' ImageNet `mit_bX.pth` (a classifier's
head included), for the original code and the frameworks that start from those files.

examples:
  segformer convert nvidia/segformer-b0-finetuned-ade-512-512 --output-dir out/b0-ade
  segformer convert segformer.b2.1024x1024.city.160k.pth --output-dir out/b2-city --variant b2
  segformer convert segformer_mit-b0_8xb2-160k_ade20k-512x512.pth --output-dir out/b0-ade-mmseg
  segformer convert segformer_mit-b0_8xb2-160k_ade20k-512x512.pth --output-dir out/mit-b0 --encoder-only
  segformer convert out/b0-ade --output-dir out/b0-ade-transformers --to transformers
  segformer convert outputs/pretrain/model --output-dir out/nvlabs --to nvlabs-mit
"""

import argparse
import logging

from ..cli import add_model_download, add_output_dir, add_push_to_hub
from ..configuration_segformer import SegFormerConfig
from ..errors import InputError, OptionError
from ..hub import push_to_hub, write_model_card
from ..files import make_output_dir
from ..loading import load_image_processor, load_model, why_not_loaded
from .convert import DEFAULT_TOLERANCE, MODEL_CLASSES, convert
from .mappings import FORMATS
from .on_the_fly import source_config
from .to_nvlabs import export_to_nvlabs
from .to_transformers import export_to_transformers

# The `--to` targets: this package's folder, transformers' in the 4.x key layout (which 4.x and 5.x load)
# or the 5.x one, or NVlabs' ImageNet encoder file.
NVLABS = "nvlabs"
TARGETS = {"segformer": None, "transformers": "4", "transformers-5": "5", "nvlabs-mit": NVLABS}
NATIVE_MODEL_TYPE = "segformer-mit"


def parse_variant(text: str) -> str:
    try:
        SegFormerConfig.from_variant(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("source", help="Hub repo id, folder, or .pth/.bin/.safetensors file to convert.")
    add_output_dir(parser, "outputs/convert", "to write the converted model into")
    parser.add_argument(
        "--format",
        choices=["auto", *FORMATS],
        default="auto",
        help="Layout of SOURCE: auto (detected from the keys), hf (transformers 4.x/5.x), original (NVlabs), mmseg.",
    )
    parser.add_argument(
        "--encoder-only",
        action="store_true",
        help="Keep only the encoder (a SegFormerModel to fine-tune with a new decoder), dropping the source's "
        "decoder and heads, known or not (default: convert everything; a tensor without a place is an error).",
    )
    parser.add_argument(
        "--variant",
        type=parse_variant,
        help="b0..b5: take the attention heads and strides from this preset and fail if the tensors are another "
        "variant (default: heads from the source config, else 1, 2, 5, 8 as in every released variant).",
    )
    parser.add_argument(
        "--num-heads",
        type=int,
        nargs="+",
        metavar="N",
        help="Attention heads per stage, overriding --variant and the source config (default: from those).",
    )
    parser.add_argument(
        "--layer-norm-eps",
        type=float,
        help="LayerNorm eps in the blocks (default: what the source ran with: 1e-5 transformers, 1e-6 original "
        "and mmseg).",
    )
    parser.add_argument(
        "--patch-layer-norm-eps",
        type=float,
        help="LayerNorm eps after the strided convs (default: what the source ran with: 1e-5, mmseg 1e-6).",
    )
    check = parser.add_mutually_exclusive_group()
    check.add_argument(
        "--check",
        action="store_true",
        default=None,
        help="Require the logits check against the source, failing where the source cannot run (default: check "
        "whenever the source can run, i.e. transformers' layouts).",
    )
    check.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        default=None,
        help="Skip the logits check (default: check whenever the source can run).",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"Largest max-abs difference of the logits that passes the check (default: {DEFAULT_TOLERANCE:g}).",
    )
    parser.add_argument(
        "--to",
        choices=list(TARGETS),
        default="segformer",
        help="What to write: segformer, this package's model; transformers, a folder that stock transformers loads "
        "(the 4.x keys, which transformers 4.x and 5.x both load and 5.x saves); transformers-5, the 5.x keys; "
        "nvlabs-mit, the encoder as NVlabs' ImageNet mit_bX.pth (with a classifier's head; without any decoder).",
    )
    add_model_download(parser)
    add_push_to_hub(parser, "the converted folder")


def _overrides(args: argparse.Namespace) -> dict:
    overrides = dict(
        num_attention_heads=args.num_heads,
        layer_norm_eps=args.layer_norm_eps,
        patch_layer_norm_eps=args.patch_layer_norm_eps,
    )
    return {name: value for name, value in overrides.items() if value is not None}


def load_source(args: argparse.Namespace, hub_kwargs: dict):
    """(model, processor, source for the card, logits difference) of SOURCE."""
    try:
        config = source_config(args.source, hub_kwargs) or {}
    except OSError as error:  # the Hub's errors: no such repository or revision, no access
        raise InputError(f"cannot read {args.source!r}: {why_not_loaded(args.source, error, args.revision)}") from error
    if config.get("model_type") == NATIVE_MODEL_TYPE:
        model_class = MODEL_CLASSES[config.get("architectures", ["SegFormerForSemanticSegmentation"])[0]]
        model = load_model(args.source, model_class, **hub_kwargs, device="cpu")
        return model, load_image_processor(args.source, **hub_kwargs), args.source, None
    conversion = convert(
        args.source,
        format=args.format,
        variant=args.variant,
        check=args.check,
        tolerance=args.tolerance,
        hub_kwargs=hub_kwargs,
        encoder_only=args.encoder_only,
        **_overrides(args),
    )
    return conversion.model, conversion.processor, conversion.source, conversion.max_abs_diff


def main(args: argparse.Namespace):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    layout = TARGETS[args.to]
    if layout == NVLABS and args.push_to_hub:
        raise OptionError("--push-to-hub uploads a model folder; --to nvlabs-mit writes a .pth for other frameworks.")
    output_dir = make_output_dir(args.output_dir)  # fail before the conversion, not after
    hub_kwargs = {name: getattr(args, name) for name in ("revision", "token") if getattr(args, name)}
    model, processor, source, difference = load_source(args, hub_kwargs)
    if layout == NVLABS:
        path, difference = export_to_nvlabs(model, output_dir)
        classifier = type(model).__name__ == "SegFormerForImageClassification"
        what = "encoder and classifier (as `head`)" if classifier else "encoder"
        print(f"Wrote the {what} of {source} to {path} in NVlabs' layout; read back: same tensors, max abs "
              f"difference of the outputs {difference:.3g}")
        return
    if layout is None:
        processor.save_pretrained(output_dir)  # before the model, which adds a default one where none is
        model.save_pretrained(output_dir)
        write_model_card(output_dir, model.config, source=source, repo_id=args.push_to_hub)
    else:
        difference = export_to_transformers(model, output_dir, layout=layout, processor=processor)
    checked = f"; max abs difference of the logits {difference:.3g}" if difference is not None else ""
    print(f"Wrote {type(model).__name__} to {output_dir}{checked}")
    if args.push_to_hub:
        # Not private means the account's default visibility for a new repository, not "make it public".
        url = push_to_hub(output_dir, args.push_to_hub, token=args.token, private=args.private or None)
        print(f"Uploaded to {url}")
