"""Command-line arguments of both recipes, in the style of transformers' examples, and how a recipe reports bad input.

Shared groups (dataset, checkpoint, Hub, config file) are defined once and mixed into each recipe's dataclasses,
parsed by `HfArgumentParser`; `--config_file x.yaml|json` supplies defaults that flags on the command line override.
pretrain.py: data, training and model (`IECLConfig`) dataclasses. Every `IECLConfig` field is a flag of its own
(`--lambda_entropy 0.5`), and `--model_config_overrides "lambda_entropy=0.5,framework=simclr"` sets several at once.
"""

import argparse
import ast
import dataclasses
import inspect
import json
import os
import re
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from ..configuration_iecl import FRAMEWORK_DEFAULTS, IECLConfig
from ..evaluation.linear_probe import DEFAULT_LEARNING_RATES
from ..evaluation.plots import EMBEDDING_METHODS
from .logs import LEVELS as LOG_LEVELS
from .trackers import check_tracking_args

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

PRESETS = {
    # Half-width ResNet-18 with a stride-2 stem: a few hundred 32 px images/s on 2 CPU cores.
    "cpu": {
        "backbone": "resnet18",
        "backbone_kwargs": {"channels": [32, 64, 128, 256]},
        "stem": "cifar_stride2",
        "image_size": 32,
    },
    # The standard CIFAR ResNet-18 (3x3 stride-1 stem, no max-pool).
    "cifar": {"backbone": "resnet18", "backbone_kwargs": {}, "stem": "cifar", "image_size": 32},
    # STL-10 scale.
    "stl10": {"backbone": "resnet18", "backbone_kwargs": {}, "stem": "timm", "image_size": 96},
    # ImageNet scale.
    "imagenet": {"backbone": "resnet50", "backbone_kwargs": {}, "stem": "timm", "image_size": 224},
    # ViT-S/16 at ImageNet scale (timm builds it at image_size). SAIB works on patches: its 16 px patches are the
    # ViT's own, a 14 x 14 grid. Its optimizer settings are in PRESET_TRAINING_ARGS.
    "vit_small": {
        "backbone": "vit_small_patch16_224",
        "backbone_kwargs": {},
        "stem": "timm",
        "image_size": 224,
        "saib_patch_size": 16,
    },
}

# Training flags a preset sets besides the model, each only where neither the command line nor --config_file gives
# it. The CNN presets need none: the recipe's defaults (SGD, 0.3 x global batch / 256, weight decay 5e-4) are the
# CNN recipe. ViTs are trained with AdamW in self-supervised learning (MoCo v3, DINO, iBOT, MAE): with SGD they
# train unstably and end worse (MoCo v3, Chen et al. 2021). The learning rate is DINO's ViT-S rule, 5e-4 x global
# batch / 256, at the recipe's default batch (64 images on one process): with a larger global batch, scale
# --learning_rate linearly. Weight decay 0.05, DeiT's and MAE's for ViTs (DINO starts at 0.04, MoCo v3 uses 0.1):
# the CNN value 5e-4 is far too weak with AdamW's decoupled decay. The learning rate and weight decay are AdamW's:
# with another --optimizer they are left to that optimizer's defaults.
PRESET_TRAINING_ARGS = {
    "vit_small": {"optimizer": "adamw", "learning_rate": 1.25e-4, "weight_decay": 0.05},
}


def option(default, help: str = ""):
    """A dataclass field for `HfArgumentParser`: its default and its --help text (argparse formats help with %, so a
    literal % is doubled)."""
    return field(default=default, metadata={"help": help.replace("%", "%%")} if help else {})


# ---------------------------------------------------------------------------------------------- shared groups


@dataclass
class DatasetArguments:
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
class CheckpointArguments:
    model_name_or_path: str | None = option(
        None,
        "An IE-CL checkpoint, a folder or a Hub id. linear_eval.py: the encoder to evaluate (required). "
        "pretrain.py: start from it (a pretraining output continues as a whole; an encoder-only checkpoint "
        "gets fresh heads and SAIB; its config is used with the model flags on top, no preset).",
    )
    revision: str | None = option(None, "Branch, tag or commit of a Hub --model_name_or_path.")


@dataclass
class HubArguments:
    push_to_hub: bool = option(False)
    hub_model_id: str | None = option(None)
    hub_private_repo: bool = option(False)
    hub_token: str | None = option(None, "Default: the token of `hf auth login` or HF_TOKEN.")


