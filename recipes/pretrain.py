#!/usr/bin/env python
"""Pretrain an IE-CL encoder with Accelerate over a Hugging Face dataset.

    accelerate launch recipes/pretrain.py                              # embedded digits, CPU preset, < 3 min
    accelerate launch recipes/pretrain.py --dataset_name ../shared/data/cifar10-small --num_train_epochs 10
    accelerate launch --num_processes 4 recipes/pretrain.py --dataset_name uoft-cs/cifar10 --preset cifar \
        --per_device_train_batch_size 64 --lambda_entropy 0.2 --push_to_hub --hub_model_id you/iecl-cifar10

Mixed precision and the number of processes come from `accelerate launch` / `accelerate config`.
`python recipes/pretrain.py --help` lists every argument; `--config_file args.yaml` holds them in a file.
"""

import json
import math
import os
import sys
import time

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from datasets import Dataset
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import iecl_hf  # noqa: F401  (registers the Auto classes)
from iecl_hf import build_image_processor
from iecl_hf.data import (
    BatchedSimCLRAugmentation,
    SimCLRAugmentation,
    TwoViewCollator,
    detect_columns,
    load_image_dataset,
    make_eval_dataset,
    make_two_view_dataset,
    make_uint8_dataset,
)
from iecl_hf.data.loading import EMBEDDED_DATASET
from iecl_hf.evaluation import extract_features, knn_accuracy
from iecl_hf.hub.model_card import render_pretraining_card
from iecl_hf.hub.upload import PushError, push_output_folder
from iecl_hf.training.arguments import check_output_dir, parse_args, validate_train_args
from iecl_hf.training.checkpointing import (
    check_free_space,
    check_resume_checkpoint,
    prepare_output_for_fresh_start,
    resolve_checkpoint,
    save_checkpoint,
)
from iecl_hf.training.logs import JsonlLogger, TrainingState
from iecl_hf.training.optim import build_encoder_optimizer, build_generator_optimizer, build_scheduler
from iecl_hf.training.starting_point import pretraining_config, pretraining_model
from iecl_hf.training.visuals import save_training_curves, save_views_grid

LOGGED_TERMS = ("loss", "base_loss", "entropy_query", "entropy_anchor", "kl_loss", "spectral_penalty", "spectral_norm_max",
                "saib_logdet")


class NonFiniteLossError(RuntimeError):
    pass


