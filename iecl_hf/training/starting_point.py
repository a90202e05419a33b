"""Where pretraining starts: a fresh model from the preset and flags, or an IE-CL checkpoint (`model_name_or_path`).

A pretraining output (`IECLForPreTraining`) continues as a whole: encoder, heads, SAIB, power-iteration vectors.
An encoder-only checkpoint (`IECLModel`) gives the encoder; the heads and SAIB are initialized as in a fresh model
and the MoCo/BYOL momentum branch starts as a copy of the loaded encoder (`IECLForPreTraining.from_pretrained`).

A fresh model's backbone may start from supervised weights instead of timm's init: `backbone_pretrained` (timm's
pretrained weights of `backbone`, downloaded by timm) or `backbone_checkpoint` PATH (a local timm folder, e.g.
written by recipes/export_timm.py, or a .safetensors file with timm's key names). They are loaded here, once, when
the fresh model is built; `from_pretrained` never loads them (a checkpoint has its own weights). With a CIFAR stem
the replaced first conv (`conv1`) starts fresh unless the checkpoint's `conv1` has its shape; the line this module
returns says which weights came from where.
"""

import os

from transformers.utils import logging as transformers_logging

from ..configuration_iecl import FRAMEWORK_DEFAULTS, IECLConfig
from ..hub.checkpoints import fetch_config_dict, local_model_type
from ..hub.model_card import timm_pretrained_id
from ..modeling_iecl import IECLForPreTraining, build_backbone

logger = transformers_logging.get_logger(__name__)

# Saved by transformers beside the fields; they describe the file, not the model to build.
_FILE_KEYS = ("transformers_version", "architectures", "auto_map")
# The encoder whose weights a checkpoint holds. A flag may not change it: most changes mis-size a weight, but some
# load without error into another network (a 3x3 stem of stride 1 instead of 2 has the same kernel).
ENCODER_FIELDS = ("backbone", "backbone_kwargs", "stem")
# Where a fresh backbone's starting weights come from; a checkpoint brings its own.
BACKBONE_WEIGHT_FIELDS = ("backbone_pretrained", "backbone_checkpoint")


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
            f"`{name}` {getattr(config, name)!r} (checkpoint: {getattr(checkpoint, name)!r})" for name in changed
        )
        raise ValueError(
            f"`model_name_or_path` {model_name_or_path!r} with {flags}: the checkpoint's weights are for its own "
            "encoder. Drop these flags to continue from it, or drop `model_name_or_path` to train this encoder "
            "from scratch."
        )
    weight_flags = [
        name
        for name in BACKBONE_WEIGHT_FIELDS
        if name in model_values and getattr(config, name) and getattr(config, name) != getattr(checkpoint, name)
    ]
    if weight_flags:
        flags = " and ".join(f"`{name}`" for name in weight_flags)
        raise ValueError(
            f"`model_name_or_path` {model_name_or_path!r} with {flags}: the checkpoint's encoder has its own weights "
            f"and they would replace these. Drop {flags} to continue from the checkpoint, or drop "
            "`model_name_or_path` to start a fresh model from these weights."
        )
    return config


def _framework_defaults_to_resolve(saved: dict, model_values: dict) -> dict:
    """A flag that changes the framework (e.g. a MoCo checkpoint continued as SimCLR): the saved fields that hold the
    old framework's default (`FRAMEWORK_DEFAULTS`) are unset, so they resolve to the new framework's value. A saved
    value that is not the old default was chosen, and is kept; a value given explicitly still wins over both."""
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
            f"framework={new} on a {old} checkpoint: {', '.join(unset)} take {new}'s defaults instead of the saved "
            f"{old} ones (set them to choose)."
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
        model = IECLForPreTraining(config)
        return model, "fresh weights" + start_backbone(model, config)
    flag = f"`model_name_or_path` {model_name_or_path!r}"
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
    # A head of another size (e.g. `projection_dim`) starts fresh; an encoder that does not fit is an error.
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


# ---------------------------------------------------------------------------------------------- starting weights


def start_backbone(model: IECLForPreTraining, config: IECLConfig) -> str:
    """Load the starting weights `config.backbone_pretrained` / `config.backbone_checkpoint` name into a fresh model's
    backbone (and its MoCo/BYOL momentum copy). Returns '' without them, else '; backbone from ...' for the line
    saying where the weights come from. Raises `ValueError` naming the argument when they cannot be read or do not
    fit."""
    backbone = model.iecl.backbone
    if config.backbone_pretrained:
        backbone.load_state_dict(_timm_pretrained_backbone(config).state_dict())
        line = f"; backbone from timm's pretrained {config.backbone}"
        hub_id = timm_pretrained_id(config.backbone)
        line += f" ({hub_id})" if hub_id else ""
        if config.stem != "timm":
            line += f", except conv1: fresh (the {config.stem} stem replaces timm's first conv)"
    elif config.backbone_checkpoint:
        path = config.backbone_checkpoint
        notes = _load_fitting(
            backbone, _checkpoint_state_dict(path, config), config, f"`backbone_checkpoint` {path!r}"
        )
        line = f"; backbone from {path}" + (f", {'; '.join(notes)}" if notes else "")
    else:
        return ""
    if hasattr(model.head, "reset_momentum_encoder"):
        model.head.reset_momentum_encoder(backbone)
    return line