@dataclass
class ConfigFileArguments:
    config_file: str | None = option(None, "YAML or JSON file with any of these arguments; command-line flags win.")


@dataclass
class LoggingArguments:
    log_level: str = field(
        default="info",
        metadata={
            "help": "debug | info | warning | error: the recipe's messages from this level up (info and debug to "
            "stdout, warnings and errors to stderr). warning and error also hide the progress bars; debug shows "
            "transformers', datasets' and accelerate's info messages too.",
            "choices": tuple(LOG_LEVELS),
        },
    )


@dataclass
class TrackingArguments:
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


# ---------------------------------------------------------------------------------------------- pretrain.py


@dataclass
class DataArguments(DatasetArguments):
    validation_split: str | None = option(
        None,
        "Labelled split for the online kNN accuracy (default: 'validation' or 'test' if present; 'none' disables).",
    )
    streaming: bool = option(False, "Stream the dataset (ImageNet scale); needs --max_train_steps.")
    shuffle_buffer_size: int = option(10_000, "Shuffle buffer of a streamed dataset.")
    max_train_samples: int | None = option(None, "Use only the first N training images (quick runs).")
    knn_max_train_samples: int = option(10_000, "Memory bank size of the online kNN.")
    knn_max_eval_samples: int = option(2_000, "Validation images of the online kNN.")


@dataclass
class PretrainArguments(CheckpointArguments, HubArguments, TrackingArguments, LoggingArguments, ConfigFileArguments):
    output_dir: str = option("outputs/pretrain-default", "Where the model, checkpoints, logs and pictures go.")
    overwrite_output_dir: bool = option(
        False,
        "Start from scratch even if --output_dir holds the checkpoints of an unfinished run "
        "(they are deleted). Those of a finished run are replaced anyway.",
    )
    preset: str = option(
        "auto",
        "Model preset: cpu | cifar | stl10 | imagenet | vit_small | none; auto = cpu without a GPU, cifar with one "
        "(none with --model_name_or_path). Explicit model flags override it. vit_small (ViT-S/16, 224 px) also sets "
        "--optimizer adamw --learning_rate 1.25e-4 --weight_decay 0.05 unless given.",
    )
    per_device_train_batch_size: int = option(64, "Images per process per step (each gives two views).")
    gradient_accumulation_steps: int = option(1)
    learning_rate: float | None = option(
        None, "Peak LR of the encoder optimizer; default 0.3 x global batch / 256 (sgd, lars) or 1e-3 (adamw)."
    )
    generator_learning_rate: float = option(
        1e-3, "AdamW LR of SAIB (its weight decay is IECLConfig.saib_weight_decay)."
    )
    weight_decay: float = option(5e-4)
    optimizer: str = option("sgd", "sgd | adamw | lars.")
    lr_scheduler_type: str = option(
        "cosine", "Any transformers scheduler name (cosine, linear, constant_with_warmup, ...)."
    )
    num_warmup_steps: int | None = option(None, "Default: 5% of the training steps.")
    num_train_epochs: int = option(
        6, "Default 6: the no-argument run (embedded digits, CPU preset) stays under 3 minutes on 2 CPU cores."
    )
    max_train_steps: int | None = option(None, "Optimizer steps in total; overrides --num_train_epochs.")
    seed: int = option(0)
    checkpointing_steps: str | None = option(
        None, "Save the training state every N steps, or 'epoch'. A final checkpoint is always saved."
    )
    checkpoints_total_limit: int | None = option(2, "Keep only the newest N checkpoints (0: keep all).")
    resume_from_checkpoint: str | None = option(
        None, "A checkpoint folder, or 'latest' (newest complete one in --output_dir)."
    )
    dataloader_num_workers: int = option(1)
    gradient_checkpointing: bool = option(
        False, "Recompute the backbone's activations in the backward (timm's set_grad_checkpointing): less memory."
    )
    sync_batchnorm: bool = option(
        False, "BatchNorm statistics over every GPU process (torch.nn.SyncBatchNorm); needs CUDA devices."
    )
    channels_last: bool = option(
        False, "channels_last memory format (often faster with convolutions; measure with benchmarks/throughput.py)."
    )
    # transformers' TrainingArguments names. The encoder (IECLModel) is compiled in place: plain checkpoint keys.
    torch_compile: bool = option(False, "torch.compile the encoder (implied by the two options below).")
    torch_compile_backend: str | None = option(None, "torch.compile backend (default inductor).")
    torch_compile_mode: str | None = option(
        None, "torch.compile mode: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs."
    )
    augmentation: str = option("batched", "batched (on the device, fastest) | workers (per image, in the loader).")
    knn_every_epochs: int = option(1, "Online kNN every N epochs (0 disables).")
    logging_steps: int = option(10)
    model_config_overrides: str | None = option(None, 'IECLConfig fields, e.g. "lambda_entropy=0.5,framework=simclr".')


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


