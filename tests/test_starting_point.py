"""`recipes/pretrain.py --model_name_or_path`: continue pretraining from an IE-CL checkpoint, a local folder or a Hub
id (the download patched: no network), with the checkpoint's config and the command-line flags on top (issue 12)."""

import json
import shutil

import pytest
import torch
from helpers import TINY_ARGS, block_network, read_json, run_pretrain_in_process
from safetensors.torch import load_file

from iecl_hf import IECLConfig, IECLForPreTraining, IECLModel
from iecl_hf.training.starting_point import pretraining_config, pretraining_model

# TINY_ARGS without the architecture: with --model_name_or_path it comes from the checkpoint.
RUN_ARGS = [a for a in TINY_ARGS if a not in ("--backbone_kwargs", '{"channels": [8, 16, 32, 64]}')] + [
    "--knn_every_epochs",
    "0",
]


@pytest.fixture(scope="module")
def finished_output(tmp_path_factory):
    """A finished pretraining output folder (SimCLR, 3 steps: trained weights, not fresh ones)."""
    folder = tmp_path_factory.mktemp("previous") / "out"
    assert run_pretrain_in_process([*TINY_ARGS, "--max_train_steps", 3, "--output_dir", folder]) == 0
    return folder


class FirstForward:
    """Records the pretraining model's state dict at its first forward: the weights step 1 starts from."""

    def __init__(self, monkeypatch):
        self.state = None
        original = IECLForPreTraining.forward

        def forward(model, *args, **kwargs):
            if self.state is None:
                self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return original(model, *args, **kwargs)

        monkeypatch.setattr(IECLForPreTraining, "forward", forward)


def test_a_previous_output_continues_with_all_its_weights_and_the_flags_on_top(finished_output, tmp_path, monkeypatch):
    first = FirstForward(monkeypatch)
    out = tmp_path / "continued"
    assert (
        run_pretrain_in_process(
            [
                *RUN_ARGS,
                "--model_name_or_path",
                finished_output,
                "--lambda_entropy",
                "0.3",
                "--max_train_steps",
                2,
                "--output_dir",
                out,
            ]
        )
        == 0
    )
    saved = load_file(str(finished_output / "model.safetensors"))
    assert set(saved) == set(first.state)  # heads, SAIB, power-iteration vectors: everything continues
    for name, tensor in saved.items():
        torch.testing.assert_close(first.state[name], tensor, rtol=0, atol=0, msg=name)
    config = read_json(out / "config.json")
    assert config["lambda_entropy"] == 0.3  # the flag
    assert config["backbone_kwargs"] == {"channels": [8, 16, 32, 64]}  # the checkpoint's, not a preset's
    assert read_json(out / "train_results.json")["step"] == 2
    assert f"| initialized from | `{finished_output}` |" in (out / "README.md").read_text()


def test_an_encoder_only_checkpoint_gives_the_encoder_and_fresh_heads(finished_output, tmp_path, monkeypatch):
    encoder_folder = tmp_path / "encoder"
    IECLModel.from_pretrained(finished_output).save_pretrained(encoder_folder)
    first = FirstForward(monkeypatch)
    out = tmp_path / "moco"
    # A released SimCLR encoder as the start of a MoCo run.
    assert (
        run_pretrain_in_process(
            [
                *RUN_ARGS,
                "--model_name_or_path",
                encoder_folder,
                "--framework",
                "moco",
                "--moco_queue_size",
                "32",
                "--max_train_steps",
                1,
                "--output_dir",
                out,
            ]
        )
        == 0
    )
    encoder = load_file(str(encoder_folder / "model.safetensors"))
    assert all(not key.startswith(("head.", "view_generator.")) for key in encoder)
    for name, tensor in encoder.items():
        torch.testing.assert_close(first.state[f"iecl.{name}"], tensor, rtol=0, atol=0, msg=name)
        momentum = first.state[name.replace("backbone.", "head.momentum_backbone.", 1)]
        torch.testing.assert_close(momentum, tensor, rtol=0, atol=0, msg=f"momentum {name}")
    previous_head = load_file(str(finished_output / "model.safetensors"))["head.projector.layers.0.weight"]
    fresh_head = first.state["head.projector.layers.0.weight"]
    assert torch.isfinite(fresh_head).all() and not torch.equal(fresh_head, previous_head)
    assert read_json(out / "config.json")["framework"] == "moco"


