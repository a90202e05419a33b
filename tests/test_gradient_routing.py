"""One `loss.backward()` must give every trained parameter (encoder, heads, SAIB) the gradient of the one IE-CL
objective (docs/method.md, section 6):

    L = L_base + beta_kl KL(Z' || Z.detach()) - lambda_entropy H(Z') + spectral_norm_weight mean_l relu(sigma_l - 1)^2

The reference builds the objective from scratch out of the model's components (SAIB, backbone, head) and
differentiates it with `torch.autograd.grad`; it shares no code with `IECLForPreTraining.forward`.
"""

import pytest
import torch
import torch.nn.functional as F

from iecl_hf import BASELINE_OVERRIDES, IECLConfig, IECLForPreTraining
from iecl_hf.entropy_iecl import coding_rate, gaussian_entropy, gaussian_kl
from iecl_hf.losses_iecl import nt_xent_loss

BATCH, SIZE = 8, 16


def build_model(**overrides):
    kwargs = dict(
        backbone_kwargs={"channels": [16, 32, 64, 128]},
        stem="cifar_stride2",
        image_size=SIZE,
        projection_hidden_dim=64,
        projection_dim=32,
        saib_dim=8,
        # Not the defaults: a swapped or missing weight shows.
        lambda_entropy=0.7,
        beta_kl=0.3,
        spectral_norm_weight=2.0,
    )
    torch.manual_seed(0)
    model = IECLForPreTraining(IECLConfig(**{**kwargs, **overrides})).train()
    with torch.no_grad():
        # Leave the identity SAIB (where every SAIB gradient but the last layer's is zero) and timm's zero-init of
        # the last BN of each block (where the residual branches get no gradient).
        if model.view_generator is not None:
            torch.nn.init.normal_(model.view_generator.restore.weight, std=0.05)
        for name, parameter in model.iecl.named_parameters():
            if name.endswith("bn2.weight"):
                parameter.normal_(1.0, 0.1)
    return model


def inputs():
    generator = torch.Generator().manual_seed(99)
    return torch.rand(BATCH, 3, SIZE, SIZE, generator=generator), torch.rand(BATCH, 3, SIZE, SIZE, generator=generator)