# ---------------------------------------------------------------------------------------------- linear_eval.py

FEATURE_EPOCHS, AUGMENT_EPOCHS = 100, 10


@dataclass
class LinearEvalArguments(
    CheckpointArguments, DatasetArguments, HubArguments, TrackingArguments, LoggingArguments, ConfigFileArguments
):
    random_init: bool = option(False, "Evaluate an untrained encoder of the checkpoint's config instead (the floor).")
    output_dir: str | None = option(
        None,
        "Default: CKPT-linear-eval for a local checkpoint, outputs/OWNER--NAME-linear-eval for a Hub id "
        "(-random-init appended with --random_init).",
    )
    test_split: str = option("test", "If the dataset has no such split, --holdout_fraction of train is held out.")
    holdout_fraction: float = option(
        0.2, "Fraction of train held out (stratified, seeded) when the test split is missing."
    )
    validation_size: int | None = option(
        None,
        "Score N images held out of the train split (stratified, the same for every run with the same --split_seed) "
        "instead of the test split; the probe trains on the rest. For choosing hyperparameters: keep the test split "
        "for the final figures.",
    )
    split_seed: int = option(0, "Seed of the --validation_size hold-out (independent of --seed).")
    max_train_samples: int | None = option(None, "Seeded random subset of the train split (quick runs).")
    max_test_samples: int | None = option(None, "Seeded random subset of the test split.")
    per_device_eval_batch_size: int = option(256, "Images per batch for feature extraction.")
    dataloader_num_workers: int = option(0)
    num_epochs: int | None = option(
        None, f"Probe epochs; default {FEATURE_EPOCHS} on cached features, {AUGMENT_EPOCHS} with --augment."
    )
    batch_size: int = option(256, "Probe mini-batch (per process with --augment).")
    optimizer: str = option("sgd", "sgd (momentum 0.9) | adamw.")
    learning_rate: float | None = option(None, f"Peak LR of the cosine schedule; default {DEFAULT_LEARNING_RATES}.")
    weight_decay: float = option(0.0)
    standardize: bool = option(
        True, "Standardize features with train statistics (folded into the saved head). --no_standardize disables."
    )
    augment: bool = option(
        False, "Train the probe on random resized crops + flips through the frozen encoder (heavier protocol)."
    )
    knn_k: list[int] = field(
        default_factory=lambda: [20, 200], metadata={"help": "Neighbour counts of the weighted kNN."}
    )
    knn_temperature: float = option(0.07)
    embedding_2d: str = option("tsne", "features_2d.png method: tsne | pca.")
    accuracy_metric: str = option(
        "accuracy", "Name or local path for evaluate.load (offline: our own identical code)."
    )
    overwrite_cache: bool = option(False, "Extract features again even if OUT/features_cache has them.")
    seed: int = option(0)
    update_model_card: bool = option(False, "Also add the results to CKPT's README.md (a local folder).")


def parse_linear_eval_args(argv=None) -> LinearEvalArguments:
    """linear_eval.py's arguments, checked, with the defaults that depend on others filled in."""
    (args,) = parse_dataclasses((LinearEvalArguments,), argv)
    if not args.model_name_or_path:
        raise ValueError("--model_name_or_path is required (a folder written by recipes/pretrain.py, or a Hub id).")
    for name in (
        "per_device_eval_batch_size",
        "batch_size",
        "num_epochs",
        "max_train_samples",
        "max_test_samples",
        "validation_size",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}.")
    if not 0 < args.holdout_fraction < 1:
        raise ValueError(f"--holdout_fraction must be in (0, 1), got {args.holdout_fraction}.")
    if args.optimizer not in DEFAULT_LEARNING_RATES:
        raise ValueError(
            f"--optimizer {args.optimizer!r} is not supported; allowed values: {', '.join(DEFAULT_LEARNING_RATES)}."
        )
    if args.embedding_2d not in EMBEDDING_METHODS:
        raise ValueError(
            f"--embedding_2d {args.embedding_2d!r} is not supported; allowed values: {', '.join(EMBEDDING_METHODS)}."
        )
    if not args.knn_k or min(args.knn_k) < 1 or not args.knn_temperature > 0:
        raise ValueError("--knn_k needs positive integers and --knn_temperature a positive number.")
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/iecl-resnet18-cifar10-linear).")
    _check_report_to(args.report_to)
    check_tracking_args(args.report_to, args.run_name)
    if args.num_epochs is None:
        args.num_epochs = AUGMENT_EPOCHS if args.augment else FEATURE_EPOCHS
    if args.learning_rate is None:
        args.learning_rate = DEFAULT_LEARNING_RATES[args.optimizer]
    if args.output_dir is None:
        base = default_output_base(args.model_name_or_path)
        args.output_dir = base + "-linear-eval" + ("-random-init" if args.random_init else "")
    return args


