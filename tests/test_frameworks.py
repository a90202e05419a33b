"""MoCo v2, BYOL and SimSiam heads: losses against slow references, exact EMA, the queue, reduction to the
plain frameworks with the IE-CL modules off, state kept by save/load, and 2 processes = 1 process for the queue."""

import json
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from helpers import TINY_MODEL as TINY

from iecl_hf import BASELINE_OVERRIDES, IECLConfig, IECLForPreTraining, IECLModel
from iecl_hf.frameworks_iecl import byol_loss, cosine_momentum, ema_update, infonce_with_queue
from iecl_hf.losses_iecl import nt_xent_loss
from iecl_hf.training.pretraining import LOGGED_TERMS


def perturb_saib(model, std=0.05):
    """SAIB starts as the exact identity (zero `restore`); move it away so that it transforms the query view."""
    with torch.no_grad():
        torch.nn.init.normal_(model.view_generator.restore.weight, std=std)


def slow_infonce(query, key, queue, tau):
    total = 0.0
    for i in range(len(query)):
        q, k = query[i] / query[i].norm(), key[i] / key[i].norm()
        logits = [float(q @ k) / tau] + [float(q @ queue[j]) / tau for j in range(len(queue))]
        total += -logits[0] + math.log(sum(math.exp(x) for x in logits))
    return total / len(query)


def test_moco_infonce_equals_slow_reference():
    g = torch.Generator().manual_seed(0)
    query, key = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    queue = F.normalize(torch.randn(10, 8, generator=g), dim=1)
    assert infonce_with_queue(query, key, queue, 0.2).item() == pytest.approx(
        slow_infonce(query, key, queue, 0.2), rel=1e-5
    )


def test_byol_loss_equals_slow_reference_and_is_zero_for_aligned_vectors():
    g = torch.Generator().manual_seed(0)
    p, t = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    slow = sum(2 - 2 * float(p[i] @ t[i]) / (float(p[i].norm()) * float(t[i].norm())) for i in range(5)) / 5
    assert byol_loss(p, t).item() == pytest.approx(slow, rel=1e-5)
    assert byol_loss(p, 3 * p).item() == pytest.approx(0.0, abs=1e-6)


def test_ema_update_is_exact_and_copies_buffers():
    torch.manual_seed(0)
    online, target = torch.nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4)
    with torch.no_grad():
        online.weight.normal_(), target.weight.normal_()
        online.running_mean.normal_()
    expected = target.weight.detach().clone() * 0.9 + online.weight.detach() * (1 - 0.9)
    ema_update(target, online, 0.9)
    torch.testing.assert_close(target.weight.detach(), expected, rtol=1e-6, atol=1e-7)  # up to float rounding
    assert torch.equal(target.running_mean, online.running_mean)


def test_cosine_momentum_schedule():
    assert cosine_momentum(0.99, 0.0) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 0.5) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 1.0) == pytest.approx(1.0)


def test_queue_enqueues_in_order_and_wraps_around():
    model = IECLForPreTraining(IECLConfig(**TINY, framework="moco", moco_queue_size=5))
    keys = F.normalize(torch.randn(6, 16), dim=1)
    model.head.enqueue(keys[:3])
    assert torch.allclose(model.head.queue[:3], keys[:3]) and int(model.head.queue_pointer) == 3
    model.head.enqueue(keys[3:])
    assert torch.allclose(model.head.queue[3:5], keys[3:5]) and torch.allclose(model.head.queue[0], keys[5])
    assert int(model.head.queue_pointer) == 1


def test_momentum_branch_starts_equal_and_follows_ema():
    model = IECLForPreTraining(IECLConfig(**TINY, framework="byol", momentum_base=0.9))
    for online, target in zip(model.iecl.backbone.parameters(), model.head.momentum_backbone.parameters()):
        assert torch.equal(online, target)
    with torch.no_grad():
        online = next(model.iecl.backbone.parameters())
        before = next(model.head.momentum_backbone.parameters()).clone()
        online.add_(1.0)
    model.update_momentum_encoder(progress=0.0)  # BYOL: momentum = momentum_base at the start
    assert torch.allclose(next(model.head.momentum_backbone.parameters()), 0.9 * before + 0.1 * online)