def _one_line(error: Exception, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _timm_pretrained_backbone(config: IECLConfig):
    """The backbone as `build_backbone` makes it, with timm's pretrained weights (timm's download and loading)."""
    try:
        return build_backbone(config, pretrained=True)
    except Exception as error:  # offline, Hub unreachable, no access, weights of another size, ...
        if isinstance(error, RuntimeError) and "size mismatch" in str(error):
            raise ValueError(
                f"`backbone_pretrained`: timm's pretrained weights of {config.backbone!r} do not fit this backbone: "
                f"backbone_kwargs {config.backbone_kwargs} (from `preset` or a flag) change its layer sizes. Pass "
                "`backbone_kwargs` '{}' or a full-width preset (`preset` cifar, stl10 or imagenet), or start from "
                "weights of this size with `backbone_checkpoint` PATH."
            ) from error
        raise ValueError(
            f"`backbone_pretrained`: timm could not load its pretrained weights of {config.backbone!r} "
            f"({type(error).__name__}: {_one_line(error)}). Offline, use a local copy instead: "
            "`backbone_checkpoint` PATH (a timm folder, e.g. written by recipes/export_timm.py, or a .safetensors "
            "file)."
        ) from error


def _checkpoint_state_dict(path: str, config: IECLConfig) -> dict:
    """The weights of a timm folder (timm's own readers of its layout; the architecture must be `config.backbone`'s)
    or of a .safetensors file. Safetensors only: nothing is unpickled."""
    from timm.models import load_state_dict, split_model_name_tag

    flag = f"`backbone_checkpoint` {path!r}"
    iecl_hint = (
        f"{flag} is an IE-CL checkpoint, not a timm one: continue from it with `model_name_or_path`, or write its "
        "encoder as a timm folder with recipes/export_timm.py."
    )
    if os.path.isfile(path) and path.endswith(".safetensors"):
        state_dict = load_state_dict(path)
        if any(key.startswith("iecl.backbone.") for key in state_dict):
            raise ValueError(iecl_hint)
        return state_dict
    if os.path.isdir(path) and local_model_type(path) == IECLConfig.model_type:
        raise ValueError(iecl_hint)
    if not os.path.isdir(path):
        raise ValueError(
            f"{flag}: no such folder or .safetensors file. Pass a timm folder (config.json + model.safetensors, e.g. "
            "written by recipes/export_timm.py) or a .safetensors file with timm's key names."
        )
    try:
        from timm.models._hub import load_model_config_from_path, load_state_dict_from_path
    except ImportError as error:  # timm < 1.0.16 has no local-dir support
        raise ValueError(
            f"{flag}: reading a timm folder needs a newer timm (`pip install -U timm`); or pass its "
            "model.safetensors file."
        ) from error
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        raise ValueError(f"{flag}: the folder has no model.safetensors (the weights are read from safetensors only).")
    try:
        _, architecture, _ = load_model_config_from_path(path)
    except Exception as error:  # no config.json, or not timm's
        raise ValueError(
            f"{flag}: not a timm folder ({type(error).__name__}: {_one_line(error)}); it needs timm's config.json "
            "(`architecture`, `pretrained_cfg`) beside model.safetensors, as recipes/export_timm.py writes."
        ) from error
    expected = split_model_name_tag(config.backbone)[0]
    if architecture != expected:
        raise ValueError(
            f"{flag} holds a timm {architecture!r}, not the backbone {config.backbone!r}: pass `backbone` "
            f"{architecture} (with the backbone_kwargs it was trained with), or a checkpoint of {expected!r}."
        )
    return load_state_dict_from_path(path)


def _load_fitting(backbone, state_dict: dict, config: IECLConfig, flag: str) -> list[str]:
    """Load `state_dict` into `backbone` if it fits, leaving out, and naming, what is expected not to: a classifier
    (the encoder has none) and, with a CIFAR stem, a first conv of another shape (timm's 7x7 stem). Anything else
    missing, extra or of another size is an error: a partly loaded encoder would train from partly random weights."""
    own = backbone.state_dict()
    notes = []
    classifier = backbone.pretrained_cfg.get("classifier") if hasattr(backbone, "pretrained_cfg") else None
    prefixes = tuple(f"{name}." for name in ([classifier] if isinstance(classifier, str) else classifier or ()))
    dropped = sorted(key for key in state_dict if key not in own and prefixes and key.startswith(prefixes))
    if dropped:
        notes.append(f"not used: {', '.join(sorted({key.rsplit('.', 1)[0] for key in dropped}))} (a classifier)")
    stem_key = "conv1.weight"
    if config.stem != "timm" and stem_key in state_dict and state_dict[stem_key].shape != own[stem_key].shape:
        shape = "x".join(map(str, state_dict[stem_key].shape[-2:]))
        notes.append(f"conv1: fresh (the {config.stem} stem replaces the checkpoint's {shape} first conv)")
        dropped.append(stem_key)
    fresh_stem = stem_key in dropped
    state_dict = {key: value for key, value in state_dict.items() if key not in dropped}
    # BatchNorm's step counters are no weights (some files leave them out): they stay at their fresh value.
    counters = {key for key in own if key not in state_dict and key.endswith(".num_batches_tracked")}
    missing = sorted(
        key for key in own if key not in state_dict and key not in counters and not (fresh_stem and key == stem_key)
    )
    unexpected = sorted(key for key in state_dict if key not in own)
    resized = sorted(key for key in state_dict if key in own and state_dict[key].shape != own[key].shape)
    if missing or unexpected or resized:
        found = "; ".join(
            f"{what}: {keys[:3]}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("other sizes", resized))
            if keys
        )
        raise ValueError(
            f"{flag}: its weights do not fit the backbone {config.backbone!r} with backbone_kwargs "
            f"{config.backbone_kwargs} and stem {config.stem!r} ({found}). Pass the backbone flags it was trained "
            "with, or a checkpoint of this backbone."
        )
    backbone.load_state_dict(state_dict, strict=not (fresh_stem or counters))
    return notes