# ---------------------------------------------------------------------------------------------- embed.py


@dataclass
class EmbedArguments(CheckpointArguments, HubArguments, LoggingArguments, ConfigFileArguments):
    dataset_name: str | None = option(
        None,
        "Hub id (uoft-cs/cifar10), local folder/parquet/image folder; "
        "unset: the embedded digits dataset (no network).",
    )
    dataset_config_name: str | None = option(None, "Configuration name of the Hub dataset.")
    split: str = option("train", "The split to embed.")
    image_column: str | None = option(None, "Image column (detected: an Image feature, img/image).")
    cache_dir: str | None = option(None, "datasets / Hub cache folder.")
    output_dir: str | None = option(
        None,
        "Where the embedded dataset goes (save_to_disk: the dataset's columns + --embedding_column, in the "
        "dataset's order, and embed_results.json). Images that cannot be decoded are skipped: their rows are DROPPED "
        "from the output, counted, and their row indices listed in embed_results.json. Written to a temporary folder, "
        "then renamed. Default: CKPT-embeddings-DATASET-SPLIT (outputs/OWNER--NAME-embeddings-... for a Hub id).",
    )
    overwrite_output_dir: bool = option(False, "Replace --output_dir if it is not empty.")
    embedding_column: str = option("embedding", "Name of the new column (float32 lists, the pooled features).")
    per_device_eval_batch_size: int = option(256, "Images per batch and process.")
    dataloader_num_workers: int = option(0, "Loader processes that decode and preprocess (0: in the main process).")
    max_samples: int | None = option(None, "Embed only the first N rows of the split (quick runs).")


def parse_embed_args(argv=None) -> EmbedArguments:
    """embed.py's arguments, checked, with the default --output_dir filled in. --push_to_hub pushes the embedded
    dataset as a dataset repo named by --hub_model_id."""
    (args,) = parse_dataclasses((EmbedArguments,), argv)
    if not args.model_name_or_path:
        raise ValueError("--model_name_or_path is required (a folder written by recipes/pretrain.py, or a Hub id).")
    for name in ("per_device_eval_batch_size", "max_samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}.")
    if args.dataloader_num_workers < 0:
        raise ValueError("--dataloader_num_workers must be >= 0.")
    if not args.embedding_column:
        raise ValueError("--embedding_column must be a column name, e.g. embedding.")
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id, a dataset repo (e.g. your-name/cifar10-embeddings).")
    check_hub_model_id(args.hub_model_id)
    if args.output_dir is None:
        from ..data import EMBEDDED_DATASET

        base = default_output_base(args.model_name_or_path)
        dataset = os.path.basename(os.path.normpath(args.dataset_name or EMBEDDED_DATASET.replace(":", "-")))
        args.output_dir = f"{base}-embeddings-{dataset}-{args.split}"
    return args


# ---------------------------------------------------------------------------------------------- IECLConfig flags


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
        fields.append((name, kind | None, field(default=None, metadata=metadata)))
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


