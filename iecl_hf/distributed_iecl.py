"""Differentiable gathering of a batch across processes, and the global value of a per-rank loss.

`accelerator.gather` carries no gradient, so a contrastive loss built on it would train differently with 1 and
N processes. Two patterns keep N processes exactly equal to one holding the whole batch:

- Terms of the whole batch (the entropy and KL terms): every rank computes them on the gathered batch; the backward
  of the gather (a reduce-scatter sum) sends each rank the gradient for its own rows, times the world size, and
  data-parallel gradient averaging divides that factor back out.
- Base losses (NT-Xent, MoCo's InfoNCE, BYOL): each rank computes the mean over its own rows only (against the
  gathered columns where a row needs the global batch), as lightly and solo-learn do; the mean of the per-rank
  means is the global mean, and data-parallel averaging gives its gradient. `world_size` times less work.
"""

import torch
import torch.distributed as dist


def world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank():
    return dist.get_rank() if world_size() > 1 else 0


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` (batch first) from all ranks, in rank order, keeping gradients to the local rows."""
    if world_size() == 1:
        return tensor
    from torch.distributed._functional_collectives import all_gather_single_autograd, wait_tensor

    return wait_tensor(all_gather_single_autograd(tensor.contiguous(), 0, dist.group.WORLD))


def with_global_value(local_loss: torch.Tensor) -> torch.Tensor:
    """`local_loss` (a mean over this rank's rows) carrying the mean over ranks as its value: the gradient stays the
    local one (data-parallel averaging turns it into the global one); every rank logs the global batch's loss."""
    if world_size() == 1:
        return local_loss
    value = local_loss.detach().clone()
    dist.all_reduce(value)
    return local_loss + (value / world_size() - local_loss.detach())
