"""SAIB, the learnable transformation of the query view: identity at initialization, deterministic, its log|det J|
monitor against exact Jacobians, and its initialization kept out of the global random stream."""

import copy
import math

import pytest
import torch
from helpers import TINY_MODEL as TINY

from iecl_hf import IECLConfig, IECLForPreTraining
from iecl_hf.saib_iecl import SAIB, SAIB_LOGDET_IMAGES, saib_logdet


def perturbed(image_size=16, patch_size=4, dim=8, expansion=2, std=0.3, seed=0):
    """A SAIB whose zero-initialized `restore` is no longer zero, so it actually transforms."""
    saib = SAIB(image_size, patch_size, dim, expansion)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        saib.restore.weight.copy_(torch.randn(saib.restore.weight.shape, generator=g) * std)
        saib.restore.bias.copy_(torch.randn(saib.restore.bias.shape, generator=g) * std)
    return saib


def test_identity_at_initialization():
    saib = SAIB(16, patch_size=4, dim=8)
    images = torch.rand(4, 3, 16, 16)
    assert torch.equal(saib(images), images)
    assert saib_logdet(saib, images[:1]).item() == 0.0  # the identity adds no entropy
    # The zero-initialized last layer still receives a gradient, so training can leave the identity.
    (saib(images) * torch.randn_like(images)).sum().backward()
    assert saib.restore.weight.grad.abs().sum() > 0


def test_model_query_view_is_the_input_at_initialization():
    model = IECLForPreTraining(IECLConfig(**TINY))
    images = torch.rand(2, 3, 16, 16)
    view, difference = model.generate_view(images)
    assert torch.equal(view, images) and torch.equal(difference, torch.zeros_like(images))


def test_deterministic():
    saib = perturbed()
    images = torch.rand(4, 3, 16, 16)
    torch.manual_seed(1)
    first = saib(images)
    torch.manual_seed(2)  # another global random state: no noise inside SAIB
    second = saib(images)
    assert torch.equal(first, second)
    assert not torch.allclose(first, images)
    assert (first - images).abs().flatten(1).amax(dim=1).min() > 0  # every image transformed


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 3, 16, 16), (2, 3, 24, 20), (3, 3, 8, 8)])
def test_output_shape(shape):
    saib = perturbed()  # built for 16 px; other multiples of the patch size interpolate the position code
    output = saib(torch.rand(*shape))
    assert output.shape == shape and torch.isfinite(output).all()


@pytest.mark.parametrize("shape", [(1, 3, 18, 16), (1, 3, 16, 10), (1, 3, 7, 9)])
def test_image_size_not_divisible_by_the_patch_size_raises(shape):
    with pytest.raises(ValueError, match=r"saib_patch_size=4"):
        SAIB(16, patch_size=4, dim=8)(torch.rand(*shape))


def exact_patch_logdet(saib, image, row, column):
    """log|det| of d(output patch (row, column)) / d(input patch (row, column)), the other patches held fixed,
    by torch.autograd.functional.jacobian in float64."""
    p = saib.patch_size
    rows, columns = slice(row * p, (row + 1) * p), slice(column * p, (column + 1) * p)

    def patch_map(patch):
        full = image.clone()
        full[0, :, rows, columns] = patch.view(3, p, p)
        return saib(full)[0, :, rows, columns].reshape(-1)

    jacobian = torch.autograd.functional.jacobian(patch_map, image[0, :, rows, columns].reshape(-1))
    assert jacobian.shape == (3 * p * p, 3 * p * p)
    return torch.linalg.slogdet(jacobian)[1].item()


@pytest.mark.parametrize("seed", [0, 1])
def test_logdet_monitor_equals_exact_patch_jacobians(seed):
    saib = perturbed(image_size=8, patch_size=2, dim=4, expansion=2, std=0.5, seed=seed)
    with torch.no_grad():  # away from the identity in every layer, not only the last
        for parameter in saib.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(seed + 10)))
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed + 20))
    reference_saib = copy.deepcopy(saib).double()
    # The chosen patches: every other row and column of the 4 x 4 patch grid.
    chosen = [(r, c) for r in range(0, 4, 2) for c in range(0, 4, 2)]
    per_patch = [exact_patch_logdet(reference_saib, image.double(), r, c) for r, c in chosen]
    all_patches = [exact_patch_logdet(reference_saib, image.double(), r, c) for r in range(4) for c in range(4)]
    expected = sum(per_patch) / len(per_patch)
    assert abs(expected) > 1e-2  # a non-trivial transformation
    assert abs(sum(all_patches) / len(all_patches) - expected) > 1e-4  # the choice of patches matters
    assert saib_logdet(saib, image).item() == pytest.approx(expected, abs=1e-4, rel=1e-4)


