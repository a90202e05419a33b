"""A pretraining checkpoint loads as the encoder in a fresh process where `iecl_hf` cannot be imported."""

import json
import textwrap

import pytest
import torch
from helpers import REMOTE_CODE_FILES, run_without_the_package
from safetensors.torch import load_file

from iecl_hf import IECLConfig, IECLForImageClassification, IECLForPreTraining, IECLModel, build_image_processor

SIZE = 16

FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    sys.modules["iecl_hf"] = None  # the package must not be needed, even if it were installed
    import json
    import numpy as np
    import torch
    import transformers
    from PIL import Image
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, pipeline

    checkpoint, report = sys.argv[1], {}
    try:
        import iecl_hf  # noqa: F401
        report["iecl_hf_importable"] = True
    except ImportError:
        report["iecl_hf_importable"] = False

    try:  # first, in this fresh process: without trust_remote_code the checkpoint must be refused
        AutoModel.from_pretrained(checkpoint)
        report["untrusted_error"] = None
    except Exception as error:
        report["untrusted_error"] = f"{type(error).__name__}: {error}"

    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    report["model_class"] = type(model).__name__
    report["model_module"] = type(model).__module__
    report["config_class"] = type(AutoConfig.from_pretrained(checkpoint, trust_remote_code=True)).__name__
    with torch.no_grad():
        torch.save(model(pixel_values=torch.load("pixel_values.pt")).pooler_output, "features_fresh.pt")

    processor = AutoImageProcessor.from_pretrained(checkpoint)
    report["processor_class"] = type(processor).__name__
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8))
    image.save("image.png")
    report["processed_shape"] = list(processor(image, return_tensors="pt")["pixel_values"].shape)

    extractor = pipeline("image-feature-extraction", model=checkpoint, trust_remote_code=True)
    report["pipeline_pooled"] = extractor(image, pool=True)
    report["pipeline_hidden_shape"] = list(np.array(extractor(image)).shape)
    with open("report.json", "w") as file:
        json.dump(report, file)
    """
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A pretraining checkpoint (SAIB and the encoder's spectral-norm penalty on, the defaults) with non-trivial
    weights, BatchNorm statistics and power-iteration vectors, plus its image processor."""
    directory = tmp_path_factory.mktemp("hub")
    config = IECLConfig(
        backbone_kwargs={"channels": [16, 32, 64, 128]}, stem="cifar_stride2", image_size=SIZE, saib_dim=8
    )
    torch.manual_seed(0)
    model = IECLForPreTraining(config)
    with torch.no_grad():
        for parameter in model.parameters():  # a weight that failed to load (re-initialized) would show
            parameter.add_(0.05 * torch.randn_like(parameter))
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    assert config.encoder_spectral_norm and model.spectral_penalty is not None
    model.train()
    model(torch.rand(4, 3, SIZE, SIZE), torch.rand(4, 3, SIZE, SIZE))  # one power iteration: u, v away from their init
    model.eval()
    model.save_pretrained(directory / "checkpoint")
    build_image_processor(config).save_pretrained(directory / "checkpoint")
    pixel_values = torch.randn(3, 3, SIZE, SIZE)
    torch.save(pixel_values, directory / "pixel_values.pt")
    with torch.no_grad():
        features = model.iecl(pixel_values).pooler_output
    return directory, model, pixel_values, features


@pytest.fixture(scope="module")
def fresh_process_report(checkpoint):
    directory = checkpoint[0]
    result = run_without_the_package(FRESH_PROCESS, directory / "checkpoint", directory=directory)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((directory / "report.json").read_text())


def test_checkpoint_files(checkpoint):
    directory = checkpoint[0] / "checkpoint"
    names = {path.name for path in directory.iterdir()}
    assert "model.safetensors" in names
    assert not [name for name in names if name.endswith(".bin")], names
    # The modeling files are copied flat beside the weights, for trust_remote_code: all of them and nothing else.
    assert {name for name in names if name.endswith(".py")} == REMOTE_CODE_FILES
    assert "preprocessor_config.json" in names
    weights = load_file(directory / "model.safetensors")
    # The whole pretraining model is saved (the encoder loads its part and ignores the rest).
    assert any(key.startswith("view_generator.") for key in weights) and any(
        key.startswith("head.projector.") for key in weights
    )
    assert "view_generator.restore.weight" in weights


