"""One `loss.backward()` must give each parameter group exactly the gradient of its own objective (method.md, 5).

The reference builds both objectives from scratch out of the model's components (generator, backbone, projector,
estimators) and differentiates each with `torch.autograd.grad`; it shares no code with `IECLForPreTraining.forward`.
"""

import pytest
import torch
import torch.nn.functional as F

from iecl_hf import IECLConfig, IECLForPreTraining
from iecl_hf.entropy_iecl import BatchEntropy, pixel_features
from iecl_hf.losses_iecl import nt_xent_loss

BATCH, SIZE, SEED = 8, 16, 1234


def build_model(**overrides):
    kwargs = dict(
        backbone_kwargs={"channels": [16, 32, 64, 128]},
        stem="cifar_stride2",
        image_size=SIZE,
        projection_hidden_dim=64,
        projection_dim=32,
        generator_width=8,
        lambda_gen=3.0,  # not the defaults: a swapped or missing weight shows
        lambda_pres=2.0,
    )
    torch.manual_seed(0)
    model = IECLForPreTraining(IECLConfig(**{**kwargs, **overrides})).train()
    with torch.no_grad():
        # Leave the identity (where every generator gradient but the last layer's is zero) and timm's zero-init of
        # the last BN of each block (where the residual branches get no gradient).
        if model.view_generator is not None:
            torch.nn.init.normal_(model.view_generator.to_delta.weight, std=0.05)
        for name, parameter in model.iecl.named_parameters():
            if name.endswith("bn2.weight"):
                parameter.normal_(1.0, 0.1)
    return model


def inputs():
    generator = torch.Generator().manual_seed(99)
    pixel_values = torch.rand(BATCH, 3, SIZE, SIZE, generator=generator)
    pixel_values_2 = torch.rand(BATCH, 3, SIZE, SIZE, generator=generator)
    # View 1 in two clusters (low pixel entropy), view 2 spread out: a positive input gain switches the
    # preservation regularizer's relu on, so its gradient is part of what is checked.
    pixel_values = 0.8 * pixel_values[torch.arange(BATCH) % 2] + 0.2 * pixel_values
    return pixel_values, pixel_values_2


