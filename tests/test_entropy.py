"""The entropy estimators of H(Z') (coding rate, Gaussian) and the Gaussian KL(p_phi || q), against slow references."""

import math

import pytest
import torch

from iecl_hf.entropy_iecl import QueryEntropy, coding_rate, gaussian_entropy, gaussian_kl


# Slow references: explicit loops, float64, nothing shared with the implementation.
def _unit_rows(u):
    rows = []
    for row in u.double().flatten(1):
        norm = math.sqrt(sum(float(v) ** 2 for v in row))
        rows.append([float(v) / norm for v in row])
    return rows


def coding_rate_reference(u, epsilon):
    """1/(2d) logdet(I_d + d/(B eps^2) Z^T Z): the d x d form (the implementation uses the B x B one)."""
    z = _unit_rows(u)
    b, d = len(z), len(z[0])
    scale = d / (b * epsilon**2)
    cov = [[sum(z[k][i] * z[k][j] for k in range(b)) for j in range(d)] for i in range(d)]
    matrix = torch.tensor(
        [[float(i == j) + scale * cov[i][j] for j in range(d)] for i in range(d)], dtype=torch.float64
    )
    chol = torch.linalg.cholesky(matrix)  # logdet of an SPD matrix: 2 sum log diag of its Cholesky factor
    return 0.5 * 2 * sum(math.log(float(chol[i, i])) for i in range(d)) / d


def diagonal_kl_reference(query, anchor, ridge):
    """Per-dimension KL of the diagonal Gaussians, one dimension at a time, averaged over the dimensions."""
    q, a = _unit_rows(query), _unit_rows(anchor)
    b, d = len(q), len(q[0])
    total = 0.0
    for i in range(d):
        mean_q = sum(row[i] for row in q) / b
        mean_a = sum(row[i] for row in a) / b
        var_q = sum((row[i] - mean_q) ** 2 for row in q) / (b - 1) + ridge
        var_a = sum((row[i] - mean_a) ** 2 for row in a) / (b - 1) + ridge
        total += 0.5 * (var_q / var_a - 1 + math.log(var_a / var_q) + (mean_a - mean_q) ** 2 / var_a)
    return total / d


def fitted_gaussian(u, ridge):
    """torch.distributions' Gaussian with the mean and (unbiased, ridge-added) covariance of the L2-normalized rows."""
    z = torch.nn.functional.normalize(u.double().flatten(1), dim=1)
    covariance = torch.cov(z.t()) + ridge * torch.eye(z.shape[1], dtype=torch.float64)
    return torch.distributions.MultivariateNormal(z.mean(dim=0), covariance_matrix=covariance)


def spread_batch(scale, batch=16, dim=12, seed=0):
    """Rows around one direction; `scale` sets how far they spread."""
    g = torch.Generator().manual_seed(seed)
    center, noise = torch.randn(1, dim, generator=g), torch.randn(batch, dim, generator=g)
    return center + scale * noise


# ------------------------------------------------------------------------------------------------ coding rate


def test_coding_rate_of_identical_rows_is_its_minimum():
    # The documented behaviour (uncentred rate: one direction costs log(1 + d/eps^2) / (2d)).
    u = torch.randn(1, 10).repeat(6, 1)
    assert coding_rate(u, epsilon=0.5).item() == pytest.approx(0.5 * math.log(1 + 10 / 0.25) / 10, rel=1e-5)


