"""ViT backbones: `image_size` reaches timm's `img_size`, and a tiny ViT goes through everything a
ResNet does: the pretraining forward and backward, save and load (`AutoModel` and `pipeline` with remote code, in a
process without the package), the timm export, and the `vit_small` preset. No network."""

import json
import textwrap

import pytest
import torch
from helpers import REPO, block_network, load_script, run_without_the_package, single_thread
from safetensors.torch import save_file

from iecl_hf import IECLConfig, IECLForPreTraining, IECLModel, build_image_processor
from iecl_hf.cli import run_recipe
from iecl_hf.cli.pretrain import parse_pretrain_args as parse_args
from iecl_hf.modeling_iecl import build_backbone, timm_model_kwargs
from iecl_hf.presets import PRESETS

SIZE = 16
# ViT-S/16's architecture name with a tiny body: 4 px patches (a 4 x 4 grid at 16 px), width 32, 2 blocks. No
# img_size here: it comes from image_size. SAIB's patches are the ViT's own.
TINY_VIT = dict(
    backbone="vit_small_patch16_224",
    backbone_kwargs={"patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2},
    stem="timm",
    image_size=SIZE,
    saib_patch_size=4,
    saib_dim=8,
    projection_hidden_dim=32,
    projection_dim=16,
    image_mean=[0.5, 0.5, 0.5],
    image_std=[0.5, 0.5, 0.5],
)


def moved(model):
    """Every weight nudged: features that match after a round trip cannot come from a fresh init."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A pretraining checkpoint of the tiny ViT (remote code and image processor included), a batch and its
    pooled features."""
    folder = tmp_path_factory.mktemp("vit") / "checkpoint"
    config = IECLConfig(**TINY_VIT)
    torch.manual_seed(0)
    model = moved(IECLForPreTraining(config)).eval()
    model.save_pretrained(folder)
    build_image_processor(config).save_pretrained(folder)
    pixel_values = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        features = model.iecl(pixel_values).pooler_output
    return folder, model, pixel_values, features


# ------------------------------------------------------------------------------------------------ image_size


def test_image_size_reaches_timms_img_size():
    encoder = IECLModel(IECLConfig(**{**TINY_VIT, "image_size": 32}))
    assert tuple(encoder.backbone.patch_embed.img_size) == (32, 32)
    assert encoder.backbone.pos_embed.shape == (1, 1 + 8 * 8, 32)  # class token + an 8 x 8 grid of 4 px patches
    with torch.no_grad():
        assert encoder(torch.rand(2, 3, 32, 32)).pooler_output.shape == (2, 32)


def test_an_explicit_img_size_wins_and_cnns_get_none():
    config = IECLConfig(**{**TINY_VIT, "backbone_kwargs": {**TINY_VIT["backbone_kwargs"], "img_size": 24}})
    assert timm_model_kwargs(config)["img_size"] == 24
    assert tuple(build_backbone(config).patch_embed.img_size) == (24, 24)
    resnet = IECLConfig(backbone_kwargs={"channels": [8, 16, 32, 64]}, stem="timm", image_size=SIZE)
    assert timm_model_kwargs(resnet) == {"channels": [8, 16, 32, 64]}  # timm's ResNet takes no img_size
    build_backbone(resnet)


def test_pretrained_weights_of_another_size_are_resampled_by_timm(tmp_path, monkeypatch):
    """timm's own download (patched to serve a file written here) and loading: weights of a 32 px ViT go into a
    16 px one, the position embeddings resampled by timm to the 4 x 4 grid, the other weights as they are."""
    import timm
    import timm.models._hub
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(1)
    source = timm.create_model("vit_small_patch16_224", num_classes=0, img_size=32, **TINY_VIT["backbone_kwargs"])
    served = {name: tensor.contiguous() for name, tensor in moved(source).state_dict().items()}
    save_file(served, tmp_path / "model.safetensors")
    requests = []

    def fake_hf_hub_download(repo_id, filename, revision=None, cache_dir=None, **kwargs):
        requests.append(filename)
        return str(tmp_path / "model.safetensors")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", fake_hf_hub_download)
    attempts = block_network(monkeypatch)
    backbone = build_backbone(IECLConfig(**TINY_VIT), pretrained=True)
    assert requests == ["model.safetensors"] and attempts == []
    assert tuple(backbone.patch_embed.img_size) == (SIZE, SIZE)
    loaded = backbone.state_dict()
    expected = resample_abs_pos_embed(served["pos_embed"], new_size=(4, 4), num_prefix_tokens=1)
    torch.testing.assert_close(loaded["pos_embed"], expected, rtol=0, atol=1e-6)
    for name, tensor in served.items():
        if name != "pos_embed":
            torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=name)


# ------------------------------------------------------------------------------------------------ training


def test_forward_and_backward_reach_saib_and_the_backbone():
    torch.manual_seed(0)
    model = IECLForPreTraining(IECLConfig(**TINY_VIT)).train()
    with single_thread():
        output = model(torch.rand(4, 3, SIZE, SIZE), torch.rand(4, 3, SIZE, SIZE))
        assert torch.isfinite(output.loss)
        output.loss.backward()
    generator = list(model.generator_parameters())
    assert generator and all(p.grad is not None and torch.isfinite(p.grad).all() for p in generator)
    assert any(p.grad.abs().sum() > 0 for p in generator)
    backbone = dict(model.iecl.backbone.named_parameters())
    missing = [name for name, p in backbone.items() if p.grad is None]
    assert not missing, missing  # every ViT weight, the class token and position embeddings included
    for name in ("patch_embed.proj.weight", "pos_embed", "cls_token", "blocks.0.attn.qkv.weight", "norm.weight"):
        assert backbone[name].grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------------ save and load

FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    sys.modules["iecl_hf"] = None  # the remote code alone, as on a machine without the package
    import json
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoModel, pipeline

    checkpoint, report = sys.argv[1], {}
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    report["model_class"] = type(model).__name__
    report["model_module"] = type(model).__module__
    with torch.no_grad():
        torch.save(model(pixel_values=torch.load("pixel_values.pt")).pooler_output, "features_fresh.pt")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8))
    image.save("image.png")
    extractor = pipeline("image-feature-extraction", model=checkpoint, trust_remote_code=True)
    report["pipeline_pooled"] = extractor(image, pool=True)
    with open("report.json", "w") as file:
        json.dump(report, file)
    """
)


def test_save_then_automodel_and_pipeline_load_in_a_process_without_the_package(checkpoint):
    from PIL import Image

    folder, model, pixel_values, features = checkpoint
    directory = folder.parent
    torch.save(pixel_values, directory / "pixel_values.pt")
    result = run_without_the_package(FRESH_PROCESS, folder, directory=directory, OMP_NUM_THREADS=1)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((directory / "report.json").read_text())
    assert report["model_class"] == "IECLModel" and "iecl_hf" not in report["model_module"]
    torch.testing.assert_close(torch.load(directory / "features_fresh.pt"), features, rtol=0, atol=1e-5)
    # The pipeline: the saved image processor (resize, crop to 16 px, normalize), then the class token's features.
    pooled = torch.tensor(report["pipeline_pooled"]).reshape(1, -1)
    inputs = build_image_processor(model.config)(Image.open(directory / "image.png"), return_tensors="pt")
    with torch.no_grad():
        expected = model.iecl(inputs["pixel_values"]).pooler_output
    assert pooled.shape == (1, 32)
    torch.testing.assert_close(pooled, expected, rtol=1e-4, atol=1e-4)


def test_timm_export_round_trip(checkpoint, tmp_path, monkeypatch):
    """recipes/export_timm.py on the ViT: timm (`local-dir:`) and transformers (`TimmWrapperModel`, no remote code)
    build it at the checkpoint's 16 px and give its features."""
    import timm
    from transformers import AutoModel

    folder, _, pixel_values, features = checkpoint
    attempts = block_network(monkeypatch)
    export = load_script(REPO / "recipes" / "export_timm.py", "iecl_test_vit_export_timm_recipe")
    out = tmp_path / "timm"
    with single_thread():
        code = run_recipe(lambda: export.main(["--model_name_or_path", str(folder), "--output_dir", str(out)]), "x")
    assert code == 0
    timm_config = json.loads((out / "config.json").read_text())
    assert timm_config["architecture"] == "vit_small_patch16_224"
    assert timm_config["pretrained_cfg"]["input_size"] == [3, SIZE, SIZE]
    with single_thread(), torch.no_grad():
        in_timm = timm.create_model(f"local-dir:{out}", pretrained=True, num_classes=0).eval()
        wrapper = AutoModel.from_pretrained(out).eval()
        assert tuple(in_timm.patch_embed.img_size) == (SIZE, SIZE)
        torch.testing.assert_close(in_timm(pixel_values), features, rtol=0, atol=1e-5)
        assert type(wrapper).__name__ == "TimmWrapperModel"
        torch.testing.assert_close(wrapper(pixel_values).pooler_output, features, rtol=0, atol=1e-5)
    assert attempts == []


# ------------------------------------------------------------------------------------------------ the preset


def test_vit_small_preset_parses_with_adamw():
    _, train_args, model = parse_args(["--preset", "vit_small"])  # checked as it is parsed
    assert model == PRESETS["vit_small"] and train_args.preset == "vit_small"
    config = IECLConfig(**model)
    assert (config.backbone, config.stem, config.image_size, config.saib_patch_size) == (
        "vit_small_patch16_224",
        "timm",
        224,
        16,
    )
    assert timm_model_kwargs(config) == {"img_size": 224}
    assert (train_args.optimizer, train_args.learning_rate, train_args.weight_decay) == ("adamw", 1.25e-4, 0.05)


def test_vit_small_preset_training_flags_yield_to_given_ones(tmp_path):
    _, train_args, _ = parse_args(["--preset", "vit_small", "--learning_rate", "3e-4"])
    assert (train_args.optimizer, train_args.learning_rate, train_args.weight_decay) == ("adamw", 3e-4, 0.05)
    _, train_args, _ = parse_args(["--preset=vit_small", "--weight_decay=0.1"])
    assert (train_args.optimizer, train_args.learning_rate, train_args.weight_decay) == ("adamw", 1.25e-4, 0.1)
    # Another optimizer: the preset's AdamW learning rate and weight decay are not that optimizer's.
    _, train_args, _ = parse_args(["--preset", "vit_small", "--optimizer", "lars"])
    assert (train_args.optimizer, train_args.learning_rate, train_args.weight_decay) == ("lars", None, 5e-4)
    config_file = tmp_path / "args.yaml"
    config_file.write_text("preset: vit_small\nweight_decay: 0.02\n")
    _, train_args, _ = parse_args(["--config_file", str(config_file)])
    assert (train_args.optimizer, train_args.weight_decay) == ("adamw", 0.02)
    # The other presets keep the recipe's defaults.
    _, train_args, _ = parse_args(["--preset", "stl10"])
    assert (train_args.optimizer, train_args.learning_rate, train_args.weight_decay) == ("sgd", None, 5e-4)
