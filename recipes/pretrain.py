#!/usr/bin/env python
r"""Pretrain an IE-CL encoder with Accelerate over a Hugging Face dataset.

    accelerate launch recipes/pretrain.py                              # embedded digits, CPU preset, < 3 min
    accelerate launch recipes/pretrain.py --dataset_name uoft-cs/cifar10 --num_train_epochs 10
    accelerate launch recipes/pretrain.py --report_to tensorboard --run_name digits-baseline  # README: tracking
    accelerate launch --num_processes 4 recipes/pretrain.py --dataset_name uoft-cs/cifar10 --preset cifar \
        --per_device_train_batch_size 64 --lambda_entropy 0.2 --push_to_hub --hub_model_id you/iecl-cifar10

Mixed precision and the number of processes come from `accelerate launch` / `accelerate config`.
`python recipes/pretrain.py --help` lists every argument; `--config_file args.yaml` holds them in a file.
The stages live in `iecl_hf.training.pretraining`; this script runs them top to bottom.
"""

import sys
import time

from accelerate.logging import get_logger
from accelerate.utils import set_seed

import iecl_hf  # noqa: F401  (registers the Auto classes)
from iecl_hf.cli import run_recipe, speaks_flags
from iecl_hf.cli.groups import check_output_dir, hub_kwargs
from iecl_hf.cli.pretrain import PRETRAIN_ARGUMENTS
from iecl_hf.cli.pretrain import parse_pretrain_args as parse_args
from iecl_hf.cli.publish import push_release
from iecl_hf.console import setup_logging
from iecl_hf.frameworks_iecl import check_batchnorm_groups
from iecl_hf.training.pretraining import (
    check_before_start,
    check_sync_batchnorm,
    export,
    finish,
    make_accelerator,
    make_callbacks,
    make_loop,
    prepare_data,
    prepare_model,
    start_or_resume,
)
from iecl_hf.training.starting_point import pretraining_config, pretraining_model
from iecl_hf.training.step import PretrainingStep
from iecl_hf.training.trackers import resolve_run, start_trackers, tracker_config

logger = get_logger("iecl_hf.recipes.pretrain")  # under the `iecl_hf` logger that --log_level sets up


@speaks_flags(*PRETRAIN_ARGUMENTS)
def main(argv=None) -> int:
    # Arguments, config and output folder, all checked before any data is read.
    data_args, args, model_values = parse_args(argv)
    setup_logging(args.log_level)
    hub = hub_kwargs(args, data_args.cache_dir)
    config = pretraining_config(model_values, args.model_name_or_path, **hub)
    check_batchnorm_groups(config, args.per_device_train_batch_size)
    check_output_dir(args.output_dir)
    checkpoint = check_before_start(args)

    run = resolve_run(args.output_dir, args.run_name, resuming=checkpoint is not None)
    args.run_name = run.name

    started = time.time()
    accelerator = make_accelerator(args, run)
    check_sync_batchnorm(args.sync_batchnorm, accelerator)
    set_seed(args.seed, device_specific=False)  # the same initial weights on every process
    origin = f"config of {args.model_name_or_path}" if args.model_name_or_path else f"preset {args.preset}"
    logger.info(
        f"IE-CL pretraining: {origin}, {accelerator.num_processes} process(es) on {accelerator.device}, "
        f"mixed precision {accelerator.mixed_precision}"
    )

    data = prepare_data(data_args, args, config, accelerator)
    model, weights_origin = pretraining_model(config, args.model_name_or_path, **hub)
    logger.info(f"Model: {weights_origin}.")
    training = prepare_model(model, data, data_args, args, accelerator, checkpoint)
    set_seed(args.seed, device_specific=True)  # from here on each process draws its own augmentations
    log_file = start_or_resume(training, checkpoint, args, accelerator)  # the JSONL log
    # After a resume, TensorBoard hides what the interrupted run logged past the checkpoint, as the JSONL log is cut.
    first_step = training.state.step + 1 if checkpoint else 0
    config_values = tracker_config(vars(args), vars(data_args), config.to_diff_dict())
    start_trackers(accelerator, "iecl-pretrain", run, config_values, first_step)

    # Fit: the loop owns epochs, resume and the end; the callbacks log, evaluate and checkpoint.
    callbacks = make_callbacks(training, data, args, accelerator, log_file, resumed=checkpoint is not None)
    loop = make_loop(training, data, args, accelerator, callbacks)
    train_step = PretrainingStep(training, data, accelerator, args, callbacks.checkpoints.last_good)
    training.model.train()
    try:
        for batch in loop.micro_batches():
            result = train_step(batch)
            if result is not None:
                loop.step_done(result)
    finally:  # a run that stops on an error closes its progress bar first
        callbacks.logging.close()

    final_knn, skipped = finish(training, callbacks.knn, callbacks.checkpoints, accelerator)
    if accelerator.is_main_process:
        export(
            training,
            data,
            args,
            data_args,
            accelerator,
            final_knn,
            skipped,
            initialized_from=args.model_name_or_path,
            started=started,
        )
    accelerator.end_training()
    if not (args.push_to_hub and accelerator.is_main_process):
        return 0
    return push_release(args, say=logger.info)  # the output stays complete when the upload fails: 1


if __name__ == "__main__":
    sys.exit(run_recipe(main, "pretrain.py"))
