"""Parsing machinery shared by the recipes: dataclass fields with --help text and choices, the base class whose
`__post_init__` checks them, and `--config_file x.yaml|json` layered under the command line."""

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser


def option(default, help: str = "", choices=None):
    """A dataclass field for `HfArgumentParser`: its default, its --help text (argparse formats help with %, so a
    literal % is doubled) and the values it allows (checked by argparse on the command line and by
    `Arguments.__post_init__` for values from a config file)."""
    metadata = {"help": help.replace("%", "%%")} if help else {}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return field(default=default, metadata=metadata)


@dataclass
class Arguments:
    """Base of every argument group. Each group's `__post_init__` checks its own fields and calls the next one's (as
    transformers' `TrainingArguments` checks itself when it is built)."""

    def __post_init__(self):
        for f in dataclasses.fields(self):  # argparse checks choices on the command line, not a config file's values
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices is not None and value is not None and value not in choices:
                raise ValueError(f"--{f.name} {value!r} is not supported; allowed values: {', '.join(choices)}.")

    def check_at_least(self, minimum, *names: str):
        """--NAME must be >= minimum (unset ones pass)."""
        for name in names:
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise ValueError(f"--{name} must be >= {minimum}, got {value}.")


@dataclass
class ConfigFileArguments(Arguments):
    config_file: str | None = option(None, "YAML or JSON file with any of these arguments; command-line flags win.")


def load_config_file(path: str) -> dict:
    with open(path) as handle:
        if path.endswith((".yaml", ".yml")):
            import yaml

            values = yaml.safe_load(handle) or {}
        else:
            values = json.load(handle)
    if not isinstance(values, dict):
        raise ValueError(f"--config_file {path}: expected a mapping of argument names to values.")
    return values


def config_file_defaults(dataclass_types, path: str) -> dict:
    """The values of the YAML/JSON file `path` as argparse defaults.

    Values become text, so argparse converts and checks each one like a command-line flag (and names it when it
    cannot); dicts, and lists for text fields, as JSON (parsed again by the IECLConfig flags); lists for list
    fields stay lists.
    """
    values = load_config_file(path)
    known = {f.name: f for cls in dataclass_types for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"--config_file {path}: unknown arguments {unknown}.")
    for key, value in values.items():
        if isinstance(value, bool):
            values[key] = str(value).lower()
        elif isinstance(value, list) and "list" in str(known[key].type):
            values[key] = value
        elif isinstance(value, (dict, list)):
            values[key] = json.dumps(value)
        elif value is not None:
            values[key] = str(value)
    return values


def config_file_of(argv=None) -> str | None:
    """The --config_file of `argv` (else `sys.argv`), read before the full parse so that the dataclasses are built
    once, with the file's values in place."""
    parser = HfArgumentParser(ConfigFileArguments, add_help=False)
    namespace, _ = parser.parse_known_args(args=argv)
    return namespace.config_file


def parse_dataclasses(dataclass_types, argv=None):
    """`HfArgumentParser(dataclass_types)` on `argv` (else `sys.argv`), with a --config_file's values as defaults:
    each dataclass is built once, from the final values, and checks itself in `__post_init__`."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = HfArgumentParser(tuple(dataclass_types))
    path = config_file_of(argv)
    if path:
        parser.set_defaults(**config_file_defaults(dataclass_types, path))
    return tuple(parser.parse_args_into_dataclasses(args=argv))


def given_arguments(dataclass_types, argv=None) -> set[str]:
    """Names of the arguments that the command line (`argv`, else `sys.argv`) or its --config_file gives, as opposed
    to those left at their defaults (argparse itself tells: every default suppressed, only given flags are set)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = HfArgumentParser(tuple(dataclass_types))
    for action in parser._actions:
        action.default = argparse.SUPPRESS  # a flag not given leaves no attribute
    namespace, _ = parser.parse_known_args(args=argv)
    path = config_file_of(argv)
    return set(vars(namespace)) | (set(load_config_file(path)) if path else set())