def check_finite_weights(model, step, last_good):
    """Never write non-finite weights (or statistics): the last checkpoint on disk stays the last good one."""
    bad = [name for name, tensor in model.state_dict().items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise NonFiniteLossError(
            f"Non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}) after step {step}. Training stopped "
            f"without saving them; the last good checkpoint: {last_good}. Resume with --resume_from_checkpoint latest "
            "and a lower --learning_rate, or --mixed_precision no."
        )


def take_subset(split, n):
    """The first n examples of a split, as an in-memory Dataset (also from a streamed split)."""
    if isinstance(split, Dataset):
        return split.select(range(min(n, len(split))))
    return Dataset.from_list(list(split.take(n)), features=split.features)


def main(argv=None):
    # ---------------------------------------------------------------- arguments
    data_args, args, model_values = parse_args(argv)
    validate_train_args(data_args, args)
    preset = model_values.pop("_preset")
    hub_kwargs = {"revision": args.model_revision, "token": args.hub_token, "cache_dir": data_args.cache_dir}
    # Raises ValueError naming any bad field, or an unreadable checkpoint / one of another model type.
    config = pretraining_config(model_values, args.model_name_or_path, **hub_kwargs)
    check_output_dir(args.output_dir)
    # Checked before any data is read: a missing folder, another model's checkpoint, an unfinished run in the way.
    checkpoint = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if checkpoint:
        check_resume_checkpoint(checkpoint)
    else:
        prepare_output_for_fresh_start(args.output_dir, args.overwrite_output_dir, remove=False)

    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else [name.strip() for name in args.report_to.split(",")],
        project_dir=args.output_dir,
        # The shuffle order comes from (data_seed, epoch) alone: identical on every process, reproducible on resume.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    set_seed(args.seed, device_specific=False)  # the same initial weights on every process
    device = accelerator.device
    origin = f"config of {args.model_name_or_path}" if args.model_name_or_path else f"preset {preset}"
    accelerator.print(f"IE-CL pretraining: {origin}, {accelerator.num_processes} process(es) on {device}, "
                      f"mixed precision {accelerator.mixed_precision}")

    # ---------------------------------------------------------------- data
    dataset_name = data_args.dataset_name or EMBEDDED_DATASET
    raw = load_image_dataset(data_args.dataset_name, data_args.dataset_config_name, streaming=data_args.streaming,
                             image_size=config.image_size, cache_dir=data_args.cache_dir)
    if data_args.train_split not in raw:
        raise ValueError(f"--train_split {data_args.train_split!r} is not a split of {dataset_name}; available: {list(raw)}.")
    train_split = raw[data_args.train_split]
    if isinstance(train_split, Dataset) and len(train_split) == 0:
        raise ValueError(f"The split {data_args.train_split!r} of {dataset_name} is empty; choose another --train_split "
                         f"(available: {list(raw)}).")
    columns = detect_columns(train_split.features, data_args.image_column, data_args.label_column)
    if data_args.max_train_samples:  # a streamed split stays streamed
        train_split = (train_split.take(data_args.max_train_samples) if data_args.streaming
                       else take_subset(train_split, data_args.max_train_samples))

    global_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    if isinstance(train_split, Dataset) and len(train_split) < args.per_device_train_batch_size * accelerator.num_processes:
        raise ValueError(f"The training split has {len(train_split)} images, fewer than one global batch "
                         f"({args.per_device_train_batch_size} x {accelerator.num_processes} processes); lower --per_device_train_batch_size.")

    if args.augmentation == "batched":
        train_data = make_uint8_dataset(train_split, columns, config.image_size)
    else:
        train_data = make_two_view_dataset(train_split, columns, SimCLRAugmentation(config.image_size))
    device_augmentation = BatchedSimCLRAugmentation(config.image_size).to(device)
    if data_args.streaming:
        # Each process reads its own shards; the loader is not prepared (that would shard a second time).
        train_data = train_data.shuffle(seed=args.seed, buffer_size=data_args.shuffle_buffer_size)
        train_data = split_dataset_by_node(train_data, accelerator.process_index, accelerator.num_processes)
    train_loader = DataLoader(
        train_data, batch_size=args.per_device_train_batch_size, shuffle=not data_args.streaming, drop_last=True,
        num_workers=args.dataloader_num_workers if not data_args.streaming else min(args.dataloader_num_workers, train_data.num_shards),
        collate_fn=TwoViewCollator(), persistent_workers=args.dataloader_num_workers > 0 and not data_args.streaming,
        generator=torch.Generator().manual_seed(args.seed),
    )

    # Labelled images for the online kNN: a memory bank from the training split, queries from the validation split.
    knn_loaders = None
    validation_split = data_args.validation_split
    if validation_split is None:
        validation_split = next((s for s in ("validation", "test") if s in raw), None)
    if columns.label is not None and args.knn_every_epochs > 0 and validation_split not in (None, "none"):
        if validation_split not in raw:
            raise ValueError(f"--validation_split {validation_split!r} is not a split of {dataset_name}; available: {list(raw)}.")
        validation_features = raw[validation_split].features
        if validation_features is not None:
            missing = [c for c in (columns.image, columns.label) if c not in validation_features]
            if missing:
                raise ValueError(f"The validation split {validation_split!r} of {dataset_name} has no column(s) {missing}; "
                                 f"available columns: {list(validation_features)}. Pass --validation_split none to skip the online kNN.")
        if isinstance(raw[validation_split], Dataset) and len(raw[validation_split]) == 0:
            raise ValueError(f"The validation split {validation_split!r} of {dataset_name} is empty; pass another "
                             "--validation_split, or --validation_split none to skip the online kNN.")
        bank = make_eval_dataset(take_subset(raw[data_args.train_split], data_args.knn_max_train_samples), columns, config.image_size)
        queries = make_eval_dataset(take_subset(raw[validation_split], data_args.knn_max_eval_samples), columns, config.image_size)
        knn_loaders = [accelerator.prepare_data_loader(DataLoader(d, batch_size=256, collate_fn=TwoViewCollator()))
                       for d in (bank, queries)]

    # ---------------------------------------------------------------- model and optimizers
    model, weights_origin = pretraining_model(config, args.model_name_or_path, **hub_kwargs)
    accelerator.print(f"Model: {weights_origin}.")
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    learning_rate = args.learning_rate or (1e-3 if args.optimizer == "adamw" else 0.3 * global_batch / 256)
    encoder_optimizer = build_encoder_optimizer(args.optimizer, model.encoder_parameters(), learning_rate, args.weight_decay)
    generator_optimizer = build_generator_optimizer(model.generator_parameters(), args.generator_learning_rate,
                                                    config.saib_weight_decay)
    optimizers = [o for o in (encoder_optimizer, generator_optimizer) if o is not None]
    if checkpoint:  # another model's weights: a clear error now, not a wall of missing keys from load_state
        check_resume_checkpoint(checkpoint, model)
    model, *optimizers = accelerator.prepare(model, *optimizers)
    if not data_args.streaming:
        train_loader = accelerator.prepare(train_loader)
    unwrapped = accelerator.unwrap_model(model)
    # From here on each process draws its own augmentations (the weights are already equal).
    set_seed(args.seed, device_specific=True)

    if data_args.streaming:
        steps_per_epoch = None
        max_train_steps = args.max_train_steps
    else:
        steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
        max_train_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(max_train_steps / steps_per_epoch) if steps_per_epoch else sys.maxsize
    warmup = args.num_warmup_steps if args.num_warmup_steps is not None else int(0.05 * max_train_steps)
    # Not prepared: an AcceleratedScheduler would step once per process. Stepped once per optimizer step below.
    scheduler = build_scheduler(args.lr_scheduler_type, optimizers[0].optimizer, warmup, max_train_steps)
    state = TrainingState()
    accelerator.register_for_checkpointing(scheduler, state)

    # The disk must hold the kept checkpoints (weights + optimizer states), the one being written and the final model.
    weight_bytes = sum(t.numel() * t.element_size() for t in unwrapped.state_dict().values())
    optimizer_bytes = sum(t.numel() * t.element_size() for o in optimizers for s in o.state_dict()["state"].values()
                          for t in s.values() if torch.is_tensor(t)) or 2 * weight_bytes
    saves = 1 + (max_train_steps // int(args.checkpointing_steps) if (args.checkpointing_steps or "").isdigit() else 0) + (
        min(num_epochs, 1000) if args.checkpointing_steps == "epoch" else 0)
    kept = min(saves, args.checkpoints_total_limit or saves)
    check_free_space(args.output_dir, (kept + 1) * (weight_bytes + optimizer_bytes) + weight_bytes + 20 * 2**20)

    logger = JsonlLogger(os.path.join(args.output_dir, "logs", "train_log.jsonl"), enabled=accelerator.is_main_process)
    if checkpoint:
        accelerator.load_state(checkpoint)
        if accelerator.is_main_process:
            logger.truncate_after(state.step, state.epoch)
        accelerator.print(f"Resumed from {checkpoint} at step {state.step} (epoch {state.epoch}).")
    else:
        if accelerator.is_main_process:
            note = prepare_output_for_fresh_start(args.output_dir, args.overwrite_output_dir)
            if note:
                accelerator.print(note)
        accelerator.wait_for_everyone()
        if args.resume_from_checkpoint:
            accelerator.print(f"No checkpoint in {args.output_dir}: starting from scratch.")

    if args.report_to != "none":
        accelerator.init_trackers("iecl-pretrain", config={**vars(args), **vars(data_args), **config.to_diff_dict()})

    # A fixed set of images for views.png: the first 8 decodable ones.
    preview_examples = make_eval_dataset(take_subset(raw[data_args.train_split], 64), columns, config.image_size)
    preview_examples = [e for e in (preview_examples[i] for i in range(len(preview_examples))) if e["example"] is not None][:8]
    if not preview_examples:
        raise ValueError(f"None of the first 64 images of the split {data_args.train_split!r} of {dataset_name} could be "
                         f"decoded (column {columns.image!r}); check the data or pass --image_column.")
    preview = TwoViewCollator()(preview_examples)["pixel_values"]

    def write_views(folder):
        save_views_grid(unwrapped, device_augmentation, preview, os.path.join(folder, "views.png"), seed=args.seed)

    last_saved_step = state.step if checkpoint else None

    def last_good_checkpoint():
        if last_saved_step is None:
            return "none yet"
        return os.path.join(args.output_dir, "checkpoints", f"step_{last_saved_step}")

    def checkpoint_now():
        nonlocal last_saved_step
        check_finite_weights(unwrapped, state.step, last_good_checkpoint())
        save_checkpoint(accelerator, args.output_dir, state.step, args.checkpoints_total_limit, write_views)
        last_saved_step = state.step

    def run_knn():
        bank_features, bank_labels = extract_features(unwrapped.iecl, knn_loaders[0], device, unwrapped.normalize, accelerator.gather_for_metrics)
        query_features, query_labels = extract_features(unwrapped.iecl, knn_loaders[1], device, unwrapped.normalize, accelerator.gather_for_metrics)
        return knn_accuracy(bank_features, bank_labels, query_features, query_labels, len(columns.label_names or []) or None)

    # ---------------------------------------------------------------- training
    accelerator.print(f"{len(train_split) if isinstance(train_split, Dataset) else 'streamed'} training images, "
                      f"global batch {global_batch}, {max_train_steps} steps, lr {learning_rate:g} ({args.optimizer}), "
                      f"model: {config.backbone} stem={config.stem} {config.image_size}px, generator={config.generator_architecture}, "
                      f"spectral norm={config.encoder_spectral_norm}")
    progress = tqdm(total=max_train_steps, initial=state.step, disable=not accelerator.is_local_main_process, desc="pretrain")
    try:  # a run that stops on an error closes its progress bar first
        model.train()
        window_start, window_images = time.perf_counter(), 0
        stop = state.step >= max_train_steps
        while not stop and state.epoch < num_epochs:
            epoch_loader = train_loader
            if steps_per_epoch is not None:
                train_loader.set_epoch(state.epoch)
                done_in_epoch = state.step - state.epoch * steps_per_epoch
                if done_in_epoch > 0:  # resumed mid-epoch: the same shuffle, without the batches already seen
                    epoch_loader = accelerator.skip_first_batches(train_loader, done_in_epoch * args.gradient_accumulation_steps)
            else:
                train_data.set_epoch(state.epoch)
            for batch in epoch_loader:
                if int(batch["num_skipped"]) and not state.skipped_images:
                    print(f"WARNING (process {accelerator.process_index}): an image could not be decoded and was skipped; "
                          "skipped images are counted and reported at the end.", file=sys.stderr)
                state.skipped_images += int(batch["num_skipped"])
                if "images" in batch:
                    images = batch["images"].to(device, non_blocking=True)
                    view_1, view_2 = device_augmentation(images), device_augmentation(images)
                else:
                    view_1, view_2 = batch["pixel_values"].to(device), batch["pixel_values_2"].to(device)
                view_1, view_2 = view_1.contiguous(memory_format=memory_format), view_2.contiguous(memory_format=memory_format)
                if accelerator.num_processes > 1:  # skipped images can leave ranks with unequal batches: gather needs equal
                    size = int(accelerator.gather(torch.tensor([len(view_1)], device=device)).min())
                    view_1, view_2 = view_1[:size], view_2[:size]
                if len(view_1) < 2:
                    continue
                with accelerator.accumulate(model):
                    logging_step = (state.step + 1) % args.logging_steps == 0 or state.step + 1 == max_train_steps
                    output = model(pixel_values=view_1, pixel_values_2=view_2, output_saib_logdet=logging_step)
                    terms = {name: getattr(output, name) for name in LOGGED_TERMS if getattr(output, name) is not None}
                    finite = torch.isfinite(torch.stack([value.float() for value in terms.values()]))
                    if not finite.all():  # one device sync per step, not one per term
                        bad = [name for name, ok in zip(terms, finite.tolist()) if not ok]
                        raise NonFiniteLossError(
                            f"Non-finite {', '.join(f'{n}={terms[n].item()}' for n in bad)} at step {state.step + 1}. "
                            f"Training stopped; nothing was saved after the last good checkpoint ({last_good_checkpoint()}). Resume "
                            "with --resume_from_checkpoint latest and a lower --learning_rate, or --mixed_precision no."
                        )
                    accelerator.backward(output.loss)
                    for optimizer in optimizers:
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                window_images += len(view_1) * accelerator.num_processes
                if not accelerator.sync_gradients:
                    continue
                scheduler.step()
                state.step += 1
                unwrapped.update_momentum_encoder(state.step / max_train_steps)  # MoCo / BYOL; no-op for SimCLR
                state.images_seen += len(view_1) * accelerator.num_processes * args.gradient_accumulation_steps
                progress.update(1)
                if state.step % args.logging_steps == 0 or state.step == max_train_steps:
                    elapsed = time.perf_counter() - window_start
                    record = {"step": state.step, "epoch": state.epoch, "lr": scheduler.get_last_lr()[0],
                              "images_per_second": window_images / max(elapsed, 1e-9),
                              **{name: round(value.item(), 6) for name, value in terms.items()}}
                    window_start, window_images = time.perf_counter(), 0
                    state.history.append(record)
                    logger.log(record)
                    accelerator.log(record, step=state.step)
                    progress.set_postfix(loss=f"{record['loss']:.3f}", H_query=f"{record['entropy_query']:.3f}",
                                         kl=f"{record['kl_loss']:.3f}", img_s=f"{record['images_per_second']:.0f}")
                if args.checkpointing_steps and args.checkpointing_steps.isdigit() and state.step % int(args.checkpointing_steps) == 0:
                    checkpoint_now()
                if state.step >= max_train_steps:
                    stop = True
                    break
            else:
                state.epoch += 1
                if knn_loaders and state.epoch % args.knn_every_epochs == 0:
                    top1 = run_knn()
                    record = {"step": state.step, "epoch": state.epoch, "knn_top1": top1}
                    state.history.append(record)
                    logger.log(record)
                    accelerator.log(record, step=state.step)
                    accelerator.print(f"epoch {state.epoch}: online kNN top-1 {100 * top1:.2f}%")
                if args.checkpointing_steps == "epoch":
                    checkpoint_now()
                continue
            if stop and state.step >= max_train_steps and steps_per_epoch and state.step % steps_per_epoch == 0:
                state.epoch += 1
    finally:
        progress.close()

    # ---------------------------------------------------------------- results
    final_knn = run_knn() if knn_loaders else None
    if final_knn is not None and not any(r.get("knn_top1") == final_knn and r["step"] == state.step for r in state.history):
        state.history.append({"step": state.step, "epoch": state.epoch, "knn_top1": final_knn})
    if last_saved_step != state.step:
        checkpoint_now()
    skipped = int(accelerator.reduce(torch.tensor(state.skipped_images, device=device), reduction="sum"))
    if skipped:
        accelerator.print(f"WARNING: skipped {skipped} images that could not be decoded.")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        output_dir = args.output_dir
        unwrapped.save_pretrained(output_dir)
        build_image_processor(config).save_pretrained(output_dir)
        write_views(output_dir)
        save_training_curves(state.history, os.path.join(output_dir, "training_curves.png"))
        last = next((r for r in reversed(state.history) if "loss" in r), {})
        figures = {name: round(last[name], 4) for name in LOGGED_TERMS if name in last}
        if final_knn is not None:
            figures["online kNN top-1 (%)"] = round(100 * final_knn, 2)
        figures["skipped images"] = skipped
        with open(os.path.join(output_dir, "train_results.json"), "w") as handle:
            json.dump({"step": state.step, "epoch": state.epoch, "images_seen": state.images_seen, **figures,
                       "args": {**vars(args), **vars(data_args)}}, handle, indent=2, default=str)
        repo_id = args.hub_model_id or output_dir  # a local folder loads with the same snippet
        card = render_pretraining_card(
            config, repo_id=repo_id, dataset_name=dataset_name,
            num_train_images=len(train_split) if isinstance(train_split, Dataset) else "streamed",
            steps=state.step, epochs=state.epoch, global_batch_size=global_batch, optimizer=args.optimizer,
            learning_rate=learning_rate, weight_decay=args.weight_decay, lr_scheduler_type=args.lr_scheduler_type,
            final_figures={**figures, "_num_features": unwrapped.iecl.num_features}, initialized_from=args.model_name_or_path,
        )
        card.save(os.path.join(output_dir, "README.md"))
        accelerator.print(f"Saved the model, image processor, model card and pictures to {output_dir}")
    accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        try:
            url = push_output_folder(args.output_dir, args.hub_model_id, private=args.hub_private_repo, token=args.hub_token)
            accelerator.print(f"Pushed to {url}")
        except PushError as error:
            accelerator.print(str(error))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
