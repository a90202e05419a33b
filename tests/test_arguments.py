"""Arguments of recipes/pretrain.py: config files, flag precedence, IECLConfig overrides, and up-front validation."""

import dataclasses
import inspect
import json
from unittest import mock

import pytest
import torch
from helpers import run_pretrain_in_process

from iecl_hf import IECLConfig
from iecl_hf.cli.model_flags import ModelArguments, parse_overrides, parse_value
from iecl_hf.cli.pretrain import parse_pretrain_args as parse_args
from iecl_hf.presets import PRESETS


def write(path, text):
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------------------------------------ config files

YAML_CONFIG = """
dataset_name: some/data
per_device_train_batch_size: 32
learning_rate: 0.05
push_to_hub: false
checkpointing_steps: 100
lambda_entropy: 0.25
generator_architecture: none
encoder_spectral_norm: false
backbone_kwargs: {channels: [8, 16, 32, 64]}
image_mean: [0.5, 0.5, 0.5]
"""


@pytest.mark.parametrize("kind", ["yaml", "json"])
def test_config_file_supplies_every_kind_of_argument(tmp_path, kind):
    import yaml

    values = yaml.safe_load(YAML_CONFIG)
    path = write(tmp_path / f"args.{kind}", YAML_CONFIG if kind == "yaml" else json.dumps(values))
    data_args, train_args, model = parse_args(["--config_file", path])
    assert data_args.dataset_name == "some/data"
    assert train_args.per_device_train_batch_size == 32 and train_args.learning_rate == 0.05
    assert train_args.checkpointing_steps == "100"  # a YAML int for a str flag, as the command line would give it
    assert train_args.push_to_hub is False
    assert (
        model["lambda_entropy"] == 0.25 and model["generator_architecture"] is None
    )  # "none" parses to None; IECLConfig maps it back to "none"
    assert model["encoder_spectral_norm"] is False
    assert model["backbone_kwargs"] == {"channels": [8, 16, 32, 64]}
    assert model["image_mean"] == [0.5, 0.5, 0.5]
    config = IECLConfig(**model)  # a valid configuration
    assert config.generator_architecture == "none" and config.encoder_spectral_norm is False


def test_command_line_flags_override_the_config_file(tmp_path):
    path = write(tmp_path / "args.yaml", YAML_CONFIG)
    data_args, train_args, model = parse_args(
        [
            "--config_file",
            path,
            "--per_device_train_batch_size",
            "16",
            "--lambda_entropy",
            "2.0",
            "--dataset_name",
            "other/data",
        ]
    )
    assert train_args.per_device_train_batch_size == 16
    assert model["lambda_entropy"] == 2.0
    assert (
        model["generator_architecture"] is None and model["encoder_spectral_norm"] is False
    )  # not overridden: from the file
    assert data_args.dataset_name == "other/data"
    assert train_args.learning_rate == 0.05  # not overridden: from the file


def test_config_file_with_unknown_keys_is_rejected(tmp_path):
    path = write(tmp_path / "args.yaml", "learning_rate: 0.1\nlearnin_rate: 0.2\nbatch: 3\n")
    with pytest.raises(ValueError, match=r"unknown arguments \['batch', 'learnin_rate'\]"):
        parse_args(["--config_file", path])


def test_config_file_must_be_a_mapping(tmp_path):
    with pytest.raises(ValueError, match="expected a mapping"):
        parse_args(["--config_file", write(tmp_path / "args.yaml", "- 1\n- 2\n")])


def test_config_file_values_are_type_checked_like_flags(tmp_path, capsys):
    path = write(tmp_path / "args.yaml", "per_device_train_batch_size: 2.5\n")
    with pytest.raises(SystemExit):
        parse_args(["--config_file", path])
    err = capsys.readouterr().err
    assert "argument --per_device_train_batch_size" in err and "invalid int value: '2.5'" in err


