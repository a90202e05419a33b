import math

import pytest
import torch

from iecl_hf.entropy_iecl import BatchEntropy, logdet_entropy, pixel_features, renyi2_entropy, uniformity_entropy


# Slow references: explicit loops, float64, nothing shared with the implementation.
def _unit_rows(u):
    rows = []
    for row in u.double():
        norm = math.sqrt(sum(float(v) ** 2 for v in row))
        rows.append([float(v) / norm for v in row])
    return rows


def _sq_dist(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b))


def renyi2_reference(u, kernel):
    rows = [[float(v) for v in row] for row in u.double().flatten(1)]
    b = len(rows)
    if kernel == "cosine":
        unit = _unit_rows(u.flatten(1))
        gram = [[sum(x * y for x, y in zip(unit[i], unit[j])) for j in range(b)] for i in range(b)]
    else:
        dist = [[_sq_dist(rows[i], rows[j]) for j in range(b)] for i in range(b)]
        off = sorted(dist[i][j] for i in range(b) for j in range(b) if i != j)
        sigma_sq = off[(len(off) - 1) // 2]  # the lower median, like torch.median
        gram = [[math.exp(-dist[i][j] / (2 * sigma_sq)) for j in range(b)] for i in range(b)]
    trace = sum(gram[i][i] for i in range(b))
    return -math.log(sum((gram[i][j] / trace) ** 2 for i in range(b) for j in range(b)))


def logdet_reference(u, epsilon):
    """1/2 logdet(I_d + d/(B eps^2) Z^T Z): the d x d form (the implementation uses the B x B one)."""
    z = _unit_rows(u)
    b, d = len(z), len(z[0])
    scale = d / (b * epsilon**2)
    cov = [[sum(z[k][i] * z[k][j] for k in range(b)) for j in range(d)] for i in range(d)]
    matrix = torch.tensor([[float(i == j) + scale * cov[i][j] for j in range(d)] for i in range(d)], dtype=torch.float64)
    # logdet of a symmetric positive-definite matrix: 2 * sum log diag of its Cholesky factor.
    chol = torch.linalg.cholesky(matrix)
    return 0.5 * 2 * sum(math.log(float(chol[i, i])) for i in range(d))


def uniformity_reference(u, t):
    z = _unit_rows(u)
    b = len(z)
    total = sum(math.exp(-t * _sq_dist(z[i], z[j])) for i in range(b) for j in range(b))
    return -math.log(total / b**2)


@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
def test_renyi2_is_zero_for_identical_rows(kernel):
    u = torch.randn(1, 10).repeat(6, 1)
    assert renyi2_entropy(u, kernel).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("batch", [2, 5, 16])
def test_renyi2_is_log_batch_for_orthogonal_rows(batch):
    u = torch.eye(batch, 20) * torch.rand(batch, 1).add(0.5)  # orthogonal rows of different norms
    assert renyi2_entropy(u, "cosine").item() == pytest.approx(math.log(batch), abs=1e-5)


def test_renyi2_gaussian_kernel_on_equidistant_rows():
    # One-hot rows: every pairwise squared distance is 2 = sigma^2, so K_ij = exp(-1/2) off the diagonal.
    batch = 6
    u = torch.eye(batch)
    expected = -math.log((batch + batch * (batch - 1) * math.exp(-1.0)) / batch**2)
    assert renyi2_entropy(u, "gaussian").item() == pytest.approx(expected, abs=1e-5)


def test_renyi2_stays_in_range():
    torch.manual_seed(0)
    for batch in (3, 8, 32):
        value = renyi2_entropy(torch.randn(batch, 7), "cosine").item()
        assert -1e-6 <= value <= math.log(batch) + 1e-6


@pytest.mark.parametrize(
    "estimator", [lambda u: renyi2_entropy(u, "cosine"), lambda u: renyi2_entropy(u, "gaussian"), logdet_entropy, uniformity_entropy]
)
def test_invariant_to_row_order(estimator):
    torch.manual_seed(1)
    u = torch.randn(9, 12)
    permuted = u[torch.randperm(9)]
    assert not torch.equal(u, permuted)
    torch.testing.assert_close(estimator(permuted), estimator(u), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
def test_renyi2_equals_reference(kernel):
    torch.manual_seed(2)
    u = torch.randn(7, 3, 2, 2)  # image-shaped input is flattened
    assert renyi2_entropy(u, kernel).item() == pytest.approx(renyi2_reference(u, kernel), abs=1e-5)


@pytest.mark.parametrize("shape, epsilon", [((6, 4), 0.5), ((5, 9), 0.5), ((8, 3), 0.2)])
def test_logdet_equals_reference(shape, epsilon):
    torch.manual_seed(3)
    u = torch.randn(*shape) * 3
    assert logdet_entropy(u, epsilon).item() == pytest.approx(logdet_reference(u, epsilon), rel=1e-5, abs=1e-5)


def test_logdet_collapsed_rows():
    d, epsilon = 10, 0.5
    u = torch.randn(1, d).repeat(4, 1)
    # Z^T Z has one eigenvalue B: 1/2 log(1 + d / eps^2).
    assert logdet_entropy(u, epsilon).item() == pytest.approx(0.5 * math.log(1 + d / epsilon**2), rel=1e-5)


@pytest.mark.parametrize("t", [0.5, 2.0])
def test_uniformity_equals_reference(t):
    torch.manual_seed(4)
    u = torch.randn(7, 5)
    assert uniformity_entropy(u, t).item() == pytest.approx(uniformity_reference(u, t), abs=1e-5)


def test_uniformity_is_zero_when_collapsed():
    assert uniformity_entropy(torch.ones(5, 3)).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("estimator", ["renyi2", "logdet", "uniformity"])
@pytest.mark.parametrize("kernel", ["cosine", "gaussian"])
def test_batch_entropy_is_float32_under_bf16_autocast(estimator, kernel):
    torch.manual_seed(5)
    u, weight = torch.randn(8, 16), torch.randn(32, 16)
    module = BatchEntropy(estimator, kernel)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = torch.nn.functional.linear(u, weight)  # what an encoder under autocast hands over
        assert features.dtype == torch.bfloat16
        value = module(features)
    assert value.dtype == torch.float32
    # Not merely cast at the end: the estimator itself ran in float32 on the bf16 features.
    torch.testing.assert_close(value, module(features.float()), atol=1e-6, rtol=1e-6)


def test_batch_entropy_dispatches_to_its_estimator():
    torch.manual_seed(6)
    u = torch.randn(6, 5)
    torch.testing.assert_close(BatchEntropy("renyi2", "gaussian")(u), renyi2_entropy(u, "gaussian"))
    torch.testing.assert_close(BatchEntropy("logdet", logdet_epsilon=0.3)(u), logdet_entropy(u, 0.3))
    torch.testing.assert_close(BatchEntropy("uniformity", uniformity_t=0.7)(u), uniformity_entropy(u, 0.7))


def test_pixel_features_pools_large_images_only():
    images = torch.rand(2, 3, 64, 48)
    pooled = pixel_features(images, max_size=32)
    assert pooled.shape == (2, 3 * 32 * 32)
    torch.testing.assert_close(pooled, torch.nn.functional.adaptive_avg_pool2d(images, (32, 32)).flatten(1))
    small = torch.rand(2, 3, 16, 16)
    assert torch.equal(pixel_features(small, max_size=32), small.flatten(1))