def reparse_with_config_file(parser, dataclass_types, path, argv):
    """Parse `argv` again with the values of the YAML/JSON file `path` as defaults (flags on the command line win).

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
    parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(args=argv)


def parse_dataclasses(dataclass_types, argv=None):
    """`HfArgumentParser(dataclass_types)` on `argv`, again with a --config_file's values as defaults if one is
    given.

    Every recipe has --log_level: for dataclasses without it (`LoggingArguments`), it is parsed too and set on the
    first one returned.
    """
    dataclass_types = tuple(dataclass_types)
    added = not any(issubclass(cls, LoggingArguments) for cls in dataclass_types)
    types = (*dataclass_types, LoggingArguments) if added else dataclass_types
    parser = HfArgumentParser(types)
    parsed = parser.parse_args_into_dataclasses(args=argv)
    config_file = next((p.config_file for p in parsed if getattr(p, "config_file", None)), None)
    if config_file:
        parsed = reparse_with_config_file(parser, types, config_file, argv)
    if added:
        *parsed, logging_args = parsed
        parsed[0].log_level = logging_args.log_level
    return tuple(parsed)


def given_arguments(dataclass_types, argv=None, config_file: str | None = None) -> set[str]:
    """Names of the arguments that the command line (`argv`, else `sys.argv`) or `config_file` gives, as opposed to
    those left at their defaults (argparse itself tells: every default suppressed, only given flags are set)."""
    parser = HfArgumentParser(tuple(dataclass_types))
    for action in parser._actions:
        action.default = argparse.SUPPRESS  # a flag not given leaves no attribute
    namespace, _ = parser.parse_known_args(args=None if argv is None else [str(a) for a in argv])
    return set(vars(namespace)) | (set(load_config_file(config_file)) if config_file else set())


def apply_preset_training_args(train_args, given: set[str]):
    """The training flags of `train_args.preset` (`PRESET_TRAINING_ARGS`) that `given` lacks. The learning rate and
    weight decay go with the preset's optimizer: not applied when --optimizer chose another one."""
    values = PRESET_TRAINING_ARGS.get(train_args.preset, {})
    other_optimizer = "optimizer" in given and train_args.optimizer != values.get("optimizer", train_args.optimizer)
    for name, value in values.items():
        if name in given or (other_optimizer and name in ("learning_rate", "weight_decay")):
            continue
        setattr(train_args, name, value)


def parse_args(argv=None):
    """pretrain.py: (data_args, train_args, model_config_values) from the command line and an optional config file."""
    types = (DataArguments, PretrainArguments, ModelArguments)
    data_args, train_args, model_args = parse_dataclasses(types, argv)
    values = model_config_values(train_args, model_args)  # resolves train_args.preset
    if train_args.preset in PRESET_TRAINING_ARGS:
        apply_preset_training_args(train_args, given_arguments(types, argv, train_args.config_file))
    return data_args, train_args, values


def run_recipe(main, name: str) -> int:
    """Run a recipe's `main()`; bad input (`ValueError`) becomes one line `NAME: error: ...` and exit code 2."""
    try:
        return main()
    except ValueError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return 2


def hub_kwargs(args, cache_dir=None) -> dict:
    """`from_pretrained` keywords of the checkpoint flags (unset ones left to transformers' defaults)."""
    values = {"revision": args.revision, "token": args.hub_token, "cache_dir": cache_dir}
    return {key: value for key, value in values.items() if value is not None}


def model_config_values(train_args, model_args) -> dict:
    """Preset, then one flag per field, then --model_config_overrides (the last wins).

    With --model_name_or_path there is no preset (the checkpoint's config is the base): only the flags and overrides.
    `train_args.preset` is set to the preset used ("auto" resolved; "none" with a checkpoint), not a config field.
    """
    preset = train_args.preset
    if train_args.model_name_or_path:
        if preset not in ("auto", "none"):
            raise ValueError(
                f"--preset {preset} and --model_name_or_path both set the architecture: drop --preset (the "
                "checkpoint's config is used) or --model_name_or_path (start from scratch)."
            )
        preset = "none"
    elif preset == "auto":
        import torch

        preset = "cifar" if torch.cuda.is_available() else "cpu"
    if preset not in (*PRESETS, "none"):
        raise ValueError(
            f"--preset {train_args.preset!r} is not supported; allowed values: auto, none, {', '.join(PRESETS)}."
        )
    values = dict(PRESETS.get(preset, {}))
    for name, value in dataclasses.asdict(model_args).items():
        if value is not None:
            values[name] = parse_value(value) if isinstance(value, str) and name not in TEXT_FIELDS else value
    overrides = parse_overrides(train_args.model_config_overrides)
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
    train_args.preset = preset
    return values


