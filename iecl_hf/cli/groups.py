"""Argument groups several recipes share (dataset, checkpoint, Hub, logging, tracking), each checking its own fields,
and the helpers that read them."""

import os
import re
from dataclasses import dataclass
from typing import ClassVar

from ..console import LEVELS
from .parser import Arguments, option


@dataclass
class DatasetArguments(Arguments):
    dataset_name: str | None = option(
        None,
        "Hub id (uoft-cs/cifar10), local folder/parquet/image folder; "
        "unset: the embedded digits dataset (no network).",
    )
    dataset_config_name: str | None = option(None, "Configuration name of the Hub dataset.")
    train_split: str = option("train")
    image_column: str | None = option(None, "Image column (detected: img/image).")
    label_column: str | None = option(
        None,
        "Label column (detected: a ClassLabel, label, fine_label, ...); pretraining uses it for the online kNN only.",
    )
    cache_dir: str | None = option(None, "datasets / Hub cache folder.")


@dataclass
class CheckpointArguments(Arguments):
    model_name_or_path: str | None = option(
        None,
        "An IE-CL checkpoint, a folder or a Hub id. linear_eval.py: the encoder to evaluate (required). "
        "pretrain.py: start from it (a pretraining output continues as a whole; an encoder-only checkpoint "
        "gets fresh heads and SAIB; its config is used with the model flags on top, no preset).",
    )
    revision: str | None = option(None, "Branch, tag or commit of a Hub --model_name_or_path.")


@dataclass
class RequiredCheckpointArguments(CheckpointArguments):
    """A recipe that reads a checkpoint: --model_name_or_path must be given (on the command line or in the file)."""

    def __post_init__(self):
        super().__post_init__()
        if not self.model_name_or_path:
            raise ValueError(
                "--model_name_or_path is required (a folder written by recipes/pretrain.py, or a Hub id)."
            )


@dataclass
class HubArguments(Arguments):
    hub_model_id_example: ClassVar[str] = "e.g. your-name/iecl-resnet18-cifar10"  # what the recipe pushes

    push_to_hub: bool = option(False)
    hub_model_id: str | None = option(None)
    hub_private_repo: bool = option(False)
    hub_token: str | None = option(None, "Default: the token of `hf auth login` or HF_TOKEN.")

    def __post_init__(self):
        super().__post_init__()
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError(f"--push_to_hub needs --hub_model_id ({self.hub_model_id_example}).")
        check_hub_model_id(self.hub_model_id)


@dataclass
class LoggingArguments(Arguments):
    log_level: str = option(
        "info",
        "debug | info | warning | error: the recipe's messages from this level up (info and debug to stdout, "
        "warnings and errors to stderr). warning and error also hide the progress bars; debug shows transformers', "
        "datasets' and accelerate's info messages too.",
        choices=LEVELS,
    )


@dataclass
class TrackingArguments(Arguments):
    report_to: str = option(
        "none",
        "Accelerate trackers: tensorboard, wandb, all, none, or several with commas (pretraining always writes its "
        "JSONL log too).",
    )
    run_name: str | None = option(
        None,
        "Name of the tracker run (W&B name; TensorBoard folder OUTPUT/logs/RUN_NAME). Default: the resumed run's, "
        "else the --output_dir folder's name.",
    )

    def __post_init__(self):
        super().__post_init__()
        check_report_to(self.report_to)
        run_name = self.run_name
        if run_name is not None and (run_name.strip() in ("", ".", "..") or re.search(r"[/\\]", run_name)):
            raise ValueError(
                f"--run_name {run_name!r} names a folder under OUTPUT/logs: give one without '/' or '\\'."
            )


def check_report_to(value: str):
    """Each tracker named is one accelerate knows and is installed (accelerate would leave a missing one out without
    a word)."""
    import accelerate.utils
    from accelerate.utils import LoggerType

    from ..training.trackers import tracker_names

    allowed = {t.value for t in LoggerType} | {"none"}
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if not names or unknown:
        raise ValueError(
            f"--report_to {value!r}: unknown tracker(s) {unknown or [value]}; "
            f"allowed values: {', '.join(sorted(allowed))}."
        )
    for name in tracker_names(value) or []:
        is_available = getattr(accelerate.utils, f"is_{name}_available", None)  # "all": whichever are installed
        if is_available is not None and not is_available():
            raise ValueError(
                f"--report_to {name}: the {name} package is not installed; `pip install {name}`, or choose another "
                "tracker (--report_to none turns tracking off)."
            )


def check_hub_model_id(hub_model_id: str | None):
    """Raise `ValueError` for a --hub_model_id the Hub would refuse (before any work is done)."""
    if not hub_model_id:
        return
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(hub_model_id)
    except Exception as error:
        raise ValueError(
            f"--hub_model_id {hub_model_id!r} is not a valid repo id (expected 'name' or 'your-name/name'): {error}"
        ) from error


def default_output_base(model_name_or_path: str) -> str:
    """Where a recipe reading a checkpoint writes by default, before its suffix: beside a local checkpoint, or
    outputs/OWNER--NAME for a Hub id."""
    checkpoint = model_name_or_path.rstrip("/")
    return checkpoint if os.path.isdir(checkpoint) else os.path.join("outputs", checkpoint.replace("/", "--"))


def hub_kwargs(args, cache_dir=None) -> dict:
    """`from_pretrained` keywords of the checkpoint flags (unset ones left to transformers' defaults)."""
    values = {"revision": args.revision, "token": args.hub_token, "cache_dir": cache_dir}
    return {key: value for key, value in values.items() if value is not None}


def check_output_dir(output_dir: str):
    """Fail before any work if the output folder cannot be written."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        probe = os.path.join(output_dir, f".write-test-{os.getpid()}")  # one per process: they check at the same time
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"--output_dir {output_dir!r} is not writable ({error}); choose another folder.") from error
