"""The encoder of an IE-CL checkpoint as a timm model folder (what `recipes/export_timm.py` writes).

The folder is timm's own layout, written by timm's `save_for_hf`: `config.json` (`architecture`, `num_classes`,
`model_args`, and `pretrained_cfg` with the checkpoint's normalization and image size) and `model.safetensors` with
timm's key names (the `iecl.backbone.` prefix gone), plus a `README.md` from timm's `generate_readme`. It loads with
`timm.create_model("local-dir:DIR", pretrained=True, num_classes=0)` (`"hf-hub:you/name"` once pushed) and with
`transformers.AutoModel.from_pretrained(DIR)` as a `TimmWrapperModel`, without remote code.

Only a backbone timm builds by name can leave this way (`stem="timm"`): the CIFAR stems replace the first conv by one
timm's config cannot describe, and for them `IECLModel.backbone` (the plain timm module) is the way out in Python.
"""

import json
import os
import shutil

from ..configuration_iecl import IECLConfig
from ..image_processing import resize_size_for
from .checkpoints import fetch_config_dict
from .upload import PushError

# What timm's pretrained_cfg says about timm's own weights of the architecture (its default tag): not true of an
# IE-CL encoder, so not exported. The source keys (url, hf_hub_id, file, ...) are dropped by `save_for_hf` itself.
TIMM_WEIGHTS_KEYS = (
    "tag",
    "license",
    "description",
    "origin_url",
    "paper_name",
    "paper_ids",
    "notes",
    "label_names",
    "label_descriptions",
    "label_offset",
    "test_input_size",
    "test_crop_pct",
    "test_pool_size",
    "min_input_size",
)
# The config.json keys transformers writes beside an IE-CL config's fields.
_FILE_KEYS = ("transformers_version", "architectures", "auto_map")

CITATION = """@inproceedings{zhang2026iecl,
  title     = {Maximizing Incremental Information Entropy for Contrastive Learning},
  author    = {Zhang and others},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2026},
  eprint    = {2603.12594},
  archivePrefix = {arXiv}
}"""


def is_timm_folder(folder: str) -> bool:
    """A folder in timm's layout: a config.json with `architecture` and no transformers `model_type`."""
    try:
        with open(os.path.join(folder, "config.json")) as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "architecture" in config and "model_type" not in config


def check_export_dir(folder: str):
    """Refuse, before anything is loaded, an `output_dir` that holds something other than an earlier export."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"`output_dir` {folder!r} is a file; choose a folder.")
    if os.path.isdir(folder) and os.listdir(folder) and not is_timm_folder(folder):
        raise ValueError(
            f"`output_dir` {folder!r} is not empty and holds no timm export to replace; choose a new or empty folder."
        )


def load_exportable_encoder(model_name_or_path: str, **hub_kwargs):
    """The `IECLModel` of an IE-CL checkpoint (a pretraining output gives its encoder). Raises `ValueError`, with
    why, for a checkpoint that is not IE-CL's or whose backbone timm cannot build by name (a CIFAR stem)."""
    from ..modeling_iecl import IECLModel

    flag = f"`model_name_or_path` {model_name_or_path!r}"
    saved = fetch_config_dict(model_name_or_path, **hub_kwargs)
    config = IECLConfig.from_dict({k: v for k, v in saved.items() if k not in _FILE_KEYS})
    if config.stem != "timm":
        raise ValueError(
            f"{flag} has stem={config.stem!r}: its first conv is a CIFAR stem (3x3, no max-pool) that timm cannot "
            f"build from the name {config.backbone!r}, so there is no timm folder for it. Use the plain timm module "
            f"in Python instead: AutoModel.from_pretrained({model_name_or_path!r}, trust_remote_code=True).backbone "
            "(IECLModel.backbone)."
        )
    try:
        encoder, info = IECLModel.from_pretrained(model_name_or_path, output_loading_info=True, **hub_kwargs)
    except OSError as error:  # no weights file in the folder / repo
        raise ValueError(f"{flag}: its weights cannot be read ({error}).") from error
    missing = [key for key in info["missing_keys"] if key.startswith("backbone.")]
    if missing:
        raise ValueError(f"{flag}: the checkpoint lacks encoder weights ({missing[:3]}); there is nothing to export.")
    return encoder.eval()


def export_pretrained_cfg(backbone, config: IECLConfig) -> dict:
    """timm's pretrained_cfg of the backbone, describing these weights: the IE-CL checkpoint's normalization and image
    size, its evaluation preprocessing (`iecl_hf.image_processing`: bicubic resize, centre crop), no classifier."""
    size = config.image_size
    pretrained_cfg = {k: v for k, v in dict(backbone.pretrained_cfg).items() if k not in TIMM_WEIGHTS_KEYS}
    pretrained_cfg.update(
        input_size=(3, size, size),
        mean=tuple(config.image_mean),
        std=tuple(config.image_std),
        interpolation="bicubic",
        crop_pct=size / resize_size_for(size),
        crop_mode="center",
        num_classes=0,
        pool_size=None,
    )
    return pretrained_cfg


