"""`recipes/pretrain.py --model_name_or_path`: continue pretraining from an IE-CL checkpoint, a local folder or a Hub
id (the download patched: no network), with the checkpoint's config and the command-line flags on top."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import TINY_ARGS, TINY_MODEL, block_network, read_json, run_pretrain_in_process
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


# ---------------------------------------------------------------------------------------------- supervised starts
# --backbone_pretrained / --backbone_checkpoint a fresh model's backbone starts from timm weights,
# downloaded by name (patched here to serve a file written locally) or read from a local timm folder / safetensors.

TIMM_ID = "timm/resnet18.a1_in1k"  # the weights timm.create_model("resnet18", pretrained=True) downloads


def tiny_timm_weights(path, seed=0):
    """A .safetensors file of a whole timm ResNet-18 of TINY_ARGS' widths, as timm's Hub files are: timm's 7x7 stem
    and a 1000-class classifier, weights moved off timm's init."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model("resnet18", channels=[8, 16, 32, 64])
    state = {
        k: (v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v) for k, v in model.state_dict().items()
    }
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return load_file(str(path))


@pytest.fixture(scope="module")
def timm_export(tmp_path_factory):
    """A timm folder written by recipes/export_timm.py's code from a tiny stem='timm' IE-CL encoder (TINY_ARGS' widths,
    32 px)."""
    from test_export_timm import write_tiny_checkpoint

    from iecl_hf.hub.export_timm import load_exportable_encoder, write_timm_folder

    folder = tmp_path_factory.mktemp("export")
    checkpoint = write_tiny_checkpoint(folder / "iecl")
    return Path(write_timm_folder(load_exportable_encoder(str(checkpoint)), str(folder / "timm"), str(checkpoint)))


def tiny_config(**fields) -> IECLConfig:
    return IECLConfig(**{**TINY_MODEL, "image_size": 32, "backbone_kwargs": {"channels": [8, 16, 32, 64]}, **fields})


def test_backbone_checkpoint_starts_a_fresh_model_from_a_timm_export(timm_export, tmp_path, monkeypatch, capsys):
    first = FirstForward(monkeypatch)
    attempts = block_network(monkeypatch)
    out = tmp_path / "out"
    argv = [*TINY_ARGS, "--stem", "timm", "--backbone_checkpoint", timm_export, "--knn_every_epochs", "0"]
    assert run_pretrain_in_process([*argv, "--max_train_steps", 1, "--output_dir", out]) == 0
    exported = load_file(str(timm_export / "model.safetensors"))
    for name, tensor in exported.items():
        torch.testing.assert_close(first.state[f"iecl.backbone.{name}"], tensor, rtol=0, atol=0, msg=name)
    assert read_json(out / "config.json")["backbone_checkpoint"] == str(timm_export)
    assert f"| initialized from | backbone weights from `{timm_export}` |" in (out / "README.md").read_text()
    assert f"Model: fresh weights; backbone from {timm_export}." in capsys.readouterr().out
    assert attempts == []


def test_backbone_pretrained_loads_timms_weights_by_name(tmp_path, monkeypatch, capsys):
    """timm's own download and loading, with its Hub download patched to serve a file written here; the CPU preset's
    cifar_stride2 stem keeps its fresh 3x3 conv1, and the classifier is left out."""
    import timm.models._hub

    served = tiny_timm_weights(tmp_path / "weights.safetensors")
    requests = []

    def fake_hf_hub_download(repo_id, filename, revision=None, cache_dir=None, **kwargs):
        requests.append((repo_id, filename))
        assert repo_id == TIMM_ID and filename == "model.safetensors"
        return str(tmp_path / "weights.safetensors")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", fake_hf_hub_download)
    attempts = block_network(monkeypatch)
    first = FirstForward(monkeypatch)
    out = tmp_path / "out"
    argv = [*TINY_ARGS, "--backbone_pretrained", "--framework", "byol", "--knn_every_epochs", "0"]
    assert run_pretrain_in_process([*argv, "--max_train_steps", 1, "--output_dir", out]) == 0
    assert requests == [(TIMM_ID, "model.safetensors")] and attempts == []
    backbone = {k.removeprefix("iecl.backbone."): v for k, v in first.state.items() if k.startswith("iecl.backbone.")}
    assert set(served) - set(backbone) == {"fc.weight", "fc.bias"}
    for name, tensor in backbone.items():
        if name == "conv1.weight":
            assert tensor.shape[-2:] == (3, 3) and served[name].shape[-2:] == (7, 7)  # the fresh CIFAR stem
        else:
            torch.testing.assert_close(tensor, served[name], rtol=0, atol=0, msg=name)
        momentum = first.state[f"head.momentum_backbone.{name}"]  # BYOL's target starts as the loaded encoder
        torch.testing.assert_close(momentum, tensor, rtol=0, atol=0, msg=f"momentum {name}")
    assert read_json(out / "config.json")["backbone_pretrained"] is True
    card = (out / "README.md").read_text()
    assert f"base_model: {TIMM_ID}" in card
    assert f"| initialized from | timm's pretrained `resnet18` weights (`{TIMM_ID}`), the first conv fresh" in card
    assert f"backbone from timm's pretrained resnet18 ({TIMM_ID}), except conv1: fresh" in capsys.readouterr().out