def reference_objectives(model, pixel_values, pixel_values_2):
    """L_theta and L_phi built from scratch, with the noise of the model's forward (same seed)."""
    config = model.config
    mean = torch.tensor(config.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(config.image_std).view(1, 3, 1, 1)

    def backbone_features(normalized):
        return model.iecl.backbone.forward_head(model.iecl.backbone.forward_features(normalized), pre_logits=True)

    torch.manual_seed(SEED)
    generated, _ = model.view_generator(pixel_values_2)  # T_phi(v2), differentiable in phi
    # Both views go through the encoder as one batch (BatchNorm statistics over 2B, like the model).
    encoder_inputs = (torch.cat([pixel_values, generated]) - mean) / std
    features = backbone_features(encoder_inputs)
    # L_base: the framework head's loss (SimCLR: NT-Xent on the projector's outputs).
    base_loss, projections = model.head(features, encoder_inputs.detach(), BATCH)
    if config.framework == "simclr":
        torch.testing.assert_close(base_loss, nt_xent_loss(projections[:BATCH], projections[BATCH:], config.tau))

    pixel_entropy = BatchEntropy(config.entropy_estimator, "gaussian", config.logdet_epsilon, config.uniformity_t)
    representation_entropy = BatchEntropy(config.entropy_estimator, "cosine", config.logdet_epsilon, config.uniformity_t)
    representation = projections if config.representation_level == "projection" else features
    if config.entropy_reference == "view1":
        pixel_reference, representation_reference = pixel_values, representation[:BATCH]
    else:
        pixel_reference = pixel_values_2
        with torch.no_grad():
            reference_features = backbone_features((pixel_values_2 - mean) / std)
            reference_projections = model.head.projector(reference_features)
        representation_reference = reference_projections if config.representation_level == "projection" else reference_features
    # The reference side of each gain is a constant.
    gain_input = pixel_entropy(pixel_features(generated, config.pixel_entropy_size)) - pixel_entropy(
        pixel_features(pixel_reference, config.pixel_entropy_size)
    ).detach()
    gain_representation = representation_entropy(representation[BATCH:]) - representation_entropy(representation_reference).detach()

    loss_theta = base_loss + config.lambda_pres * F.relu(gain_input.detach() - gain_representation)
    stance = 1.0 if config.generator_stance == "cooperative" else -1.0
    loss_phi = stance * base_loss - config.lambda_gen * gain_input
    return loss_theta, loss_phi, base_loss, gain_input, gain_representation


def model_gradients(model, pixel_values, pixel_values_2):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    output = model(pixel_values, pixel_values_2)
    output.loss.backward()
    return output, [p.grad for p in model.encoder_parameters()], [p.grad for p in model.generator_parameters()]


def assert_grads_equal(actual, expected, what):
    scale = max(g.abs().max().item() for g in expected)
    assert scale > 0, f"{what}: the reference gradient is zero, the test would prove nothing"
    for index, (grad, expected_grad) in enumerate(zip(actual, expected)):
        assert grad is not None, f"{what}: parameter {index} got no gradient"
        torch.testing.assert_close(grad, expected_grad, atol=1e-5 * scale, rtol=1e-4, msg=lambda m: f"{what}[{index}]: {m}")


def max_difference(first, second):
    return max((a - b).abs().max().item() for a, b in zip(first, second))


@pytest.mark.parametrize(
    "overrides",
    [
        {"generator_stance": "cooperative"},
        {"generator_stance": "adversarial"},
        {"generator_stance": "adversarial", "entropy_reference": "untransformed", "representation_level": "projection"},
        {"generator_stance": "cooperative", "entropy_estimator": "logdet"},
        {"generator_stance": "cooperative", "framework": "moco", "moco_queue_size": 64},
        {"generator_stance": "adversarial", "framework": "byol", "entropy_estimator": "uniformity"},
    ],
    ids=["cooperative", "adversarial", "adversarial-untransformed-projection", "cooperative-logdet", "moco", "byol-adversarial"],
)
def test_each_group_gets_the_gradient_of_its_objective(overrides):
    model = build_model(**overrides)
    pixel_values, pixel_values_2 = inputs()
    # Parameters that get gradients (MoCo/BYOL momentum branches are frozen copies).
    encoder_params = [p for p in model.encoder_parameters() if p.requires_grad]
    generator_params = model.generator_parameters()
    assert len(generator_params) > 0 and len(encoder_params) > len(list(model.iecl.parameters()))
    # The forward changes state (BatchNorm running statistics, MoCo's queue): the reference starts from the same.
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}

    output, encoder_grads, generator_grads = model_gradients(model, pixel_values, pixel_values_2)
    for parameter in model.parameters():
        if not parameter.requires_grad:
            assert parameter.grad is None
    encoder_grads = [p.grad for p in encoder_params]
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])

    loss_theta, loss_phi, base_loss, gain_input, gain_representation = reference_objectives(model, pixel_values, pixel_values_2)
    expected_encoder = torch.autograd.grad(loss_theta, encoder_params, retain_graph=True)
    expected_generator = torch.autograd.grad(loss_phi, generator_params, retain_graph=True)

    # Same forward as the reference (same noise, same BatchNorm statistics): the values agree.
    torch.testing.assert_close(output.loss, loss_theta.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.generator_loss, loss_phi.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.base_loss, base_loss.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.entropy_gain_input, gain_input.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(output.entropy_gain_representation, gain_representation.detach(), atol=1e-6, rtol=1e-5)

    assert_grads_equal(encoder_grads, expected_encoder, "encoder+projector")
    assert_grads_equal(generator_grads, expected_generator, "generator")

    # The check discriminates: the regularizer is active here, so the encoder's gradient is not the base loss's
    # alone, and the generator's is not the other stance's nor that of its objective without the entropy term.
    assert output.preservation_loss.item() > 0
    base_only = torch.autograd.grad(base_loss, encoder_params, retain_graph=True)
    assert max_difference(base_only, expected_encoder) > 1e-3 * max(g.abs().max().item() for g in expected_encoder)
    other_stance = torch.autograd.grad(-loss_phi - 2 * model.config.lambda_gen * gain_input, generator_params, retain_graph=True)
    no_entropy = torch.autograd.grad(loss_phi + model.config.lambda_gen * gain_input, generator_params)
    generator_scale = max(g.abs().max().item() for g in expected_generator)
    assert max_difference(other_stance, expected_generator) > 1e-3 * generator_scale
    assert max_difference(no_entropy, expected_generator) > 1e-3 * generator_scale


def test_without_generator_the_loss_is_plain_objective():
    model = build_model(use_view_generator=False, lambda_pres=0.0)
    pixel_values, pixel_values_2 = inputs()
    output = model(pixel_values, pixel_values_2)
    assert model.generator_parameters() == []
    torch.testing.assert_close(output.loss, output.base_loss)
    output.loss.backward()
    grads = [p.grad for p in model.encoder_parameters()]
    assert all(grad is not None for grad in grads)
    # Exactly the plain SimCLR gradient: the entropy terms are monitored, not trained on.
    model_input = (torch.cat([pixel_values, pixel_values_2]) - model.image_mean) / model.image_std
    projections = model.head.projector(model.iecl(model_input).pooler_output)
    expected = torch.autograd.grad(nt_xent_loss(projections[:BATCH], projections[BATCH:], model.config.tau), model.encoder_parameters())
    assert_grads_equal(grads, expected, "plain SimCLR")
