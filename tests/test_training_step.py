"""The recipe's training step (`iecl_hf.training.step.PretrainingStep`) outside a run: what it computes on logging
steps and on the others, the deferred finite check, and that an ordinary step never reads a tensor on the host."""

from unittest import mock

import pytest
import torch
from helpers import TINY_ARGS, reset_accelerate_state, run_pretrain_in_process

from iecl_hf import BASELINE_OVERRIDES, IECLConfig, IECLForPreTraining
from iecl_hf.training.finite import NonFiniteLossError
from iecl_hf.training.step import PretrainingStep

TINY = {"backbone": "resnet18", "backbone_kwargs": {"channels": [8, 16, 32, 64]}, "stem": "cifar_stride2"}
MONITORS = ("entropy_query", "entropy_anchor", "kl_loss")


@pytest.fixture
def accelerator():
    from accelerate import Accelerator

    yield Accelerator(cpu=True)
    reset_accelerate_state()


def make_step(accelerator, logging_steps=4, **config):
    torch.manual_seed(0)
    model = IECLForPreTraining(IECLConfig(**TINY, image_size=32, **config)).train()
    optimizers = [torch.optim.SGD(model.encoder_parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)]
    if model.generator_parameters():
        optimizers.append(torch.optim.AdamW(model.generator_parameters(), lr=1e-3))
    return PretrainingStep.standalone(model, optimizers, accelerator, logging_steps=logging_steps, max_train_steps=100)


def batch(seed):
    generator = torch.Generator().manual_seed(seed)
    views = torch.rand(2, 4, 3, 32, 32, generator=generator)
    return {"pixel_values": views[0], "pixel_values_2": views[1], "num_skipped": torch.tensor(0)}


def take_step(step):
    """One optimizer step, counted as `TrainingLoop.step_done` counts it."""
    result = step(batch(step.training.state.step))
    step.training.state.step += 1
    return result


def weights(step):
    return {name: p.detach().clone() for name, p in step.training.unwrapped.named_parameters()}


def nan_loss_at(calls: set):
    """IECLForPreTraining.forward, with a NaN loss on the given calls (1-based)."""
    original, count = IECLForPreTraining.forward, [0]

    def forward(self, *args, **kwargs):
        count[0] += 1
        output = original(self, *args, **kwargs)
        if count[0] in calls:
            output.loss = output.loss * float("nan")
        return output

    return mock.patch.object(IECLForPreTraining, "forward", forward)


@pytest.mark.parametrize("on_device", [False, True], ids=["cpu-flag", "device-path"])
def test_a_non_finite_loss_between_logging_steps_skips_its_update_and_raises_at_the_next_logging_step(
    accelerator, on_device
):
    step = make_step(accelerator, logging_steps=4)
    step.finite.read_cpu_flags = not on_device  # the accelerator's way (torch.where), here on the CPU
    with nan_loss_at({2}):
        take_step(step)
        before = weights(step)
        take_step(step)  # step 2: NaN loss, no error yet
        after = weights(step)
        assert all(torch.equal(before[name], after[name]) for name in before)  # its update was skipped
        take_step(step)  # step 3 trains on finite weights
        assert all(torch.isfinite(p).all() for p in weights(step).values())
        assert any(not torch.equal(after[name], p) for name, p in weights(step).items())
        with pytest.raises(
            NonFiniteLossError, match=r"loss=nan.* at step 2 \(its update skipped; stopped at step 4\)"
        ):
            take_step(step)  # step 4: a logging step


def test_a_checkpoint_after_a_skipped_non_finite_step_is_never_written(tmp_path):
    """The recipe with a logging step every 4 steps and a checkpoint every step: NaN at step 3 stops the run at the
    checkpoint of step 3, before anything is written; step_2 stays the last checkpoint."""
    out = tmp_path / "out"
    with nan_loss_at({3}), pytest.raises(NonFiniteLossError) as error:
        run_pretrain_in_process(
            [*TINY_ARGS, "--logging_steps", 4, "--max_train_steps", 6, "--checkpointing_steps", 1, "--output_dir", out]
        )
    assert "loss=nan" in str(error.value) and "at step 3" in str(error.value) and "step_2" in str(error.value)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_1", "step_2"]
    assert not (out / "model.safetensors").exists()


def count_monitor_calls():
    """Patches counting the entropy estimator's and the KL's calls in the model."""
    import iecl_hf.modeling_iecl as modeling
    from iecl_hf.entropy_iecl import QueryEntropy

    calls = {"entropy": 0, "kl": 0}
    entropy, kl = QueryEntropy.forward, modeling.gaussian_kl

    def counted_entropy(self, *args, **kwargs):
        calls["entropy"] += 1
        return entropy(self, *args, **kwargs)

    def counted_kl(*args, **kwargs):
        calls["kl"] += 1
        return kl(*args, **kwargs)

    patches = (
        mock.patch.object(QueryEntropy, "forward", counted_entropy),
        mock.patch.object(modeling, "gaussian_kl", counted_kl),
    )
    return calls, patches


def test_the_baseline_computes_its_monitors_on_logging_steps_only(accelerator):
    step = make_step(accelerator, logging_steps=3, **BASELINE_OVERRIDES)
    calls, patches = count_monitor_calls()
    with patches[0], patches[1]:
        for _ in range(2):
            result = take_step(step)
            assert not any(name in result.terms for name in MONITORS)
        assert calls == {"entropy": 0, "kl": 0}
        result = take_step(step)  # step 3: a logging step
    assert calls == {"entropy": 2, "kl": 1}  # H(Z') and H(Z), the KL
    assert all(torch.isfinite(result.terms[name]) for name in MONITORS)


def test_ie_cl_computes_the_terms_it_optimizes_on_every_step(accelerator):
    step = make_step(accelerator, logging_steps=3)  # lambda_entropy, beta_kl > 0
    result = take_step(step)
    assert "entropy_query" in result.terms and "kl_loss" in result.terms
    assert "entropy_anchor" not in result.terms and "saib_logdet" not in result.terms  # monitors only
    take_step(step)
    result = take_step(step)
    assert all(name in result.terms for name in (*MONITORS, "saib_logdet"))


def test_an_ordinary_step_never_reads_a_tensor_on_the_host(accelerator):
    """No `.item()`, `.tolist()`, `bool()`, `int()` or `float()` of a tensor outside logging steps (on an accelerator
    each would wait for the device); the finite check takes the accelerator's path."""
    step = make_step(accelerator, logging_steps=3, **BASELINE_OVERRIDES)
    step.finite.read_cpu_flags = False
    take_step(step)  # the first step allocates the optimizer state

    def host_read(*args, **kwargs):
        raise AssertionError("a tensor was read on the host")

    reads = {name: host_read for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")}
    with mock.patch.multiple(torch.Tensor, **reads):
        result = take_step(step)  # step 2
    assert result is not None
    with pytest.raises(AssertionError, match="read on the host"), mock.patch.multiple(torch.Tensor, **reads):
        take_step(step)  # step 3, a logging step, settles: the patch sees it
