"""The stages of a pretraining run, in the order `recipes/pretrain.py` calls them:

    check_before_start -> make_accelerator -> prepare_data -> prepare_model -> start_or_resume (-> start_trackers)
    -> fit (the recipe's loop: TrainingLoop + PretrainingStep (step.py) + the callbacks) -> finish -> export

Each stage is a function of the arguments and of what the stages before it returned; nothing else is shared.
"""

import json
import math
import os
import sys
import time
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration
from datasets import Dataset
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader

from ..data import (
    BatchedSimCLRAugmentation,
    TwoViewCollator,
    detect_columns,
    load_image_dataset,
    make_eval_dataset,
)
from ..data.loading import EMBEDDED_DATASET
from ..data.training_data import training_examples, training_loader
from ..hub.model_card import render_pretraining_card
from ..image_processing import build_image_processor
from ..optimization import (
    build_generator_optimizer,
    build_optimizer,
    build_scheduler,
    default_warmup_steps,
    pretraining_learning_rate,
)
from ..provenance import provenance
from ..spectral_iecl import exact_spectral_norms
from .callbacks import CheckpointCallback, LoggingCallback, OnlineKnnCallback
from .checkpointing import (
    check_free_space,
    check_resume_checkpoint,
    prepare_output_for_fresh_start,
    resolve_checkpoint,
)
from .logs import JsonlLogger, TrainingState
from .loop import TrainingLoop
from .trackers import TrackerRun, tracker_scalars
from .visuals import save_training_curves, save_views_grid

logger = get_logger(__name__)

LOGGED_TERMS = (
    "loss",
    "base_loss",
    "entropy_query",
    "entropy_anchor",
    "kl_loss",
    "spectral_penalty",
    "spectral_norm_max",
    "saib_logdet",
)


def take_subset(split, n):
    """The first n examples of a split, as an in-memory Dataset (also from a streamed split)."""
    if isinstance(split, Dataset):
        return split.select(range(min(n, len(split))))
    return Dataset.from_list(list(split.take(n)), features=split.features)


# ---------------------------------------------------------------------------------------------------- before start


def check_before_start(args) -> str | None:
    """Before any data is read: the checkpoint to resume from (None: a fresh start), checked for its kind, or an
    unfinished run in the way of a fresh start. Raises `ValueError`."""
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if checkpoint:
        check_resume_checkpoint(checkpoint)
    else:
        prepare_output_for_fresh_start(args.output_dir, args.overwrite_output_dir, remove=False)
    return checkpoint


def check_sync_batchnorm(sync_batchnorm: bool, accelerator: Accelerator):
    """SyncBatchNorm runs on CUDA only; on one process it would change nothing."""
    if sync_batchnorm and accelerator.device.type != "cuda":
        raise ValueError(
            f"`sync_batchnorm` needs GPUs (SyncBatchNorm runs on CUDA devices only; this run is on "
            f"{accelerator.device.type}): turn it off, or launch on several GPUs with `accelerate launch`."
        )


def make_accelerator(args, run: TrackerRun) -> Accelerator:
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        **run.accelerator_kwargs(args.report_to),  # the trackers; project and logging folders in output_dir
        # The shuffle order comes from (data_seed, epoch) alone: identical on every process, reproducible on resume.
        # Non-blocking copies from pinned memory (prepare_data pins on a GPU): the copy overlaps the step.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed, non_blocking=True),
    )


# ---------------------------------------------------------------------------------------------------- data


@dataclass
class TrainingData:
    dataset_name: str
    train_split: object  # Dataset, or IterableDataset when streamed
    columns: object
    loader: DataLoader  # two views or uint8 images per example, `TwoViewCollator` batches
    streamed_data: object  # the IterableDataset behind the loader when streaming (its set_epoch reshuffles), else None
    device_augmentation: BatchedSimCLRAugmentation
    knn_loaders: list | None  # (memory bank, queries) of the online kNN, or None
    preview: torch.Tensor  # 8 fixed images for views.png

    @property
    def num_train_images(self):
        return len(self.train_split) if isinstance(self.train_split, Dataset) else "streamed"


