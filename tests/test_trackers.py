"""Experiment tracking (`--report_to`, `--run_name`): a TensorBoard run of each recipe leaves the scalars under stable
names with the right steps, a resumed run continues the same one, and what the recipes hand to the trackers is what
every tracker accepts."""

import json
import re

import pytest
import torch
from helpers import (
    REPO,
    TINY_ARGS,
    load_script,
    read_json,
    read_jsonl,
    reset_accelerate_state,
    run_pretrain_in_process,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard.summary import hparams

from iecl_hf import IECLConfig, IECLForPreTraining, build_image_processor
from iecl_hf.training.trackers import RUN_FILE, resolve_run, start_trackers, tracker_config, tracker_scalars


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of the event files in `folder`, as TensorBoard shows them (purged steps hidden)."""
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def readme_tracking_names() -> set[str]:
    section = (REPO / "README.md").read_text().split("## Experiment tracking", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`((?:train|knn|eval|probe)/\w+)`", section))


def test_tracker_config_keeps_scalars_and_encodes_the_rest():
    values = tracker_config(
        {"learning_rate": 0.3, "seed": 0, "streaming": False, "dataset_name": None, "hub_token": "hf_secret"},
        {"knn_k": [20, 200], "image_mean": (0.5, 0.5, 0.5), "backbone_kwargs": {"channels": [8, 16]}},
        {"seed": 1},  # a later part wins
    )
    assert values == {
        "learning_rate": 0.3,
        "seed": 1,
        "streaming": False,
        "dataset_name": "None",
        "knn_k": "[20, 200]",
        "image_mean": "[0.5, 0.5, 0.5]",
        "backbone_kwargs": '{"channels": [8, 16]}',
    }  # and the Hub token is not uploaded with the config
    # What the pretraining recipe hands over: TensorBoard's hparams (the call that failed) take all of it.
    config = IECLConfig(backbone_kwargs={"channels": [8, 16, 32, 64]}, stem="cifar_stride2", image_size=32)
    hparams(tracker_config(config.to_diff_dict(), config.to_dict()), metric_dict={})


def test_log_records_get_stable_tracker_names():
    record = {"step": 7, "epoch": 1, "lr": 0.1, "loss": 2.5, "entropy_query": 1.0, "kl_loss": 0.2}
    assert tracker_scalars(record) == {
        "train/epoch": 1,
        "train/lr": 0.1,
        "train/loss": 2.5,
        "train/entropy_query": 1.0,
        "train/kl_loss": 0.2,
    }
    assert tracker_scalars({"step": 8, "epoch": 2, "knn_top1": 0.5}) == {"knn/top1": 0.5}


def test_run_identity_is_kept_for_a_resume_and_new_for_a_fresh_start(tmp_path):
    class FakeAccelerator:
        log_with, is_main_process = ["wandb"], True

        def init_trackers(self, project, config=None, init_kwargs=None):
            self.started = (project, config, init_kwargs)

    out = tmp_path / "my-run"
    first = resolve_run(str(out), None, resuming=False)
    assert first.name == "my-run"  # the output folder's name by default
    accelerator = FakeAccelerator()
    start_trackers(accelerator, "iecl-pretrain", first, {"seed": 0})
    project, config, init_kwargs = accelerator.started
    assert (project, config) == ("iecl-pretrain", {"seed": 0})
    wandb = {"name": "my-run", "id": first.wandb_id, "resume": "allow", "dir": first.logging_dir}
    assert init_kwargs["wandb"] == wandb
    assert read_json(out / RUN_FILE) == {"run_name": "my-run", "wandb_id": first.wandb_id}

    assert resolve_run(str(out), None, resuming=True) == first  # a resume continues the same W&B run
    assert resolve_run(str(out), None, resuming=False).wandb_id != first.wandb_id  # a fresh start is a new one
    assert resolve_run(str(tmp_path / "other"), "named", resuming=True).name == "named"


def test_tensorboard_run_logs_stable_names_and_a_resume_continues_the_same_curve(tmp_path):
    out = tmp_path / "out"
    args = [*TINY_ARGS, "--max_train_steps", 4, "--checkpointing_steps", 2, "--output_dir", out]
    assert run_pretrain_in_process([*args, "--report_to", "tensorboard", "--run_name", "tiny"]) == 0

    folder = out / "logs" / "tiny" / "iecl-pretrain"  # logging_dir OUT/logs/RUN_NAME, accelerate's project inside
    logged = scalars(folder)
    for name in ("loss", "base_loss", "entropy_query", "kl_loss", "lr", "images_per_second", "epoch"):
        assert [step for step, _ in logged[f"train/{name}"]] == [1, 2, 3, 4], name
    jsonl = read_jsonl(out / "logs" / "train_log.jsonl")
    losses = [record["loss"] for record in jsonl if "loss" in record]
    assert [value for _, value in logged["train/loss"]] == pytest.approx(losses)
    final_knn = read_json(out / "train_results.json")["online kNN top-1 (%)"] / 100
    assert logged["knn/top1"] == [(4, pytest.approx(final_knn, abs=1e-4))]  # the final kNN, after the last step
    documented = {name for name in readme_tracking_names() if name.startswith(("train/", "knn/"))}
    assert documented and documented <= set(logged), documented - set(logged)  # the README names what is logged
    wandb_id = read_json(out / RUN_FILE)["wandb_id"]

    # Resume from step 2 in the same folder: the same run name and id, one curve (steps 3-4 logged again, not twice).
    checkpoint = out / "checkpoints" / "step_2"
    assert run_pretrain_in_process([*args, "--report_to", "tensorboard", "--resume_from_checkpoint", checkpoint]) == 0
    assert read_json(out / RUN_FILE) == {"run_name": "tiny", "wandb_id": wandb_id}
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["tiny", "tracker_run.json", "train_log.jsonl"]
    resumed = scalars(folder)
    assert [step for step, _ in resumed["train/loss"]] == [1, 2, 3, 4]
    assert [step for step, _ in resumed["knn/top1"]] == [4]


def test_linear_eval_logs_its_figures_at_the_probe_s_last_epoch(tmp_path):
    checkpoint = tmp_path / "ckpt"
    config = IECLConfig(backbone_kwargs={"channels": [8, 16, 32, 64]}, stem="cifar_stride2", image_size=32)
    torch.manual_seed(0)
    IECLForPreTraining(config).save_pretrained(checkpoint)
    build_image_processor(config).save_pretrained(checkpoint)
    recipe = load_script(REPO / "recipes" / "linear_eval.py", "iecl_test_linear_eval_recipe")
    out = tmp_path / "eval"
    argv = [
        "--model_name_or_path", checkpoint, "--output_dir", out, "--max_train_samples", 100, "--max_test_samples", 50,
        "--num_epochs", 3, "--embedding_2d", "pca", "--report_to", "tensorboard",
    ]  # fmt: skip
    try:
        assert recipe.main([str(a) for a in argv]) == 0
    finally:
        reset_accelerate_state()

    logged = scalars(out / "logs" / "eval" / "iecl-linear-eval")  # the run is named after the output folder
    assert [step for step, _ in logged["probe/loss"]] == [1, 2, 3]
    figures = json.loads((out / "eval_results.json").read_text())["figures"]
    for name in ("linear_top1", "linear_top5", "knn_k20_top1", "knn_k200_top1"):
        assert logged[f"eval/{name}"] == [(3, pytest.approx(figures[name]))], name
    documented = {name for name in readme_tracking_names() if name.startswith(("eval/", "probe/"))}
    assert documented and documented <= set(logged), documented - set(logged)


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb"])
def test_a_tracker_that_is_not_installed_is_a_clear_error_before_anything_runs(tracker, tmp_path, monkeypatch):
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, f"is_{tracker}_available", lambda: False)
    message = rf"--report_to {tracker}: the {tracker} package is not installed; `pip install {tracker}`"
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        run_pretrain_in_process([*TINY_ARGS, "--report_to", f"{tracker}", "--output_dir", out])
    assert not out.exists()  # before the output folder, the data or the model

    recipe = load_script(REPO / "recipes" / "linear_eval.py", "iecl_test_linear_eval_recipe")
    with pytest.raises(ValueError, match=message):
        recipe.parse_args(["--model_name_or_path", str(tmp_path), "--report_to", tracker])


@pytest.mark.parametrize("name", ["a/b", "..", ""])
def test_run_name_must_be_a_folder_name(name, tmp_path):
    with pytest.raises(ValueError, match="--run_name .* names a folder under OUTPUT/logs"):
        run_pretrain_in_process([*TINY_ARGS, "--run_name", name, "--output_dir", tmp_path / "out"])