def test_auto_map_names_every_auto_class(checkpoint):
    config = json.loads((checkpoint[0] / "checkpoint" / "config.json").read_text())
    assert config["model_type"] == "iecl"
    auto_map = config["auto_map"]
    assert set(auto_map) >= {"AutoConfig", "AutoModel", "AutoModelForPreTraining", "AutoModelForImageClassification"}
    assert auto_map["AutoConfig"].endswith("IECLConfig")
    assert auto_map["AutoModel"].endswith("IECLModel")
    assert auto_map["AutoModelForPreTraining"].endswith("IECLForPreTraining")
    assert auto_map["AutoModelForImageClassification"].endswith("IECLForImageClassification")


def test_fresh_process_without_the_package_loads_the_encoder(checkpoint, fresh_process_report):
    directory, _, _, features = checkpoint
    report = fresh_process_report
    assert report["iecl_hf_importable"] is False
    assert report["model_class"] == "IECLModel"
    assert report["config_class"] == "IECLConfig"
    assert "iecl_hf" not in report["model_module"]  # remote code, not the package
    fresh_features = torch.load(directory / "features_fresh.pt")
    assert fresh_features.shape == features.shape
    torch.testing.assert_close(fresh_features, features, atol=1e-5, rtol=0)


def test_fresh_process_refuses_without_trust_remote_code(fresh_process_report):
    error = fresh_process_report["untrusted_error"]
    assert error is not None, "the checkpoint loaded without trust_remote_code"
    assert "trust_remote_code" in error


def test_image_processor_and_pipeline(checkpoint, fresh_process_report):
    from PIL import Image

    directory, model, _, _ = checkpoint
    report = fresh_process_report
    assert report["processor_class"] == "BitImageProcessor"
    assert report["processed_shape"] == [1, 3, SIZE, SIZE]
    pooled = torch.tensor(report["pipeline_pooled"]).reshape(1, -1)
    assert pooled.shape == (1, model.iecl.num_features)
    # The pipeline's features are the encoder's, on the image processor's output.
    processor = build_image_processor(model.config)
    inputs = processor(Image.open(directory / "image.png"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model.iecl(inputs).pooler_output
    torch.testing.assert_close(pooled, expected, atol=1e-4, rtol=1e-4)
    assert report["pipeline_hidden_shape"][-3] == model.iecl.num_features  # the feature map (C, h, w)


def test_classifier_from_pretraining_checkpoint_keeps_the_backbone(checkpoint):
    directory, model, pixel_values, features = checkpoint
    classifier = IECLForImageClassification.from_pretrained(
        directory / "checkpoint", num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2}
    )
    expected = model.iecl.state_dict()
    loaded = classifier.iecl.state_dict()
    assert expected.keys() == loaded.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    classifier.eval()
    with torch.no_grad():
        output = classifier(pixel_values, labels=torch.tensor([0, 1, 2]))
    assert output.logits.shape == (3, 3) and output.loss is not None
    assert classifier.config.id2label[1] == "b"


def test_encoder_from_pretraining_checkpoint_in_process(checkpoint):
    directory, _, pixel_values, features = checkpoint
    encoder = IECLModel.from_pretrained(directory / "checkpoint").eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixel_values).pooler_output, features, atol=1e-6, rtol=0)


def test_spectral_norm_checkpoint_loads_as_a_plain_encoder(checkpoint):
    """The spectral-norm penalty is no reparametrization: the released encoder is a plain timm backbone, and the
    power-iteration vectors live in the pretraining checkpoint only."""
    directory, model, pixel_values, features = checkpoint
    weights = load_file(directory / "checkpoint" / "model.safetensors")
    assert "spectral_penalty.u0" in weights and "spectral_penalty.v0" in weights
    torch.testing.assert_close(weights["spectral_penalty.u0"], model.spectral_penalty.u0, rtol=0, atol=0)
    assert not [key for key in weights if "parametrizations" in key]
    encoder, info = IECLModel.from_pretrained(directory / "checkpoint", output_loading_info=True)
    keys = list(encoder.state_dict())
    assert not [key for key in keys if "parametrizations" in key]
    assert not [key for key in keys if "spectral_penalty" in key]
    assert not any(torch.nn.utils.parametrize.is_parametrized(module) for module in encoder.modules())
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert keys == list(model.iecl.state_dict())
    encoder.eval()
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixel_values).pooler_output, features, atol=1e-6, rtol=0)
    # The pretraining class gets the vectors back (an exact resume).
    loaded = IECLForPreTraining.from_pretrained(directory / "checkpoint")
    for name, value in model.spectral_penalty.state_dict().items():
        assert torch.equal(loaded.spectral_penalty.state_dict()[name], value), name
