"""One rule in one place: a NaN/inf loss term or weight stops the run, and is never written to a checkpoint (the
last checkpoint on disk stays the last good one).

The loss terms are checked without a host-device sync on every step (`DeferredFiniteCheck`): a step whose terms are
not finite has its update skipped on the device, as `torch.amp.GradScaler` skips an overflowing step, and the error is
raised at the next logging step, or before the next checkpoint, whichever comes first."""

import math

import torch

RESUME_ADVICE = (
    "Resume with `resume_from_checkpoint` latest and a lower `learning_rate`, or without mixed precision "
    "(Accelerate's `mixed_precision` no)."
)


class NonFiniteLossError(RuntimeError):
    """A loss term or a weight became NaN/inf; nothing was saved after the last good checkpoint."""


class DeferredFiniteCheck:
    """The finite check of the loss terms, kept on the device until `raise_if_any` (one host sync).

    check.record(step, terms)                                    # each micro-batch: no sync
    check.update_unless_not_finite(optimizer.step, parameters)   # skipped after a non-finite term
    check.raise_if_any(last_good_checkpoint)                     # at logging steps and before checkpoints
    """

    def __init__(self, read_cpu_flags: bool = True):
        self.read_cpu_flags = read_cpu_flags  # False: the device path on the CPU too (tests)
        self.pending = []  # (step, term names, their values stacked), since the last `raise_if_any`
        self.update_is_finite = None  # every micro-batch of the coming update had finite terms (device bool)
        self.copies = {}  # parameter -> its values before the update under way

    def record(self, step: int, terms: dict):
        """`terms`: name -> scalar tensor, of one micro-batch of optimizer step `step`."""
        values = torch.stack([value.detach().float() for value in terms.values()])
        self.pending.append((step, list(terms), values))
        finite = torch.isfinite(values).all()
        self.update_is_finite = finite if self.update_is_finite is None else self.update_is_finite & finite

    def update_unless_not_finite(self, update, parameters):
        """Run `update()` (the optimizer steps of one update) unless a term recorded since the last update was not
        finite; then the parameters end as they began.

        On the CPU the flag is read at once (no device to wait for) and the update is skipped outright. On an
        accelerator nothing waits: the optimizers see zero gradients and the parameters are put back with
        `torch.where` (the optimizers' state stays finite, though momentum and step counts move as for a zero
        gradient); the run stops at the next `raise_if_any` anyway."""
        finite, self.update_is_finite = self.update_is_finite, None
        if finite is None:
            update()
        elif finite.device.type == "cpu" and self.read_cpu_flags:
            if finite:
                update()
        else:
            self._update_on_device(update, [p for p in parameters if p.grad is not None], finite)

    def _update_on_device(self, update, parameters, finite):
        with torch.no_grad():
            before = [self._copy_of(p) for p in parameters]
            for p in parameters:
                p.grad.masked_fill_(~finite, 0.0)
        update()
        with torch.no_grad():
            for p, old in zip(parameters, before):
                torch.where(finite, p, old, out=p)

    def _copy_of(self, parameter):
        """`parameter`'s values in a buffer kept from one update to the next (no allocation per step)."""
        buffer = self.copies.get(parameter)
        if buffer is None or buffer.shape != parameter.shape:
            buffer = self.copies[parameter] = torch.empty_like(parameter, requires_grad=False)
        return buffer.copy_(parameter)

    def raise_if_any(self, last_good: str, now: int | None = None):
        """Raise `NonFiniteLossError` naming the first step since the last call whose terms were not finite (its
        update was skipped). `now`: the step the run has reached, when later than that one."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        finite = torch.stack([torch.isfinite(values).all() for _, _, values in pending]).tolist()
        if all(finite):
            return
        step, names, values = pending[finite.index(False)]
        bad = ", ".join(f"{name}={value}" for name, value in zip(names, values.tolist()) if not math.isfinite(value))
        stopped = f" (its update skipped; stopped at step {now})" if now is not None and now != step else ""
        raise NonFiniteLossError(
            f"Non-finite {bad} at step {step}{stopped}. Training stopped; nothing was saved after the last good "
            f"checkpoint ({last_good}). {RESUME_ADVICE}"
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
