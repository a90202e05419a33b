"""`recipes/export_timm.py`: the encoder of an IE-CL checkpoint in timm's own folder layout, loaded by timm
(`local-dir:`) and by transformers (`TimmWrapperModel`, no remote code) with the same features.
No network: the Hub upload is patched."""

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import REPO, block_network, load_script, single_thread
from safetensors.torch import load_file

from iecl_hf import IECLConfig, IECLForPreTraining
from iecl_hf.cli import run_recipe

EXPORT = REPO / "recipes" / "export_timm.py"
# A tiny ResNet-18 with timm's own stem (the one timm can build by name), 32 px, its own normalization.
TINY_TIMM_STEM = dict(
    backbone_kwargs={"channels": [8, 16, 32, 64]},
    stem="timm",
    image_size=32,
    image_mean=[0.5, 0.4, 0.3],
    image_std=[0.2, 0.25, 0.3],
    projection_hidden_dim=32,
    projection_dim=16,
    saib_dim=8,
)


def export_module():
    return load_script(EXPORT, "iecl_test_export_timm_recipe")


def write_tiny_checkpoint(folder, seed: int = 0, **overrides) -> Path:
    """A pretraining checkpoint (`save_pretrained`, remote code included) whose encoder is not a fresh one: every
    backbone weight and BatchNorm statistic moved, so features that match could not come from timm's init."""
    torch.manual_seed(seed)
    model = IECLForPreTraining(IECLConfig(**{**TINY_TIMM_STEM, **overrides}))
    with torch.no_grad():
        for name, tensor in model.iecl.backbone.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor))
    model.save_pretrained(folder)
    return Path(folder)


def run_export(argv):
    """`main(argv)` of recipes/export_timm.py through `run_recipe`, as the script runs (bad input: exit code 2)."""
    recipe = export_module()
    with single_thread():
        return run_recipe(lambda: recipe.main([str(a) for a in argv]), "export_timm.py")


def error_line(err: str) -> str:
    """The recipe's error: one line `export_timm.py: error: ...` (progress bars of the loading may precede it)."""
    (line,) = [line for line in err.splitlines() if line.startswith("export_timm.py: error:")]
    return line


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("iecl") / "out")


def test_timm_and_transformers_load_the_export_with_the_same_features(checkpoint, tmp_path, monkeypatch):
    import timm
    from transformers import AutoModel

    attempts = block_network(monkeypatch)
    folder = tmp_path / "timm"
    assert run_export(["--model_name_or_path", checkpoint, "--output_dir", folder]) == 0
    assert sorted(os.listdir(folder)) == ["README.md", "config.json", "model.safetensors"]  # no remote code
    assert [p.name for p in tmp_path.iterdir()] == ["timm"]  # the temporary folder is gone

    timm_config = json.loads((folder / "config.json").read_text())
    assert timm_config["architecture"] == "resnet18" and "model_type" not in timm_config
    pretrained_cfg = timm_config["pretrained_cfg"]
    assert pretrained_cfg["mean"] == TINY_TIMM_STEM["image_mean"]
    assert pretrained_cfg["std"] == TINY_TIMM_STEM["image_std"]
    assert pretrained_cfg["input_size"] == [3, 32, 32] and pretrained_cfg["num_classes"] == 0
    assert "tag" not in pretrained_cfg and "license" not in pretrained_cfg  # timm's own weights' provenance
    assert timm_config["model_args"]["channels"] == [8, 16, 32, 64]
    # timm's key names: the backbone's own, without the IE-CL prefix
    saved = load_file(str(checkpoint / "model.safetensors"))
    exported = load_file(str(folder / "model.safetensors"))
    assert set(exported) == {k.removeprefix("iecl.backbone.") for k in saved if k.startswith("iecl.backbone.")}
    for name, tensor in exported.items():
        torch.testing.assert_close(tensor, saved[f"iecl.backbone.{name}"], rtol=0, atol=0)

    torch.manual_seed(1)
    pixel_values = torch.randn(6, 3, 32, 32)
    with single_thread(), torch.no_grad():
        reference = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
        assert type(reference).__name__ == "IECLModel"
        expected = reference(pixel_values).pooler_output
        in_timm = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0).eval()
        wrapper = AutoModel.from_pretrained(folder).eval()  # no trust_remote_code
        from_timm, from_wrapper = in_timm(pixel_values), wrapper(pixel_values).pooler_output
    assert expected.shape == (6, 64)
    torch.testing.assert_close(from_timm, expected, rtol=0, atol=1e-5)
    assert type(wrapper).__name__ == "TimmWrapperModel" and type(wrapper).__module__.startswith("transformers.")
    torch.testing.assert_close(from_wrapper, expected, rtol=0, atol=1e-5)
    # timm's preprocessing of the export is the checkpoint's
    data_config = timm.data.resolve_data_config({}, model=in_timm)
    assert data_config["input_size"] == (3, 32, 32) and list(data_config["mean"]) == TINY_TIMM_STEM["image_mean"]
    card = (folder / "README.md").read_text()
    assert "library_name: timm" in card and f'timm.create_model("local-dir:{folder}"' in card
    assert attempts == []