def test_a_hub_id_is_downloaded_and_continued(finished_output, tmp_path, monkeypatch):
    """The real transformers / huggingface_hub resolution, with `hf_hub_download` patched to serve a local folder
    into the cache, as the Hub would; any socket use fails the test."""
    import huggingface_hub
    import transformers.utils.hub

    repo_id, cache = "someone/iecl-tiny", tmp_path / "cache"
    requests = []

    def fake_hf_hub_download(repo, filename, *, revision=None, cache_dir=None, subfolder=None, **kwargs):
        requests.append((repo, filename, revision))
        assert repo == repo_id and cache_dir == str(cache)
        commit = "0" * 40
        storage = cache / f"models--{repo.replace('/', '--')}"
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / "main").write_text(commit)
        source = finished_output / filename
        if not source.is_file():
            raise huggingface_hub.errors.EntryNotFoundError(f"{filename} not in {repo}")
        target = storage / "snapshots" / commit / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
        return str(target)

    monkeypatch.setattr(transformers.utils.hub, "hf_hub_download", fake_hf_hub_download)
    attempts = block_network(monkeypatch)
    first = FirstForward(monkeypatch)
    out = tmp_path / "from-hub"
    assert (
        run_pretrain_in_process(
            [
                *RUN_ARGS,
                "--model_name_or_path",
                repo_id,
                "--cache_dir",
                cache,
                "--max_train_steps",
                1,
                "--output_dir",
                out,
            ]
        )
        == 0
    )
    assert {filename for _, filename, _ in requests} >= {"config.json", "model.safetensors"}
    assert attempts == []
    for name, tensor in load_file(str(finished_output / "model.safetensors")).items():
        torch.testing.assert_close(first.state[name], tensor, rtol=0, atol=0, msg=name)
    card = (out / "README.md").read_text()
    assert f"base_model: {repo_id}" in card and f"| initialized from | `{repo_id}` |" in card


def test_another_model_type_is_refused_before_any_data_is_read(tmp_path):
    foreign = tmp_path / "vit"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match=r"--model_name_or_path .* is not an IE-CL checkpoint: model_type='vit'"):
        run_pretrain_in_process(
            [
                *RUN_ARGS,
                "--model_name_or_path",
                foreign,
                "--dataset_name",
                tmp_path / "no-such-data",
                "--output_dir",
                tmp_path / "out",
            ]
        )
    with pytest.raises(ValueError, match="cannot read a model config"):
        run_pretrain_in_process(
            [*RUN_ARGS, "--model_name_or_path", tmp_path / "missing", "--output_dir", tmp_path / "out"]
        )


def test_a_head_of_another_size_starts_fresh(finished_output, tmp_path, monkeypatch, capsys):
    first = FirstForward(monkeypatch)
    assert (
        run_pretrain_in_process(
            [
                *RUN_ARGS,
                "--model_name_or_path",
                finished_output,
                "--projection_dim",
                16,
                "--max_train_steps",
                1,
                "--output_dir",
                tmp_path / "out",
            ]
        )
        == 0
    )
    assert first.state["head.projector.layers.3.weight"].shape[0] == 16
    saved = load_file(str(finished_output / "model.safetensors"))
    torch.testing.assert_close(first.state["head.projector.layers.0.weight"], saved["head.projector.layers.0.weight"])
    assert "initialized fresh: head" in capsys.readouterr().out


def test_flags_that_change_the_encoder_or_a_preset_are_refused(finished_output, tmp_path):
    with pytest.raises(ValueError, match="--preset cifar and --model_name_or_path"):
        run_pretrain_in_process(
            [*RUN_ARGS, "--model_name_or_path", finished_output, "--preset", "cifar", "--output_dir", tmp_path / "out"]
        )
    # A stem of the same kernel shape and another stride would load without a size error: refused by name.
    for flag, value in (("--stem", "cifar"), ("--backbone_kwargs", '{"channels": [8, 16, 32, 32]}')):
        with pytest.raises(ValueError, match=rf"with {flag} .*\(checkpoint: .*Drop these flags"):
            run_pretrain_in_process(
                [*RUN_ARGS, "--model_name_or_path", finished_output, flag, value, "--output_dir", tmp_path / "out"]
            )
    assert not (tmp_path / "out").exists()  # refused before anything was written
    # The same value as the checkpoint's is no change.
    saved = read_json(finished_output / "config.json")
    assert pretraining_config({"stem": saved["stem"]}, str(finished_output)).stem == saved["stem"]


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_refused(finished_output):
    """The weights' own check, behind the config's: a config that does not match the saved weights."""
    config = IECLConfig.from_pretrained(finished_output, backbone_kwargs={"channels": [8, 16, 32, 32]})
    with pytest.raises(ValueError, match=r"lacks or mis-sizes encoder weights .*iecl\.backbone\.layer4"):
        pretraining_model(config, str(finished_output))


def test_a_framework_flag_gives_the_new_frameworks_defaults_and_keeps_chosen_values(tmp_path):
    """A MoCo checkpoint saves MoCo's resolved defaults (no output BN); continued with --framework simclr they must
    become SimCLR's, while a value the user chose (a baseline's 0) and a flag stay."""
    moco = tmp_path / "moco"
    IECLConfig(framework="moco").save_pretrained(moco)
    config = pretraining_config({"framework": "simclr"}, str(moco))
    simclr = IECLConfig(framework="simclr")
    assert (config.lambda_entropy, config.projection_output_batchnorm) == (
        simclr.lambda_entropy,
        simclr.projection_output_batchnorm,
    )
    same_framework = pretraining_config({}, str(moco))  # the saved values
    assert same_framework.projection_output_batchnorm is False

    baseline = tmp_path / "moco-baseline"
    IECLConfig(framework="moco", lambda_entropy=0).save_pretrained(baseline)
    config = pretraining_config({"framework": "byol", "projection_output_batchnorm": True}, str(baseline))
    assert (config.framework, config.lambda_entropy, config.projection_output_batchnorm) == ("byol", 0, True)
