import inspect
import json

import pytest

from iecl_hf import IECLConfig


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"framework": "nope"}, "framework"),
        ({"tau": 0}, "tau"),
        ({"tau": -0.1}, "tau"),
        ({"beta_kl": -1}, "beta_kl"),
        ({"lambda_entropy": -0.5}, "lambda_entropy"),
        ({"saib_weight_decay": -0.01}, "saib_weight_decay"),
        ({"spectral_norm_weight": -1}, "spectral_norm_weight"),
        ({"covariance_ridge": 0}, "covariance_ridge"),
        ({"covariance_ridge": -1e-3}, "covariance_ridge"),
        ({"coding_rate_epsilon": 0}, "coding_rate_epsilon"),
        ({"coding_rate_epsilon": "big"}, "coding_rate_epsilon"),
        ({"backbone": "definitely_not_a_timm_model"}, "backbone"),
        ({"entropy_estimator": "shannon"}, "entropy_estimator"),
        ({"kl_covariance": "low_rank"}, "kl_covariance"),
        ({"generator_architecture": "gan"}, "generator_architecture"),
        ({"encoder_spectral_norm": "yes"}, "encoder_spectral_norm"),
        ({"encoder_spectral_norm": 1}, "encoder_spectral_norm"),
        ({"projection_output_batchnorm": "true"}, "projection_output_batchnorm"),
        ({"stem": "imagenet"}, "stem"),
        ({"saib_patch_size": 5, "image_size": 32}, "saib_patch_size"),
        ({"saib_patch_size": 0}, "saib_patch_size"),
        ({"saib_dim": 0}, "saib_dim"),
        ({"saib_dim": 8.0}, "saib_dim"),
        ({"saib_expansion": 0}, "saib_expansion"),
        ({"image_size": 0}, "image_size"),
        ({"momentum_base": 1.0}, "momentum_base"),
        ({"moco_queue_size": 0}, "moco_queue_size"),
    ],
)
def test_bad_values_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        IECLConfig(**kwargs)


def test_patch_size_error_names_both_sizes():
    with pytest.raises(ValueError, match=r"saib_patch_size=5 must divide image_size=32"):
        IECLConfig(saib_patch_size=5, image_size=32)
    # A patch size dividing the image size is accepted, whatever the default would be.
    assert IECLConfig(saib_patch_size=8, image_size=16).saib_patch_size == 8


@pytest.mark.parametrize(
    "kwargs, allowed",
    [
        ({"framework": "nope"}, "'simclr'"),
        ({"entropy_estimator": "shannon"}, "'coding_rate', 'gaussian'"),
        ({"kl_covariance": "low_rank"}, "'diagonal', 'full'"),
        ({"generator_architecture": "gan"}, "'saib', 'none'"),
        ({"saib_stance": "hostile"}, "'cooperative', 'detached', 'adversarial'"),
    ],
)
def test_choice_errors_list_the_allowed_values(kwargs, allowed):
    with pytest.raises(ValueError, match=allowed):
        IECLConfig(**kwargs)


@pytest.mark.parametrize("framework", ["simclr", "moco", "byol", "simsiam"])
def test_every_framework_is_accepted(framework):
    assert IECLConfig(framework=framework).framework == framework


@pytest.mark.parametrize("value, expected", [("saib", "saib"), ("none", "none"), (None, "none")])
def test_generator_architecture_none_is_the_string_none(value, expected):
    assert IECLConfig(generator_architecture=value).generator_architecture == expected


def test_zero_weights_are_allowed():
    config = IECLConfig(lambda_entropy=0.0, beta_kl=0, saib_weight_decay=0.0, spectral_norm_weight=0.0)
    assert (config.lambda_entropy, config.beta_kl, config.saib_weight_decay, config.spectral_norm_weight) == (
        0,
        0,
        0,
        0,
    )


def test_defaults():
    config = IECLConfig()
    assert (config.backbone, config.stem, config.framework, config.image_size) == ("resnet18", "cifar", "simclr", 32)
    assert config.tau == 0.1  # SimCLR's; MoCo's: tests/test_frameworks.py
    assert config.generator_architecture == "saib"
    assert (config.saib_patch_size, config.saib_dim, config.saib_expansion, config.saib_weight_decay) == (
        4,
        64,
        2,
        0.01,
    )
    assert (config.lambda_entropy, config.entropy_estimator, config.coding_rate_epsilon) == (1.0, "coding_rate", 0.5)
    assert (config.beta_kl, config.kl_covariance, config.covariance_ridge) == (0.1, "diagonal", 1e-3)
    assert config.encoder_spectral_norm is True and config.spectral_norm_weight == 1.0
    assert config.projection_output_batchnorm is True  # SimCLR's; MoCo's and BYOL's: tests/test_frameworks.py


# The fields of the paper's formulation: the signature from SAIB's switch to the spectral penalty's weight.
_PARAMETERS = list(inspect.signature(IECLConfig.__init__).parameters)
# (lambda_saib_logdet needs SAIB, which the round trip below switches off: its own round trip follows.)
NEW_FIELDS = tuple(
    name
    for name in _PARAMETERS[
        _PARAMETERS.index("generator_architecture") : _PARAMETERS.index("spectral_norm_weight") + 1
    ]
    if name != "lambda_saib_logdet"
)


def test_round_trip_through_save_pretrained(tmp_path):
    config = IECLConfig(
        backbone_kwargs={"channels": [32, 64, 128, 256]},
        stem="cifar_stride2",
        image_size=16,
        tau=0.3,
        generator_architecture="none",
        saib_stance="adversarial",
        saib_third_skip="literal",
        saib_patch_size=2,
        saib_dim=16,
        saib_expansion=3,
        saib_weight_decay=0.05,
        lambda_entropy=0.25,
        entropy_estimator="gaussian",
        coding_rate_epsilon=0.3,
        beta_kl=0.7,
        kl_covariance="full",
        covariance_ridge=1e-2,
        encoder_spectral_norm=False,
        spectral_norm_weight=2.5,
    )
    assert all(getattr(config, name) != getattr(IECLConfig(), name) for name in NEW_FIELDS)  # every one non-default
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "iecl"
    assert "temperature" not in saved  # the contrastive temperature is `tau` (generation-parameter clash)
    assert saved["encoder_spectral_norm"] is False and saved["generator_architecture"] == "none"
    loaded = IECLConfig.from_pretrained(tmp_path)
    for name in ("backbone", "backbone_kwargs", "stem", "image_size", "tau", *NEW_FIELDS, "image_mean", "image_std"):
        assert getattr(loaded, name) == getattr(config, name), name
        assert type(getattr(loaded, name)) is type(getattr(config, name)), name
    assert loaded.to_dict() == config.to_dict()
    config = IECLConfig(lambda_saib_logdet=0.3)
    config.save_pretrained(tmp_path)
    assert IECLConfig.from_pretrained(tmp_path).lambda_saib_logdet == 0.3


def test_from_pretrained_validates(tmp_path):
    IECLConfig().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    saved["tau"] = -1
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="tau"):
        IECLConfig.from_pretrained(tmp_path)


def test_from_pretrained_validates_the_new_fields(tmp_path):
    IECLConfig().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    saved["saib_patch_size"] = 3
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="saib_patch_size"):
        IECLConfig.from_pretrained(tmp_path)
