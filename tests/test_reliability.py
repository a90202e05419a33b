"""Issue 7: training that survives faults and bad input, and loses nothing.

- kill (SIGKILL) between checkpoints and while a checkpoint is written, resume, and end with the weights of an
  uninterrupted run (`RESUME_ATOL`; bitwise equal in practice: one CPU thread, the same seed);
- atomic checkpoints, `latest`, `--checkpoints_total_limit`, no accidental restart over an unfinished run;
- clear errors before training: empty splits, label columns, another model's checkpoint, a full disk;
- safe loading (no pickle weights, `torch.load(weights_only=True)`), remote-code files that only define the model;
- Hub faults: recipes/push.py.
"""

import ast
import json
import os
from collections import namedtuple
from pathlib import Path
from unittest import mock

import pytest
from helpers import (
    REPO,
    TINY_ARGS,
    block_network,
    encode,
    max_abs_difference,
    push_module,
    random_rgb,
    read_json,
    read_jsonl,
    run_pretrain_in_process,
    run_with_faults,
    write_image_folder,
    write_parquet_dataset,
)

from iecl_hf.training.checkpointing import (
    check_resume_checkpoint,
    list_checkpoints,
    prepare_output_for_fresh_start,
    resolve_checkpoint,
    save_checkpoint,
)

# The resumed run's final weights against the uninterrupted run's. Both run on one CPU thread of the same machine
# with the same seed, and the recipe restores every random stream: bitwise equal, as the README promises.
RESUME_ATOL = 0.0

# 32 images in batches of 8: 4 steps per epoch. The step_4 checkpoint falls on the epoch boundary (the hardest
# place to resume: the epoch-end kNN runs again, the next epoch reshuffles), steps 5-6 are in epoch 1.
CHAIN_ARGS = [
    *TINY_ARGS,
    "--max_train_samples",
    32,
    "--max_train_steps",
    6,
    "--checkpointing_steps",
    2,
    "--knn_every_epochs",
    1,
]


def checkpoint_entries(output_dir) -> list[str]:
    root = Path(output_dir) / "checkpoints"
    return sorted(os.listdir(root)) if root.is_dir() else []


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """An uninterrupted reference run, and one run killed twice then resumed; snapshots after each kill."""
    root = tmp_path_factory.mktemp("kill-and-resume")
    reference, run = root / "reference", root / "run"
    info = {"reference": reference, "run": run, "start_weights": root / "resumed-start.safetensors"}

    result = run_with_faults([*CHAIN_ARGS, "--checkpoints_total_limit", 0, "--output_dir", reference], root)
    assert result.returncode == 0, result.stderr[-4000:]

    # 1. SIGKILL inside the forward of step 5: after the step_4 checkpoint, before step_6's.
    result = run_with_faults([*CHAIN_ARGS, "--output_dir", run], root, IECL_TEST_KILL_AT_FORWARD=5)
    info["between"] = {
        "returncode": result.returncode,
        "entries": checkpoint_entries(run),
        "files": set(os.listdir(run)),
        "latest": resolve_checkpoint("latest", run),
        "log": read_jsonl(run / "logs" / "train_log.jsonl"),
    }

    # 2. Resume; SIGKILL while the step_6 checkpoint is being written (weights and optimizer on disk, not the rest).
    result = run_with_faults(
        [*CHAIN_ARGS, "--output_dir", run, "--resume_from_checkpoint", "latest"],
        root,
        IECL_TEST_KILL_WRITING_CHECKPOINT=6,
    )
    partial = run / "checkpoints" / ".tmp-step_6"
    info["writing"] = {
        "returncode": result.returncode,
        "stdout": result.stdout,
        "entries": checkpoint_entries(run),
        "partial": sorted(os.listdir(partial)) if partial.is_dir() else None,
        "latest": resolve_checkpoint("latest", run),
        "files": set(os.listdir(run)),
    }

    # 3. Resume to the end; the wrapper saves the weights the first training step of this run starts from.
    info["resumed"] = run_with_faults(
        [*CHAIN_ARGS, "--output_dir", run, "--resume_from_checkpoint", "latest"],
        root,
        IECL_TEST_DUMP_START=info["start_weights"],
    )
    return info


