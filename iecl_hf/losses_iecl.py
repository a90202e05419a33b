"""Base losses of the contrastive frameworks, as pure functions of tensors."""

import torch
import torch.nn.functional as F

from .distributed_iecl import gather_with_grad


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, tau: float, gather_distributed: bool = True) -> torch.Tensor:
    """NT-Xent (SimCLR's InfoNCE): each of the 2N embeddings has 1 positive and 2N - 2 negatives.

    `z1[i]` and `z2[i]` are the two views of sample i. With `gather_distributed`, N is the global batch across
    processes (negatives from every rank, gradients flowing back to the local rows).

    >>> z = torch.nn.functional.normalize(torch.ones(4, 8), dim=1)
    >>> round(nt_xent_loss(z, z, tau=0.2).item(), 4) == round(torch.log(torch.tensor(7.0)).item(), 4)
    True
    """
    if gather_distributed:
        z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
    z = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=1)
    n = z1.shape[0]
    logits = z @ z.t() / tau
    logits.fill_diagonal_(float("-inf"))  # a sample is not its own negative
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)