def write_timm_folder(encoder, output_dir: str, source: str, hub_model_id: str | None = None) -> str:
    """Write `encoder.backbone` as a timm folder at `output_dir` (a temporary folder beside it, then renamed: an
    interrupted export leaves nothing half-written; an earlier export there is replaced). Returns `output_dir`."""
    from timm.models import save_for_hf

    config, backbone = encoder.config, encoder.backbone
    output_dir = os.path.normpath(output_dir)
    check_export_dir(output_dir)
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    temporary = os.path.join(parent, f".{os.path.basename(output_dir)}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        backbone.pretrained_cfg = export_pretrained_cfg(backbone, config)
        save_for_hf(backbone, temporary, model_args=dict(config.backbone_kwargs), safe_serialization=True)
        _without_num_classes_argument(os.path.join(temporary, "config.json"))
        with open(os.path.join(temporary, "README.md"), "w", encoding="utf-8") as handle:
            handle.write(_readme(backbone, config, source, output_dir, hub_model_id))
        _replace(temporary, output_dir)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return output_dir


def _without_num_classes_argument(config_path: str):
    """timm records `num_classes` in `model_args` as well as at the top level; transformers' TimmWrapperModel passes
    its own `num_classes` to `timm.create_model` beside `model_args` and fails on the duplicate. The top-level value
    (0: no classifier) stays, and timm's loader still reads it; a caller's `num_classes=N` then builds a fresh head."""
    with open(config_path) as handle:
        timm_config = json.load(handle)
    model_args = timm_config.get("model_args") or {}
    model_args.pop("num_classes", None)
    if model_args:
        timm_config["model_args"] = model_args
    else:
        timm_config.pop("model_args", None)
    with open(config_path, "w") as handle:
        json.dump(timm_config, handle, indent=2)


def _replace(temporary: str, output_dir: str):
    if not os.path.isdir(output_dir):
        os.rename(temporary, output_dir)
        return
    previous = f"{temporary}-previous"
    os.rename(output_dir, previous)  # an empty folder or an earlier export (check_export_dir)
    try:
        os.rename(temporary, output_dir)
    except OSError:
        os.rename(previous, output_dir)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def _readme(backbone, config: IECLConfig, source: str, output_dir: str, hub_model_id: str | None) -> str:
    """timm's model card (`generate_readme`, as `push_to_hf_hub` writes one) for the exported encoder."""
    from timm.models._hub import generate_readme

    timm_name = f"hf-hub:{hub_model_id}" if hub_model_id else f"local-dir:{output_dir}"
    transformers_name = hub_model_id or output_dir
    architecture = config.backbone + (f" {config.backbone_kwargs}" if config.backbone_kwargs else "")
    size = config.image_size
    usage = f"""```python
import timm
from PIL import Image

model = timm.create_model("{timm_name}", pretrained=True, num_classes=0).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config({{}}, model=model))
image = Image.open("image.jpg").convert("RGB")
features = model(transform(image).unsqueeze(0))  # (1, {backbone.num_features}) pooled features
```

In transformers, without remote code:

```python
from transformers import AutoModel

model = AutoModel.from_pretrained("{transformers_name}")  # TimmWrapperModel; .pooler_output: the pooled features
```
"""
    model_card = {
        "tags": ["image-feature-extraction", "timm", "transformers", "iecl", "self-supervised"],
        "description": (
            f"The encoder of the IE-CL model `{source}`, self-supervised ({config.framework} + IE-CL), in timm's "
            f"format: a `{config.backbone}` without a classifier, written by `recipes/export_timm.py` of iecl-hf."
        ),
        "details": {
            "Model Type": "Image feature backbone",
            "Architecture": f"`{architecture}`",
            "Params (M)": f"{sum(p.numel() for p in backbone.parameters()) / 1e6:.2f}",
            "Image size": f"{size} x {size}",
            "Normalization": f"mean {list(config.image_mean)}, std {list(config.image_std)}",
            "Pretraining": "IE-CL (Maximizing Incremental Information Entropy for Contrastive Learning, ICLR 2026)",
            "Source": f"`{source}`",
        },
        "usage": usage,
        "citation": CITATION,
    }
    name = (hub_model_id or os.path.basename(os.path.normpath(output_dir))).split("/")[-1]
    return generate_readme(model_card, name, task_name="image-feature-extraction")


def push_timm_folder(folder: str, repo_id: str, private: bool = False, token=None) -> str:
    """Upload the written folder as it is (the same files as the local export): `HfApi.create_repo(exist_ok=True)` +
    `upload_folder`. timm's `push_to_hf_hub` would save the model again, with the `num_classes` argument that
    TimmWrapperModel cannot load. Returns the repo URL; raises `PushError` (the folder is complete) on any Hub
    failure."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message="Upload IE-CL encoder in timm's format",
        )
    except Exception as error:  # offline, no token, network error, permission, ...
        message = " ".join(str(error).split())
        raise PushError(
            f"Pushing {folder} to the Hub as {repo_id!r} failed ({type(error).__name__}: {message}). The timm folder "
            "is complete; log in (`hf auth login` or HF_TOKEN) and retry the upload alone."
        ) from error
    return str(url)