@pytest.mark.slow
def test_sigkill_between_checkpoints_keeps_the_last_checkpoint(interrupted_run):
    between, run = interrupted_run["between"], interrupted_run["run"]
    assert between["returncode"] == -9
    assert between["entries"] == ["step_2", "step_4"]
    assert between["latest"] == str(run / "checkpoints" / "step_4")
    assert "model.safetensors" not in between["files"] and "train_results.json" not in between["files"]
    assert [r["step"] for r in between["log"] if "loss" in r] == [1, 2, 3, 4]
    # Up to the kill, the run is the reference run.
    reference_step_4 = interrupted_run["reference"] / "checkpoints" / "step_4" / "model.safetensors"
    assert max_abs_difference(reference_step_4, run / "checkpoints" / "step_4" / "model.safetensors") == 0.0


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_never_publishes_it(interrupted_run):
    writing, run = interrupted_run["writing"], interrupted_run["run"]
    assert "Resumed from" in writing["stdout"] and "step_4 at step 4 (epoch 0)" in writing["stdout"]
    assert writing["returncode"] == -9
    # The partial checkpoint stays under its temporary name; `latest` is still step_4.
    assert writing["entries"] == [".tmp-step_6", "step_2", "step_4"]
    assert "model.safetensors" in writing["partial"] and "custom_checkpoint_1.pkl" not in writing["partial"]
    assert writing["latest"] == str(run / "checkpoints" / "step_4")
    assert "model.safetensors" not in writing["files"]


@pytest.mark.slow
def test_resumed_run_ends_with_the_weights_of_the_uninterrupted_run(interrupted_run):
    result, run, reference = interrupted_run["resumed"], interrupted_run["run"], interrupted_run["reference"]
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Resumed from {run / 'checkpoints' / 'step_4'} at step 4 (epoch 0)" in result.stdout

    # It started from the checkpoint's weights...
    assert (
        max_abs_difference(interrupted_run["start_weights"], run / "checkpoints" / "step_4" / "model.safetensors")
        == 0.0
    )
    # ...and ended where the uninterrupted run ended: same step count, same weights, same logged values.
    assert max_abs_difference(reference / "model.safetensors", run / "model.safetensors") <= RESUME_ATOL
    assert (
        max_abs_difference(
            reference / "checkpoints" / "step_6" / "model.safetensors",
            run / "checkpoints" / "step_6" / "model.safetensors",
        )
        <= RESUME_ATOL
    )
    results, reference_results = read_json(run / "train_results.json"), read_json(reference / "train_results.json")
    for key in ("step", "epoch", "images_seen", "loss", "online kNN top-1 (%)"):
        assert results[key] == reference_results[key], key
    assert results["step"] == 6

    # The log holds each step once (the killed runs' extra lines are dropped on resume), with the reference's values.
    log, reference_log = (
        read_jsonl(run / "logs" / "train_log.jsonl"),
        read_jsonl(reference / "logs" / "train_log.jsonl"),
    )
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [(r["step"], r["epoch"]) for r in log if "knn_top1" in r] == [(4, 1)]
    strip = [{k: v for k, v in r.items() if k != "images_per_second"} for r in log]
    assert strip == [{k: v for k, v in r.items() if k != "images_per_second"} for r in reference_log]

    # --checkpoints_total_limit 2: the newest two; the partial one is gone.
    assert checkpoint_entries(run) == ["step_4", "step_6"]
    assert checkpoint_entries(reference) == ["step_2", "step_4", "step_6"]  # 0 keeps all


# ------------------------------------------------------------------------------------------------ checkpoints


