"""Start a local web app to try a model: upload an image, see the segmentation.

MODEL is a folder written by `save_pretrained` (or `segformer train`/`convert`) or a Hub repo id. The page
shows what the model card says (variant, classes, training data, metrics), takes an uploaded, dropped or
pasted image or one of a few examples (images of the built-in dataset for a model trained on it), and shows
the classes over the image with a legend and each class's share of the pixels, with an opacity slider and
the label map as a PNG to download. Protocols: the whole image as the model's saved processor describes it
(what `segformer predict` and `pipeline()` run; the same label map), sliding windows, or the paper's
multi-scale test (six scales, mirrored).

--dtype bf16/fp16 runs the model in that precision as `segformer predict` does: where the device would
only emulate it (a CPU without AVX512-BF16/AMX), the model stays in fp32 and the app says so.

The app listens on 127.0.0.1 only, so other machines cannot reach it, unless --share asks Gradio for a
temporary public link. Needs the `app` extra: pip install 'segformer[app]'.
"""

import argparse
import importlib.util
import os

from .. import cli
from ..errors import InputError, OptionError
from .segmenter import Segmenter

HOST = "127.0.0.1"


def add_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("model", help="Model folder or Hub repo id.")
    parser.add_argument("--port", type=int, default=7860, help="Port of the app on 127.0.0.1.")
    parser.add_argument("--share", action="store_true", help="Also serve a temporary public link through Gradio's servers.")
    cli.add_model_download(parser)
    cli.add_device(parser)
    cli.add_dtype(parser)
    parser.add_argument("--window", type=int, help="Sliding-window size in pixels (default: the processor's short side, or 512).")
    parser.add_argument("--stride", type=int, help="Sliding-window stride (default: 3/4 of the window).")


NEEDS_GRADIO = "`segformer app` needs gradio: pip install 'segformer[app]'"


def require_gradio():
    """Fail before loading the model when gradio (an optional dependency) is missing."""
    try:
        missing = importlib.util.find_spec("gradio") is None
    except ValueError:  # in sys.modules as None: its import is blocked
        missing = True
    if missing:
        raise InputError(NEEDS_GRADIO)


def import_ui():
    """The page module (it imports gradio, which takes seconds: only once the model has loaded). Gradio
    reports usage and checks for updates unless GRADIO_ANALYTICS_ENABLED says otherwise: off here, unless
    the user set it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        from . import ui
    except ImportError as error:
        if error.name not in ("gradio", "gradio_client"):
            raise
        raise InputError(NEEDS_GRADIO) from None
    return ui


def main(args: argparse.Namespace):
    if not 0 < args.port < 65536:
        raise OptionError(f"--port must be between 1 and 65535, got {args.port}.")
    require_gradio()
    hub = dict(revision=args.revision, token=args.token)
    segmenter = Segmenter.load(args.model, device=args.device, dtype=args.dtype, window=args.window, stride=args.stride, **hub)
    for note in segmenter.notes:
        print(note, flush=True)
    ui = import_ui()
    demo = ui.build_demo(segmenter)
    try:
        _, local_url, share_url = demo.queue(default_concurrency_limit=1).launch(
            server_name=HOST, server_port=args.port, share=args.share, quiet=True, prevent_thread_lock=True, css=ui.CSS
        )
    except OSError as error:  # gradio's advice names its own environment variables and launch() arguments
        if "port" not in str(error).lower():
            raise
        raise OptionError(f"cannot listen on {HOST}:{args.port} (in use?): pick another --port") from None
    print(f"Serving {args.model} at {local_url}" + (f" and {share_url}" if share_url else "") + " (Ctrl+C stops it)", flush=True)
    try:
        demo.block_thread()
    finally:
        demo.close()
