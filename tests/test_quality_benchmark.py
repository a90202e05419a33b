"""benchmarks/quality.py builds commands the recipe accepts, and each variant trains the model it names."""

import argparse
import ast
import importlib.util
import json
import os

import pytest

from iecl_hf import IECLConfig
from iecl_hf.cli.pretrain import parse_pretrain_args as parse_args

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
        return dict(
            variant=variant,
            seed=seed,
            overrides=overrides,
            linear_top1=linear,
            knn_top1=knn,
            provenance=provenance(),
        )

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


def provenance(**changes):
    """A run's provenance as `one_run` records it (the fields `mismatch` compares)."""
    record = {
        "commit": "abc",
        "dirty": False,
        "eval_commit": "abc",
        "config_diff": {"tau": 0.2},
        "pretrain_dataset": {"name": "data", "fingerprint": "f1", "num_train_images": 10000},
        "pretrain_args": {"num_train_epochs": 10, "per_device_train_batch_size": 64, "learning_rate": None},
        "eval_dataset": {"name": "eval", "scored_split": "validation", "validation_size": 5000, "split_seed": 0},
        "probe": {"epochs": 100},
        "knn": {"k": [20, 200]},
        "versions": {"torch": "2"},
        "device": "cpu",
        "pretrain_wall_seconds": 500.0,
        "eval_seconds": 60.0,
    }
    for key, value in changes.items():
        if isinstance(value, dict):
            record[key] = {**record[key], **value}
        else:
            record[key] = value
    return record


def test_variant_specs_carry_config_overrides_and_recipe_flags(quality):
    args, config = recipe_values(quality, "simclr:tau=0.1,--learning_rate=0.6")
    assert config.tau == 0.1 and config.generator_architecture == "none" and config.lambda_entropy == 0
    assert args.learning_rate == 0.6
    _, control = recipe_values(quality, "coding_rate_only")
    assert control.generator_architecture == "none" and control.lambda_entropy > 0
    assert control.beta_kl == 0 and control.encoder_spectral_norm is False
    _, simsiam = recipe_values(quality, "simsiam_saib_only:saib_stance=adversarial")
    assert (simsiam.framework, simsiam.generator_architecture) == ("simsiam", "saib")
    assert simsiam.saib_stance == "adversarial"
    assert simsiam.lambda_entropy == simsiam.beta_kl == 0 and simsiam.encoder_spectral_norm is False
    assert quality.baseline_of("simclr:tau=0.1", None) is None
    assert quality.baseline_of("iecl:tau=0.1", None) == "simclr"
    assert quality.baseline_of("iecl", "simclr:tau=0.1") == "simclr:tau=0.1"
    for bad in ("nope", "simclr:tau", "simclr:=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            quality.parse_variant(bad)


def test_validation_protocol_scores_the_fixed_hold_out_and_test_protocol_the_test_split(quality):
    args = benchmark_args(eval_dataset="eval", protocol="validation", validation_size=5000, split_seed=0)
    args.max_eval_samples = None
    command = quality.eval_command(args, 3, "pre", "ev")
    assert command[command.index("--validation_size") + 1] == "5000"
    assert command[command.index("--split_seed") + 1] == "0"  # not the run's seed: every run scores the same images
    args.protocol = "test"
    assert "--validation_size" not in quality.eval_command(args, 3, "pre", "ev")


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"commit": "def"}, "commit"),
        ({"dirty": True}, "dirty"),
        ({"pretrain_dataset": {"fingerprint": "f2"}}, "pretrain_dataset"),
        ({"pretrain_args": {"num_train_epochs": 40}}, "pretrain_args differs (num_train_epochs)"),
        ({"eval_dataset": {"scored_split": "test"}}, "eval_dataset differs (scored_split)"),
        ({"probe": {"epochs": 50}}, "probe"),
    ],
)
def test_runs_that_differ_beyond_their_overrides_are_not_paired(quality, changes, field):
    def record(variant, linear, provenance_record):
        return dict(variant=variant, seed=0, linear_top1=linear, knn_top1=linear, provenance=provenance_record)

    same = [record("simclr", 50.0, provenance()), record("iecl", 52.0, provenance(config_diff={"tau": 0.1}))]
    assert quality.mismatch(*same) is None  # the config and the wall times may differ
    assert "+2.00 (one pair: no interval)" in quality.summarize(same)  # not "nan .. nan"
    other = [same[0], record("iecl", 52.0, provenance(**changes))]
    assert quality.mismatch(*other).startswith(field if " " in field else f"{field} differs")
    table = quality.summarize(other)
    assert "refused" in table and field.split(" ")[0] in table and "+2.00" not in table


def test_a_variants_own_recipe_flag_may_differ(quality):
    first = dict(variant="simclr", seed=0, provenance=provenance())
    second = dict(
        variant="simclr:--learning_rate=0.6", seed=0, provenance=provenance(pretrain_args={"learning_rate": 0.6})
    )
    assert quality.mismatch(first, second) is None
    third = dict(variant="simclr", seed=0, provenance=provenance(pretrain_args={"learning_rate": 0.6}))
    assert quality.mismatch(first, third).startswith("pretrain_args differs")


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