class FakeAccelerator:
    """What save_checkpoint uses of an Accelerator; save_state writes a weights file (or fails half-way)."""

    is_main_process = True

    def __init__(self, fail_at_step=None):
        self.fail_at_step = fail_at_step

    def wait_for_everyone(self):
        pass

    def save_state(self, folder):
        os.makedirs(folder, exist_ok=True)
        Path(folder, "model.safetensors").write_bytes(b"weights of " + os.path.basename(folder).encode())
        if self.fail_at_step is not None and folder.endswith(f"step_{self.fail_at_step}"):
            raise OSError("disk full")
        Path(folder, "optimizer.bin").write_bytes(b"optimizer")


def test_checkpoints_are_published_by_rename_and_pruned_to_the_newest(tmp_path):
    accelerator = FakeAccelerator()
    written = []
    for step in (2, 4, 6, 8):
        path = save_checkpoint(
            accelerator, tmp_path, step, total_limit=3, extra_writer=lambda folder: written.append(folder)
        )
        assert path == str(tmp_path / "checkpoints" / f"step_{step}")
    # The extra files (views.png) are written into the temporary folder, before the rename.
    assert [os.path.basename(folder) for folder in written] == [
        ".tmp-step_2",
        ".tmp-step_4",
        ".tmp-step_6",
        ".tmp-step_8",
    ]
    assert checkpoint_entries(tmp_path) == ["step_4", "step_6", "step_8"]
    assert [step for step, _ in list_checkpoints(tmp_path)] == [4, 6, 8]
    # total_limit 0 / None keeps all.
    save_checkpoint(accelerator, tmp_path, 10, total_limit=0)
    assert checkpoint_entries(tmp_path) == ["step_10", "step_4", "step_6", "step_8"]


def test_a_failed_save_leaves_latest_on_the_previous_checkpoint(tmp_path):
    save_checkpoint(FakeAccelerator(), tmp_path, 2, total_limit=2)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(FakeAccelerator(fail_at_step=4), tmp_path, 4, total_limit=2)
    assert checkpoint_entries(tmp_path) == [".tmp-step_4", "step_2"]
    assert resolve_checkpoint("latest", tmp_path) == str(tmp_path / "checkpoints" / "step_2")
    # A step folder without weights (copied by hand, cut short) is never `latest` either.
    (tmp_path / "checkpoints" / "step_9").mkdir()
    assert resolve_checkpoint("latest", tmp_path) == str(tmp_path / "checkpoints" / "step_2")
    # The next save clears the leftovers; saving a step again replaces it.
    save_checkpoint(FakeAccelerator(), tmp_path, 6, total_limit=2)
    save_checkpoint(FakeAccelerator(), tmp_path, 6, total_limit=2)
    assert checkpoint_entries(tmp_path) == ["step_2", "step_6", "step_9"]
    assert resolve_checkpoint("latest", tmp_path) == str(tmp_path / "checkpoints" / "step_6")


def test_a_fresh_start_never_trains_over_an_unfinished_run(tmp_path):
    save_checkpoint(FakeAccelerator(), tmp_path, 4)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "train_log.jsonl").write_text('{"step": 4}\n')
    # The library names its parameters; the recipe turns them into flags (`speaks_flags`).
    with pytest.raises(
        ValueError, match="unfinished run .*step_4.*`resume_from_checkpoint` latest.*`overwrite_output_dir`"
    ):
        prepare_output_for_fresh_start(tmp_path)
    assert checkpoint_entries(tmp_path) == ["step_4"]
    # The run finished at its newest checkpoint: a rerun of the same command replaces it.
    (tmp_path / "train_results.json").write_text(json.dumps({"step": 4}))
    assert "finished earlier run" in prepare_output_for_fresh_start(tmp_path)
    assert checkpoint_entries(tmp_path) == [] and not (tmp_path / "logs" / "train_log.jsonl").exists()
    assert not (tmp_path / "train_results.json").exists()
    # overwrite_output_dir replaces an unfinished one.
    save_checkpoint(FakeAccelerator(), tmp_path, 8)
    assert "`overwrite_output_dir`" in prepare_output_for_fresh_start(tmp_path, overwrite=True)
    assert checkpoint_entries(tmp_path) == []


