"""Every README example runs: the Python quick start is executed, the shell commands are checked against the code."""

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def code_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_quick_start_runs(tmp_path, monkeypatch):
    (block,) = [b for b in code_blocks("python") if "IECLForPreTraining" in b]
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block, "README quick start", "exec"), namespace)
    assert namespace["features"].shape == (8, 256)
    assert (tmp_path / "iecl-quickstart" / "model.safetensors").exists()
    assert type(namespace["encoder"]).__name__ == "IECLModel"


def shell_commands():
    for block in code_blocks("bash"):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split(" #", 1)[0].strip()  # drop trailing comments
            if command:
                yield command


def test_fresh_machine_commands_match_ci():
    ci = (README.parent / ".ci" / "run").read_text()
    commands = list(shell_commands())
    install_and_test = next(c for c in commands if "pytest" in c)
    assert "torch==2.14.1 torchvision==0.29.1" in install_and_test and "torch==2.14.1 torchvision==0.29.1" in ci
    assert '".[test]"' in install_and_test and '".[test]"' in ci
    assert "pytest" in ci and "tests" in ci
    assert "ruff check ." in install_and_test and "ruff check ." in ci  # the linter is part of the test command
    main_job = next(c for c in commands if c.endswith("accelerate launch recipes/pretrain.py"))
    assert "pip install -e ." in main_job


def flags_of(argv):
    """{name: the value the command gives} ("true" for a flag without a value)."""
    flags = {}
    for index, token in enumerate(argv):
        if token.startswith("--"):
            following = argv[index + 1] if index + 1 < len(argv) else "--"
            flags[token[2:]] = "true" if following.startswith("--") else following
    return flags


def assert_parsed_as_written(argv, *parsed):
    """Each flag of the command reaches the recipe with its value (not dropped, renamed or overridden)."""
    flags = flags_of(argv)
    assert flags
    for name, written in flags.items():
        holders = [p for p in parsed if (name in p if isinstance(p, dict) else hasattr(p, name))]
        assert holders, f"--{name} is not an argument of the recipe"
        value = holders[0][name] if isinstance(holders[0], dict) else getattr(holders[0], name)
        assert str(value).lower() == written.lower(), (name, value, written)


@pytest.mark.parametrize("command", [c for c in shell_commands() if "recipes/pretrain.py" in c and "--" in c])
def test_pretrain_examples_parse(command):
    """The README's pretraining commands use only arguments the recipe knows (they need data or a GPU to run)."""
    from iecl_hf.cli.pretrain import parse_pretrain_args
    from iecl_hf.training.starting_point import pretraining_config

    argv = shlex.split(command.split("recipes/pretrain.py", 1)[1])
    data_args, train_args, model_values = parse_pretrain_args(argv)  # with the recipe's own checks
    assert_parsed_as_written(argv, data_args, train_args, model_values)
    if not train_args.model_name_or_path:  # else the config comes from the checkpoint, on top of its saved one
        pretraining_config(model_values)  # the config the recipe builds from the preset and flags


@pytest.mark.parametrize("command", [c for c in shell_commands() if "recipes/linear_eval.py" in c])
def test_linear_eval_examples_parse(command):
    import importlib.util

    spec = importlib.util.spec_from_file_location("linear_eval", README.parent / "recipes" / "linear_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = shlex.split(command.split("recipes/linear_eval.py", 1)[1])
    assert_parsed_as_written(argv, module.parse_args(argv))


@pytest.mark.parametrize("command", [c for c in shell_commands() if "recipes/embed.py" in c])
def test_embed_examples_parse(command):
    """The README's embed commands use only arguments the recipe knows, with their values (the search snippet that
    follows them runs in tests/test_embed.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("embed", README.parent / "recipes" / "embed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = shlex.split(command.split("recipes/embed.py", 1)[1])
    assert_parsed_as_written(argv, module.parse_args(argv))


@pytest.mark.parametrize("command", [c for c in shell_commands() if "recipes/export_timm.py" in c])
def test_export_timm_examples_run(command, tmp_path, monkeypatch):
    """The README's export commands run as written (from a tiny stem='timm' checkpoint at their
    --model_name_or_path; the Hub upload patched), and timm loads what they write."""
    import timm
    from helpers import block_network, load_script
    from huggingface_hub import HfApi
    from test_export_timm import write_tiny_checkpoint

    monkeypatch.chdir(tmp_path)
    attempts, uploads = block_network(monkeypatch), []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: f"https://huggingface.co/{repo_id}")
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kwargs: uploads.append(kwargs["repo_id"]))
    recipe = load_script(README.parent / "recipes" / "export_timm.py", "iecl_test_readme_export_timm")
    argv = shlex.split(command.split("recipes/export_timm.py", 1)[1])
    args = recipe.parse_export_args(argv)
    assert_parsed_as_written(argv, args)
    write_tiny_checkpoint(args.model_name_or_path)
    assert recipe.main(argv) == 0
    assert timm.create_model(f"local-dir:{args.output_dir}", pretrained=True, num_classes=0).num_features == 64
    assert uploads == ([args.hub_model_id] if args.push_to_hub else []) and attempts == []
