import pytest
import torch

from iecl_hf.view_generator_iecl import ViewGenerator


def randomized(epsilon=0.05, std=0.5, seed=0, **kwargs):
    """A generator whose last conv is no longer zero, so it actually perturbs."""
    torch.manual_seed(seed)
    generator = ViewGenerator(epsilon, **kwargs)
    with torch.no_grad():
        torch.nn.init.normal_(generator.to_delta.weight, std=std)
        torch.nn.init.normal_(generator.to_delta.bias, std=std)
    return generator


def per_image_mean_abs(delta):
    return delta.abs().flatten(1).mean(dim=1)


def test_identity_at_initialization():
    torch.manual_seed(0)
    generator = ViewGenerator(0.05, width=8, num_blocks=2)
    images = torch.rand(4, 3, 16, 16)
    output, delta = generator(images)
    assert torch.equal(output, images)
    assert torch.equal(delta, torch.zeros_like(images))
    # The zero-initialized last layer still receives a gradient, so training can leave the identity.
    (output * torch.randn_like(output)).sum().backward()
    assert generator.to_delta.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("epsilon, std", [(0.05, 0.5), (0.05, 5.0), (0.2, 1.0), (0.01, 0.05)])
def test_within_budget_and_in_range(epsilon, std):
    generator = randomized(epsilon, std, width=8)
    images = torch.rand(6, 3, 16, 16)
    images[0] = 0.0  # saturated images: the clamp must keep them in [0, 1]
    images[1] = 1.0
    output, delta = generator(images)
    assert per_image_mean_abs(delta).max().item() <= epsilon + 1e-6
    assert per_image_mean_abs(output - images).max().item() <= epsilon + 1e-6
    assert output.min().item() >= 0.0 and output.max().item() <= 1.0
    assert per_image_mean_abs(output - images).min().item() > 0  # it does perturb every image


def test_budget_is_binding_for_large_deltas():
    epsilon = 0.05
    generator = randomized(epsilon, std=5.0, width=8)
    _, delta = generator(torch.rand(4, 3, 16, 16))
    torch.testing.assert_close(per_image_mean_abs(delta), torch.full((4,), epsilon), atol=1e-6, rtol=1e-5)


def test_deltas_under_budget_are_left_unscaled():
    generator = randomized(0.05, std=1e-3, width=8)
    images = torch.rand(4, 3, 16, 16)
    torch.manual_seed(1)
    delta_small_budget = generator.perturbation(images)
    assert per_image_mean_abs(delta_small_budget).max() < 0.05
    generator.epsilon = 1e6
    torch.manual_seed(1)
    assert torch.equal(generator.perturbation(images), delta_small_budget)


def test_two_calls_on_the_same_input_differ():
    generator = randomized(0.05, std=0.5, width=8)
    images = torch.rand(4, 3, 16, 16)
    first, _ = generator(images)
    second, _ = generator(images)
    assert not torch.allclose(first, second)
    # ... and the difference is per image, not a global shift: every image changed.
    assert (per_image_mean_abs(first - second) > 0).all()


def test_same_noise_gives_same_view():
    generator = randomized(0.05, std=0.5, width=8)
    images = torch.rand(4, 3, 16, 16)
    torch.manual_seed(7)
    first, _ = generator(images)
    torch.manual_seed(7)
    second, _ = generator(images)
    assert torch.equal(first, second)


def test_budget_scale_zero_is_identity():
    generator = randomized(0.05, std=5.0, width=8)
    generator.budget_scale = 0.0
    images = torch.rand(4, 3, 16, 16)
    output, delta = generator(images)
    assert torch.equal(output, images)
    assert torch.equal(delta, torch.zeros_like(images))


def test_budget_scale_shrinks_the_budget():
    generator = randomized(0.05, std=5.0, width=8)
    generator.budget_scale = 0.4
    images = torch.rand(4, 3, 16, 16)
    _, delta = generator(images)
    torch.testing.assert_close(per_image_mean_abs(delta), torch.full((4,), 0.02), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (2, 3, 24, 20), (1, 3, 7, 9)])
def test_resolution_agnostic(shape):
    generator = randomized(0.05, std=0.5, width=8)
    output, delta = generator(torch.rand(*shape))
    assert output.shape == delta.shape == shape


def test_gradients_reach_every_generator_parameter():
    generator = randomized(0.05, std=0.1, width=8, num_blocks=2)
    output, _ = generator(torch.rand(4, 3, 16, 16))
    (output * torch.randn_like(output)).sum().backward()
    for name, parameter in generator.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
