"""Weighted kNN classifier on cosine similarity (Wu et al. 2018, as used by SimCLR/DINO evaluations)."""

import torch
import torch.nn.functional as F

from .metrics import top_k_accuracy


@torch.no_grad()
def weighted_knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores (N_query, num_classes): each of the k nearest neighbours votes exp(cos / temperature)."""
    train = F.normalize(train_features.float(), dim=1)
    k = min(k, train.shape[0])
    scores = []
    for start in range(0, query_features.shape[0], chunk_size):
        query = F.normalize(query_features[start : start + chunk_size].float().to(train.device), dim=1)
        similarity, index = (query @ train.t()).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        votes = torch.zeros(query.shape[0], num_classes, device=train.device)
        votes.scatter_add_(1, train_labels.to(train.device)[index], weights)
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(
    train_features, train_labels, test_features, test_labels, num_classes=None, k=20, temperature=0.07
) -> float:
    """Top-1 accuracy (0-1) of the weighted kNN classifier."""
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max()).item()) + 1
    scores = weighted_knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return top_k_accuracy(scores, test_labels)["top1"]
