"""The `segformer` command line: one sub-command per module, each with its own `--help`."""

import argparse
import importlib

# sub-command -> module that defines `add_arguments(parser)` and `main(args)`; its docstring is the help.
COMMANDS = {
    "demo": "segformer.demo",
    "predict": "segformer.predict",
    "export": "segformer.export",
    "convert": "segformer.conversion.cli",
    "train": "segformer.train",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segformer", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        summary = module.__doc__.strip().splitlines()[0]
        sub = subparsers.add_parser(
            name, help=summary, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(sub)
        sub.set_defaults(entry_point=module.main)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.entry_point(args)


if __name__ == "__main__":
    main()