def test_the_recipe_refuses_to_restart_over_an_unfinished_run(tmp_path):
    save_checkpoint(FakeAccelerator(), tmp_path, 4)
    with pytest.raises(ValueError, match="unfinished run"):
        run_pretrain_in_process([*TINY_ARGS, "--output_dir", tmp_path])
    assert checkpoint_entries(tmp_path) == ["step_4"]


# ------------------------------------------------------------------------------------------------ wrong checkpoints


def test_another_model_types_checkpoint_is_refused_before_training(tmp_path):
    foreign = tmp_path / "bert"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (foreign / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"another model type \('bert'\)"):
        run_pretrain_in_process([*TINY_ARGS, "--resume_from_checkpoint", foreign, "--output_dir", tmp_path / "out"])
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_a_saved_model_or_a_random_folder_is_not_a_training_checkpoint(tmp_path):
    from iecl_hf import IECLConfig, IECLModel

    saved = tmp_path / "saved"
    IECLModel(IECLConfig(backbone_kwargs={"channels": [8, 16, 32, 64]}, stem="cifar_stride2")).save_pretrained(saved)
    with pytest.raises(ValueError, match="saved IE-CL model .*not a training checkpoint"):
        check_resume_checkpoint(str(saved))
    random_folder = tmp_path / "random"
    random_folder.mkdir()
    (random_folder / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match="no model.safetensors"):
        check_resume_checkpoint(str(random_folder))
    with pytest.raises(ValueError, match="is not a folder"):
        run_pretrain_in_process(
            [*TINY_ARGS, "--resume_from_checkpoint", tmp_path / "missing", "--output_dir", tmp_path / "out"]
        )


def test_a_checkpoint_of_another_iecl_configuration_is_refused(tmp_path):
    """Weights of a wider backbone, in an accelerate checkpoint: named shapes, not a wall of load_state_dict errors."""
    from safetensors.torch import save_file

    from iecl_hf import IECLConfig, IECLForPreTraining

    other = IECLForPreTraining(IECLConfig(backbone_kwargs={"channels": [16, 32, 64, 128]}, stem="cifar_stride2"))
    checkpoint = tmp_path / "out" / "checkpoints" / "step_2"
    checkpoint.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, checkpoint / "model.safetensors")
    with pytest.raises(
        ValueError,
        match=r"written for another model: .*weights have other shapes \(e\.g\. .*: checkpoint \[.*\], model \[.*\]\)",
    ):
        run_pretrain_in_process([*TINY_ARGS, "--resume_from_checkpoint", "latest", "--output_dir", tmp_path / "out"])


# ------------------------------------------------------------------------------------------------ bad data


def small_images(n, seed=0):
    return [encode(random_rgb(seed=seed + i), "PNG") for i in range(n)]


def test_empty_train_split_is_a_clear_error(tmp_path):
    import datasets

    empty = datasets.Dataset.from_dict({"image": []}, features=datasets.Features({"image": datasets.Image()}))
    datasets.DatasetDict({"train": empty}).save_to_disk(str(tmp_path / "data"))
    with pytest.raises(ValueError, match=r"has empty split\(s\) or file\(s\): \['train'\]"):
        run_pretrain_in_process([*TINY_ARGS, "--dataset_name", tmp_path / "data", "--output_dir", tmp_path / "out"])


def test_empty_validation_split_is_a_clear_error(tmp_path):
    data = write_parquet_dataset(tmp_path / "data", small_images(16), labels=[0, 1] * 8)
    write_parquet_dataset(tmp_path / "data", [], labels=[], split="validation")
    with pytest.raises(ValueError, match=r"has empty split\(s\) or file\(s\): \['data/validation.parquet'\]"):
        run_pretrain_in_process(
            [*TINY_ARGS, "--dataset_name", data, "--cache_dir", tmp_path / "cache", "--output_dir", tmp_path / "out"]
        )