def plain_moco_loss(model, v1, v2):
    """MoCo v2, symmetrized, from the model's parts (no SAIB, no entropy terms, no spectral penalty)."""
    x = model.normalize(torch.cat([v1, v2]))
    q = model.head.projector(model.iecl(x).pooler_output)
    backbone = model.head.momentum_backbone
    with torch.no_grad():
        k = model.head.momentum_projector(backbone.forward_head(backbone.forward_features(x), pre_logits=True))
    n, queue = len(v1), model.head.queue.clone()
    return 0.5 * (
        infonce_with_queue(q[:n], k[n:], queue, model.config.tau)
        + infonce_with_queue(q[n:], k[:n], queue, model.config.tau)
    )


def plain_byol_loss(model, v1, v2):
    x = model.normalize(torch.cat([v1, v2]))
    p = model.head.predictor(model.head.projector(model.iecl(x).pooler_output))
    backbone = model.head.momentum_backbone
    with torch.no_grad():
        t = model.head.momentum_projector(backbone.forward_head(backbone.forward_features(x), pre_logits=True))
    n = len(v1)
    return byol_loss(p[:n], t[n:]) + byol_loss(p[n:], t[:n])


def plain_simsiam_loss(model, v1, v2):
    """SimSiam written out: the stop-gradient on the other view's projection is an explicit detach."""
    x = model.normalize(torch.cat([v1, v2]))
    z = model.head.projector(model.iecl(x).pooler_output)
    p = model.head.predictor(z)
    n = len(v1)

    def d(prediction, target):
        return -F.cosine_similarity(prediction, target.detach(), dim=1).mean()

    return 0.5 * (d(p[:n], z[n:]) + d(p[n:], z[:n]))


def test_simsiam_has_no_momentum_network_and_its_gradient_stops_at_the_target():
    config = IECLConfig(**TINY, framework="simsiam", **BASELINE_OVERRIDES)
    torch.manual_seed(0)
    model = IECLForPreTraining(config).eval()
    assert not hasattr(model.head, "momentum_backbone") and config.projection_output_batchnorm is True
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    loss = model(v1, v2).loss
    trained = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, trained)
    # Without the stop-gradient the projector's gradient differs: the reference check below can fail.
    x = model.normalize(torch.cat([v1, v2]))
    z = model.head.projector(model.iecl(x).pooler_output)
    p = model.head.predictor(z)
    no_stop = -0.5 * (F.cosine_similarity(p[:4], z[4:]).mean() + F.cosine_similarity(p[4:], z[:4]).mean())
    no_stop_grads = torch.autograd.grad(no_stop, trained)
    assert max((a - b).abs().max().item() for a, b in zip(grads, no_stop_grads)) > 1e-6


