"""The encoder optimizers come from timm (LARS, the decay split); checked against the rule they replace."""

import pytest
import torch

from iecl_hf.optimization import build_optimizer


def small_model(bias_before_norm=True):
    """Linear-BN-ReLU-Linear. A bias before the BatchNorm has no gradient, only rounding noise: the comparison of
    optimizers leaves it out (comparing its noise made that test depend on the thread count)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16, bias=bias_before_norm),
        torch.nn.BatchNorm1d(16),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 4),
    )


def loss_of(model, step):
    generator = torch.Generator().manual_seed(step)
    inputs, targets = torch.randn(32, 8, generator=generator), torch.randint(0, 4, (32,), generator=generator)
    return torch.nn.functional.cross_entropy(model(inputs), targets)


def simclr_lars_steps(model, lr, weight_decay, steps, momentum=0.9, trust=0.001):
    """SimCLR's LARS, written out: for weights (not biases / norms) the decayed gradient g + wd w is scaled by
    trust |w| / |g + wd w|; SGD momentum on top."""
    buffers = {}
    for step in range(steps):
        model.zero_grad()
        loss_of(model, step).backward()
        with torch.no_grad():
            for name, p in model.named_parameters():
                grad = p.grad
                if p.ndim > 1:
                    grad = grad + weight_decay * p
                    grad = grad * (trust * p.norm() / grad.norm())
                buffers[name] = grad.clone() if name not in buffers else buffers[name].mul_(momentum).add_(grad)
                p.add_(buffers[name], alpha=-lr)


@pytest.mark.parametrize("weight_decay", [1e-6, 5e-4])
def test_timm_lars_follows_simclr_lars_over_the_first_steps(weight_decay):
    """timm's trust ratio `|w| / (|g| + wd |w|)` (You et al.) vs SimCLR's `|w| / |g + wd w|`: equal within 0.5%
    over 5 steps at the weight decays LARS is used with."""
    reference, model = small_model(bias_before_norm=False), small_model(bias_before_norm=False)
    simclr_lars_steps(reference, lr=1.0, weight_decay=weight_decay, steps=5)
    optimizer = build_optimizer("lars", model, lr=1.0, weight_decay=weight_decay)
    for step in range(5):
        optimizer.zero_grad()
        loss_of(model, step).backward()
        optimizer.step()
    start = small_model(bias_before_norm=False)
    for (name, p), q, p0 in zip(model.named_parameters(), reference.parameters(), start.parameters()):
        moved = (q - p0).norm()
        assert moved > 0, name
        assert (p - q).norm() <= 5e-3 * moved + 1e-7, (name, ((p - q).norm() / moved).item())


def test_biases_and_norms_get_no_weight_decay_and_excluded_parameters_are_left_out():
    model = small_model()
    optimizer = build_optimizer("sgd", model, lr=0.1, weight_decay=0.01, exclude=list(model[3].parameters()))
    decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.01 for p in g["params"]}
    no_decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decay == {id(model[0].weight)}
    assert no_decay == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
