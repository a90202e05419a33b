"""Where pretraining starts: a fresh model from the preset and flags, or an IE-CL checkpoint (`--model_name_or_path`).

A pretraining output (`IECLForPreTraining`) continues as a whole: encoder, heads, SAIB, power-iteration vectors.
An encoder-only checkpoint (`IECLModel`) gives the encoder; the heads and SAIB are initialized as in a fresh model
and the MoCo/BYOL momentum branch starts as a copy of the loaded encoder (`IECLForPreTraining.from_pretrained`).
"""

from transformers.utils import logging as transformers_logging

from ..configuration_iecl import FRAMEWORK_DEFAULTS, IECLConfig
from ..hub.checkpoints import fetch_config_dict
from ..modeling_iecl import IECLForPreTraining

logger = transformers_logging.get_logger(__name__)

# Saved by transformers beside the fields; they describe the file, not the model to build.
_FILE_KEYS = ("transformers_version", "architectures", "auto_map")
# The encoder whose weights a checkpoint holds. A flag may not change it: most changes mis-size a weight, but some
# load without error into another network (a 3x3 stem of stride 1 instead of 2 has the same kernel).
ENCODER_FIELDS = ("backbone", "backbone_kwargs", "stem")


def pretraining_config(model_values: dict, model_name_or_path: str | None = None, **hub_kwargs) -> IECLConfig:
    """The preset and flags (`model_values`), or the checkpoint's config with them on top. Raises `ValueError` for
    a bad field, an unreadable checkpoint, one of another model type, or a flag that changes its encoder."""
    if not model_name_or_path:
        return IECLConfig(**model_values)
    saved = {k: v for k, v in fetch_config_dict(model_name_or_path, **hub_kwargs).items() if k not in _FILE_KEYS}
    config = IECLConfig.from_dict({**saved, **_framework_defaults_to_resolve(saved, model_values), **model_values})
    checkpoint = IECLConfig.from_dict(saved)
    changed = [name for name in ENCODER_FIELDS if getattr(config, name) != getattr(checkpoint, name)]
    if changed:
        flags = ", ".join(
            f"--{name} {getattr(config, name)!r} (checkpoint: {getattr(checkpoint, name)!r})" for name in changed
        )
        raise ValueError(
            f"--model_name_or_path {model_name_or_path!r} with {flags}: the checkpoint's weights are for its own "
            "encoder. Drop these flags to continue from it, or drop --model_name_or_path to train this encoder "
            "from scratch."
        )
    return config


def _framework_defaults_to_resolve(saved: dict, model_values: dict) -> dict:
    """A flag that changes the framework (e.g. a MoCo checkpoint continued as SimCLR): the saved fields that hold the
    old framework's default (`FRAMEWORK_DEFAULTS`) are unset, so they resolve to the new framework's value. A saved
    value that is not the old default was chosen, and is kept; a flag still wins over both."""
    old, new = saved.get("framework", "simclr"), model_values.get("framework")
    if new is None or new == old or old not in FRAMEWORK_DEFAULTS:
        return {}
    unset = {
        name: None
        for name, default in FRAMEWORK_DEFAULTS[old].items()
        if name not in model_values and saved.get(name, default) == default
    }
    if unset:
        logger.warning(
            f"--framework {new} on a {old} checkpoint: {', '.join(unset)} take {new}'s defaults instead of the saved "
            f"{old} ones (set them as flags to choose)."
        )
    return unset


def _top_level(keys) -> list[str]:
    """'head.projector.0.weight' -> 'head', 'iecl.backbone.conv1.weight' -> 'iecl.backbone'."""
    return sorted({".".join(key.split(".")[:2]) if key.startswith("iecl.") else key.split(".")[0] for key in keys})


def pretraining_model(
    config: IECLConfig, model_name_or_path: str | None = None, **hub_kwargs
) -> tuple[IECLForPreTraining, str]:
    """(model, a line saying where its weights come from). Heads whose size a flag changed start fresh; raises
    `ValueError` when the checkpoint's encoder does not fit `config` (e.g. a flag changed the backbone)."""
    if not model_name_or_path:
        return IECLForPreTraining(config), "fresh weights"
    flag = f"--model_name_or_path {model_name_or_path!r}"
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # its key-by-key load report: the line returned below says it shorter
    try:
        model, info = IECLForPreTraining.from_pretrained(
            model_name_or_path, config=config, output_loading_info=True, ignore_mismatched_sizes=True, **hub_kwargs
        )
    except OSError as error:  # no weights file in the folder / repo
        raise ValueError(f"{flag}: its weights cannot be read ({error}).") from error
    finally:
        transformers_logging.set_verbosity(verbosity)
    # A head of another size (e.g. --projection_dim) starts fresh; an encoder that does not fit is an error.
    mismatched = [key for key, *_ in info["mismatched_keys"]]
    bad_encoder = [key for key in [*info["missing_keys"], *mismatched] if key.startswith("iecl.")]
    if bad_encoder:
        raise ValueError(
            f"{flag}: the checkpoint lacks or mis-sizes encoder weights ({bad_encoder[:3]}); continuing from "
            "it would train a partly random encoder. Flags that change the encoder (backbone, "
            "backbone_kwargs, stem) cannot be combined with a checkpoint."
        )
    fresh, unused = _top_level([*info["missing_keys"], *mismatched]), _top_level(info["unexpected_keys"])
    line = f"weights from {model_name_or_path}" + (
        f"; initialized fresh: {', '.join(fresh)}" if fresh else " (all of them)"
    )
    return model, line + (f"; not used from the checkpoint: {', '.join(unused)}" if unused else "")