def test_bad_flag_types_name_the_flag(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--learning_rate", "fast"])
    err = capsys.readouterr().err
    assert "argument --learning_rate" in err and "invalid float value: 'fast'" in err


# ------------------------------------------------------------------------------------------------ model fields


def test_every_iecl_config_field_has_a_flag():
    fields = {name for name in inspect.signature(IECLConfig.__init__).parameters if name not in ("self", "kwargs")}
    assert {f.name for f in dataclasses.fields(ModelArguments)} == fields


def test_one_flag_per_field_over_the_preset():
    _, _, model = parse_args(
        [
            "--preset",
            "cifar",
            "--lambda_entropy",
            "0.5",
            "--encoder_spectral_norm",
            "false",
            "--generator_architecture",
            "saib",
            "--beta_kl",
            "0",
            "--backbone_kwargs",
            '{"channels": [8, 16, 32, 64]}',
            "--stem",
            "cifar_stride2",
        ]
    )
    assert model["lambda_entropy"] == 0.5 and model["encoder_spectral_norm"] is False
    assert model["generator_architecture"] == "saib" and model["beta_kl"] == 0
    assert model["backbone_kwargs"] == {"channels": [8, 16, 32, 64]} and model["stem"] == "cifar_stride2"
    assert model["image_size"] == PRESETS["cifar"]["image_size"]  # the rest from the preset


def test_fields_the_framework_resolves_are_typed_and_say_so():
    """projection_output_batchnorm defaults to None (the config takes the framework's value); its flag is typed like
    that value (a bool) and unset it stays None."""
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(ModelArguments)}
    assert "framework's measured value" in helps["projection_output_batchnorm"]
    assert "JSON" not in helps["projection_output_batchnorm"]
    assert "JSON" in helps["backbone_kwargs"]
    _, _, model = parse_args(["--projection_output_batchnorm", "false", "--lambda_entropy", "0.5"])
    assert model["projection_output_batchnorm"] is False and model["lambda_entropy"] == 0.5
    _, _, model = parse_args(["--batchnorm_per_view", "true"])  # the README's per-view example
    assert model["batchnorm_per_view"] is True and IECLConfig(**model).batchnorm_per_view is True
    _, _, model = parse_args(["--framework", "moco"])
    assert "lambda_entropy" not in model and "projection_output_batchnorm" not in model
    with pytest.raises(SystemExit):
        parse_args(["--lambda_entropy", "much"])  # argparse names the flag (test_bad_flag_types_name_the_flag)


def test_preset_none_sets_nothing_and_auto_is_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    _, train_args, model = parse_args(["--preset", "none"])
    assert model == {} and train_args.preset == "none"
    _, train_args, model = parse_args([])
    assert train_args.preset == "cpu" and model["backbone_kwargs"] == PRESETS["cpu"]["backbone_kwargs"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _, train_args, model = parse_args([])
    assert train_args.preset == "cifar" and model["stem"] == PRESETS["cifar"]["stem"]


def test_model_config_overrides_parse_lists_dicts_bools_and_win_over_flags():
    text = (
        'image_mean=[0.5, 0.5, 0.5],tau=0.1,backbone_kwargs={"channels": [1, 2, 3, 4], "drop_rate": 0.1},'
        "framework=simclr,encoder_spectral_norm=false,saib_patch_size=2,beta_kl=1e-3,generator_architecture=none"
    )
    assert parse_overrides(text) == {
        "image_mean": [0.5, 0.5, 0.5],
        "tau": 0.1,
        "backbone_kwargs": {"channels": [1, 2, 3, 4], "drop_rate": 0.1},
        "framework": "simclr",
        "encoder_spectral_norm": False,
        "saib_patch_size": 2,
        "beta_kl": 0.001,
        "generator_architecture": None,
    }
    _, _, model = parse_args(["--tau", "0.5", "--model_config_overrides", text])
    assert model["tau"] == 0.1  # overrides win over the per-field flag
    assert parse_overrides("") == {} and parse_overrides(None) == {}


@pytest.mark.parametrize(
    "text, value",
    [
        ("true", True),
        ("False", False),
        ("none", None),
        ("3", 3),
        ("0.5", 0.5),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("{'a': 1}", {"a": 1}),
        ("simclr", "simclr"),
        (" cosine ", "cosine"),
    ],
)
def test_parse_value(text, value):
    assert parse_value(text) == value


# ------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tau", "-1"], r"IECLConfig\.tau must be > 0"),
        (["--model_config_overrides", "tau=abc"], r"IECLConfig\.tau must be a number"),
        (["--backbone", "no_such_net"], r"IECLConfig\.backbone='no_such_net' is not a timm architecture"),
        (["--stem", "weird"], r"IECLConfig\.stem='weird' is not supported"),
        (["--backbone_kwargs", "[1, 2]"], r"IECLConfig\.backbone_kwargs must be a dict"),
        (["--image_size", "0"], r"IECLConfig\.image_size must be a positive integer"),
        (["--generator_architecture", "gan"], r"IECLConfig\.generator_architecture='gan' is not supported"),
        (["--saib_patch_size", "5"], r"IECLConfig\.saib_patch_size=5 must divide image_size=32"),
        (["--beta_kl", "-1"], r"IECLConfig\.beta_kl must be >= 0"),
        (
            ["--model_config_overrides", "encoder_spectral_norm=1"],
            r"IECLConfig\.encoder_spectral_norm must be True or False",
        ),
        (
            ["--model_config_overrides", "lambda_entropy=0.5,not_a_field=1"],
            r"\['not_a_field'\] are not IECLConfig fields",
        ),
        (["--model_config_overrides", "justtext"], r"'justtext' is not NAME=VALUE"),
        (["--per_device_train_batch_size", "1"], r"--per_device_train_batch_size must be >= 2"),
        (
            ["--framework", "moco", "--moco_batchnorm_groups", "8", "--per_device_train_batch_size", "4"],
            r"moco_batchnorm_groups=8 splits each process's 8 rows .* at least 8 images per process",
        ),
        (["--gradient_accumulation_steps", "0"], r"--gradient_accumulation_steps must be >= 1"),
        (["--learning_rate", "0"], r"--learning_rate must be > 0"),
        (["--generator_learning_rate", "-1"], r"--generator_learning_rate must be > 0"),
        (["--weight_decay", "-0.1"], r"--weight_decay must be >= 0"),
        (["--lr_scheduler_type", "sometimes"], r"--lr_scheduler_type 'sometimes' cannot be used"),
        (["--report_to", "tensorboard,nope"], r"--report_to .*\['nope'\]"),
        (["--checkpointing_steps", "0"], r"--checkpointing_steps must be a positive integer or 'epoch'"),
        (["--checkpoints_total_limit", "-1"], r"--checkpoints_total_limit must be >= 0"),
        (["--num_warmup_steps", "-5"], r"--num_warmup_steps must be >= 0"),
        (["--max_train_steps", "0"], r"--max_train_steps must be >= 1"),
        (["--max_train_samples", "0"], r"--max_train_samples must be >= 1"),
        (["--knn_every_epochs", "-1"], r"--knn_every_epochs must be >= 0"),
        (["--torch_compile_backend", "turbo"], r"--torch_compile_backend 'turbo' is not a torch.compile backend"),
        (["--dataloader_num_workers", "-1"], r"--dataloader_num_workers must be >= 0"),
        (["--streaming"], r"--streaming needs --max_train_steps"),
        (["--push_to_hub"], r"--push_to_hub needs --hub_model_id"),
        (["--hub_model_id", "a/b/c"], r"--hub_model_id 'a/b/c' is not a valid repo id"),
    ],
)
def test_bad_values_fail_before_anything_runs_naming_the_field(tmp_path, argv, message):
    from iecl_hf.training import pretraining  # the recipe's stages

    out = tmp_path / "out"
    with mock.patch.object(pretraining, "load_image_dataset", side_effect=AssertionError("data was read")):
        with pytest.raises(ValueError, match=message):
            run_pretrain_in_process([*argv, "--output_dir", out])
    assert not out.exists()