def test_a_cifar_stem_is_refused_in_one_line_and_nothing_is_written(tmp_path, capsys):
    checkpoint = write_tiny_checkpoint(tmp_path / "cifar", stem="cifar_stride2")
    capsys.readouterr()
    folder = tmp_path / "timm"
    assert run_export(["--model_name_or_path", checkpoint, "--output_dir", folder]) == 2
    err = capsys.readouterr().err
    assert err.strip() == error_line(err), err  # that line and nothing else: refused before anything is loaded
    assert err.startswith("export_timm.py: error: --model_name_or_path")
    assert "stem='cifar_stride2'" in err and "timm cannot build" in err and "IECLModel.backbone" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar"]


def test_an_interrupted_export_leaves_nothing_and_an_earlier_one_is_replaced(checkpoint, tmp_path, monkeypatch):
    import timm.models

    folder = tmp_path / "timm"
    assert run_export(["--model_name_or_path", checkpoint, "--output_dir", folder]) == 0
    first = (folder / "model.safetensors").read_bytes()

    def interrupted(model, directory, **kwargs):
        Path(directory).mkdir(parents=True, exist_ok=True)
        Path(directory, "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(timm.models, "save_for_hf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_export(["--model_name_or_path", checkpoint, "--output_dir", tmp_path / "other"])
    assert [p.name for p in tmp_path.iterdir()] == ["timm"]  # neither the target nor a temporary folder
    with pytest.raises(KeyboardInterrupt):
        run_export(["--model_name_or_path", checkpoint, "--output_dir", folder])
    assert (folder / "model.safetensors").read_bytes() == first  # the earlier export is untouched
    monkeypatch.undo()

    other = write_tiny_checkpoint(tmp_path / "other-checkpoint", seed=1)
    assert run_export(["--model_name_or_path", other, "--output_dir", folder]) == 0  # replaces the earlier export
    assert (folder / "model.safetensors").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-checkpoint", "timm"]


def test_an_output_dir_holding_something_else_or_a_foreign_checkpoint_is_refused(checkpoint, tmp_path, capsys):
    assert run_export(["--model_name_or_path", checkpoint, "--output_dir", checkpoint]) == 2
    assert "holds no timm export to replace" in capsys.readouterr().err
    assert (checkpoint / "config.json").is_file()  # untouched
    foreign = tmp_path / "vit"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"model_type": "vit"}))
    assert run_export(["--model_name_or_path", foreign, "--output_dir", tmp_path / "timm"]) == 2
    assert "is not an IE-CL checkpoint: model_type='vit'" in capsys.readouterr().err
    assert run_export(["--model_name_or_path", checkpoint, "--push_to_hub"]) == 2
    assert "--push_to_hub needs --hub_model_id" in capsys.readouterr().err


def test_push_uploads_the_written_folder_and_a_failure_keeps_it(checkpoint, tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi

    attempts = block_network(monkeypatch)
    uploads = []

    def create_repo(self, repo_id, **kwargs):
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        uploads.append((repo_id, sorted(os.listdir(folder_path)), Path(folder_path, "README.md").read_text()))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    folder = tmp_path / "timm"
    argv = ["--model_name_or_path", checkpoint, "--output_dir", folder, "--push_to_hub", "--hub_model_id", "you/enc"]
    assert run_export(argv) == 0
    ((repo_id, files, card),) = uploads
    assert repo_id == "you/enc" and files == ["README.md", "config.json", "model.safetensors"]
    assert 'timm.create_model("hf-hub:you/enc", pretrained=True, num_classes=0)' in card
    assert "Pushed to https://huggingface.co/you/enc" in capsys.readouterr().out

    def offline(self, *args, **kwargs):
        raise ConnectionError("the Hub is unreachable\nsecond line")

    monkeypatch.setattr(HfApi, "upload_folder", offline)
    assert run_export(argv) == 1
    line = error_line(capsys.readouterr().err)
    assert "ConnectionError: the Hub is unreachable second line" in line
    assert line.endswith(f"hf upload you/enc {folder}")
    assert (folder / "model.safetensors").is_file()  # the local export is complete
    assert attempts == []


def test_the_pretraining_card_points_to_the_export_or_to_the_backbone():
    from iecl_hf.hub.model_card import render_pretraining_card

    def card(stem):
        config = IECLConfig(**{**TINY_TIMM_STEM, "stem": stem})
        return render_pretraining_card(
            config,
            repo_id="you/iecl-tiny",
            dataset_name="digits",
            num_train_images=64,
            steps=1,
            epochs=1,
            global_batch_size=8,
            optimizer="sgd",
            learning_rate=0.1,
            weight_decay=0.0,
            lr_scheduler_type="cosine",
            final_figures={},
        ).content

    timm_card = card("timm")
    assert "python recipes/export_timm.py --model_name_or_path you/iecl-tiny" in timm_card.replace("\n", " ")
    assert 'timm.create_model("local-dir:iecl-tiny-timm", pretrained=True, num_classes=0)' in timm_card
    cifar_card = card("cifar")
    assert "export_timm" not in cifar_card and "no timm-format export" in cifar_card
    assert "`model.backbone`" in cifar_card