def test_coding_rate_grows_with_spread():
    values = [coding_rate(spread_batch(scale)).item() for scale in (0.0, 0.05, 0.2, 0.5, 1.0, 3.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values


@pytest.mark.parametrize("estimator", [coding_rate, gaussian_entropy])
def test_invariant_to_row_scaling(estimator):
    torch.manual_seed(1)
    u = torch.randn(9, 12)
    scales = torch.rand(9, 1) * 10 + 0.1  # a different positive scale per row
    torch.testing.assert_close(estimator(u * scales), estimator(u), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("estimator", [coding_rate, gaussian_entropy])
def test_invariant_to_row_order(estimator):
    torch.manual_seed(2)
    u = torch.randn(9, 12)
    permuted = u[torch.randperm(9)]
    assert not torch.equal(u, permuted)
    torch.testing.assert_close(estimator(permuted), estimator(u), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape, epsilon", [((6, 4), 0.5), ((5, 9), 0.5), ((8, 3), 0.2), ((4, 2, 3), 1.0)])
def test_coding_rate_equals_reference(shape, epsilon):
    torch.manual_seed(3)
    u = torch.randn(*shape) * 3  # image-shaped input is flattened
    assert coding_rate(u, epsilon).item() == pytest.approx(coding_rate_reference(u, epsilon), rel=1e-5, abs=1e-6)


def test_coding_rate_is_largest_for_orthogonal_rows():
    # d orthogonal directions: Z Z^T = I, so 1/(2d) * B log(1 + d/(B eps^2)) with B = d.
    d, epsilon = 8, 0.5
    u = torch.eye(d) * torch.rand(d, 1).add(0.5)
    expected = 0.5 * d * math.log(1 + 1 / epsilon**2) / d
    assert coding_rate(u, epsilon).item() == pytest.approx(expected, rel=1e-5)
    assert coding_rate(spread_batch(1.0, batch=d, dim=d), epsilon).item() < expected


# ------------------------------------------------------------------------------------------------ Gaussian entropy


def test_gaussian_entropy_matches_the_closed_form_of_a_known_gaussian():
    """Rows c e_1 + y, y ~ N(0, diag(s^2)) on the other d - 1 coordinates, c >> |y|: after the L2 normalization
    they are N(e_1, diag(0, s^2 / c^2)) up to O(|y|^2 / c^2), so the entropy is the closed form
    1/(2d) sum_i log(2 pi e (sigma_i^2 + ridge))."""
    g = torch.Generator().manual_seed(0)
    batch, d, c, ridge = 20_000, 8, 1000.0, 1e-9
    s = torch.linspace(0.5, 2.0, d - 1, dtype=torch.float64)
    rows = torch.cat(
        [
            torch.full((batch, 1), c, dtype=torch.float64),
            torch.randn(batch, d - 1, generator=g, dtype=torch.float64) * s,
        ],
        dim=1,
    )
    variances = torch.cat([torch.zeros(1, dtype=torch.float64), s**2 / c**2])
    expected = 0.5 * torch.log(2 * math.pi * math.e * (variances + ridge)).mean().item()
    assert gaussian_entropy(rows, ridge).item() == pytest.approx(expected, abs=5e-3)


def test_gaussian_entropy_equals_torch_distributions():
    torch.manual_seed(4)
    u, ridge = torch.randn(40, 6), 1e-3
    expected = fitted_gaussian(u, ridge).entropy().item() / 6
    assert gaussian_entropy(u, ridge).item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_gaussian_entropy_grows_with_spread_and_stays_finite_when_collapsed():
    values = [gaussian_entropy(spread_batch(scale, batch=32, dim=8)).item() for scale in (0.0, 0.05, 0.2, 0.5, 1.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    # Collapsed: the ridge alone, 1/2 log(2 pi e ridge).
    assert values[0] == pytest.approx(0.5 * math.log(2 * math.pi * math.e * 1e-3), abs=1e-4)


# ------------------------------------------------------------------------------------------------ Gaussian KL


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_kl_of_a_batch_to_itself_is_zero(covariance):
    torch.manual_seed(5)
    u = torch.randn(32, 8)
    assert gaussian_kl(u, u, covariance).item() == pytest.approx(0.0, abs=1e-5)
    assert gaussian_kl(u, u * torch.rand(32, 1).add(0.5), covariance).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_kl_is_positive_for_shifted_or_scaled_batches(covariance):
    anchor = spread_batch(0.3, batch=32, dim=8)
    center = anchor.mean(dim=0, keepdim=True)
    shifted = anchor + 0.3 * torch.randn(1, 8, generator=torch.Generator().manual_seed(9))
    scaled = center + 2.0 * (anchor - center)  # the same rows, spread twice as far around their mean
    for query in (shifted, scaled):
        assert gaussian_kl(query, anchor, covariance).item() > 1e-2
    # Further apart, larger.
    assert gaussian_kl(center + 3.0 * (anchor - center), anchor, covariance) > gaussian_kl(scaled, anchor, covariance)


@pytest.mark.parametrize("ridge", [1e-3, 1e-1])
def test_diagonal_kl_equals_per_dimension_reference(ridge):
    torch.manual_seed(6)
    query, anchor = torch.randn(12, 5) + 0.5, torch.randn(12, 5)
    expected = diagonal_kl_reference(query, anchor, ridge)
    assert gaussian_kl(query, anchor, "diagonal", ridge).item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("batch, ridge", [(64, 1e-3), (6, 1e-3), (32, 1e-1)])  # batch 6 < d: the ridge keeps it finite
def test_full_kl_equals_torch_distributions(batch, ridge):
    torch.manual_seed(7)
    d = 10
    query, anchor = torch.randn(batch, d) + 0.3, torch.randn(batch, d)
    expected = (
        torch.distributions.kl_divergence(fitted_gaussian(query, ridge), fitted_gaussian(anchor, ridge)).item() / d
    )
    assert gaussian_kl(query, anchor, "full", ridge).item() == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_kl_is_not_symmetric_and_full_differs_from_diagonal_on_correlated_data():
    torch.manual_seed(8)
    base = torch.randn(64, 1)
    correlated = torch.cat(
        [base, base + 0.1 * torch.randn(64, 1), torch.randn(64, 4)], dim=1
    )  # two dims move together
    independent = torch.randn(64, 6)
    forward, backward = gaussian_kl(correlated, independent, "full"), gaussian_kl(independent, correlated, "full")
    assert abs(forward.item() - backward.item()) > 1e-3
    assert (
        abs(
            gaussian_kl(independent, correlated, "full").item()
            - gaussian_kl(independent, correlated, "diagonal").item()
        )
        > 1e-2
    )


# ------------------------------------------------------------------------------------------------ gradients, dtype


@pytest.mark.parametrize("name", ["coding_rate", "gaussian", "kl_diagonal", "kl_full"])
@pytest.mark.parametrize("collapsed", [False, True])
def test_gradients_are_finite(name, collapsed):
    torch.manual_seed(9)
    u = (torch.randn(1, 16).repeat(8, 1) if collapsed else torch.randn(8, 16)).requires_grad_(True)
    anchor = torch.randn(8, 16)
    value = {
        "coding_rate": lambda: coding_rate(u),
        "gaussian": lambda: gaussian_entropy(u),
        "kl_diagonal": lambda: gaussian_kl(u, anchor, "diagonal"),
        "kl_full": lambda: gaussian_kl(u, anchor, "full"),
    }[name]()
    (grad,) = torch.autograd.grad(value, u)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    if not collapsed:
        assert grad.abs().sum() > 0


def test_kl_gradient_reaches_only_the_query_when_the_anchor_is_detached():
    torch.manual_seed(10)
    query, anchor = torch.randn(8, 6, requires_grad=True), torch.randn(8, 6, requires_grad=True)
    gaussian_kl(query, anchor.detach()).backward()
    assert query.grad.abs().sum() > 0 and anchor.grad is None


@pytest.mark.parametrize("estimator", ["coding_rate", "gaussian"])
def test_query_entropy_is_float32_under_bf16_autocast(estimator):
    torch.manual_seed(11)
    u, weight = torch.randn(8, 16), torch.randn(32, 16)
    module = QueryEntropy(estimator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = torch.nn.functional.linear(u, weight)  # what a projector under autocast hands over
        assert features.dtype == torch.bfloat16
        value = module(features)
    assert value.dtype == torch.float32
    # Not merely cast at the end: the estimator itself ran in float32 on the bf16 features.
    torch.testing.assert_close(value, module(features.float()), atol=1e-6, rtol=1e-6)


def test_query_entropy_dispatches_to_its_estimator():
    torch.manual_seed(12)
    u = torch.randn(6, 5)
    torch.testing.assert_close(QueryEntropy("coding_rate", coding_rate_epsilon=0.3)(u), coding_rate(u, 0.3))
    torch.testing.assert_close(QueryEntropy("gaussian", ridge=0.05)(u), gaussian_entropy(u, 0.05))