def prepare_data(data_args, args, config, accelerator) -> TrainingData:
    """Load the dataset, detect its columns, build the training loader (not yet prepared), the online-kNN loaders
    and the preview images. Raises `ValueError` naming the argument to fix."""
    dataset_name = data_args.dataset_name or EMBEDDED_DATASET
    raw = load_image_dataset(
        data_args.dataset_name,
        data_args.dataset_config_name,
        streaming=data_args.streaming,
        image_size=config.image_size,
        cache_dir=data_args.cache_dir,
    )
    if data_args.train_split not in raw:
        raise ValueError(
            f"`train_split` {data_args.train_split!r} is not a split of {dataset_name}; available: {list(raw)}."
        )
    train_split = raw[data_args.train_split]
    if isinstance(train_split, Dataset) and len(train_split) == 0:
        raise ValueError(
            f"The split {data_args.train_split!r} of {dataset_name} is empty; choose another `train_split` "
            f"(available: {list(raw)})."
        )
    columns = detect_columns(train_split.features, data_args.image_column, data_args.label_column)
    if data_args.max_train_samples:  # a streamed split stays streamed
        train_split = (
            train_split.take(data_args.max_train_samples)
            if data_args.streaming
            else take_subset(train_split, data_args.max_train_samples)
        )
    if (
        isinstance(train_split, Dataset)
        and len(train_split) < args.per_device_train_batch_size * accelerator.num_processes
    ):
        raise ValueError(
            f"The training split has {len(train_split)} images, fewer than one global batch "
            f"({args.per_device_train_batch_size} x {accelerator.num_processes} processes); lower "
            "`per_device_train_batch_size`."
        )

    cache = os.path.join(data_args.cache_dir, "iecl_hf_decoded") if data_args.cache_dir else None
    train_data, collate = training_examples(train_split, columns, config.image_size, args.augmentation, cache,
                                            accelerator.main_process_first)  # fmt: skip
    if data_args.streaming:
        # Each process reads its own shards; the loader is not prepared (that would shard a second time).
        train_data = train_data.shuffle(seed=args.seed, buffer_size=data_args.shuffle_buffer_size)
        train_data = split_dataset_by_node(train_data, accelerator.process_index, accelerator.num_processes)
    loader = training_loader(train_data, collate, args.per_device_train_batch_size, args.dataloader_num_workers,
                             args.seed, accelerator.device.type == "cuda", data_args.streaming)  # fmt: skip
    device_augmentation = BatchedSimCLRAugmentation(config.image_size).to(accelerator.device)
    return TrainingData(
        dataset_name,
        train_split,
        columns,
        loader,
        train_data if data_args.streaming else None,
        device_augmentation,
        knn_loaders(raw, columns, data_args, args, config, accelerator, dataset_name),
        preview_images(raw, columns, data_args, config, dataset_name),
    )


def knn_loaders(raw, columns, data_args, args, config, accelerator, dataset_name):
    """Labelled images for the online kNN: a memory bank from the training split, queries from the validation split
    (default: 'validation' or 'test'). None when there are no labels or it is switched off."""
    validation_split = data_args.validation_split
    if validation_split is None:
        validation_split = next((s for s in ("validation", "test") if s in raw), None)
    if columns.label is None or args.knn_every_epochs == 0 or validation_split in (None, "none"):
        return None
    if validation_split not in raw:
        raise ValueError(
            f"`validation_split` {validation_split!r} is not a split of {dataset_name}; available: {list(raw)}."
        )
    validation_features = raw[validation_split].features
    if validation_features is not None:
        missing = [c for c in (columns.image, columns.label) if c not in validation_features]
        if missing:
            raise ValueError(
                f"The validation split {validation_split!r} of {dataset_name} has no column(s) {missing}; "
                f"available columns: {list(validation_features)}. Pass `validation_split` none to skip the "
                "online kNN."
            )
    if isinstance(raw[validation_split], Dataset) and len(raw[validation_split]) == 0:
        raise ValueError(
            f"The validation split {validation_split!r} of {dataset_name} is empty; pass another "
            "`validation_split`, or `validation_split` none to skip the online kNN."
        )
    bank = make_eval_dataset(
        take_subset(raw[data_args.train_split], data_args.knn_max_train_samples), columns, config.image_size
    )
    queries = make_eval_dataset(
        take_subset(raw[validation_split], data_args.knn_max_eval_samples), columns, config.image_size
    )
    return [
        accelerator.prepare_data_loader(DataLoader(d, batch_size=256, collate_fn=TwoViewCollator()))
        for d in (bank, queries)
    ]


