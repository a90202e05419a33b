"""Gradient checkpointing (transformers' switch, timm's mechanism), SyncBatchNorm's GPU-only check, and the hidden
states of the classifier."""

import pytest
import torch
from helpers import TINY_ARGS, run_pretrain_in_process
from helpers import TINY_MODEL as TINY

from iecl_hf import BASELINE_OVERRIDES, IECLConfig, IECLForImageClassification, IECLForPreTraining, IECLModel


def checkpointing_on(model) -> bool:
    flag = getattr(type(model), "is_activation_checkpointing", None)
    return model.is_activation_checkpointing if flag is not None else model.is_gradient_checkpointing


def enable_checkpointing(model):
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()


def test_gradient_checkpointing_is_reported_and_gives_the_same_gradients():
    config = IECLConfig(**TINY, **BASELINE_OVERRIDES)
    torch.manual_seed(0)
    plain = IECLForPreTraining(config).train()
    checkpointed = IECLForPreTraining(config).train()
    checkpointed.load_state_dict(plain.state_dict())
    assert not checkpointing_on(checkpointed)
    enable_checkpointing(checkpointed)
    assert checkpointing_on(checkpointed) and checkpointed.iecl.backbone.grad_checkpointing
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    expected = torch.autograd.grad(plain(v1, v2).loss, list(plain.parameters()), allow_unused=True)
    got = torch.autograd.grad(checkpointed(v1, v2).loss, list(checkpointed.parameters()), allow_unused=True)
    for g, e in zip(got, expected):
        assert (g is None) == (e is None)
        if g is not None:
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_classifier_returns_the_encoders_hidden_states():
    config = IECLConfig(**TINY, num_labels=3)
    torch.manual_seed(0)
    classifier = IECLForImageClassification(config).eval()
    pixels = torch.rand(2, 3, 16, 16)
    output = classifier(pixels, output_hidden_states=True)
    encoder = IECLModel(config).eval()
    encoder.load_state_dict(classifier.iecl.state_dict())
    expected = encoder(pixels, output_hidden_states=True).hidden_states
    assert output.hidden_states is not None and len(output.hidden_states) == len(expected)
    for got, want in zip(output.hidden_states, expected):
        torch.testing.assert_close(got, want)
    assert classifier(pixels).hidden_states is None
    assert len(classifier(pixels, output_hidden_states=True, return_dict=False)) == 2  # logits, hidden states


@pytest.mark.skipif(torch.cuda.is_available(), reason="the check is for runs without CUDA")
def test_sync_batchnorm_without_gpus_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"--sync_batchnorm needs GPUs"):
        run_pretrain_in_process([*TINY_ARGS, "--max_train_steps", 1, "--output_dir", tmp_path, "--sync_batchnorm"])