@pytest.mark.parametrize(
    "framework,reference",
    [("moco", plain_moco_loss), ("byol", plain_byol_loss), ("simsiam", plain_simsiam_loss)],
)
def test_with_iecl_modules_off_each_framework_is_its_plain_version(framework, reference):
    config = IECLConfig(**TINY, framework=framework, moco_queue_size=32, **BASELINE_OVERRIDES)
    torch.manual_seed(0)
    model = IECLForPreTraining(config)
    model.eval()  # BN running statistics: two forward passes see the same normalization
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    expected = reference(model, v1, v2)
    expected_grads = torch.autograd.grad(
        expected, [p for p in model.parameters() if p.requires_grad], allow_unused=True
    )
    output = model(v1, v2)
    assert model.view_generator is None and model.spectral_penalty is None
    assert output.spectral_penalty is None and output.saib_logdet is None
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    grads = torch.autograd.grad(output.loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    for got, want in zip(grads, expected_grads):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("framework", ["simclr", "moco", "byol", "simsiam"])
def test_iecl_modules_train_on_every_framework(framework):
    torch.manual_seed(0)
    model = IECLForPreTraining(IECLConfig(**TINY, framework=framework, moco_queue_size=32))
    perturb_saib(model)
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    query_view, difference = model.generate_view(v2)
    assert (query_view - v2).abs().amax(dim=(1, 2, 3)).min() > 0  # every image of the query view is transformed
    torch.testing.assert_close(difference, query_view - v2)
    output = model(v1, v2)
    output.loss.backward()
    for name in LOGGED_TERMS:
        assert torch.isfinite(getattr(output, name)), name
    assert output.kl_loss > 0  # SAIB moved the query projections away from the anchor ones
    for name, parameter in model.view_generator.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    if hasattr(model.head, "momentum_backbone"):
        assert all(p.grad is None for p in model.head.momentum_backbone.parameters())  # no gradient to the target
        assert all(p.grad is None for p in model.head.momentum_projector.parameters())


@pytest.mark.parametrize("framework", ["moco", "byol"])
def test_momentum_branch_sees_the_standard_views(framework):
    """SAIB transforms the online query view only: MoCo's keys and BYOL's targets come from the standard views."""
    torch.manual_seed(0)
    model = IECLForPreTraining(IECLConfig(**TINY, framework=framework, moco_queue_size=32))
    perturb_saib(model)
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    seen = []
    original = model.head.momentum_projections

    def spy(anchor_inputs, batch_size):
        outputs = original(anchor_inputs, batch_size)
        seen.append((anchor_inputs.detach().clone(), outputs.detach().clone()))
        return outputs

    model.head.momentum_projections = spy
    model(v1, v2)
    ((inputs, outputs),) = seen
    standard = model.normalize(torch.cat([v1, v2]))
    assert torch.equal(inputs, standard)
    torch.testing.assert_close(outputs, original(standard, 4), rtol=0, atol=0)
    # ... and not SAIB's view: with SAIB perturbed the two differ (the check above would catch the swap).
    with torch.no_grad():
        generated = model.normalize(torch.cat([v1, model.generate_view(v2)[0]]))
    assert not torch.allclose(original(generated, 4)[4:], outputs[4:])


def iecl_base_loss(model, v1, v2):
    """The framework's loss with SAIB's view on the online query branch and the standard views on the momentum one."""
    n = len(v1)
    online = model.normalize(torch.cat([v1, model.generate_view(v2)[0]]))
    projections = model.head.projector(model.iecl(online).pooler_output)
    targets = model.head.momentum_projections(model.normalize(torch.cat([v1, v2])), n)
    if model.config.framework == "moco":
        queue, tau = model.head.queue.clone(), model.config.tau
        return 0.5 * (
            infonce_with_queue(projections[:n], targets[n:], queue, tau)
            + infonce_with_queue(projections[n:], targets[:n], queue, tau)
        )
    predictions = model.head.predictor(projections)
    return byol_loss(predictions[:n], targets[n:]) + byol_loss(predictions[n:], targets[:n])


@pytest.mark.parametrize("framework", ["moco", "byol"])
def test_base_loss_with_saib_equals_reference(framework):
    torch.manual_seed(0)
    model = IECLForPreTraining(IECLConfig(**TINY, framework=framework, moco_queue_size=32))
    perturb_saib(model)
    model.eval()
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        expected = iecl_base_loss(model, v1, v2)
        output = model(v1, v2)
    assert output.base_loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("framework", ["simclr", "moco", "byol"])
def test_projection_output_batchnorm_normalizes_the_projections_of_every_framework(framework):
    torch.manual_seed(0)
    config = IECLConfig(**TINY, framework=framework, moco_queue_size=32, projection_output_batchnorm=True)
    model = IECLForPreTraining(config)
    model.train()
    projector = model.head.projector
    last_linear, output_norm = projector.layers[-2], projector.layers[-1]
    assert isinstance(output_norm, torch.nn.BatchNorm1d) and last_linear.bias is None
    projections = projector(torch.randn(16, model.iecl.num_features))
    # train mode, fresh affine (1, 0): every dimension has batch mean 0 and variance 1
    torch.testing.assert_close(projections.mean(0), torch.zeros(config.projection_dim), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        projections.var(0, unbiased=False), torch.ones(config.projection_dim), atol=1e-3, rtol=0
    )
    if framework != "simclr":  # the momentum projector is a copy of the online one
        assert isinstance(model.head.momentum_projector.layers[-1], torch.nn.BatchNorm1d)
    if framework == "byol":  # BYOL's predictor keeps its plain Linear output
        assert isinstance(model.head.predictor.layers[-1], torch.nn.Linear)
    output = model(torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16))
    output.loss.backward()
    assert torch.isfinite(output.loss) and output_norm.weight.grad.abs().sum() > 0
    plain_config = IECLConfig(**TINY, framework=framework, moco_queue_size=32, projection_output_batchnorm=False)
    plain = IECLForPreTraining(plain_config).head.projector
    assert isinstance(plain.layers[-1], torch.nn.Linear) and plain.layers[-1].bias is not None


