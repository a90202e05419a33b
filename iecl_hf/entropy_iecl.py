"""The entropy of the query representations H(Z') and the consistency term KL(p_phi || q), in nats.

Both read a batch of representations (B, d) as samples of a distribution; under data parallelism the caller
passes the batch gathered across processes (`distributed_iecl.gather_with_grad`). Computed in float32 even
under mixed precision. Rows are L2-normalized first (the contrastive losses compare directions), and both
quantities are divided by d so that their weights do not depend on the projection size.
"""

import math

import torch
import torch.nn.functional as F


def coding_rate(z: torch.Tensor, epsilon: float = 0.5) -> torch.Tensor:
    """Per-dimension coding rate `1/(2d) logdet(I + d/(B eps^2) Z Z^T)` of the L2-normalized rows Z (B x B form).

    The rate-distortion entropy of a Gaussian (uncentred, as in MCR^2): smallest, `log(1 + d/eps^2)/(2d)`, when all
    rows are equal, largest when they spread evenly over d orthogonal directions.
    """
    z = F.normalize(z.flatten(1).float(), dim=1)
    b, d = z.shape
    gram = z @ z.t()
    identity = torch.eye(b, device=z.device, dtype=z.dtype)
    return 0.5 * torch.logdet(identity + (d / (b * epsilon**2)) * gram) / d


def gaussian_entropy(z: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """Per-dimension differential entropy of the Gaussian fitted to the L2-normalized rows:
    `1/(2d) logdet(2 pi e (Cov + ridge I))`. The ridge keeps it finite when B <= d or the batch collapses."""
    z = F.normalize(z.flatten(1).float(), dim=1)
    d = z.shape[1]
    centered = z - z.mean(dim=0, keepdim=True)
    covariance = centered.t() @ centered / max(z.shape[0] - 1, 1)
    covariance = covariance + ridge * torch.eye(d, device=z.device, dtype=z.dtype)
    return 0.5 * (torch.logdet(covariance) / d + math.log(2 * math.pi * math.e))


def gaussian_kl(
    query: torch.Tensor, anchor: torch.Tensor, covariance: str = "diagonal", ridge: float = 1e-3
) -> torch.Tensor:
    """Per-dimension KL(N_query || N_anchor) of the Gaussians fitted to two batches of L2-normalized rows.

    `KL = 1/2 [tr(S_a^-1 S_q) - d + log det S_a - log det S_q + (m_a - m_q)^T S_a^-1 (m_a - m_q)] / d`: an entropy
    part (the log-determinants) plus a mean-shift part, with `covariance` "diagonal" or "full" (+ ridge I).
    The caller detaches `anchor` when only the query side should move.
    """
    query = F.normalize(query.flatten(1).float(), dim=1)
    anchor = F.normalize(anchor.flatten(1).float(), dim=1)
    d = query.shape[1]
    mean_q, mean_a = query.mean(dim=0), anchor.mean(dim=0)
    shift = mean_a - mean_q
    unbiased = max(query.shape[0] - 1, 1)
    if covariance == "diagonal":
        var_q = (query - mean_q).pow(2).sum(dim=0) / unbiased + ridge
        var_a = (anchor - mean_a).pow(2).sum(dim=0) / unbiased + ridge
        kl = (var_q / var_a).sum() - d + torch.log(var_a).sum() - torch.log(var_q).sum() + (shift.pow(2) / var_a).sum()
        return 0.5 * kl / d
    identity = torch.eye(d, device=query.device, dtype=query.dtype)
    cov_q = (query - mean_q).t() @ (query - mean_q) / unbiased + ridge * identity
    cov_a = (anchor - mean_a).t() @ (anchor - mean_a) / unbiased + ridge * identity
    cholesky_a = torch.linalg.cholesky(cov_a)
    trace_term = torch.cholesky_solve(cov_q, cholesky_a).diagonal().sum()
    mahalanobis = (shift.unsqueeze(0) @ torch.cholesky_solve(shift.unsqueeze(1), cholesky_a)).squeeze()
    logdet_a = 2 * torch.log(cholesky_a.diagonal()).sum()
    kl = trace_term - d + logdet_a - torch.logdet(cov_q) + mahalanobis
    return 0.5 * kl / d


class QueryEntropy(torch.nn.Module):
    """H(Z') with the estimator `config.entropy_estimator` ("coding_rate" or "gaussian")."""

    def __init__(self, estimator: str = "coding_rate", coding_rate_epsilon: float = 0.5, ridge: float = 1e-3):
        super().__init__()
        self.estimator, self.coding_rate_epsilon, self.ridge = estimator, coding_rate_epsilon, ridge

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=z.device.type, enabled=False):
            if self.estimator == "coding_rate":
                return coding_rate(z, self.coding_rate_epsilon)
            return gaussian_entropy(z, self.ridge)