def test_report_prints_the_table_of_results_files_without_running(quality, tmp_path, monkeypatch, capsys):
    def record(variant, seed, linear):
        return dict(variant=variant, seed=seed, linear_top1=linear, knn_top1=linear, provenance=provenance())

    first = [record("simclr", 0, 50.0), record("simclr", 1, 51.0)]
    second = [record("simclr", 1, 51.0), record("iecl", 0, 52.0), record("iecl", 1, 54.0)]  # simclr seed 1 again
    for name, records in (("a.json", first), ("b.json", second)):
        (tmp_path / name).write_text(json.dumps(records))
    monkeypatch.setattr(quality, "one_run", lambda *a: pytest.fail("--report must not run anything"))
    monkeypatch.setattr("sys.argv", ["quality.py", "--report", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    quality.main()
    table = capsys.readouterr().out
    assert "| simclr | 2 | 50.50 (50.00, 51.00)" in table  # the duplicate counted once
    assert "+2.50 (" in table and "n=2" in table


def report(quality, tmp_path, monkeypatch, *files, extra=()):
    """Runs `quality.py --report` on results files written from `files` (lists of records)."""
    paths = []
    for index, records in enumerate(files):
        paths.append(str(tmp_path / f"{index}.json"))
        with open(paths[-1], "w") as handle:
            json.dump(records, handle)
    monkeypatch.setattr(quality, "one_run", lambda *a: pytest.fail("--report must not run anything"))
    monkeypatch.setattr("sys.argv", ["quality.py", "--report", *paths, *extra])
    quality.main()


def test_report_writes_the_merged_records_once_each(quality, tmp_path, monkeypatch, capsys):
    """A shared reference's runs, in each file that paired with them, land once in --results_file, which --report
    reads back to the same table."""

    def record(variant, seed, linear, **overrides):
        return dict(
            variant=variant, seed=seed, linear_top1=linear, knn_top1=linear - 1, provenance=provenance(), **overrides
        )

    reference = [record("iecl", 0, 54.0), record("iecl", 1, 53.0)]
    point_a = [*reference, record("iecl:beta_kl=0.3", 0, 55.0), record("iecl:beta_kl=0.3", 1, 53.5)]
    # The same runs collected by another call: only the caller-written `overrides` differ.
    point_b = [{**r, "overrides": "tau=0.1"} for r in reference] + [record("iecl:saib_dim=128", 1, 52.0)]
    merged = tmp_path / "merged.json"
    report(
        quality, tmp_path, monkeypatch, point_a, point_b, extra=["--reference", "iecl", "--results_file", str(merged)]
    )
    table = capsys.readouterr().out
    records = json.loads(merged.read_text())
    assert sorted((r["variant"], r["seed"]) for r in records) == sorted(
        [("iecl", 0), ("iecl", 1), ("iecl:beta_kl=0.3", 0), ("iecl:beta_kl=0.3", 1), ("iecl:saib_dim=128", 1)]
    )
    assert merged.read_text().startswith('[\n {\n  "')  # indent 1, as every results file the runs write
    assert "| iecl:beta_kl=0.3 | 2 |" in table and "+0.75 (" in table and "n=2" in table
    assert "-1.00 (one pair: no interval)" in table
    report(quality, tmp_path, monkeypatch, records, extra=["--reference", "iecl"])
    assert capsys.readouterr().out == table.replace(f"\nmerged runs: {merged}\n", "")


@pytest.mark.parametrize(
    "other, reason",
    [
        (dict(provenance=provenance(versions={"torch": "3"})), "versions differs (torch)"),
        (dict(provenance=provenance(commit="def", eval_commit="def")), "commit differs: 'abc' vs 'def'"),
        (dict(linear_top1=51.0), "other figures"),
        (dict(provenance=provenance(pretrain_wall_seconds=900.0)), "the same settings, run twice"),
    ],
)
def test_report_refuses_one_seed_from_two_different_runs(quality, tmp_path, monkeypatch, capsys, other, reason):
    """Two runs of one variant and seed (another package version, another commit) are not merged by picking one:
    the error names both files and the field that differs."""
    run = dict(variant="simclr", seed=0, linear_top1=50.0, knn_top1=49.0, provenance=provenance())
    with pytest.raises(SystemExit) as raised:
        report(
            quality,
            tmp_path,
            monkeypatch,
            [run],
            [{**run, **other}],
            extra=["--results_file", str(tmp_path / "out.json")],
        )
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert "simclr seed 0" in error and "0.json" in error and "1.json" in error and reason in error
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("folder", ["benchmarks", "recipes"])
def test_script_docstrings_keep_their_shell_continuations(folder):
    """A script's docstring is its `--help` text and its usage: a multi-line example command must keep its `\\`
    continuations (a raw string), or it reaches the reader joined into one line that no longer pastes into a shell."""
    checked = 0
    for name in sorted(os.listdir(os.path.join(ROOT, folder))):
        if not name.endswith(".py"):
            continue
        source = open(os.path.join(ROOT, folder, name), encoding="utf-8").read()
        tree = ast.parse(source)
        docstring = ast.get_docstring(tree, clean=False)
        if docstring is None:
            continue
        written = ast.get_source_segment(source, tree.body[0].value)
        expected = sum(line.rstrip().endswith("\\") for line in written.splitlines())
        kept = sum(line.rstrip().endswith("\\") for line in docstring.splitlines())
        assert kept == expected, f'{folder}/{name}: its docstring needs r""" to keep its line continuations'
        checked += expected
    assert checked > 0  # the folders do have continued example commands


def test_an_interrupted_pretraining_resumes_only_with_the_same_command(quality, tmp_path, monkeypatch):
    """A run stopped mid-pretraining continues from its newest checkpoint when it is started again with the same
    command on the same commit; another command (here 40 epochs) or another commit starts over."""
    calls = []

    def fake_run(command, log_path, append=False):
        calls.append((command, append))
        raise RuntimeError("interrupted")  # stopped before train_results.json was written

    code = {"commit": "abc", "dirty": False}
    monkeypatch.setattr(quality, "run", fake_run)
    monkeypatch.setattr(quality, "code_version", lambda: dict(code))
    args = benchmark_args(work_dir=str(tmp_path), protocol="validation")
    starts = [(10, "abc", False), (10, "abc", False), (40, "abc", False), (40, "def", False)]
    for epochs, commit, dirty in [*starts, (40, "def", True), (40, "def", True)]:
        args.epochs, code["commit"], code["dirty"] = epochs, commit, dirty
        with pytest.raises(RuntimeError, match="interrupted"):
            quality.one_run(args, "iecl", 0)
    (first, first_append), (second, second_append), (third, third_append), (fourth, fourth_append) = calls[:4]
    assert all(command == third and not append for command, append in calls[4:])  # a dirty tree never resumes
    assert "--checkpointing_steps=epoch" in first and "--overwrite_output_dir" in first
    assert "--resume_from_checkpoint=latest" not in first and not first_append
    assert second == [*first, "--resume_from_checkpoint=latest"] and second_append  # the log goes on
    assert "--num_train_epochs=40" in third and "--resume_from_checkpoint=latest" not in third and not third_append
    assert fourth == third and not fourth_append  # the same command on another commit starts over
    _, train_args, _ = parse_args(second[2:])  # the recipe accepts the resumed command
    assert train_args.resume_from_checkpoint == "latest" and train_args.overwrite_output_dir


def test_how_a_run_saved_and_resumed_does_not_block_its_pairing(quality):
    resumed = provenance(pretrain_args={"resume_from_checkpoint": "latest", "checkpointing_steps": "epoch"})
    first, second = (dict(variant=v, seed=0, provenance=p) for v, p in (("simclr", provenance()), ("iecl", resumed)))
    assert quality.mismatch(first, second) is None


@pytest.mark.parametrize(
    "flags, expected",
    [
        (
            ["--dataset", "uoft-cs/cifar10", "--eval_dataset", "uoft-cs/cifar10"],
            ("uoft-cs/cifar10", "uoft-cs/cifar10"),
        ),
        (["--quick"], ("embedded:digits", "embedded:digits")),  # the smoke test runs on a fresh clone
        ([], None),  # a real benchmark without its data stops and says what to pass
    ],
)
def test_datasets_are_used_as_given_and_a_missing_default_copy_is_named(
    quality, tmp_path, monkeypatch, capsys, flags, expected
):
    """A Hub id is not a local path and is not replaced by the digits; the default copies, when missing, fall back to
    the digits for --quick only."""
    used = set()

    def fake_run(args, spec, seed):
        used.add((args.dataset, args.eval_dataset))
        raise RuntimeError("not run")

    monkeypatch.setattr(quality, "ROOT", str(tmp_path))  # no data/ under this root
    monkeypatch.setattr(quality, "one_run", fake_run)
    monkeypatch.setattr("sys.argv", ["quality.py", "--work_dir", str(tmp_path / "runs"), "--seeds", "0", *flags])
    if expected is None:
        with pytest.raises(SystemExit):
            quality.main()
        error = capsys.readouterr().err
        assert "--dataset defaults to data/cifar10-small" in error and "uoft-cs/cifar10" in error and not used
        return
    quality.main()
    assert used == {expected}


def test_report_names_the_commit_that_reads_a_variant_no_longer_here(quality, tmp_path, monkeypatch, capsys):
    run = dict(variant="simclr_gone", seed=0, linear_top1=50.0, knn_top1=49.0, provenance=provenance(commit="c0ffee"))
    with pytest.raises(SystemExit):
        report(quality, tmp_path, monkeypatch, [run])
    error = capsys.readouterr().err
    assert "unknown variant 'simclr_gone'" in error and "from its own commit, c0ffee" in error
