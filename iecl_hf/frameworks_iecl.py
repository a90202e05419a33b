"""The contrastive frameworks IE-CL plugs into. Each head holds only what differs between them.

A head maps the encoder's pooled features of both views (online branch, with gradients: the anchor view and the
SAIB query view) and the anchor branch's inputs (both standard views, without SAIB: MoCo's keys and BYOL's targets
come from them; SimSiam's targets are the encoded views themselves) to the framework's base loss `L_base` and the
projections `z`. SAIB and the entropy terms live outside, in `IECLForPreTraining`, and work unchanged on every head.
Each rank computes its base loss over its own rows
(NT-Xent against the gathered columns; MoCo's keys enter the queue gathered), valued as the global mean
(`with_global_value`), so N processes train like one holding the whole batch.
"""

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .distributed_iecl import gather_with_grad, with_global_value
from .losses_iecl import nt_xent_loss
from .random_iecl import own_random_stream


def mark_owned(module: nn.Module):
    """Mark the leaf layers IE-CL initializes itself (`IECLPreTrainedModel._init_weights`); timm's layers stay
    timm's. Leaves, not containers: transformers initializes the leaves a checkpoint lacks."""
    for layer in module.modules():
        layer._iecl_owned = True


class ProjectionHead(nn.Module):
    """Linear-BN-ReLU-Linear (SimCLR's and BYOL's projector, BYOL's predictor; also MoCo's here, where MoCo v2's
    reference has no hidden BatchNorm: docs/method.md).

    With `output_batchnorm` the output is batch-normalized too (Linear without bias, then BN): the projector of
    SimCLR v2 and of lightly's `SimCLRProjectionHead`."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, output_batchnorm: bool = False):
        super().__init__()
        layers = [
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            # a bias before a BatchNorm is cancelled by its mean subtraction
            nn.Linear(hidden_dim, out_dim, bias=not output_batchnorm),
        ]
        if output_batchnorm:
            layers.append(nn.BatchNorm1d(out_dim))
        self.layers = nn.Sequential(*layers)
        mark_owned(self)

    @classmethod
    def from_config(cls, config, in_dim: int) -> "ProjectionHead":
        """The projector `g` of every framework (sizes and output BatchNorm from the config)."""
        return cls(in_dim, config.projection_hidden_dim, config.projection_dim, config.projection_output_batchnorm)

    def forward(self, h):
        return self.layers(h)


def batchnorm_groups(config) -> int:
    """How many BatchNorm groups the 2B rows of a step form: MoCo's Shuffle BN groups, 2 with `batchnorm_per_view`
    (one per view), else 1 (both views as one batch)."""
    if config.framework == "moco" and config.moco_batchnorm_groups > 1:
        return config.moco_batchnorm_groups
    return 2 if config.batchnorm_per_view else 1


def groups_that_fit(groups: int, rows: int) -> int:
    """How many of `groups` BatchNorm groups `rows` rows can fill: BatchNorm needs 2 rows per group in training."""
    return min(groups, rows // 2)


def check_batchnorm_groups(config, per_device_batch: int):
    """Raise `ValueError` when a process's batch is too small for its BatchNorm groups: a step has
    2 x `per_device_batch` rows (both views)."""
    groups = batchnorm_groups(config)
    if groups_that_fit(groups, 2 * per_device_batch) < groups:
        raise ValueError(
            f"moco_batchnorm_groups={groups} splits each process's {2 * per_device_batch} rows (2 views x "
            f"`per_device_train_batch_size` {per_device_batch}) into groups of fewer than 2, which BatchNorm cannot "
            f"normalize: use a batch of at least {groups} images per process or at most {per_device_batch} groups."
        )


def run_views(module, inputs: torch.Tensor, groups: int) -> torch.Tensor:
    """`module` on the 2B rows of both views: as one batch (BatchNorm statistics over both, SimCLR's reference) or
    as `groups` consecutive groups, each its own batch (2: one per view, lightly's SimCLR loop). The groups differ
    in size by at most one row; with fewer than 2 rows per group (a tiny batch outside the recipe, which refuses it
    with `check_batchnorm_groups`) there are fewer groups, as BatchNorm needs 2 rows in training."""
    groups = groups_that_fit(groups, len(inputs))
    if groups <= 1:
        return module(inputs)
    return torch.cat([module(group) for group in inputs.tensor_split(groups)])


def infonce_with_queue(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """MoCo's InfoNCE: each query's positive is its key, its negatives the queue (K, dim), all L2-normalized."""
    query, key = F.normalize(query.float(), dim=1), F.normalize(key.float(), dim=1)
    positive = (query * key).sum(dim=1, keepdim=True)
    negative = query @ queue.float().t()
    logits = torch.cat([positive, negative], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long, device=query.device))


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL's regression loss 2 - 2 cos(p, t), averaged over the batch."""
    return (2 - 2 * F.cosine_similarity(prediction.float(), target.float(), dim=1)).mean()


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's schedule: from `base` at the start to 1 at the end (progress in [0, 1])."""
    progress = min(max(progress, 0.0), 1.0)
    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float):
    """target = momentum * target + (1 - momentum) * online (parameters); buffers (BN statistics) are copied.
    Momentum 0 is a plain copy, so unset target memory (even NaN, after loading an encoder-only checkpoint) goes."""
    for t, o in zip(target.parameters(), online.parameters()):
        if momentum == 0:
            t.copy_(o.detach())
        else:
            t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)


