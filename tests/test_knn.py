"""Weighted kNN (iecl_hf.evaluation.knn) against a slow, obviously-correct implementation."""

import math

import pytest
import torch

from iecl_hf.evaluation import knn_accuracy, weighted_knn_predict


def slow_weighted_knn(train_features, train_labels, query_features, num_classes, k, temperature):
    """Per query: cosine similarity to every training point, sort, the k best vote exp(similarity / T)."""
    scores = torch.zeros(len(query_features), num_classes, dtype=torch.float64)
    for q, query in enumerate(query_features.double()):
        similarities = []
        for train, label in zip(train_features.double(), train_labels.tolist()):
            cosine = float(query @ train) / (float(query.norm()) * float(train.norm()))
            similarities.append((cosine, label))
        similarities.sort(key=lambda pair: pair[0], reverse=True)
        for cosine, label in similarities[:k]:
            scores[q, label] += math.exp(cosine / temperature)
    return scores


@pytest.mark.parametrize("k, temperature", [(1, 0.07), (5, 0.07), (20, 0.5), (200, 0.07)])
def test_matches_slow_reference(k, temperature):
    generator = torch.Generator().manual_seed(k)
    train = torch.randn(60, 8, generator=generator)
    labels = torch.randint(0, 4, (60,), generator=generator)
    query = torch.randn(25, 8, generator=generator)
    fast = weighted_knn_predict(train, labels, query, num_classes=4, k=k, temperature=temperature, chunk_size=7)
    slow = slow_weighted_knn(train, labels, query, 4, min(k, 60), temperature)
    torch.testing.assert_close(fast.double(), slow, rtol=1e-4, atol=1e-6)
    assert torch.equal(fast.argmax(1), slow.argmax(1))


def test_chunking_does_not_change_scores():
    generator = torch.Generator().manual_seed(0)
    train, labels = torch.randn(50, 6, generator=generator), torch.randint(0, 3, (50,), generator=generator)
    query = torch.randn(31, 6, generator=generator)
    one_chunk = weighted_knn_predict(train, labels, query, 3, k=10)
    small_chunks = weighted_knn_predict(train, labels, query, 3, k=10, chunk_size=4)
    torch.testing.assert_close(one_chunk, small_chunks)


def test_cosine_ignores_feature_scale_and_k1_is_nearest_neighbour():
    generator = torch.Generator().manual_seed(1)
    train, labels = torch.randn(40, 5, generator=generator), torch.randint(0, 5, (40,), generator=generator)
    query = torch.randn(10, 5, generator=generator)
    scaled = weighted_knn_predict(train * torch.rand(40, 1, generator=generator) * 10, labels, query * 3, 5, k=7)
    torch.testing.assert_close(scaled, weighted_knn_predict(train, labels, query, 5, k=7), rtol=1e-4, atol=1e-6)
    cosine = torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(train, dim=1).t()
    nearest_labels = labels[cosine.argmax(1)]
    assert torch.equal(weighted_knn_predict(train, labels, query, 5, k=1).argmax(1), nearest_labels)


def test_knn_accuracy_on_separable_clusters_and_label_noise():
    generator = torch.Generator().manual_seed(2)
    centres = torch.eye(4) * 10
    labels = torch.arange(4).repeat_interleave(30)
    train = centres[labels] + torch.randn(120, 4, generator=generator)
    test_labels = torch.arange(4).repeat_interleave(10)
    test = centres[test_labels] + torch.randn(40, 4, generator=generator)
    assert knn_accuracy(train, labels, test, test_labels, k=20) == 1.0
    # Wrong test labels on a quarter of the points: exactly that quarter is wrong.
    noisy = test_labels.clone()
    noisy[::4] = (noisy[::4] + 1) % 4
    assert knn_accuracy(train, labels, test, noisy, num_classes=4, k=20) == pytest.approx(0.75)
