"""Base losses of the contrastive frameworks, as pure functions of tensors."""

import torch
import torch.nn.functional as F

from .distributed_iecl import gather_with_grad, rank, with_global_value


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, tau: float, gather_distributed: bool = True) -> torch.Tensor:
    """NT-Xent (SimCLR's InfoNCE): each of the 2N embeddings has 1 positive and 2N - 2 negatives.

    `z1[i]` and `z2[i]` are the two views of sample i. With `gather_distributed`, N is the global batch across
    processes: this rank's 2n rows are scored against the 2N gathered columns (a 2n x 2N matrix, not 2N x 2N), and
    the returned value is the global mean (`with_global_value`).

    >>> z = torch.nn.functional.normalize(torch.ones(4, 8), dim=1)
    >>> round(nt_xent_loss(z, z, tau=0.2).item(), 4) == round(torch.log(torch.tensor(7.0)).item(), 4)
    True
    """
    rows = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=1)
    n = z1.shape[0]
    if gather_distributed:
        columns = torch.cat([gather_with_grad(rows[:n]), gather_with_grad(rows[n:])], dim=0)
        first = rank() * n  # where this rank's samples sit among the gathered ones
    else:
        columns, first = rows, 0
    total = columns.shape[0] // 2
    logits = rows @ columns.t() / tau
    own = torch.arange(first, first + n, device=rows.device)
    logits[torch.arange(2 * n, device=rows.device), torch.cat([own, own + total])] = float(
        "-inf"
    )  # not its own negative
    loss = F.cross_entropy(logits, torch.cat([own + total, own]))
    return with_global_value(loss) if gather_distributed else loss