def preview_images(raw, columns, data_args, config, dataset_name) -> torch.Tensor:
    """A fixed set of images for views.png: the first 8 decodable ones of the training split."""
    examples = make_eval_dataset(take_subset(raw[data_args.train_split], 64), columns, config.image_size)
    examples = [e for e in (examples[i] for i in range(len(examples))) if e["example"] is not None][:8]
    if not examples:
        raise ValueError(
            f"None of the first 64 images of the split {data_args.train_split!r} of {dataset_name} could be "
            f"decoded (column {columns.image!r}); check the data or pass `image_column`."
        )
    return TwoViewCollator()(examples)["pixel_values"]


# ---------------------------------------------------------------------------------------------------- model


@dataclass
class Training:
    """What the loop trains: the prepared model and optimizers, the schedule and the checkpointed state."""

    model: torch.nn.Module  # prepared (DDP-wrapped with several processes)
    unwrapped: torch.nn.Module
    optimizers: list
    scheduler: object
    state: TrainingState
    learning_rate: float
    global_batch: int
    max_train_steps: int
    steps_per_epoch: int | None
    memory_format: torch.memory_format


def apply_speed_options(
    model, encoder, *, channels_last: bool, torch_compile: bool, backend: str | None = None, mode: str | None = None
) -> torch.memory_format:
    """`channels_last` (the model now, the views in each step: the returned format) and `torch_compile` (the encoder
    in place, `nn.Module.compile`, so that the state dict and the saved checkpoints keep plain keys). Shared with
    benchmarks/throughput.py, so that the benchmark measures what the recipe runs."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    if torch_compile:
        encoder.compile(backend=backend or "inductor", mode=mode)
    return memory_format


def build_optimizers(model, args, global_batch: int) -> tuple[list, float]:
    """The encoder's optimizer (`args.optimizer`, SAIB's parameters excluded) at `args.learning_rate` or the default
    for `global_batch`, and SAIB's AdamW (`args.generator_learning_rate`, `saib_weight_decay`); returns the
    optimizers and the encoder's learning rate. Also what the benchmarks train with."""
    learning_rate = args.learning_rate or pretraining_learning_rate(args.optimizer, global_batch)
    encoder_optimizer = build_optimizer(
        args.optimizer, model, learning_rate, args.weight_decay, exclude=model.generator_parameters()
    )
    generator_optimizer = build_generator_optimizer(
        model.generator_parameters(), args.generator_learning_rate, model.config.saib_weight_decay
    )
    return [o for o in (encoder_optimizer, generator_optimizer) if o is not None], learning_rate


def prepare_model(model, data: TrainingData, data_args, args, accelerator, checkpoint) -> Training:
    """Optimizers (encoder: SGD/AdamW/LARS; SAIB: AdamW), `accelerator.prepare`, the schedule and the training state
    registered for checkpointing; the disk space the run needs is checked."""
    if args.gradient_checkpointing:  # transformers' name; timm's set_grad_checkpointing underneath
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    if args.sync_batchnorm and accelerator.num_processes > 1:  # before prepare, as DDP needs it
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    memory_format = apply_speed_options(
        model,
        model.iecl,
        channels_last=args.channels_last,
        torch_compile=args.torch_compile,
        backend=args.torch_compile_backend,
        mode=args.torch_compile_mode,
    )
    global_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    optimizers, learning_rate = build_optimizers(model, args, global_batch)
    if checkpoint:  # another model's weights: a clear error now, not a wall of missing keys from load_state
        check_resume_checkpoint(checkpoint, model)
    model, *optimizers = accelerator.prepare(model, *optimizers)
    if not data_args.streaming:
        data.loader = accelerator.prepare(data.loader)

    if data_args.streaming:
        steps_per_epoch, max_train_steps = None, args.max_train_steps
    else:
        steps_per_epoch = math.ceil(len(data.loader) / args.gradient_accumulation_steps)
        max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    warmup = args.num_warmup_steps if args.num_warmup_steps is not None else default_warmup_steps(max_train_steps)
    # Not prepared: an AcceleratedScheduler would step once per process. Stepped once per optimizer step.
    scheduler = build_scheduler(args.lr_scheduler_type, optimizers[0].optimizer, warmup, max_train_steps)
    state = TrainingState()
    accelerator.register_for_checkpointing(scheduler, state)
    training = Training(
        model,
        accelerator.unwrap_model(model),
        optimizers,
        scheduler,
        state,
        learning_rate,
        global_batch,
        max_train_steps,
        steps_per_epoch,
        memory_format,
    )
    check_free_space(args.output_dir, required_disk_bytes(training, args))
    return training