def test_an_empty_split_after_loading_is_a_clear_error(tmp_path):
    """Splits that datasets does load empty (an in-memory split): the recipe's own check."""
    import datasets

    from iecl_hf.training import pretraining  # the recipe's stages

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    train = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in small_images(16)], "label": [0, 1] * 8}, features=features
    )
    splits = datasets.DatasetDict({"train": train, "validation": train.select([])})
    with mock.patch.object(pretraining, "load_image_dataset", return_value=splits):
        with pytest.raises(ValueError, match="validation split 'validation' .* is empty.*--validation_split none"):
            run_pretrain_in_process([*TINY_ARGS, "--output_dir", tmp_path / "out"])
    splits = datasets.DatasetDict({"train": train.select([])})
    with mock.patch.object(pretraining, "load_image_dataset", return_value=splits):
        with pytest.raises(ValueError, match="split 'train' of .* is empty"):
            run_pretrain_in_process([*TINY_ARGS, "--output_dir", tmp_path / "out"])


def test_label_column_on_a_dataset_without_labels_lists_the_columns(tmp_path):
    folder = write_image_folder(tmp_path / "unlabelled", count=4)  # image folder without class folders: no labels
    with pytest.raises(ValueError, match=r"--label_column 'label' is not a column .*available columns: \['image'\]"):
        run_pretrain_in_process(
            [
                *TINY_ARGS,
                "--dataset_name",
                folder,
                "--label_column",
                "label",
                "--cache_dir",
                tmp_path / "cache",
                "--output_dir",
                tmp_path / "out",
            ]
        )


def test_label_column_of_strings_is_a_clear_error(tmp_path):
    data = write_parquet_dataset(tmp_path / "data", small_images(8), labels=["cat", "dog"] * 4)
    with pytest.raises(ValueError, match="--label_column 'label' holds .*string.*not integer class ids"):
        run_pretrain_in_process(
            [
                *TINY_ARGS,
                "--dataset_name",
                data,
                "--label_column",
                "label",
                "--cache_dir",
                tmp_path / "cache",
                "--output_dir",
                tmp_path / "out",
            ]
        )


def test_no_image_column_lists_the_columns(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a", "b"], "score": [1, 2]})}).save_to_disk(
        str(tmp_path / "data")
    )
    with pytest.raises(
        ValueError, match=r"No image column found .*available columns: \['text', 'score'\].*--image_column"
    ):
        run_pretrain_in_process([*TINY_ARGS, "--dataset_name", tmp_path / "data", "--output_dir", tmp_path / "out"])


def test_a_full_disk_fails_before_training(tmp_path):
    usage = namedtuple("usage", "total used free")
    with mock.patch("iecl_hf.training.checkpointing.shutil.disk_usage", return_value=usage(10**9, 10**9 - 4096, 4096)):
        with pytest.raises(ValueError, match="--output_dir .* has 0 MiB free; this run needs about"):
            run_pretrain_in_process([*TINY_ARGS, "--max_train_steps", 2, "--output_dir", tmp_path / "out"])
    assert not (tmp_path / "out" / "checkpoints").exists() and not (tmp_path / "out" / "logs").exists()


# ------------------------------------------------------------------------------------------------ safe loading


def python_files(*folders):
    for folder in folders:
        path = REPO / folder
        if path.is_dir():
            yield from sorted(path.rglob("*.py"))


def test_project_code_loads_no_pickles_without_weights_only():
    offences = []
    for path in python_files("iecl_hf", "recipes", "benchmarks"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name == "torch.load" or name.endswith(".torch.load"):
                weights_only = [k for k in node.keywords if k.arg == "weights_only"]
                if not (
                    weights_only
                    and isinstance(weights_only[0].value, ast.Constant)
                    and weights_only[0].value.value is True
                ):
                    offences.append(f"{path.relative_to(REPO)}:{node.lineno} {ast.unparse(node)}")
            if name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load"):
                offences.append(f"{path.relative_to(REPO)}:{node.lineno} {ast.unparse(node)}")
    assert not offences, offences


REMOTE_CODE_ALLOWED = {
    "torch",
    "transformers",
    "timm",
    "math",
    "copy",
    "dataclasses",
    "typing",
    "functools",
    "contextlib",
    "itertools",
    "collections",
    "warnings",
    "enum",
    "abc",
    "numbers",
    "__future__",
}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "open", "getattr_static", "system", "popen"}