def reference_objective(model, pixel_values, pixel_values_2):
    """L built from scratch; returns (L, its terms)."""
    config = model.config
    mean = torch.tensor(config.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(config.image_std).view(1, 3, 1, 1)
    query_view = model.view_generator(pixel_values_2) if model.view_generator is not None else pixel_values_2
    # Both views through the encoder as one batch (BatchNorm statistics over 2B, like the model).
    encoder_inputs = (torch.cat([pixel_values, query_view]) - mean) / std
    backbone = model.iecl.backbone
    features = backbone.forward_head(backbone.forward_features(encoder_inputs), pre_logits=True)
    # The anchor branch (momentum encoder) sees the two standard views.
    anchor_inputs = (torch.cat([pixel_values, pixel_values_2]) - mean) / std
    base_loss, projections = model.head(features, anchor_inputs, BATCH)
    if config.framework == "simclr":
        torch.testing.assert_close(base_loss, nt_xent_loss(projections[:BATCH], projections[BATCH:], config.tau))
    anchor, query = projections[:BATCH], projections[BATCH:]
    entropy = (
        coding_rate(query, config.coding_rate_epsilon)
        if config.entropy_estimator == "coding_rate"
        else gaussian_entropy(query, config.covariance_ridge)
    )
    kl = gaussian_kl(query, anchor.detach(), config.kl_covariance, config.covariance_ridge)
    objective = base_loss + config.beta_kl * kl - config.lambda_entropy * entropy
    penalty = torch.zeros(())
    if model.spectral_penalty is not None:
        # sigma_l = u^T W v with the power-iteration vectors of this step (the model's forward updated them).
        layers = [m for m in backbone.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        sigmas = torch.stack(
            [
                torch.dot(
                    getattr(model.spectral_penalty, f"u{i}"),
                    m.weight.flatten(1) @ getattr(model.spectral_penalty, f"v{i}"),
                )
                for i, m in enumerate(layers)
            ]
        )
        penalty = F.relu(sigmas - 1).pow(2).mean()
        objective = objective + config.spectral_norm_weight * penalty
    return objective, {"base_loss": base_loss, "entropy_query": entropy, "kl_loss": kl, "spectral_penalty": penalty}


def largest_entry(tensors):
    return max(t.abs().max().item() for t in tensors)


def assert_grads_equal(actual, expected, what, scale=None):
    # `scale` sets the absolute tolerance; an expected gradient built by subtracting two gradients carries the rounding
    # of its operands, so its caller passes their magnitude.
    scale = scale or largest_entry(expected)
    assert scale > 0, f"{what}: the reference gradient is zero, the test would prove nothing"
    for index, (grad, expected_grad) in enumerate(zip(actual, expected)):
        assert grad is not None, f"{what}: parameter {index} got no gradient"
        torch.testing.assert_close(
            grad, expected_grad, atol=1e-5 * scale, rtol=1e-4, msg=lambda m: f"{what}[{index}]: {m}"
        )


def max_difference(first, second):
    return max((a - b).abs().max().item() for a, b in zip(first, second))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        dict(entropy_estimator="gaussian", kl_covariance="full"),
        dict(framework="moco", moco_queue_size=64),
        dict(framework="byol"),
        dict(framework="simsiam"),
    ],
    ids=["simclr-defaults", "gaussian-full-kl", "moco", "byol", "simsiam"],
)
def test_one_backward_gives_the_gradient_of_the_objective(overrides):
    model = build_model(**overrides)
    pixel_values, pixel_values_2 = inputs()
    trained = [p for p in model.parameters() if p.requires_grad]  # MoCo/BYOL momentum branches are frozen copies
    saib = model.generator_parameters()
    assert len(saib) > 0 and model.spectral_penalty is not None
    # The forward changes state (BatchNorm statistics, MoCo's queue, the power-iteration vectors): the reference
    # starts from the same state and uses the vectors of this step.
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    model.zero_grad(set_to_none=True)
    output = model(pixel_values, pixel_values_2)
    output.loss.backward()
    grads = [p.grad for p in trained]
    for parameter in model.parameters():
        if not parameter.requires_grad:
            assert parameter.grad is None
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if not name.startswith("spectral_penalty."):
                buffer.copy_(buffers[name])

    objective, terms = reference_objective(model, pixel_values, pixel_values_2)
    torch.testing.assert_close(output.loss, objective.detach(), atol=1e-5, rtol=1e-5)
    for name, value in terms.items():
        torch.testing.assert_close(
            getattr(output, name), value.detach(), atol=1e-6, rtol=1e-5, msg=lambda m: f"{name}: {m}"
        )
    expected = torch.autograd.grad(objective, trained, retain_graph=True)
    assert_grads_equal(grads, expected, "all trained parameters")

    # The check discriminates: each term changes the gradient (of the encoder, and of SAIB for the data terms).
    assert terms["spectral_penalty"] > 0
    scale = largest_entry(expected)
    config = model.config
    for name, weight in (
        ("entropy_query", -config.lambda_entropy),
        ("kl_loss", config.beta_kl),
        ("spectral_penalty", config.spectral_norm_weight),
    ):
        without = torch.autograd.grad(objective - weight * terms[name], trained, retain_graph=True)
        assert max_difference(without, expected) > 1e-4 * scale, f"dropping {name} does not change the gradient"
    saib_index = [i for i, p in enumerate(trained) if any(p is q for q in saib)]
    for name, weight in (("entropy_query", -config.lambda_entropy), ("kl_loss", config.beta_kl)):
        without = torch.autograd.grad(
            objective - weight * terms[name], [trained[i] for i in saib_index], retain_graph=True
        )
        assert max_difference(without, [expected[i] for i in saib_index]) > 0, f"{name} does not reach SAIB"


def run_and_reference(model):
    """(gradients of one `loss.backward()`, the reference objective and its terms from the same state)."""
    pixel_values, pixel_values_2 = inputs()
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    trained = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    output = model(pixel_values, pixel_values_2)
    output.loss.backward()
    grads = [p.grad for p in trained]
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if not name.startswith("spectral_penalty."):
                buffer.copy_(buffers[name])
    objective, terms = reference_objective(model, pixel_values, pixel_values_2)
    return output, grads, objective, terms