def test_forward_reports_the_logdet_monitor_in_training_only():
    torch.manual_seed(0)
    model = IECLForPreTraining(IECLConfig(**TINY))
    with torch.no_grad():
        torch.nn.init.normal_(model.view_generator.restore.weight, std=0.05)
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    model.train()
    output = model(v1, v2)
    torch.testing.assert_close(output.saib_logdet, saib_logdet(model.view_generator, v2[:1]))
    assert output.saib_logdet != 0
    model.eval()
    assert model(v1, v2).saib_logdet is None


def test_the_logdet_of_several_images_is_the_mean_of_their_logdets():
    saib, images = perturbed(std=0.1), torch.rand(3, 3, 16, 16)
    each = torch.stack([saib_logdet(saib, image[None]) for image in images])
    torch.testing.assert_close(saib_logdet(saib, images), each.mean())


def test_the_logdet_is_differentiable_in_saibs_parameters():
    """The `lambda_saib_logdet` term trains SAIB through the forward-mode Jacobian: its gradient matches a central
    difference of the estimate along a random direction of `restore`'s weights."""
    saib, image = perturbed(std=0.1), torch.rand(1, 3, 16, 16)
    saib_logdet(saib, image).backward()
    direction = torch.randn_like(saib.restore.weight)
    step = 1e-3
    with torch.no_grad():
        saib.restore.weight += step * direction
        above = saib_logdet(saib, image)
        saib.restore.weight -= 2 * step * direction
        below = saib_logdet(saib, image)
    slope = ((above - below) / (2 * step)).item()
    assert abs(slope) > 1e-2
    assert (saib.restore.weight.grad * direction).sum().item() == pytest.approx(slope, rel=2e-2)


def test_the_logdet_term_trains_saib_only_and_enters_the_loss():
    """`lambda_saib_logdet`: loss = the paper's loss - weight * E log|det J| on SAIB_LOGDET_IMAGES query images; the
    encoder's gradient is unchanged and SAIB's changes by -weight * d(logdet)."""
    v1, v2 = torch.rand(6, 3, 16, 16), torch.rand(6, 3, 16, 16)
    gradients, outputs = [], []
    for weight in (0.0, 0.5):
        torch.manual_seed(0)
        model = IECLForPreTraining(IECLConfig(**TINY, lambda_saib_logdet=weight))
        with torch.no_grad():
            torch.nn.init.normal_(model.view_generator.restore.weight, std=0.05)
        model.train()
        torch.manual_seed(1)
        output = model(v1, v2)
        output.loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
        outputs.append(output)
    plain, with_term = outputs
    logdet = saib_logdet(model.view_generator, v2[:SAIB_LOGDET_IMAGES])
    torch.testing.assert_close(with_term.saib_logdet, logdet.detach())
    torch.testing.assert_close(with_term.loss, plain.loss - 0.5 * logdet.detach())
    model.zero_grad()
    logdet.backward()
    for name, parameter in model.named_parameters():
        if name.startswith("view_generator."):
            logdet_gradient = torch.zeros_like(parameter) if parameter.grad is None else parameter.grad  # restore.bias
            expected = gradients[0][name] - 0.5 * logdet_gradient
            torch.testing.assert_close(gradients[1][name], expected, rtol=1e-4, atol=1e-6)
        elif name in gradients[0]:
            torch.testing.assert_close(gradients[1][name], gradients[0][name])


def test_the_logdet_term_needs_saib():
    with pytest.raises(ValueError, match=r"lambda_saib_logdet=0\.1 .*generator_architecture='none' has no SAIB"):
        IECLConfig(**TINY, generator_architecture="none", lambda_saib_logdet=0.1)
    with pytest.raises(ValueError, match=r"IECLConfig\.lambda_saib_logdet must be >= 0"):
        IECLConfig(**TINY, lambda_saib_logdet=-1.0)


def test_gradients_reach_every_saib_parameter():
    saib = perturbed(std=0.1)
    output = saib(torch.rand(4, 3, 16, 16))
    (output * torch.randn_like(output)).sum().backward()
    for name, parameter in saib.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_generator_parameters_are_saibs():
    model = IECLForPreTraining(IECLConfig(**TINY))
    generator = model.generator_parameters()
    assert [id(p) for p in generator] == [id(p) for p in model.view_generator.parameters()]
    encoder = {id(p) for p in model.encoder_parameters()}
    assert not encoder & {id(p) for p in generator}
    assert len(encoder) + len(generator) == len(list(model.parameters()))
    assert IECLForPreTraining(IECLConfig(**TINY, generator_architecture="none")).generator_parameters() == []


# ------------------------------------------------------------------------------------------------ random stream


def build(seed, **kwargs):
    torch.manual_seed(seed)
    model = IECLForPreTraining(IECLConfig(**TINY, **kwargs))
    return model, torch.rand(8)