def test_remote_code_files_only_define_the_model():
    """The files a checkpoint carries (iecl_hf/*_iecl.py) import only torch, transformers, timm (and a few
    harmless standard modules) and each other, and run nothing at import beyond definitions."""
    files = sorted((REPO / "iecl_hf").glob("*_iecl.py"))
    assert {"configuration_iecl.py", "modeling_iecl.py"} <= {f.name for f in files}
    names = {f.stem for f in files}
    problems = []
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                problems += [
                    f"{path.name}: import {a.name}"
                    for a in node.names
                    if a.name.split(".")[0] not in REMOTE_CODE_ALLOWED
                ]
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0 and node.module.split(".")[0] not in REMOTE_CODE_ALLOWED:
                    problems.append(f"{path.name}: from {node.module} import ...")
                if node.level > 1 or (node.level == 1 and node.module not in names):
                    problems.append(
                        f"{path.name}: from {'.' * node.level}{node.module} import ... (not a sibling *_iecl.py)"
                    )
            elif isinstance(node, ast.Call):
                called = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                if called in FORBIDDEN_CALLS:
                    problems.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        for statement in tree.body:  # module level: docstring, imports, definitions, constants only
            allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)
            is_docstring = isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            if not (isinstance(statement, allowed) or is_docstring):
                problems.append(f"{path.name}:{statement.lineno}: module-level {type(statement).__name__}")
    assert not problems, problems


# ------------------------------------------------------------------------------------------------ Hub faults


def finished_output(folder: Path) -> Path:
    from iecl_hf import IECLConfig, IECLModel

    IECLModel(IECLConfig(backbone_kwargs={"channels": [8, 16, 32, 64]}, stem="cifar_stride2")).save_pretrained(folder)
    (folder / "README.md").write_text("---\nlibrary_name: transformers\n---\n# model\n")
    (folder / "checkpoints" / "step_2").mkdir(parents=True)
    (folder / "checkpoints" / "step_2" / "model.safetensors").write_bytes(b"x")
    return folder


def test_push_script_failure_prints_the_retry_and_touches_nothing(tmp_path, capsys):
    from huggingface_hub import HfApi

    folder = finished_output(tmp_path / "out")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    with (
        mock.patch.object(HfApi, "create_repo", autospec=True, return_value="https://huggingface.co/user/x"),
        mock.patch.object(HfApi, "upload_folder", autospec=True, side_effect=RuntimeError("401 Unauthorized")),
    ):
        code = push_module().main(["--output_dir", str(folder), "--hub_model_id", "user/x"])
    assert code == 1
    err = capsys.readouterr().err
    assert "401 Unauthorized" in err and "local output is complete" in err
    assert f"python recipes/push.py --output_dir {folder} --hub_model_id user/x" in err
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_push_script_refuses_a_folder_that_is_not_a_finished_output(tmp_path, capsys):
    from huggingface_hub import HfApi

    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text(json.dumps({"model_type": "iecl"}))
    with mock.patch.object(HfApi, "create_repo", autospec=True) as create_repo:
        assert push_module().main(["--output_dir", str(tmp_path / "half"), "--hub_model_id", "user/x"]) == 2
        assert "not a finished pretraining output" in capsys.readouterr().err
        assert push_module().main(["--output_dir", str(tmp_path / "nowhere"), "--hub_model_id", "user/x"]) == 2
        assert "is not a folder" in capsys.readouterr().err
    create_repo.assert_not_called()


def test_push_with_the_hub_offline_fails_cleanly(tmp_path, monkeypatch, capsys):
    """A real HfApi call (no patch) with HF_HUB_OFFLINE=1: refused locally, reported, nothing sent."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = block_network(monkeypatch)
    folder = finished_output(tmp_path / "out")
    code = push_module().main(["--output_dir", str(folder), "--hub_model_id", "user/x"])
    assert code == 1
    err = capsys.readouterr().err
    assert attempts == []  # refused by offline mode, not by a failed connection
    assert "OfflineModeIsEnabled" in err and "python recipes/push.py --output_dir" in err