def test_backbone_pretrained_offline_is_a_one_line_error_naming_the_local_alternative(tmp_path, monkeypatch):
    """The real huggingface_hub download, offline, over an empty cache (weights cached on this machine must not make
    it pass); no connection is attempted."""
    import huggingface_hub
    import timm.models._hub

    real_download = huggingface_hub.hf_hub_download

    def download_into_empty_cache(*args, **kwargs):
        return real_download(*args, **{**kwargs, "cache_dir": str(tmp_path / "empty-cache")})

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", download_into_empty_cache)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    attempts = block_network(monkeypatch)
    with pytest.raises(ValueError) as error:
        run_pretrain_in_process(
            [*TINY_ARGS, "--backbone_pretrained", "--max_train_steps", 1, "--output_dir", tmp_path / "out"]
        )
    message = str(error.value)
    assert "\n" not in message and len(message) < 600, message
    assert message.startswith("--backbone_pretrained: timm could not load its pretrained weights of 'resnet18'")
    assert "Offline, use a local copy instead: --backbone_checkpoint PATH" in message
    assert attempts == []


def test_a_safetensors_file_with_another_stem_and_a_classifier(tmp_path):
    """A whole timm model's file into a cifar_stride2 backbone: conv1 (7x7) and fc left out, and said; a file of the
    IE-CL backbone itself (3x3 conv1, as `IECLModel.backbone.state_dict()` gives) loads whole. MoCo's momentum branch
    starts as the loaded encoder."""
    from safetensors.torch import save_file

    served = tiny_timm_weights(tmp_path / "timm.safetensors")
    config = tiny_config(framework="moco", moco_queue_size=32, backbone_checkpoint=str(tmp_path / "timm.safetensors"))
    model, line = pretraining_model(config)
    assert line == (
        f"fresh weights; backbone from {tmp_path / 'timm.safetensors'}, not used: fc (a classifier); "
        "conv1: fresh (the cifar_stride2 stem replaces the checkpoint's 7x7 first conv)"
    )
    for name, tensor in model.iecl.backbone.state_dict().items():
        if name != "conv1.weight":
            torch.testing.assert_close(tensor, served[name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(model.head.momentum_backbone.state_dict()[name], tensor, rtol=0, atol=0)

    own = {k: v + 1 for k, v in model.iecl.backbone.state_dict().items() if v.is_floating_point()}
    save_file(own, str(tmp_path / "iecl-backbone.safetensors"))
    model, line = pretraining_model(tiny_config(backbone_checkpoint=str(tmp_path / "iecl-backbone.safetensors")))
    assert line == f"fresh weights; backbone from {tmp_path / 'iecl-backbone.safetensors'}"
    for name, tensor in own.items():
        torch.testing.assert_close(model.iecl.backbone.state_dict()[name], tensor, rtol=0, atol=0, msg=name)


def test_backbone_checkpoints_that_do_not_fit_are_refused(timm_export, tmp_path):
    from safetensors.torch import save_file

    def refused(path, match, **fields):
        with pytest.raises(ValueError, match=match):
            pretraining_model(tiny_config(stem="timm", backbone_checkpoint=str(path), **fields))

    refused(tmp_path / "missing", r"`backbone_checkpoint` '.*missing': no such folder or \.safetensors file")
    refused(timm_export, r"holds a timm 'resnet18', not the backbone 'resnet34'", backbone="resnet34")
    refused(
        timm_export,
        r"do not fit the backbone 'resnet18' with backbone_kwargs \{'channels': \[8, 16, 32, 32\]\} .*other sizes",
        backbone_kwargs={"channels": [8, 16, 32, 32]},
    )
    partial = tmp_path / "partial.safetensors"
    weights = load_file(str(timm_export / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("layer4.")}, str(partial))
    refused(partial, r"do not fit .*missing: \['layer4\.")
    iecl_checkpoint = timm_export.parent / "iecl"  # the IE-CL checkpoint the export was written from
    for path in (iecl_checkpoint, iecl_checkpoint / "model.safetensors"):
        refused(path, r"is an IE-CL checkpoint, not a timm one: continue from it with `model_name_or_path`")
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    shutil.copy(timm_export / "model.safetensors", no_config)
    refused(no_config, r"not a timm folder .*config\.json")
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(timm_export / "config.json", no_weights)
    refused(no_weights, r"the folder has no model\.safetensors")


def test_from_pretrained_never_loads_the_starting_weights(tmp_path, monkeypatch):
    """A checkpoint whose config records --backbone_pretrained has its own weights: loading it (as the encoder, as the
    pretraining model, or to continue pretraining) downloads nothing."""
    import timm.models._hub

    def no_download(*args, **kwargs):
        raise AssertionError("from_pretrained tried to download timm weights")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", no_download)
    attempts = block_network(monkeypatch)
    model = IECLForPreTraining(tiny_config(stem="timm", backbone_pretrained=True))
    model.save_pretrained(tmp_path)
    assert read_json(tmp_path / "config.json")["backbone_pretrained"] is True
    saved = load_file(str(tmp_path / "model.safetensors"))
    for loaded in (
        IECLModel.from_pretrained(tmp_path).state_dict(),
        IECLForPreTraining.from_pretrained(tmp_path).state_dict(),
        pretraining_model(pretraining_config({}, str(tmp_path)), str(tmp_path))[0].state_dict(),
    ):
        for name, tensor in loaded.items():
            key = name if name in saved else f"iecl.{name}"
            torch.testing.assert_close(tensor, saved[key], rtol=0, atol=0, msg=name)
    assert attempts == []


def test_starting_weight_flags_are_checked(tmp_path):
    from iecl_hf.cli.pretrain import parse_pretrain_args as parse_args

    _, _, model_values = parse_args(["--backbone_pretrained", "--stem", "timm"])  # a switch: alone it means true
    assert model_values["backbone_pretrained"] is True and model_values["stem"] == "timm"
    _, _, model_values = parse_args(["--backbone_pretrained", "false", "--backbone_checkpoint", "2024"])
    assert model_values["backbone_pretrained"] is False and model_values["backbone_checkpoint"] == "2024"  # text
    with pytest.raises(ValueError, match=r"backbone_pretrained=True and backbone_checkpoint='x' both .*choose one"):
        IECLConfig(backbone_pretrained=True, backbone_checkpoint="x")
    with pytest.raises(ValueError, match=r"backbone_pretrained=True: timm has no pretrained weights for 'resnet50t'"):
        IECLConfig(backbone="resnet50t", backbone_pretrained=True)
    with pytest.raises(ValueError, match="backbone_pretrained must be True or False"):
        IECLConfig(backbone_pretrained="yes")
    with pytest.raises(ValueError, match="backbone_checkpoint must be the path"):
        IECLConfig(backbone_checkpoint="")
    # With --model_name_or_path the checkpoint's encoder weights win: a flag asking for others is refused.
    IECLConfig(**TINY_MODEL).save_pretrained(tmp_path)
    for flag in ({"backbone_pretrained": True}, {"backbone_checkpoint": "outputs/x-timm"}):
        with pytest.raises(ValueError, match=r"with `backbone_.*: the checkpoint's encoder has its own weights"):
            pretraining_config(flag, str(tmp_path))
    assert pretraining_config({"backbone_pretrained": False}, str(tmp_path)).backbone_pretrained is False
