"""The options of the training commands (`segformer train`, `segformer pretrain`), layered: the dataclass's
defaults < the built-in dataset's preset < a YAML/JSON config file < the command line. Every option is
declared with default None, so that what was given can be told apart, and its help shows the layered
default."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import InputError, OptionError


def shown(value) -> str:
    """An option value as the help and the command line write it."""
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


class OptionAdder:
    """`adder(name, help, **argparse_kwargs)` adds an option to the current group (`adder.group(title)`
    starts one), with "(default: ...)" from `defaults` (a dataclass instance) and, when `preset` sets it,
    "; <preset_name>: ..."."""

    def __init__(self, parser: argparse.ArgumentParser, defaults, preset: dict, preset_name: str):
        self.parser, self.target = parser, parser
        self.defaults, self.preset, self.preset_name = defaults, preset, preset_name
        parser.add_argument(
            "--config", help="YAML or JSON file of options (keys are the option names); the command line wins (default: none)."
        )

    def group(self, title: str):
        self.target = self.parser.add_argument_group(title)

    def __call__(self, name: str, help: str, **kwargs):
        dest = name.lstrip("-").replace("-", "_")
        default = getattr(self.defaults, dest)
        if kwargs.get("action") is argparse.BooleanOptionalAction:
            text = "on" if default else "off"
        else:
            text = "none" if default is None else shown(default)
        if dest in self.preset:
            text += f"; {self.preset_name}: {shown(self.preset[dest])}"
        self.target.add_argument(name, help=f"{help} (default: {text})", default=None, **kwargs)


def read_config_file(path: str, fields: set) -> dict:
    """The options of a YAML or JSON file (YAML is a superset of JSON), keys as option names (of `fields`)."""
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise InputError(f"--config {path}: no such file.") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise InputError(f"--config {path} is not a readable YAML or JSON file ({error}).") from None
    if not isinstance(values, dict):
        raise OptionError(f"--config {path} must hold a mapping of option names to values.")
    values = {str(key).replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise OptionError(f"--config {path} has unknown options {unknown}; valid ones: {sorted(fields)}.")
    return values


def given_options(args: argparse.Namespace, fields: set) -> tuple:
    """(options given on the command line, options of its --config file), each {name: value} of `fields`."""
    given = {key: value for key, value in vars(args).items() if value is not None and key in fields}
    return given, read_config_file(args.config, fields) if getattr(args, "config", None) else {}


def build_options(options_class, values: dict, args: argparse.Namespace):
    """`options_class(**values)`, a config-file value of the wrong kind said as an OptionError."""
    try:
        return options_class(**values)
    except TypeError as error:
        raise OptionError(f"--config {args.config}: {error}.") from None
