"""Batch entropy estimators (nats), computed in float32 even under mixed precision.

Each estimator maps a batch of B feature rows (B, d) to a scalar that grows with the spread of the batch.
Under data parallelism the caller passes the gathered global batch (see `distributed_iecl.gather_with_grad`).
"""

import math

import torch
import torch.nn.functional as F


def cosine_kernel(u: torch.Tensor) -> torch.Tensor:
    u = F.normalize(u, dim=1)
    return u @ u.t()


def gaussian_kernel(u: torch.Tensor) -> torch.Tensor:
    """exp(-||u_i - u_j||^2 / (2 sigma^2)) with sigma the median pairwise distance (detached)."""
    sq_dist = torch.cdist(u, u).pow(2)
    b = u.shape[0]
    off_diagonal = sq_dist[~torch.eye(b, dtype=torch.bool, device=u.device)]
    sigma_sq = off_diagonal.detach().median().clamp_min(1e-12) if b > 1 else sq_dist.new_tensor(1.0)
    return torch.exp(-sq_dist / (2 * sigma_sq))


def renyi2_entropy(u: torch.Tensor, kernel: str = "cosine") -> torch.Tensor:
    """Matrix-based Renyi entropy of order 2: -log ||K / tr K||_F^2, in [0, log B]."""
    u = u.flatten(1).float()
    gram = cosine_kernel(u) if kernel == "cosine" else gaussian_kernel(u)
    a = gram / gram.diagonal().sum()
    return -torch.log(a.pow(2).sum())


def logdet_entropy(u: torch.Tensor, epsilon: float = 0.5) -> torch.Tensor:
    """Coding rate 1/2 logdet(I + d / (B eps^2) Z^T Z) of the L2-normalized rows Z (via the B x B form)."""
    z = F.normalize(u.flatten(1).float(), dim=1)
    b, d = z.shape
    gram = z @ z.t()
    identity = torch.eye(b, device=z.device, dtype=z.dtype)
    return 0.5 * torch.logdet(identity + (d / (b * epsilon**2)) * gram)


def uniformity_entropy(u: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """-log mean_ij exp(-t ||z_i - z_j||^2) on L2-normalized rows: 0 when collapsed."""
    z = F.normalize(u.flatten(1).float(), dim=1)
    sq_dist = (2 - 2 * z @ z.t()).clamp_min(0)
    return -(torch.logsumexp((-t * sq_dist).flatten(), dim=0) - math.log(sq_dist.numel()))


class BatchEntropy(torch.nn.Module):
    """One entropy estimator behind one interface; `kernel` applies to Renyi-2 only."""

    def __init__(self, estimator: str = "renyi2", kernel: str = "cosine", logdet_epsilon: float = 0.5, uniformity_t: float = 2.0):
        super().__init__()
        self.estimator, self.kernel = estimator, kernel
        self.logdet_epsilon, self.uniformity_t = logdet_epsilon, uniformity_t

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=u.device.type, enabled=False):
            if self.estimator == "renyi2":
                return renyi2_entropy(u, self.kernel)
            if self.estimator == "logdet":
                return logdet_entropy(u, self.logdet_epsilon)
            return uniformity_entropy(u, self.uniformity_t)


def pixel_features(images: torch.Tensor, max_size: int = 32) -> torch.Tensor:
    """Flattened images, average-pooled to at most max_size x max_size (cost O(B^2 d) stays small)."""
    if images.shape[-1] > max_size or images.shape[-2] > max_size:
        images = F.adaptive_avg_pool2d(images, (min(images.shape[-2], max_size), min(images.shape[-1], max_size)))
    return images.flatten(1)
