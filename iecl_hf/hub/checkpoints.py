"""What a `model_name_or_path` (or an output folder) holds: the one place that decides "is this an IE-CL model?"
and "is this name a Hub id?"."""

import json
import os

from ..configuration_iecl import IECLConfig


def is_hub_id(name: str) -> bool:
    """True for `owner/name` that is not a local path (the form a Hub repo id takes in a card's metadata)."""
    return name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/"))


def check_model_type(model_type, subject: str, hint: str = ""):
    """Raise `ValueError` unless `model_type` is IE-CL's; `subject` names what was given (e.g. the flag and value)."""
    if model_type != IECLConfig.model_type:
        raise ValueError(
            f"{subject} is not an IE-CL checkpoint: model_type={model_type!r} (expected "
            f"{IECLConfig.model_type!r}).{' ' + hint if hint else ''}"
        )


def local_model_type(folder: str):
    """The `model_type` of `folder/config.json` (None if it is missing or unreadable)."""
    try:
        with open(os.path.join(folder, "config.json")) as handle:
            return json.load(handle).get("model_type")
    except (OSError, ValueError):
        return None


def fetch_config_dict(name_or_path: str, **hub_kwargs) -> dict:
    """The config dict of an IE-CL checkpoint, a local folder or a Hub id (downloaded with `hub_kwargs`).

    Raises `ValueError` naming `model_name_or_path` for a missing folder, a folder without config.json, an
    unreachable Hub id or a checkpoint of another model type.
    """
    from transformers import PretrainedConfig

    subject = f"`model_name_or_path` {name_or_path!r}"
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(name_or_path, **hub_kwargs)
    except Exception as error:  # missing folder, no config.json, Hub unreachable, ...
        raise ValueError(
            f"{subject}: cannot read a model config ({type(error).__name__}: {error}). Pass a folder "
            "written by recipes/pretrain.py (or by save_pretrained of an IE-CL model) "
            "or the id of an IE-CL model on the Hub."
        ) from error
    check_model_type(config_dict.get("model_type"), subject)
    return config_dict