def check_output_dir(output_dir: str):
    """Fail before training if the output folder cannot be written."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        probe = os.path.join(output_dir, f".write-test-{os.getpid()}")  # one per process: they check at the same time
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"--output_dir {output_dir!r} is not writable ({error}); choose another folder.") from error


def _check_scheduler(name: str):
    import torch
    from transformers import get_scheduler

    try:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler = get_scheduler(name, optimizer=optimizer, num_warmup_steps=1, num_training_steps=10)
        optimizer.step()
        scheduler.step()
    except Exception as error:
        raise ValueError(
            f"--lr_scheduler_type {name!r} cannot be used here ({type(error).__name__}: {error}); "
            "use e.g. cosine, linear, constant, constant_with_warmup, polynomial, cosine_with_restarts."
        ) from error


def _check_report_to(value: str):
    from accelerate.utils import LoggerType

    allowed = {t.value for t in LoggerType} | {"none"}
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if not names or unknown:
        raise ValueError(
            f"--report_to {value!r}: unknown tracker(s) {unknown or [value]}; "
            f"allowed values: {', '.join(sorted(allowed))}."
        )


def validate_train_args(data_args, train_args):
    """Recipe arguments checked up front, with the flag named."""
    import torch

    from .optim import OPTIMIZERS

    if train_args.per_device_train_batch_size < 2:
        raise ValueError("--per_device_train_batch_size must be >= 2 (contrastive losses need negatives).")
    for name in ("gradient_accumulation_steps", "num_train_epochs", "logging_steps"):
        if getattr(train_args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(train_args, name)}.")
    if train_args.max_train_steps is not None and train_args.max_train_steps < 1:
        raise ValueError(f"--max_train_steps must be >= 1, got {train_args.max_train_steps}.")
    if train_args.learning_rate is not None and not train_args.learning_rate > 0:
        raise ValueError(f"--learning_rate must be > 0, got {train_args.learning_rate}.")
    if train_args.weight_decay < 0:
        raise ValueError(f"--weight_decay must be >= 0, got {train_args.weight_decay}.")
    if train_args.torch_compile_backend is not None or train_args.torch_compile_mode is not None:
        train_args.torch_compile = True  # as in transformers' TrainingArguments
    backends = torch.compiler.list_backends(exclude_tags=()) if train_args.torch_compile_backend else ()
    if train_args.torch_compile_backend is not None and train_args.torch_compile_backend not in backends:
        raise ValueError(
            f"--torch_compile_backend {train_args.torch_compile_backend!r} is not a torch.compile backend; "
            f"allowed values: {', '.join(backends)}."
        )
    if train_args.torch_compile_mode not in (None, *COMPILE_MODES):
        raise ValueError(
            f"--torch_compile_mode {train_args.torch_compile_mode!r}: allowed values: {', '.join(COMPILE_MODES)}."
        )
    if train_args.augmentation not in ("batched", "workers"):
        raise ValueError(f"--augmentation {train_args.augmentation!r}: allowed values: batched, workers.")
    cp = train_args.checkpointing_steps
    if cp is not None and cp != "epoch" and not (cp.isdigit() and int(cp) > 0):
        raise ValueError(f"--checkpointing_steps must be a positive integer or 'epoch', got {cp!r}.")
    if data_args.streaming and train_args.max_train_steps is None:
        raise ValueError("--streaming needs --max_train_steps (a streamed dataset has no known length).")
    if train_args.push_to_hub and not train_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/iecl-resnet18-cifar10).")
    if train_args.dataloader_num_workers < 0:
        raise ValueError("--dataloader_num_workers must be >= 0.")
    if train_args.optimizer not in OPTIMIZERS:
        raise ValueError(
            f"--optimizer {train_args.optimizer!r} is not supported; allowed values: {', '.join(OPTIMIZERS)}."
        )
    if not train_args.generator_learning_rate > 0:
        raise ValueError(f"--generator_learning_rate must be > 0, got {train_args.generator_learning_rate}.")
    if train_args.num_warmup_steps is not None and train_args.num_warmup_steps < 0:
        raise ValueError(f"--num_warmup_steps must be >= 0, got {train_args.num_warmup_steps}.")
    if train_args.checkpoints_total_limit is not None and train_args.checkpoints_total_limit < 0:
        raise ValueError(
            f"--checkpoints_total_limit must be >= 0 (0 keeps all), got {train_args.checkpoints_total_limit}."
        )
    if train_args.knn_every_epochs < 0:
        raise ValueError(
            f"--knn_every_epochs must be >= 0 (0 disables the online kNN), got {train_args.knn_every_epochs}."
        )
    for name in ("max_train_samples", "knn_max_train_samples", "knn_max_eval_samples", "shuffle_buffer_size"):
        value = getattr(data_args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}.")
    _check_scheduler(train_args.lr_scheduler_type)
    _check_report_to(train_args.report_to)
    check_tracking_args(train_args.report_to, train_args.run_name)
    check_hub_model_id(train_args.hub_model_id)