QUEUE_SEED_OFFSET = 15485863


class SimCLRHead(nn.Module):
    """SimCLR: NT-Xent over the 2N projections, 2N - 2 negatives each."""

    def __init__(self, config, num_features: int, backbone: nn.Module):
        super().__init__()
        self.tau = config.tau
        self.groups = batchnorm_groups(config)
        self.projector = ProjectionHead.from_config(config, num_features)

    def forward(self, features, anchor_inputs, batch_size):
        projections = run_views(self.projector, features, self.groups)
        return nt_xent_loss(projections[:batch_size], projections[batch_size:], self.tau), projections


class _MomentumHead(nn.Module):
    """Shared by MoCo and BYOL: a momentum copy of the backbone and projector, never trained by gradients."""

    def __init__(self, config, num_features: int, backbone: nn.Module):
        super().__init__()
        self.groups = batchnorm_groups(config)
        self.projector = ProjectionHead.from_config(config, num_features)
        self.momentum_base = config.momentum_base
        self.momentum_backbone = copy.deepcopy(backbone)
        self.momentum_projector = copy.deepcopy(self.projector)
        for parameter in [*self.momentum_backbone.parameters(), *self.momentum_projector.parameters()]:
            parameter.requires_grad_(False)

    def momentum_branch(self, anchor_inputs):
        backbone = self.momentum_backbone
        return self.momentum_projector(
            backbone.forward_head(backbone.forward_features(anchor_inputs), pre_logits=True)
        )

    @torch.no_grad()
    def momentum_projections(self, anchor_inputs, batch_size):
        return run_views(self.momentum_branch, anchor_inputs, self.groups)

    @torch.no_grad()
    def reset_momentum_encoder(self, backbone: nn.Module):
        """Copy the online weights into the momentum branch (at initialization and after loading an encoder-only
        checkpoint)."""
        ema_update(self.momentum_backbone, backbone, 0.0)
        ema_update(self.momentum_projector, self.projector, 0.0)

    @torch.no_grad()
    def update_momentum_encoder(self, backbone: nn.Module, momentum: float):
        ema_update(self.momentum_backbone, backbone, momentum)
        ema_update(self.momentum_projector, self.projector, momentum)


