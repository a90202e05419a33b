"""pretrain.py's arguments: data, training (`PretrainArguments`) and the model flags (`model_flags`), each group
checked where it is defined, and `parse_pretrain_args` for what spans groups (presets, --streaming)."""

from dataclasses import dataclass

from ..optimization import OPTIMIZERS
from ..presets import PRESET_TRAINING_ARGS, PRESETS
from .groups import CheckpointArguments, DatasetArguments, HubArguments, LoggingArguments, TrackingArguments
from .model_flags import ModelArguments, model_config_values, resolve_preset
from .parser import ConfigFileArguments, given_arguments, option, parse_dataclasses

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


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

    def __post_init__(self):
        super().__post_init__()
        self.check_at_least(1, "max_train_samples", "knn_max_train_samples", "knn_max_eval_samples")
        self.check_at_least(1, "shuffle_buffer_size")


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
        "Model preset; auto = cpu without a GPU, cifar with one (none with --model_name_or_path). Explicit model "
        "flags override it. vit_small (ViT-S/16, 224 px) also sets --optimizer adamw --learning_rate 1.25e-4 "
        "--weight_decay 0.05 unless given.",
        choices=("auto", "none", *PRESETS),
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
    optimizer: str = option("sgd", choices=OPTIMIZERS)
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
    torch_compile_mode: str | None = option(None, "torch.compile mode.", choices=COMPILE_MODES)
    augmentation: str = option(
        "batched", "batched (on the device, fastest) | workers (per image, in the loader).", ("batched", "workers")
    )
    knn_every_epochs: int = option(1, "Online kNN every N epochs (0 disables).")
    logging_steps: int = option(10)
    model_config_overrides: str | None = option(None, 'IECLConfig fields, e.g. "lambda_entropy=0.5,framework=simclr".')

    def __post_init__(self):
        super().__post_init__()
        if self.per_device_train_batch_size < 2:
            raise ValueError("--per_device_train_batch_size must be >= 2 (contrastive losses need negatives).")
        self.check_at_least(1, "gradient_accumulation_steps", "num_train_epochs", "logging_steps", "max_train_steps")
        self.check_at_least(0, "weight_decay", "num_warmup_steps", "checkpoints_total_limit", "knn_every_epochs")
        self.check_at_least(0, "dataloader_num_workers")
        for name in ("learning_rate", "generator_learning_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"--{name} must be > 0, got {value}.")
        every = self.checkpointing_steps
        if every is not None and every != "epoch" and not (every.isdigit() and int(every) > 0):
            raise ValueError(f"--checkpointing_steps must be a positive integer or 'epoch', got {every!r}.")
        if self.torch_compile_backend is not None or self.torch_compile_mode is not None:
            self.torch_compile = True  # as in transformers' TrainingArguments
        if self.torch_compile_backend is not None:
            check_compile_backend(self.torch_compile_backend)
        check_scheduler(self.lr_scheduler_type)
        self.preset = resolve_preset(self.preset, self.model_name_or_path)  # "auto" -> the preset it means


def check_compile_backend(backend: str):
    import torch

    backends = torch.compiler.list_backends(exclude_tags=())
    if backend not in backends:
        raise ValueError(
            f"--torch_compile_backend {backend!r} is not a torch.compile backend; "
            f"allowed values: {', '.join(backends)}."
        )


def check_scheduler(name: str):
    """A scheduler transformers builds and steps with this recipe's arguments (some need more than it passes)."""
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


def apply_preset_training_args(train_args, given: set[str]):
    """The training settings of `train_args.preset` (`PRESET_TRAINING_ARGS`) that `given` lacks. The learning rate
    and weight decay go with the preset's optimizer: not applied when --optimizer chose another one."""
    values = PRESET_TRAINING_ARGS.get(train_args.preset, {})
    other_optimizer = "optimizer" in given and train_args.optimizer != values.get("optimizer", train_args.optimizer)
    for name, value in values.items():
        if name in given or (other_optimizer and name in ("learning_rate", "weight_decay")):
            continue
        setattr(train_args, name, value)


PRETRAIN_ARGUMENTS = (DataArguments, PretrainArguments, ModelArguments)


def parse_pretrain_args(argv=None):
    """pretrain.py: (data_args, train_args, model_config_values) from the command line and an optional config file,
    checked; `train_args.preset` is the preset used ("auto" resolved; "none" with a checkpoint)."""
    data_args, train_args, model_args = parse_dataclasses(PRETRAIN_ARGUMENTS, argv)
    if data_args.streaming and train_args.max_train_steps is None:
        raise ValueError("--streaming needs --max_train_steps (a streamed dataset has no known length).")
    values = model_config_values(train_args.preset, model_args, train_args.model_config_overrides)
    if train_args.preset in PRESET_TRAINING_ARGS:
        apply_preset_training_args(train_args, given_arguments(PRETRAIN_ARGUMENTS, argv))
    return data_args, train_args, values
