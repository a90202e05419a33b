"""pretrain.py's model flags: one per `IECLConfig` field (`--lambda_entropy 0.5`), generated from the config so they
stay in sync, and `--model_config_overrides "lambda_entropy=0.5,framework=simclr"` to set several at once; over the
chosen preset (`iecl_hf.presets`)."""

import ast
import dataclasses
import inspect
import json
import re

from ..configuration_iecl import FRAMEWORK_DEFAULTS, IECLConfig
from ..presets import PRESETS

# IECLConfig fields whose value is plain text (a path): taken as written, not parsed as JSON.
TEXT_FIELDS = {
    "backbone_checkpoint": "(a path): start the backbone from a local timm folder (recipes/export_timm.py writes "
    "one) or a .safetensors file",
}
FIELD_HELP = {"backbone_pretrained": "start the backbone from timm's pretrained weights of --backbone (downloaded)"}


def _model_arguments_class():
    """One optional flag per IECLConfig field (None = keep the preset/config default), always in sync with
    the config. A bool field's flag alone means true (`--backbone_pretrained`), or takes true/false.
    """
    fields = []
    for name, parameter in inspect.signature(IECLConfig.__init__).parameters.items():
        if name in ("self", "kwargs"):
            continue
        default = parameter.default
        if name in FRAMEWORK_DEFAULTS["simclr"]:  # None: the config takes the framework's value; typed like it
            kind, help_text = type(FRAMEWORK_DEFAULTS["simclr"][name]), "(unset: the framework's measured value)"
        else:
            kind = str if isinstance(default, (dict, list, tuple)) or default is None else type(default)
            help_text = "JSON" if kind is str and not isinstance(default, str) else ""
        help_text = TEXT_FIELDS.get(name, FIELD_HELP.get(name, help_text))
        metadata = {"help": f"IECLConfig.{name} {help_text}".strip()}
        if kind is bool:
            metadata.update(nargs="?", const=True)
        fields.append((name, kind | None, dataclasses.field(default=None, metadata=metadata)))
    return dataclasses.make_dataclass("ModelArguments", fields)


ModelArguments = _model_arguments_class()


def parse_value(text: str):
    """'0.5' -> 0.5, 'true' -> True, '[1, 2]' -> [1, 2], '{"a": 1}' -> dict, 'simclr' -> 'simclr'."""
    if not isinstance(text, str):
        return text
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError):
            pass
    return text.strip()


def parse_overrides(text: str | None) -> dict:
    """'a=1,b=[1, 2],c=x' -> {'a': 1, 'b': [1, 2], 'c': 'x'} (commas inside brackets are kept)."""
    if not text:
        return {}
    overrides = {}
    for item in re.split(r",(?=\s*[A-Za-z_]\w*\s*=)", text):
        if "=" not in item:
            raise ValueError(f"--model_config_overrides: {item!r} is not NAME=VALUE.")
        key, value = item.split("=", 1)
        overrides[key.strip()] = parse_value(value)
    return overrides


def resolve_preset(preset: str, model_name_or_path: str | None) -> str:
    """The preset a run uses: "auto" is cpu without a GPU, cifar with one; with --model_name_or_path, none (the
    checkpoint's config is the base)."""
    if model_name_or_path:
        if preset not in ("auto", "none"):
            raise ValueError(
                f"--preset {preset} and --model_name_or_path both set the architecture: drop --preset (the "
                "checkpoint's config is used) or --model_name_or_path (start from scratch)."
            )
        return "none"
    if preset == "auto":
        import torch

        return "cifar" if torch.cuda.is_available() else "cpu"
    return preset


def model_config_values(preset: str, model_args, model_config_overrides: str | None) -> dict:
    """IECLConfig values: the preset's (a resolved name, or "none"), then one flag per field, then
    --model_config_overrides (the last wins)."""
    values = dict(PRESETS.get(preset, {}))
    for name, value in dataclasses.asdict(model_args).items():
        if value is not None:
            values[name] = parse_value(value) if isinstance(value, str) and name not in TEXT_FIELDS else value
    overrides = parse_overrides(model_config_overrides)
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ModelArguments)})
    if unknown:
        raise ValueError(f"--model_config_overrides: {unknown} are not IECLConfig fields.")
    values.update(overrides)
    defaults = inspect.signature(IECLConfig.__init__).parameters
    for name, value in values.items():  # structured fields: a clear error before IECLConfig sees them
        if isinstance(defaults[name].default, dict) or name == "backbone_kwargs":
            if value is not None and not isinstance(value, dict):
                raise ValueError(
                    f"IECLConfig.{name} must be a dict "
                    f"(a JSON object such as '{{\"channels\": [32, 64, 128, 256]}}'), got {value!r}."
                )
        elif name in ("image_mean", "image_std") and value is not None and not isinstance(value, (list, tuple)):
            raise ValueError(
                f"IECLConfig.{name} must be 3 numbers (a JSON list such as [0.5, 0.5, 0.5]), got {value!r}."
            )
    return values
