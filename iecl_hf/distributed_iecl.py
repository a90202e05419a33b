"""Differentiable gathering of a batch across processes.

`accelerator.gather` carries no gradient, so a contrastive loss built on it would train differently with 1 and
N processes. Here every rank computes the loss of the global batch, and the backward of the gather
(a reduce-scatter sum) sends each rank the gradient for its own rows, times the world size; data-parallel
gradient averaging divides that factor back out, so N processes train exactly like one holding the whole batch.
"""

import torch
import torch.distributed as dist


def world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` (batch first) from all ranks, in rank order, keeping gradients to the local rows."""
    if world_size() == 1:
        return tensor
    from torch.distributed._functional_collectives import all_gather_single_autograd, wait_tensor

    return wait_tensor(all_gather_single_autograd(tensor.contiguous(), 0, dist.group.WORLD))