@pytest.mark.parametrize(
    "framework, output_batchnorm, tau",
    [("simclr", True, 0.1), ("moco", False, 0.2), ("byol", False, 0.2), ("simsiam", True, 0.2)],
)
def test_unset_fields_take_the_frameworks_measured_values(framework, output_batchnorm, tau, tmp_path):
    config = IECLConfig(**TINY, framework=framework)
    assert config.projection_output_batchnorm is output_batchnorm and config.tau == tau
    model = IECLForPreTraining(config)
    assert isinstance(model.head.projector.layers[-1], torch.nn.BatchNorm1d) is output_batchnorm
    config.save_pretrained(tmp_path)  # the resolved values are saved: a later default cannot change a saved model
    saved = json.load(open(tmp_path / "config.json"))
    assert saved["projection_output_batchnorm"] is output_batchnorm and saved["tau"] == tau
    explicit = IECLConfig(**TINY, framework=framework, projection_output_batchnorm=not output_batchnorm, tau=0.5)
    assert explicit.tau == 0.5
    assert explicit.projection_output_batchnorm is (not output_batchnorm)  # a set value wins


@pytest.mark.parametrize("framework", ["moco", "byol"])
def test_framework_state_survives_save_and_load_but_not_in_the_encoder(framework, tmp_path):
    model = IECLForPreTraining(IECLConfig(**TINY, framework=framework, moco_queue_size=32))
    perturb_saib(model)
    model.train()
    model(torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16))  # MoCo: enqueue; the spectral vectors: a power iteration
    with torch.no_grad():
        next(model.iecl.backbone.parameters()).add_(0.5)
    model.update_momentum_encoder(0.3)
    model.save_pretrained(tmp_path)
    loaded = IECLForPreTraining.from_pretrained(tmp_path)
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert any(k.startswith("view_generator.") for k in state) and any(
        k.startswith("spectral_penalty.") for k in state
    )
    for name, value in state.items():
        assert torch.equal(value, loaded_state[name]), name
    encoder = IECLModel.from_pretrained(tmp_path)
    assert all(not key.startswith(("head", "view_generator", "spectral_penalty")) for key in encoder.state_dict())


WORLD_SIZE, BATCH = 2, 8


def moco_step(rows, v1, v2):
    # Full IE-CL (SAIB away from the identity, entropy, KL, spectral penalty): SAIB is deterministic and the entropy
    # terms read the gathered batch, so each process computes the loss of the whole batch.
    torch.manual_seed(0)
    model = IECLForPreTraining(IECLConfig(**TINY, framework="moco", moco_queue_size=3 * BATCH))
    perturb_saib(model)
    model.train()
    for module in model.modules():  # per-process BN statistics cannot equal the global ones: use running stats
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    output = model(v1[rows], v2[rows])
    return output.loss.detach(), model.head.queue.clone(), model.head.queue_pointer.clone()