@pytest.mark.parametrize(
    "flag, value",
    [("preset", "tiny"), ("optimizer", "adagrad"), ("augmentation", "gpu"), ("torch_compile_mode", "fast")],
)
def test_values_outside_the_choices_are_refused_on_the_command_line_and_in_config_files(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit):
        parse_args([f"--{flag}", value])
    assert f"argument --{flag}" in capsys.readouterr().err  # argparse: "invalid choice: ..., choose from ..."
    path = write(tmp_path / "args.yaml", f"{flag}: {value}\n")
    with pytest.raises(ValueError, match=rf"--{flag} '{value}' is not supported; allowed values: "):
        parse_args(["--config_file", path])


@pytest.mark.parametrize("recipe", ["pretrain.py", "linear_eval.py"])
def test_help_lists_every_flag(recipe, capsys):
    """--help prints (a literal % in a help text, e.g. '5% of the training steps', once made argparse fail)."""
    import runpy
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / recipe
    argv = sys.argv
    sys.argv = [str(path), "--help"]
    try:
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = argv
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "--model_name_or_path" in printed and "--dataset_name" in printed and "--push_to_hub" in printed
    if recipe == "pretrain.py":
        assert "5% of the training steps" in printed and "--lambda_entropy" in printed


def test_library_errors_name_parameters_and_the_recipe_names_its_flags():
    """The library names a parameter in backticks; a recipe's main (`speaks_flags`) shows its flag instead, and
    leaves other backticked words (code, commands) as they are."""
    from iecl_hf.cli.errors import as_flags, speaks_flags
    from iecl_hf.cli.pretrain import DataArguments

    message = "`train_split` 'x' is not a split; see `save_to_disk`, or pass `image_column` NAME."
    assert as_flags(message, {"train_split", "image_column"}) == (
        "--train_split 'x' is not a split; see `save_to_disk`, or pass --image_column NAME."
    )

    @speaks_flags(DataArguments)
    def main():
        raise ValueError(message)

    with pytest.raises(ValueError, match=r"^--train_split 'x' .*`save_to_disk`.* --image_column NAME\.$"):
        main()
