"""Optimizers of the encoder (SGD / AdamW / LARS) and of the view generator, and the LR schedule."""

import torch
from transformers import get_scheduler

OPTIMIZERS = ("sgd", "adamw", "lars")


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratios (You et al. 2017), as in SimCLR.

    Parameter groups with `lars_exclude=True` (biases, norms) get plain SGD with momentum and no weight decay.
    """

    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=0.0, trust_coefficient=0.001, eps=1e-8):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, eps=eps, lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not group["lars_exclude"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    param_norm, grad_norm = p.norm(), grad.norm()
                    trust = torch.where(
                        (param_norm > 0) & (grad_norm > 0),
                        group["trust_coefficient"] * param_norm / (grad_norm + group["eps"]),
                        torch.ones_like(param_norm),
                    )
                    grad = grad.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = grad.detach().clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def _split_decay(parameters, weight_decay):
    """No weight decay (and no LARS adaptation) for biases and normalization parameters (1-D tensors)."""
    decay = [p for p in parameters if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in parameters if p.requires_grad and p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
    ]


def build_encoder_optimizer(name: str, parameters, lr: float, weight_decay: float):
    if name not in OPTIMIZERS:
        raise ValueError(f"--optimizer {name!r} is not supported; allowed values: {', '.join(OPTIMIZERS)}.")
    groups = _split_decay(list(parameters), weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    for group in groups:
        group.pop("lars_exclude", None)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr)


def build_generator_optimizer(parameters, lr: float, weight_decay: float = 0.0):
    """AdamW for SAIB; its decoupled weight decay is the `gamma R(g_phi)` term. None when there is no SAIB."""
    parameters = list(parameters)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay) if parameters else None


def build_scheduler(name: str, optimizer, num_warmup_steps: int, num_training_steps: int):
    """transformers' schedulers, stepped once per optimizer step (not per process)."""
    return get_scheduler(name, optimizer=optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps)