@pytest.mark.parametrize("framework", ["simclr", "byol"])
@pytest.mark.parametrize("stance, sign", [("detached", 0.0), ("adversarial", -1.0)])
def test_saib_stance_scales_the_base_loss_gradient_to_saib_only(framework, stance, sign):
    """SAIB gets `sign x dL_base/dphi` plus the entropy and KL terms' gradient; the encoder and heads get the
    gradient of the whole objective, as in the cooperative stance; the loss value is unchanged."""
    model = build_model(framework=framework, saib_stance=stance)
    output, grads, objective, terms = run_and_reference(model)
    torch.testing.assert_close(output.loss, objective.detach(), atol=1e-5, rtol=1e-5)
    trained = [p for p in model.parameters() if p.requires_grad]
    saib = {id(p) for p in model.generator_parameters()}
    is_saib = [id(p) in saib for p in trained]
    encoder = [p for p, flag in zip(trained, is_saib) if not flag]
    generator = [p for p, flag in zip(trained, is_saib) if flag]
    expected_encoder = torch.autograd.grad(objective, encoder, retain_graph=True)
    assert_grads_equal([g for g, flag in zip(grads, is_saib) if not flag], expected_encoder, "encoder and heads")
    base = torch.autograd.grad(terms["base_loss"], generator, retain_graph=True)
    whole = torch.autograd.grad(objective, generator, retain_graph=True)
    expected_saib = [w + (sign - 1.0) * b for w, b in zip(whole, base)]
    operands = largest_entry([*whole, *base])
    assert_grads_equal([g for g, flag in zip(grads, is_saib) if flag], expected_saib, f"SAIB ({stance})", operands)
    assert max_difference(expected_saib, whole) > 1e-4 * largest_entry(whole)


def test_detached_saib_without_the_terms_gets_no_gradient():
    model = build_model(saib_stance="detached", lambda_entropy=0, beta_kl=0)
    output, grads, _, _ = run_and_reference(model)
    saib = {id(p) for p in model.generator_parameters()}
    for parameter, grad in zip([p for p in model.parameters() if p.requires_grad], grads):
        if id(parameter) in saib:
            assert grad is None or grad.abs().max() == 0


def test_baseline_is_the_plain_framework():
    model = build_model(**BASELINE_OVERRIDES)
    pixel_values, pixel_values_2 = inputs()
    output = model(pixel_values, pixel_values_2)
    assert model.generator_parameters() == [] and model.spectral_penalty is None
    torch.testing.assert_close(output.loss, output.base_loss)
    output.loss.backward()
    grads = [p.grad for p in model.encoder_parameters()]
    # Exactly the plain SimCLR gradient: the entropy and KL are monitored, not trained on.
    model_input = (torch.cat([pixel_values, pixel_values_2]) - model.image_mean) / model.image_std
    projections = model.head.projector(model.iecl(model_input).pooler_output)
    expected = torch.autograd.grad(
        nt_xent_loss(projections[:BATCH], projections[BATCH:], model.config.tau), model.encoder_parameters()
    )
    assert_grads_equal(grads, expected, "plain SimCLR")


def test_power_iteration_finds_the_spectral_norm():
    model = build_model()
    backbone = model.iecl.backbone
    for _ in range(100):
        _, largest = model.spectral_penalty(backbone, update=True)
    exact = max(
        torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
        for m in backbone.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    )
    assert largest.item() == pytest.approx(exact, rel=1e-3)


def test_spectral_penalty_bounds_the_layers():
    """Gradient steps on the penalty alone bring every layer's spectral norm (exact SVD of the (out, in*k*k) weight,
    not only the power-iteration estimate, which is a lower bound) from up to ~4 down to about 1. The step is kept
    small: at lr 1.0 the quadratic penalty overshoots and the norms diverge while the one-iteration estimate loses
    them (measured); in pretraining the weights move slowly and the estimate tracks the exact norm (to 0.3%)."""
    from iecl_hf.spectral_iecl import exact_spectral_norms, spectral_layers

    model = build_model()
    backbone = model.iecl.backbone
    layers = spectral_layers(backbone)
    first_conv = next(m for _, m in layers if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
    before = exact_spectral_norms(backbone)
    assert len(before) == len(layers)
    assert before[[m for _, m in layers].index(first_conv)] == pytest.approx(
        torch.linalg.svdvals(first_conv.weight.detach().reshape(first_conv.out_channels, -1))[0].item(), rel=1e-5
    )
    optimizer = torch.optim.SGD(backbone.parameters(), lr=0.1)
    first, _ = model.spectral_penalty(backbone)
    for _ in range(1000):
        penalty, largest = model.spectral_penalty(backbone)
        optimizer.zero_grad()
        (100 * penalty).backward()
        optimizer.step()
    after = exact_spectral_norms(backbone)
    assert first > 0.05 and before.max() > 3
    assert after.max() < 1.1 and largest <= after.max() + 1e-4
    assert largest.item() == pytest.approx(after.max().item(), rel=0.02)  # converged: the estimate tracks it