@pytest.mark.parametrize("framework", ["simclr", "moco"])
def test_saib_init_does_not_change_the_global_random_stream(framework):
    with_saib, after_with = build(0, framework=framework, moco_queue_size=16)
    without, after_without = build(
        0, framework=framework, moco_queue_size=16, generator_architecture="none", encoder_spectral_norm=False
    )
    assert with_saib.view_generator is not None and without.view_generator is None
    assert torch.equal(after_with, after_without)  # the next draws (e.g. the augmentations) are the same
    shared = without.state_dict()
    for name, value in with_saib.state_dict().items():
        if name.startswith(("view_generator.", "spectral_penalty.")):
            continue
        assert torch.equal(value, shared[name]), name  # backbone and head weights (and MoCo's queue) are equal
    assert {n for n in with_saib.state_dict() if n not in shared} == {
        n for n in with_saib.state_dict() if n.startswith(("view_generator.", "spectral_penalty."))
    }


def test_saib_weights_depend_only_on_the_seed():
    torch.manual_seed(0)
    first = SAIB(16, 4, 8)
    torch.rand(100)  # draws in between do not change SAIB's weights
    second = SAIB(16, 4, 8)
    torch.manual_seed(1)
    other = SAIB(16, 4, 8)
    for (name, a), b, c in zip(first.state_dict().items(), second.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b), name
        if name.startswith(("embed.", "expand.", "mix.", "reduce.", "position")):
            assert not torch.equal(a, c), name
    assert math.isclose(first.restore.weight.abs().sum().item(), 0.0)


def literal(dim=64, **kwargs):
    return SAIB(16, patch_size=4, dim=dim, third_skip="literal", **kwargs)


def test_the_literal_third_skip_starts_at_twice_the_image():
    """Skip 3 read literally: `P'` holds its own skip, so restore(embed(X)) = X and SAIB = 2X + restore(pos + W2 U);
    with the position code and W2 at zero, exactly 2X (Jacobian 2I: log|det| = 3 p^2 log 2 per patch)."""
    saib = literal()
    images = torch.rand(4, 3, 16, 16)
    start = saib(images)
    assert (start - 2 * images).abs().mean() < 0.5 * (start - images).abs().mean()  # about 2X, far from X
    with torch.no_grad():
        saib.position.zero_()
        saib.reduce.weight.zero_()
        saib.reduce.bias.zero_()
    torch.testing.assert_close(saib(images), 2 * images, atol=1e-5, rtol=0)
    assert math.isclose(saib_logdet(saib, images[:2]).item(), 48 * math.log(2), rel_tol=1e-4)
    # The residual reading of the same weights starts as the identity.
    assert torch.equal(SAIB(16, patch_size=4, dim=64)(images), images)


def test_the_literal_third_skip_draws_the_same_weights_and_nothing_more():
    torch.manual_seed(0)
    residual, after_residual = SAIB(16, 4, 64), torch.rand(4)
    torch.manual_seed(0)
    both, after_literal = literal(), torch.rand(4)
    assert torch.equal(after_residual, after_literal)  # no draw of the global stream (the paired benchmark)
    for name in ("embed.weight", "position", "expand.weight", "mix.weight", "reduce.weight", "reduce.bias"):
        assert torch.equal(residual.state_dict()[name], both.state_dict()[name]), name
    assert both.embed.bias.abs().sum() == 0 and both.restore.weight.abs().sum() > 0


def test_the_literal_third_skip_reaches_the_model_and_its_checkpoint(tmp_path):
    config = IECLConfig(**{**TINY, "saib_dim": 64}, saib_third_skip="literal")
    model = IECLForPreTraining(config)
    images = torch.rand(2, 3, 16, 16)
    view, _ = model.generate_view(images)
    assert (view - 2 * images).abs().mean() < 0.5 * (view - images).abs().mean()
    model.save_pretrained(tmp_path)
    loaded = IECLForPreTraining.from_pretrained(tmp_path)
    assert loaded.config.saib_third_skip == "literal"
    torch.testing.assert_close(loaded.generate_view(images)[0], view)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(saib_third_skip="literal", saib_dim=32), "needs saib_dim >= 48"),
        (dict(saib_third_skip="literal", saib_dim=8, saib_patch_size=2), "got saib_dim=8"),
        (dict(saib_third_skip="doubled"), "saib_third_skip='doubled' is not supported"),
    ],
)
def test_the_third_skip_is_checked_where_it_is_set(fields, message):
    with pytest.raises(ValueError, match=message):
        IECLConfig(**{**TINY, **fields})


def test_the_literal_third_skip_needs_no_width_without_saib():
    assert IECLConfig(**TINY, saib_third_skip="literal", generator_architecture="none").saib_dim == 8
