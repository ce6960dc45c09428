"""The `segformer` command line: one sub-command per module, each with its own `--help`.

This is the one place that turns the package's exceptions into messages: a `SegFormerError` (or an
operating-system error such as a full disk) ends the command with `segformer <command>: error: <message>`
and exit status 2, as argparse does for a bad option (status 1 for a job that ran to its end but skipped
some bad inputs, `errors.IncompleteError`); `--debug` shows the traceback instead. Any other
exception is a bug and keeps its traceback.

The options that mean the same thing in several commands are defined here once, so they have the same
name and help everywhere.
"""

import argparse
import importlib
import sys
from dataclasses import asdict

from .errors import SegFormerError
from .inference import MULTI_SCALE, PROTOCOLS, InferenceSettings
from .precision import FLOAT_DTYPES

# sub-command -> module that defines `add_arguments(parser)` and `main(args)`; its docstring is the help.
COMMANDS = {
    "train": "segformer.train",
    "pretrain": "segformer.pretrain",
    "predict": "segformer.predict",
    "evaluate": "segformer.evaluation.command",
    "convert": "segformer.conversion.cli",
    "export": "segformer.export",
    "demo": "segformer.demo",
    "app": "segformer.app.command",
    "space": "segformer.app.space",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks and ends every option's help with its default: the value, or
    'off' for a flag. Options whose default is None say in their own help what happens without them."""

    def _get_help_string(self, action):
        help = action.help or ""
        if "default" in help or action.default in (None, argparse.SUPPRESS) or not action.option_strings:
            return help
        if action.default is False:
            return f"{help} (default: off)"
        if isinstance(action.default, (list, tuple)):
            return f"{help} (default: {' '.join(map(str, action.default))})"
        return f"{help} (default: {action.default})"


def add_output_dir(parser: argparse.ArgumentParser, default: str, what: str):
    parser.add_argument("--output-dir", default=default, help=f"Folder {what} (created if needed).")


def add_model_download(parser: argparse.ArgumentParser):
    """Where a model given by Hub id comes from."""
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of the model (default: main).")
    parser.add_argument("--token", help="Hub token for private repositories (default: the logged-in one).")


def add_push_to_hub(parser: argparse.ArgumentParser, what: str):
    parser.add_argument("--push-to-hub", metavar="REPO", help=f"Upload {what} to this Hub repository (default: no upload).")
    parser.add_argument("--private", action="store_true", help="Create the Hub repository as private.")


def add_device(parser: argparse.ArgumentParser):
    parser.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available, else cpu).")


def add_dtype(parser: argparse.ArgumentParser):
    # No argparse `choices`: the command checks the name with `precision.check_dtype`, as the library does,
    # so a bad --dtype gets the same message from every command and every function.
    metavar = "{" + ",".join(FLOAT_DTYPES) + "}"
    parser.add_argument("--dtype", default="fp32", metavar=metavar, help="Precision of the weights and activations.")


def add_protocol_arguments(parser: argparse.ArgumentParser):
    """The inference protocol options (predict, evaluate); `settings_from_args` reads them."""
    protocol = parser.add_argument_group("protocol (default: the model's image processor, as pipeline() runs it)")
    protocol.add_argument("--protocol", choices=list(PROTOCOLS), help="The paper's test settings for this dataset (default: none).")
    protocol.add_argument("--short-side", type=int, help="Resize the short side to this (default: the processor's).")
    protocol.add_argument("--no-resize", action="store_true", help="Keep the image size (rounded up to a multiple of 32).")
    protocol.add_argument("--window", type=int, help="Sliding-window size in pixels (default: whole image).")
    protocol.add_argument("--stride", type=int, help="Sliding-window stride (default: the window).")
    protocol.add_argument("--scales", type=float, nargs="+", help="Test-time scales of the short side, e.g. 0.75 1 1.25 (default: 1).")
    protocol.add_argument("--flip", action="store_true", help="Also average the mirrored image (test-time augmentation).")
    protocol.add_argument("--multi-scale", action="store_true", help="The paper's TTA: scales 0.5..1.75 and flip.")


def settings_from_args(args: argparse.Namespace, processor) -> InferenceSettings:
    """The processor's protocol, or the paper's for --protocol, overridden by the options given."""
    settings = asdict(PROTOCOLS[args.protocol] if args.protocol else InferenceSettings.from_processor(processor))
    overrides = dict(short_side=args.short_side, window=args.window, stride=args.stride, flip=args.flip or None)
    settings.update({name: value for name, value in overrides.items() if value is not None})
    if args.multi_scale:
        settings.update(MULTI_SCALE)
    if args.scales:
        settings["scales"] = tuple(args.scales)
    if args.no_resize:
        settings.update(short_side=None, align=32)
    return InferenceSettings(**settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segformer", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        summary = module.__doc__.strip().splitlines()[0]
        sub = subparsers.add_parser(name, help=summary, description=module.__doc__, formatter_class=HelpFormatter)
        module.add_arguments(sub)
        sub.add_argument("--debug", action="store_true", help="Show the traceback of an error instead of one line.")
        sub.set_defaults(entry_point=module.main, command_parser=sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the command that got them, like any other bad option of it
        args.command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.entry_point(args)
    except (SegFormerError, OSError) as error:
        if args.debug:
            raise
        # One line, whatever the message: the lines of a long one are joined, not dropped.
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
        status = getattr(error, "exit_status", 2)  # 1: a job that finished but skipped bad inputs
        args.command_parser.exit(status, f"{args.command_parser.prog}: error: {message}\n")
    except KeyboardInterrupt:
        if args.debug:
            raise
        args.command_parser.exit(130, f"{args.command_parser.prog}: interrupted\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
