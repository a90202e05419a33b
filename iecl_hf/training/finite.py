"""One rule in one place: a NaN/inf loss term or weight stops the run, and is never written to a checkpoint (the
last checkpoint on disk stays the last good one)."""

import torch

# --mixed_precision is accelerate's flag (the recipe takes it from `accelerate launch` / `accelerate config`).
RESUME_ADVICE = (
    "Resume with --resume_from_checkpoint latest and a lower --learning_rate, or without mixed precision "
    "(accelerate launch --mixed_precision no recipes/pretrain.py ...)."
)


class NonFiniteLossError(RuntimeError):
    """A loss term or a weight became NaN/inf; nothing was saved after the last good checkpoint."""


def check_finite_terms(terms: dict, step: int, last_good: str):
    """`terms`: name -> scalar tensor. One device sync for all of them, not one per term."""
    finite = torch.isfinite(torch.stack([value.float() for value in terms.values()]))
    if not finite.all():
        bad = ", ".join(f"{name}={terms[name].item()}" for name, ok in zip(terms, finite.tolist()) if not ok)
        raise NonFiniteLossError(
            f"Non-finite {bad} at step {step}. Training stopped; nothing was saved after the last "
            f"good checkpoint ({last_good}). {RESUME_ADVICE}"
        )


def check_finite_weights(model, step: int, last_good: str):
    """Before a checkpoint: every floating-point tensor of the state dict (weights, BN statistics) is finite."""
    bad = [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    if bad:
        raise NonFiniteLossError(
            f"Non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}) after step "
            f"{step}. Training stopped without saving them; the last good checkpoint: {last_good}. "
            f"{RESUME_ADVICE}"
        )
