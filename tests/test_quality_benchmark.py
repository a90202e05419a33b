"""benchmarks/quality.py builds commands the recipe accepts, and each variant trains the model it names."""

import argparse
import importlib.util
import os

import pytest

from iecl_hf import IECLConfig
from iecl_hf.training.arguments import parse_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality", os.path.join(ROOT, "benchmarks", "quality.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def benchmark_args(**overrides):
    values = dict(
        dataset="data", batch_size=64, epochs=10, preset="cpu", workers=1, max_train_samples=None, base_overrides=""
    )
    return argparse.Namespace(**{**values, **overrides})


def recipe_values(quality, variant, **args):
    """What recipes/pretrain.py parses from the variant's command: (training arguments, IECLConfig)."""
    command = quality.pretrain_command(benchmark_args(**args), variant, 0, "out")
    assert command[1] == "recipes/pretrain.py"
    _, train_args, values = parse_args(command[2:])
    return train_args, IECLConfig(**values)


def test_baseline_and_control_differ_only_in_weight_decay(quality):
    base_args, base = recipe_values(quality, "simclr")
    control_args, control = recipe_values(quality, "simclr_wd_doubled")
    assert (base.generator_architecture, base.encoder_spectral_norm) == ("none", False)
    assert base.lambda_entropy == base.beta_kl == 0
    assert control.to_dict() == base.to_dict()
    assert (base_args.weight_decay, control_args.weight_decay) == (5e-4, 1e-3)


def test_sweep_point_reaches_iecl_variants_only(quality):
    _, iecl = recipe_values(quality, "iecl", base_overrides="lambda_entropy=0.3")
    _, moco = recipe_values(quality, "moco_iecl", base_overrides="lambda_entropy=0.3")
    _, control = recipe_values(quality, "simclr_wd_doubled", base_overrides="lambda_entropy=0.3")
    _, baseline = recipe_values(quality, "simclr", base_overrides="lambda_entropy=0.3")
    assert iecl.lambda_entropy == moco.lambda_entropy == 0.3
    assert (iecl.generator_architecture, moco.framework) == ("saib", "moco")
    assert control.lambda_entropy == baseline.lambda_entropy == 0


def test_lightly_variant_gets_only_the_shared_budget_flags(quality):
    command = quality.pretrain_command(benchmark_args(max_train_samples=512), "lightly_simclr", 3, "out")
    assert command[1] == "benchmarks/lightly_simclr.py"
    flags = dict(part.split("=", 1) for part in command[2:])
    assert flags == {
        "--dataset_name": "data",
        "--seed": "3",
        "--per_device_train_batch_size": "64",
        "--output_dir": "out",
        "--num_train_epochs": "10",
        "--preset": "cpu",
        "--dataloader_num_workers": "1",
        "--max_train_samples": "512",
    }


def test_plain_head_pair_shares_the_head_and_differs_in_the_iecl_terms_only(quality):
    _, baseline = recipe_values(quality, "simclr_plain_head")
    _, iecl = recipe_values(quality, "iecl_plain_head")
    _, default = recipe_values(quality, "simclr")
    _, moco = recipe_values(quality, "moco")
    assert baseline.projection_output_batchnorm is iecl.projection_output_batchnorm is False
    assert default.projection_output_batchnorm is True and moco.projection_output_batchnorm is False
    assert quality.VARIANTS["iecl_plain_head"].baseline == "simclr_plain_head"
    differing = {k for k, v in iecl.to_dict().items() if baseline.to_dict()[k] != v}
    assert differing == {"generator_architecture", "encoder_spectral_norm", "lambda_entropy", "beta_kl"}


def test_compare_pairs_a_sweep_point_with_the_reference_by_seed(quality):
    def record(variant, seed, overrides, linear, knn):
        return dict(variant=variant, seed=seed, overrides=overrides, linear_top1=linear, knn_top1=knn)

    reference = [record("simclr", s, "base", 50.0, 48.0) for s in (0, 1, 2)]
    reference += [record("iecl", 0, "", 52.0, 50.0), record("iecl", 1, "", 53.0, 50.0)]
    point = [record("simclr", s, "base", 50.0, 48.0) for s in (0, 1)]  # the same (linked) baseline runs
    point += [record("iecl", s, "lambda_entropy=0.3", 52.0 + s + d, 50.5) for s, d in ((0, 1.0), (1, 3.0), (2, 9.0))]
    table = quality.compare(point, reference)
    rows = [line for line in table.splitlines() if line.startswith("| iecl")]
    assert "simclr" not in table and len(rows) == 1
    # seeds 0 and 1 only (the reference has no seed 2): linear +1 and +3, mean +2; kNN +0.5 on both, CI of width 0
    assert rows[0].startswith("| iecl | 0,1 | +2.00 (") and "per seed +1.00, +3.00" in rows[0]
    assert "+0.50 (+0.50 .. +0.50)" in rows[0]


def test_lightly_views_variant_is_the_recipe_with_its_flags_and_per_image_views(quality):
    command = quality.pretrain_command(benchmark_args(), "simclr_lightly_views", 1, "out")
    reference = quality.pretrain_command(benchmark_args(), "simclr_worker_views", 1, "out")
    assert command[1] == "benchmarks/recipe_lightly_views.py" and reference[1] == quality.RECIPE
    assert command[2:] == reference[2:]  # the same flags: only the program (its views) differs
    assert command[-2:] == ["--augmentation", "workers"]


def test_runs_import_this_checkouts_package(quality, tmp_path, monkeypatch):
    """A recipe's folder is not the root, so without PYTHONPATH its `import iecl_hf` finds the installed package:
    another checkout's code when the benchmark runs from a worktree at another commit."""
    seen = {}

    def fake_run(command, **kwargs):
        seen.update(kwargs)
        return argparse.Namespace(returncode=0)

    monkeypatch.setenv("PYTHONPATH", "elsewhere")
    monkeypatch.setattr(quality.subprocess, "run", fake_run)
    quality.run(["python", "recipes/pretrain.py"], tmp_path / "log")
    assert seen["env"]["PYTHONPATH"].split(os.pathsep) == [quality.ROOT, "elsewhere"]
    assert seen["cwd"] == quality.ROOT