def moco_worker(rank, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        g = torch.Generator().manual_seed(1)
        v1, v2 = torch.rand(BATCH, 3, 16, 16, generator=g), torch.rand(BATCH, 3, 16, 16, generator=g)
        half = BATCH // WORLD_SIZE
        torch.save(moco_step(slice(rank * half, (rank + 1) * half), v1, v2), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_moco_queue_matches_one_process(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(moco_worker, args=(port, str(tmp_path)), nprocs=WORLD_SIZE, join=True, start_method="fork")
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.rand(BATCH, 3, 16, 16, generator=g), torch.rand(BATCH, 3, 16, 16, generator=g)
    loss, queue, pointer = moco_step(slice(0, BATCH), v1, v2)
    assert int(pointer) == 2 * BATCH  # both views' keys
    # The gathered keys come rank by rank, each rank's first-view keys then its second-view keys (as the
    # reference's concat_all_gather of cat([k1, k2])): the same keys as one process, in that order.
    half = BATCH // WORLD_SIZE
    rank_order = torch.cat(
        [torch.arange(r * half, (r + 1) * half) + view * BATCH for r in range(WORLD_SIZE) for view in range(2)]
    )
    expected = torch.cat([queue[rank_order], queue[2 * BATCH :]])
    for rank in range(WORLD_SIZE):
        rank_loss, rank_queue, rank_pointer = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(rank_loss, loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rank_queue, expected, rtol=1e-5, atol=1e-6)
        assert int(rank_pointer) == int(pointer)


def batchnorm_batch_sizes(model, v1, v2):
    """The number of rows every BatchNorm call of one training forward normalizes over."""
    sizes = []
    hooks = [
        m.register_forward_pre_hook(lambda module, inputs: sizes.append(len(inputs[0])))
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    model(v1, v2)
    for hook in hooks:
        hook.remove()
    return set(sizes)


@pytest.mark.parametrize("framework", ["simclr", "moco", "byol"])
def test_batchnorm_per_view_normalizes_each_view_over_its_own_batch(framework):
    """`batchnorm_per_view`: every BatchNorm (encoder, projector, predictor, momentum branch) sees one view's B rows;
    by default the two views go through as one batch of 2B."""
    torch.manual_seed(0)
    joint = IECLForPreTraining(IECLConfig(**TINY, framework=framework, moco_queue_size=32))
    per_view = IECLForPreTraining(IECLConfig(**TINY, framework=framework, moco_queue_size=32, batchnorm_per_view=True))
    per_view.load_state_dict(joint.state_dict())
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    assert batchnorm_batch_sizes(per_view, v1, v2) == {4}
    assert batchnorm_batch_sizes(joint, v1, v2) == {8}
    # Evaluation mode normalizes with the running statistics: the two settings are the same function there.
    per_view.load_state_dict(joint.state_dict())
    joint.eval(), per_view.eval()
    with torch.no_grad():
        assert joint(v1, v2).base_loss.item() == pytest.approx(per_view(v1, v2).base_loss.item(), rel=1e-6)


def test_moco_batchnorm_groups_shuffle_the_keys_and_keep_their_rows():
    """Shuffle BN on one device: every BatchNorm sees 2B / groups rows; the online branch's groups are in order, the
    key branch's are a random permutation of the rows, and each key still belongs to its own row."""
    torch.manual_seed(0)
    config = IECLConfig(**TINY, framework="moco", moco_queue_size=32, moco_batchnorm_groups=4)
    model = IECLForPreTraining(config)
    v1, v2 = torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16)
    assert batchnorm_batch_sizes(model, v1, v2) == {4}
    head, rows = model.head, model.normalize(torch.cat([v1, v2]))
    torch.manual_seed(1)
    keys = head.momentum_projections(rows, 8)
    torch.manual_seed(1)
    order = torch.randperm(16)
    assert not torch.equal(order, torch.arange(16))
    with torch.no_grad():
        for group in order.chunk(4):  # each key: the momentum branch on its shuffled group of 4 rows
            torch.testing.assert_close(keys[group], head.momentum_branch(rows[group]), rtol=1e-5, atol=1e-6)
        unshuffled = torch.cat([head.momentum_branch(group) for group in rows.chunk(4)])
    assert not torch.allclose(keys, unshuffled, atol=1e-3)  # the groups differ from the in-order ones
    # In evaluation mode BatchNorm uses its running statistics: grouping and shuffling change nothing.
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            head.momentum_projections(rows, 8), head.momentum_branch(rows), rtol=1e-5, atol=1e-6
        )


def test_batchnorm_groups_of_uneven_rows_all_have_two_or_more():
    """5 images give 10 rows: 4 Shuffle BN groups of 3, 3, 2, 2 rows (equal chunks would leave a group of 1, which
    BatchNorm refuses in training)."""
    torch.manual_seed(0)
    model = IECLForPreTraining(IECLConfig(**TINY, framework="moco", moco_queue_size=32, moco_batchnorm_groups=4))
    v1, v2 = torch.rand(5, 3, 16, 16), torch.rand(5, 3, 16, 16)
    assert batchnorm_batch_sizes(model, v1, v2) == {2, 3}
    assert torch.isfinite(model(v1, v2).loss)


def test_moco_per_view_keys_are_not_shuffled():
    """`batchnorm_per_view` on MoCo: the key branch normalizes each view's rows in order (Shuffle BN is only
    `moco_batchnorm_groups`)."""
    torch.manual_seed(0)
    model = IECLForPreTraining(IECLConfig(**TINY, framework="moco", moco_queue_size=32, batchnorm_per_view=True))
    rows = model.normalize(torch.rand(8, 3, 16, 16))
    with torch.no_grad():
        expected = torch.cat([model.head.momentum_branch(rows[:4]), model.head.momentum_branch(rows[4:])])
        torch.testing.assert_close(model.head.momentum_projections(rows, 4), expected, rtol=1e-5, atol=1e-6)


def test_moco_enqueues_the_keys_of_both_views():
    torch.manual_seed(0)
    model = IECLForPreTraining(IECLConfig(**TINY, framework="moco", moco_queue_size=32))
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    model(v1, v2)
    assert int(model.head.queue_pointer) == 8
    with torch.no_grad():
        keys = model.head.momentum_branch(model.normalize(torch.cat([v1, v2])))
    torch.testing.assert_close(model.head.queue[:8], torch.nn.functional.normalize(keys, dim=1), rtol=1e-5, atol=1e-6)


def test_moco_batchnorm_groups_and_per_view_exclude_each_other():
    with pytest.raises(ValueError, match="choose one"):
        IECLConfig(**TINY, framework="moco", moco_batchnorm_groups=2, batchnorm_per_view=True)
    with pytest.raises(ValueError, match="moco_batchnorm_groups must be a positive integer"):
        IECLConfig(**TINY, framework="moco", moco_batchnorm_groups=0)


def test_batchnorm_per_view_simclr_loss_equals_two_separate_forwards():
    """lightly's SimCLR loop: each view through encoder and projector on its own, then NT-Xent over both."""
    torch.manual_seed(0)
    model = IECLForPreTraining(IECLConfig(**TINY, batchnorm_per_view=True))  # SAIB is the identity at initialization
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    z1, z2 = (model.head.projector(model.iecl(model.normalize(v)).pooler_output) for v in (v1, v2))
    expected = nt_xent_loss(z1, z2, model.config.tau)
    output = model(v1, v2)
    assert output.base_loss.item() == pytest.approx(expected.item(), rel=1e-6)
    joint_loss = nt_xent_loss(
        *model.head.projector(model.iecl(model.normalize(torch.cat([v1, v2]))).pooler_output).chunk(2),
        model.config.tau,
    )
    assert abs(joint_loss.item() - expected.item()) > 1e-4  # the check above tells the two apart
