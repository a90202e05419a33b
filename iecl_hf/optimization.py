"""Optimizers (SGD / AdamW / LARS for an encoder or a linear probe, AdamW for SAIB), the learning-rate schedule and
the learning-rate rules that depend on other settings: timm's LARS and decay split, transformers' schedulers.

Top-level (as transformers' `optimization.py`) because pretraining and linear evaluation both build optimizers here.
"""

import torch
from timm.optim import Lars, param_groups_weight_decay
from transformers import get_scheduler

OPTIMIZERS = ("sgd", "adamw", "lars")
# The linear probe's optimizers and their default learning rates, measured on standardized digits features (trained
# and random-init encoders): AdamW at 1e-3 underfits by ~5 points.
PROBE_LEARNING_RATES = {"sgd": 0.1, "adamw": 1e-2}


def pretraining_learning_rate(optimizer: str, global_batch: int) -> float:
    """The encoder's default peak learning rate: 1e-3 for AdamW, else SimCLR's linear rule 0.3 x global batch / 256."""
    return 1e-3 if optimizer == "adamw" else 0.3 * global_batch / 256


def default_warmup_steps(num_training_steps: int) -> int:
    """5% of the optimizer steps."""
    return int(0.05 * num_training_steps)


def build_optimizer(name: str, module: torch.nn.Module, lr: float, weight_decay: float, exclude=()):
    """The optimizer of `module`'s trainable parameters except `exclude` (SAIB's, which have their own): the encoder's
    in pretraining, the linear probe's in evaluation.

    timm's split: no weight decay for biases and normalization parameters (1-D); with LARS (timm's, the trust ratio
    `0.001 |w| / (|g| + wd |w|)` of You et al. 2017) they get no layer-wise adaptation either, as in SimCLR.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"`optimizer` {name!r} is not supported; allowed values: {', '.join(OPTIMIZERS)}.")
    excluded = {id(p) for p in exclude}
    groups = [
        {**group, "params": [p for p in group["params"] if id(p) not in excluded]}
        for group in param_groups_weight_decay(module, weight_decay)
    ]
    if name == "lars":
        return Lars(groups, lr=lr, momentum=0.9)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr)


def build_generator_optimizer(parameters, lr: float, weight_decay: float = 0.0):
    """AdamW for SAIB; its decoupled weight decay is the `gamma R(g_phi)` term. None when there is no SAIB."""
    parameters = list(parameters)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay) if parameters else None


def build_scheduler(name: str, optimizer, num_warmup_steps: int, num_training_steps: int):
    """transformers' schedulers, stepped once per optimizer step (not per process)."""
    return get_scheduler(
        name, optimizer=optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps
    )
