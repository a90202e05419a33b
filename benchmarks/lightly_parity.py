#!/usr/bin/env python
"""Do our SimCLR's loss and projector compute what lightly's do? Prints the largest differences, on random inputs,
between our `nt_xent_loss` and lightly's `NTXentLoss` (value and gradients), and between our `ProjectionHead` with
the output BatchNorm and lightly's `SimCLRProjectionHead` holding the same weights (training-mode outputs and
gradients). A diagnostic of the gap between our SimCLR baseline and lightly's (BENCHMARKS.md); needs `.[bench]`.

    python benchmarks/lightly_parity.py
"""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from iecl_hf.frameworks_iecl import ProjectionHead  # noqa: E402
from iecl_hf.losses_iecl import nt_xent_loss  # noqa: E402


def largest_gradient_difference(ours, our_inputs, theirs, their_inputs) -> float:
    """max |d ours / d our_inputs - d theirs / d their_inputs| over the matching inputs."""
    return max(
        (a - b).abs().max().item()
        for a, b in zip(torch.autograd.grad(ours, our_inputs), torch.autograd.grad(theirs, their_inputs))
    )


def compare_losses():
    from lightly.loss import NTXentLoss

    print(
        "NT-Xent, float64 inputs (ours computes in float32): ours against lightly's (batch, dim, temperature): "
        "|loss difference|, max |gradient difference|"
    )
    for n, dim, tau in [(64, 128, 0.5), (256, 128, 0.2), (7, 16, 0.1)]:
        z1, z2 = (torch.randn(n, dim, dtype=torch.float64, requires_grad=True) for _ in range(2))
        ours, theirs = nt_xent_loss(z1, z2, tau, gather_distributed=False), NTXentLoss(temperature=tau)(z1, z2)
        gradient = largest_gradient_difference(ours, [z1, z2], theirs, [z1, z2])
        difference = abs(ours - theirs).item()
        print(f"  ({n}, {dim}, {tau}): loss {ours.item():.6f}, |diff| {difference:.2e}, grad {gradient:.2e}")


def compare_projectors():
    from lightly.models.modules import SimCLRProjectionHead

    theirs = SimCLRProjectionHead(512, 512, 128).double()
    ours = ProjectionHead(512, 512, 128, output_batchnorm=True).double()
    shapes = lambda module: {k: tuple(v.shape) for k, v in module.state_dict().items()}  # noqa: E731
    print(f"projector: same parameter and buffer names and shapes: {shapes(ours) == shapes(theirs)}")
    ours.load_state_dict(theirs.state_dict())
    h = torch.randn(64, 512, dtype=torch.float64, requires_grad=True)
    z_ours, z_theirs = ours(h), theirs(h)
    gradient = largest_gradient_difference(
        z_ours.square().sum(), [h, *ours.parameters()], z_theirs.square().sum(), [h, *theirs.parameters()]
    )
    print(
        f"  training-mode output max |diff| {(z_ours - z_theirs).abs().max().item():.2e}, "
        f"gradients (input and weights) {gradient:.2e}"
    )


def main():
    torch.manual_seed(0)
    compare_losses()
    compare_projectors()


if __name__ == "__main__":
    main()