class MoCoHead(_MomentumHead):
    """MoCo v2 (symmetrized): queries from the online branch, keys from the momentum branch, a queue of negatives.

    The keys of both views, gathered from all processes, enter the queue in rank order after each training step
    (as in the symmetrized reference). The momentum is constant (`momentum_base`). With `moco_batchnorm_groups`
    > 1 the key branch runs on shuffled rows (Shuffle BN; the online branch's groups are in order).
    """

    def __init__(self, config, num_features: int, backbone: nn.Module):
        super().__init__(config, num_features, backbone)
        self.tau = config.tau
        self.shuffle_keys = config.moco_batchnorm_groups > 1  # Shuffle BN; not `batchnorm_per_view`'s 2 groups
        self.register_buffer("queue", torch.empty(config.moco_queue_size, config.projection_dim))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))
        self.reset_queue()

    @torch.no_grad()
    def reset_queue(self):
        """Random unit vectors, from their own random stream (initialization does not shift the global one)."""
        with own_random_stream(QUEUE_SEED_OFFSET):
            self.queue.copy_(F.normalize(torch.randn(self.queue.shape), dim=1))
        self.queue_pointer.zero_()

    def momentum_for(self, progress: float) -> float:
        return self.momentum_base

    @torch.no_grad()
    def momentum_projections(self, anchor_inputs, batch_size):
        if not self.shuffle_keys:
            return super().momentum_projections(anchor_inputs, batch_size)
        # Shuffle BN: each key is normalized with a random group of rows, not the group its query sits in.
        order = torch.randperm(len(anchor_inputs), device=anchor_inputs.device)
        shuffled = run_views(self.momentum_branch, anchor_inputs[order], self.groups)
        keys = torch.empty_like(shuffled)
        keys[order] = shuffled
        return keys

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor):
        """Write `keys` (already gathered) at the pointer, wrapping around the end of the queue."""
        keys = F.normalize(keys.float(), dim=1).to(self.queue.dtype)
        size = self.queue.shape[0]
        keys = keys[-size:]
        positions = (self.queue_pointer + torch.arange(len(keys), device=keys.device)) % size
        self.queue[positions] = keys
        self.queue_pointer.copy_((self.queue_pointer + len(keys)) % size)

    def forward(self, features, anchor_inputs, batch_size):
        projections = run_views(self.projector, features, self.groups)
        all_keys = self.momentum_projections(anchor_inputs, batch_size)
        queries, keys = (projections[:batch_size], projections[batch_size:]), all_keys.split(batch_size)
        queue = self.queue.clone().detach()
        # This rank's queries only: a positive is the same sample's key, the negatives the (shared) queue.
        loss = 0.5 * (
            infonce_with_queue(queries[0], keys[1], queue, self.tau)
            + infonce_with_queue(queries[1], keys[0], queue, self.tau)
        )
        if self.training:
            self.enqueue(gather_with_grad(all_keys))
        return with_global_value(loss), projections


class BYOLHead(_MomentumHead):
    """BYOL: an online predictor regresses the target (momentum) projection of the other view; no negatives.

    The target momentum follows the cosine schedule from `momentum_base` to 1.
    """

    def __init__(self, config, num_features: int, backbone: nn.Module):
        super().__init__(config, num_features, backbone)
        self.predictor = ProjectionHead(config.projection_dim, config.predictor_hidden_dim, config.projection_dim)

    def momentum_for(self, progress: float) -> float:
        return cosine_momentum(self.momentum_base, progress)

    def forward(self, features, anchor_inputs, batch_size):
        projections = run_views(self.projector, features, self.groups)
        predictions = run_views(self.predictor, projections, self.groups)
        targets = self.momentum_projections(anchor_inputs, batch_size)
        p1, p2, t1, t2 = predictions[:batch_size], predictions[batch_size:], targets[:batch_size], targets[batch_size:]
        return with_global_value(byol_loss(p1, t2) + byol_loss(p2, t1)), projections  # per sample: no gathering


def negative_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = -cos(p, stopgrad(z)), averaged over the batch."""
    return -F.cosine_similarity(prediction.float(), target.detach().float(), dim=1).mean()


class SimSiamHead(nn.Module):
    """SimSiam: a predictor regresses the other view's projection from the same encoder, under a stop-gradient;
    no negatives, no momentum network. The two views are the encoded ones (the anchor view and the query view
    SAIB(v2)): without SAIB this is SimSiam's symmetric loss `D(p1, z2) / 2 + D(p2, z1) / 2`."""

    def __init__(self, config, num_features: int, backbone: nn.Module):
        super().__init__()
        self.groups = batchnorm_groups(config)
        self.projector = ProjectionHead.from_config(config, num_features)
        self.predictor = ProjectionHead(config.projection_dim, config.predictor_hidden_dim, config.projection_dim)

    def forward(self, features, anchor_inputs, batch_size):
        projections = run_views(self.projector, features, self.groups)
        predictions = run_views(self.predictor, projections, self.groups)
        (p1, p2), (z1, z2) = predictions.split(batch_size), projections.split(batch_size)
        loss = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
        return with_global_value(loss), projections  # per sample: no gathering


FRAMEWORK_HEADS = {"simclr": SimCLRHead, "moco": MoCoHead, "byol": BYOLHead, "simsiam": SimSiamHead}