def required_disk_bytes(training: Training, args) -> int:
    """The kept checkpoints (weights + optimizer states), the one being written and the final model."""
    weight_bytes = sum(t.numel() * t.element_size() for t in training.unwrapped.state_dict().values())
    optimizer_bytes = (
        sum(
            t.numel() * t.element_size()
            for o in training.optimizers
            for s in o.state_dict()["state"].values()
            for t in s.values()
            if torch.is_tensor(t)
        )
        or 2 * weight_bytes
    )
    num_epochs = (
        math.ceil(training.max_train_steps / training.steps_per_epoch) if training.steps_per_epoch else sys.maxsize
    )
    every = args.checkpointing_steps or ""
    saves = (
        1
        + (training.max_train_steps // int(every) if every.isdigit() else 0)
        + (min(num_epochs, 1000) if every == "epoch" else 0)
    )
    kept = min(saves, args.checkpoints_total_limit or saves)
    return (kept + 1) * (weight_bytes + optimizer_bytes) + weight_bytes + 20 * 2**20


def start_or_resume(training: Training, checkpoint, args, accelerator) -> JsonlLogger:
    """Load the training state of `checkpoint`, or clear the output folder for a fresh start; returns the JSONL log
    (cut back to the checkpoint's step on resume)."""
    log_file = JsonlLogger(
        os.path.join(args.output_dir, "logs", "train_log.jsonl"), enabled=accelerator.is_main_process
    )
    if checkpoint:
        accelerator.load_state(checkpoint)
        if accelerator.is_main_process:
            log_file.truncate_after(training.state.step, training.state.epoch)
        logger.info(f"Resumed from {checkpoint} at step {training.state.step} (epoch {training.state.epoch}).")
        return log_file
    if accelerator.is_main_process:
        note = prepare_output_for_fresh_start(args.output_dir, args.overwrite_output_dir)
        if note:
            logger.info(note)
    accelerator.wait_for_everyone()
    if args.resume_from_checkpoint:
        logger.info(f"No checkpoint in {args.output_dir}: starting from scratch.")
    return log_file


# ---------------------------------------------------------------------------------------------------- the loop


@dataclass
class Callbacks:
    logging: LoggingCallback
    knn: OnlineKnnCallback | None
    checkpoints: CheckpointCallback

    def in_order(self) -> list:
        """Step end: log, then checkpoint; epoch end: kNN, then checkpoint."""
        return [self.logging, *([self.knn] if self.knn else []), self.checkpoints]


def make_callbacks(training: Training, data: TrainingData, args, accelerator, logger, resumed: bool) -> Callbacks:
    state = training.state
    logging = LoggingCallback(
        accelerator, logger, training.scheduler, args.logging_steps, training.max_train_steps, state.step
    )
    num_classes = len(data.columns.label_names or []) or None
    knn = data.knn_loaders and OnlineKnnCallback(
        accelerator, training.unwrapped, data.knn_loaders, num_classes, logger, args.knn_every_epochs
    )
    checkpoints = CheckpointCallback(
        accelerator, args.output_dir, training.unwrapped, args.checkpointing_steps, args.checkpoints_total_limit,
        extra_writer=lambda folder: write_views(training, data, args.seed, folder),
        last_saved_step=state.step if resumed else None,
    )  # fmt: skip
    return Callbacks(logging, knn, checkpoints)


def make_loop(training: Training, data: TrainingData, args, accelerator, callbacks: Callbacks) -> TrainingLoop:
    logger.info(
        f"{data.num_train_images} training images, global batch {training.global_batch}, {training.max_train_steps} "
        f"steps, lr {training.learning_rate:g} ({args.optimizer}), model: {describe_model(training.unwrapped.config)}"
    )
    return TrainingLoop(
        accelerator, data.loader, training.state, training.max_train_steps, training.steps_per_epoch,
        args.gradient_accumulation_steps, data.streamed_data, callbacks.in_order(),
    )  # fmt: skip


def describe_model(config) -> str:
    return (
        f"{config.backbone} stem={config.stem} {config.image_size}px, generator={config.generator_architecture}, "
        f"spectral norm={config.encoder_spectral_norm}"
    )


# ---------------------------------------------------------------------------------------------------- the end


def export(
    training: Training,
    data: TrainingData,
    args,
    data_args,
    accelerator,
    final_knn,
    skipped,
    initialized_from=None,
    started: float | None = None,
):
    """The release folder (main process): the model, image processor, views.png, training_curves.png,
    train_results.json and the model card."""
    unwrapped, state, config = training.unwrapped, training.state, training.unwrapped.config
    output_dir = args.output_dir
    unwrapped.save_pretrained(output_dir)
    build_image_processor(config).save_pretrained(output_dir)
    write_views(training, data, args.seed, output_dir)
    save_training_curves(state.history, os.path.join(output_dir, "training_curves.png"))
    last = next((r for r in reversed(state.history) if "loss" in r), {})
    figures = {name: round(last[name], 4) for name in LOGGED_TERMS if name in last}
    figures["spectral_norm_max_exact"] = round(exact_spectral_norms(unwrapped.iecl.backbone).max().item(), 4)
    if final_knn is not None:
        figures["online kNN top-1 (%)"] = round(100 * final_knn, 2)
    figures["skipped images"] = skipped
    with open(os.path.join(output_dir, "train_results.json"), "w") as handle:
        json.dump(
            {
                "step": state.step,
                "epoch": state.epoch,
                "images_seen": state.images_seen,
                **figures,
                # every flag but the Hub token (this file is pushed with the model)
                "args": {k: v for k, v in {**vars(args), **vars(data_args)}.items() if k != "hub_token"},
                "provenance": {
                    **provenance(),
                    "config_diff": config.to_diff_dict(),  # the resolved model config, against IECLConfig()
                    "dataset": {
                        "name": data.dataset_name,
                        "fingerprint": getattr(data.train_split, "_fingerprint", None),
                        "num_train_images": data.num_train_images,
                    },
                    "global_batch_size": training.global_batch,
                    "learning_rate": training.learning_rate,  # resolved (the flag's default depends on the batch)
                    # this process's wall time (a resumed run counts from its resume)
                    "wall_seconds": None if started is None else round(time.time() - started, 1),
                },
            },
            handle,
            indent=2,
            default=str,
        )
    card = render_pretraining_card(
        config,
        repo_id=args.hub_model_id or output_dir,  # a local folder loads with the same snippet
        dataset_name=data.dataset_name,
        num_train_images=data.num_train_images,
        steps=state.step,
        epochs=state.epoch,
        global_batch_size=training.global_batch,
        optimizer=args.optimizer,
        learning_rate=training.learning_rate,
        weight_decay=args.weight_decay,
        lr_scheduler_type=args.lr_scheduler_type,
        final_figures={**figures, "_num_features": unwrapped.iecl.num_features},
        initialized_from=initialized_from,
    )
    card.save(os.path.join(output_dir, "README.md"))
    logger.info(f"Saved the model, image processor, model card and pictures to {output_dir}")


def write_views(training: Training, data: TrainingData, seed: int, folder: str):
    """views.png: original / standard view / SAIB view / amplified difference, for the preview images."""
    save_views_grid(
        training.unwrapped, data.device_augmentation, data.preview, os.path.join(folder, "views.png"), seed=seed
    )


def finish(training: Training, knn, checkpoints, accelerator):
    """After the last step: the final online kNN, the final checkpoint (unless the last step saved one), the count of
    skipped images over all processes. Returns (final kNN top-1 or None, skipped images)."""
    state = training.state
    final_knn = knn.accuracy() if knn else None
    if final_knn is not None and not any(
        r.get("knn_top1") == final_knn and r["step"] == state.step for r in state.history
    ):
        state.history.append({"step": state.step, "epoch": state.epoch, "knn_top1": final_knn})
        accelerator.log(tracker_scalars(state.history[-1]), step=state.step)
    if checkpoints.last_saved_step != state.step:
        checkpoints.save(state)
    skipped = int(accelerator.reduce(torch.tensor(state.skipped_images, device=accelerator.device), reduction="sum"))
    if skipped:
        logger.warning(f"skipped {skipped} images that could not be decoded.")
    accelerator.wait_for_everyone()
    return final_knn, skipped
