"""The recipe's training step for the benchmarks: `PretrainingStep` with the recipe's optimizers, speed options and
logging steps at their defaults (`PretrainArguments`), outside a run."""

import torch
from accelerate import Accelerator

from iecl_hf import IECLForPreTraining
from iecl_hf.cli.pretrain import PretrainArguments
from iecl_hf.training.pretraining import apply_speed_options, build_optimizers
from iecl_hf.training.step import PretrainingStep


def recipe_step(
    config,
    batch_size: int,
    device,
    *,
    mixed_precision="no",
    channels_last=False,
    torch_compile=False,
    augmentation=None,
) -> PretrainingStep:
    """`config`'s model in training mode, trained by the recipe's step on one process at batch `batch_size`."""
    model = IECLForPreTraining(config).to(device)
    memory_format = apply_speed_options(model, model.iecl, channels_last=channels_last, torch_compile=torch_compile)
    defaults = PretrainArguments(per_device_train_batch_size=batch_size)
    optimizers, _ = build_optimizers(model, defaults, batch_size)
    step = PretrainingStep.standalone(
        model,
        optimizers,
        Accelerator(cpu=torch.device(device).type == "cpu", mixed_precision=mixed_precision),
        logging_steps=defaults.logging_steps,
        max_train_steps=10**9,
        augmentation=augmentation,
        memory_format=memory_format,
    )
    step.training.model.train()
    return step


def take_step(step: PretrainingStep, batch) -> None:
    """One optimizer step, counted as `TrainingLoop.step_done` counts it."""
    step(batch)
    step.training.state.step += 1
