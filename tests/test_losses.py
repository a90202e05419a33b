import math

import pytest
import torch

from iecl_hf.losses_iecl import nt_xent_loss


def nt_xent_reference(z1, z2, tau):
    """SimCLR's NT-Xent written out: for each of the 2N embeddings,
    -log(exp(s_pos / tau) / sum_{k != i} exp(s_ik / tau)).
    """
    views = [row / row.norm() for row in torch.cat([z1, z2]).double()]
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = 0.0
        for k in range(2 * n):
            if k != i:
                denominator = denominator + torch.exp(torch.dot(views[i], views[k]) / tau)
        total = total - torch.log(torch.exp(torch.dot(views[i], views[positive]) / tau) / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("n, dim, tau", [(2, 3, 0.2), (5, 8, 0.2), (8, 16, 0.5), (4, 4, 1.0)])
def test_equals_slow_reference(n, dim, tau):
    torch.manual_seed(n)
    z1 = torch.randn(n, dim, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(n, dim, dtype=torch.float64, requires_grad=True)
    loss = nt_xent_loss(z1.float(), z2.float(), tau)
    expected = nt_xent_reference(z1, z2, tau)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-5)
    # Same gradient as the reference: the loss is the right function, not just the right number.
    grads = torch.autograd.grad(loss, (z1, z2))
    expected_grads = torch.autograd.grad(expected, (z1, z2))
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, atol=1e-6, rtol=1e-4)


def test_pairing_matters():
    # Swapping the rows of one view breaks the positive pairs: the loss changes.
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    z2_aligned = z1 + 0.1 * z2
    assert nt_xent_loss(z1, z2_aligned, 0.2) < nt_xent_loss(z1, z2_aligned.flip(0), 0.2)


@pytest.mark.parametrize("n", [1, 4, 16])
@pytest.mark.parametrize("tau", [0.1, 0.2, 1.0])
def test_collapsed_embeddings_give_log_2n_minus_1(n, tau):
    z = torch.randn(1, 10).repeat(n, 1) * torch.rand(n, 1).add(0.5)  # same direction, any norm
    assert nt_xent_loss(z, z, tau).item() == pytest.approx(math.log(2 * n - 1), abs=1e-5)


def test_scale_invariant_inputs():
    torch.manual_seed(1)
    z1, z2 = torch.randn(4, 6), torch.randn(4, 6)
    torch.testing.assert_close(nt_xent_loss(z1, z2, 0.2), nt_xent_loss(3 * z1, 0.5 * z2, 0.2))


def test_without_a_process_group_the_gathering_loss_is_the_local_one():
    """A single process (no torch.distributed group, the CPU default): the gathering path neither fails nor
    duplicates rows; both paths give the reference loss."""
    assert not torch.distributed.is_initialized()
    torch.manual_seed(2)
    z1, z2 = torch.randn(4, 6), torch.randn(4, 6)
    expected = nt_xent_reference(z1, z2, 0.2).float()
    torch.testing.assert_close(nt_xent_loss(z1, z2, 0.2), expected)
    torch.testing.assert_close(nt_xent_loss(z1, z2, 0.2, gather_distributed=False), expected)


@pytest.mark.parametrize("this_rank", [0, 1, 2])
def test_a_rank_scores_its_own_rows_against_the_gathered_columns(this_rank, monkeypatch):
    """Rank r of 3 (gathering simulated): its loss is the mean of the global NT-Xent over its own 2n rows (its
    samples at offset r * n among the gathered ones), from a 2n x 2N logits matrix, not 2N x 2N."""
    import iecl_hf.losses_iecl as losses

    world, n, dim, tau = 3, 4, 8, 0.3
    torch.manual_seed(0)
    z1_all, z2_all = torch.randn(world * n, dim), torch.randn(world * n, dim)
    mine = slice(this_rank * n, (this_rank + 1) * n)
    calls = iter([z1_all, z2_all])

    def gather(local):  # the other ranks' rows around this rank's (normalized, as the loss gathers them)
        every = torch.nn.functional.normalize(next(calls), dim=1)
        torch.testing.assert_close(every[mine], local)
        return every

    monkeypatch.setattr(losses, "gather_with_grad", gather)
    monkeypatch.setattr(losses, "rank", lambda: this_rank)
    monkeypatch.setattr(losses, "with_global_value", lambda loss: loss)
    shapes, cross_entropy = [], torch.nn.functional.cross_entropy
    monkeypatch.setattr(
        losses.F,
        "cross_entropy",
        lambda logits, target: shapes.append(tuple(logits.shape)) or cross_entropy(logits, target),
    )
    local = losses.nt_xent_loss(z1_all[mine], z2_all[mine], tau)
    monkeypatch.undo()
    assert shapes == [(2 * n, 2 * world * n)]

    z = torch.nn.functional.normalize(torch.cat([z1_all, z2_all]), dim=1)
    logits = z @ z.t() / tau
    logits.fill_diagonal_(float("-inf"))
    total = world * n
    targets = torch.cat([torch.arange(total, 2 * total), torch.arange(total)])
    per_row = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    rows = torch.cat([torch.arange(total)[mine], torch.arange(total)[mine] + total])
    torch.testing.assert_close(local, per_row[rows].mean())
