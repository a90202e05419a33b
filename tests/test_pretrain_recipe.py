"""recipes/pretrain.py end to end, small: two processes, push to the Hub (patched), bad input.

The kill-and-resume tests are in test_reliability.py.
"""

import os
from pathlib import Path
from unittest import mock

import pytest
import torch
from helpers import (
    REMOTE_CODE_FILES,
    TINY_ARGS,
    awkward_images,
    corrupt_images,
    encode,
    free_port,
    push_module,
    random_rgb,
    read_json,
    read_jsonl,
    run_pretrain_in_process,
    run_pretrain_subprocess,
    write_parquet_dataset,
)

RELEASE_FILES = {
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "README.md",
    "views.png",
    "training_curves.png",
    "configuration_iecl.py",
    "modeling_iecl.py",
}


def uploaded_files(folder, ignore_patterns) -> set[str]:
    """What `HfApi.upload_folder(folder_path=folder, ignore_patterns=...)` sends, by huggingface_hub's own filter."""
    from huggingface_hub.utils import filter_repo_objects

    files = [
        os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
        for root, _, names in os.walk(folder)
        for name in names
    ]
    return set(filter_repo_objects(files, ignore_patterns=ignore_patterns))


@pytest.mark.slow
def test_two_processes_train_on_a_global_batch_and_write_a_loadable_model(tmp_path):
    out = tmp_path / "out"
    result = run_pretrain_subprocess(
        [*TINY_ARGS, "--max_train_steps", 4, "--checkpointing_steps", 2, "--output_dir", out],
        launcher=[
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
        ],
        ACCELERATE_USE_CPU="1",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "2 process(es)" in result.stdout
    assert "global batch 16" in result.stdout

    results = read_json(out / "train_results.json")
    assert results["step"] == 4
    assert results["images_seen"] == 4 * 8 * 2  # steps x per-device batch x processes
    assert results["skipped images"] == 0
    # The exact SVD norm at the end checks the logged one-iteration estimate, a lower bound of it.
    assert results["spectral_norm_max_exact"] >= results["spectral_norm_max"] - 1e-4
    log = read_jsonl(out / "logs" / "train_log.jsonl")
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in log if "loss" in r)
    assert sorted(os.listdir(out / "checkpoints")) == ["step_2", "step_4"]
    # One RNG state per process in each checkpoint (both resume where they stopped).
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= set(os.listdir(out / "checkpoints" / "step_4"))

    from transformers import AutoModel

    model = AutoModel.from_pretrained(out, trust_remote_code=True)
    assert model.config.model_type == "iecl"
    with torch.no_grad():
        features = model(torch.rand(2, 3, 32, 32)).pooler_output
    assert features.shape == (2, 64) and torch.isfinite(features).all()


# ------------------------------------------------------------------------------------------------ push (patched)


def test_push_to_hub_uploads_the_release_files_only(tmp_path, capsys):
    from huggingface_hub import HfApi, ModelCard

    out = tmp_path / "out"
    seen_at_upload = {}

    def fake_upload_folder(self, **kwargs):
        seen_at_upload.update(kwargs, files=uploaded_files(kwargs["folder_path"], kwargs["ignore_patterns"]))
        return "https://huggingface.co/user/x/commit/0"

    with (
        mock.patch.object(
            HfApi, "create_repo", autospec=True, return_value="https://huggingface.co/user/x"
        ) as create_repo,
        mock.patch.object(HfApi, "upload_folder", autospec=True, side_effect=fake_upload_folder) as upload_folder,
    ):
        code = run_pretrain_in_process(
            [
                *TINY_ARGS,
                "--max_train_steps",
                3,
                "--checkpointing_steps",
                2,
                "--output_dir",
                out,
                "--push_to_hub",
                "--hub_model_id",
                "user/x",
                "--hub_private_repo",
                "--hub_token",
                "hf_not_a_real_token",
            ]
        )
    assert code == 0
    assert "Pushed to https://huggingface.co/user/x" in capsys.readouterr().out
    # No uploaded file holds the token (train_results.json records every other flag).
    results = read_json(out / "train_results.json")
    assert "hub_token" not in results["args"] and results["args"]["hub_model_id"] == "user/x"
    assert not [f for f in os.listdir(out) if os.path.isfile(out / f) and b"hf_not_a_real" in (out / f).read_bytes()]
    assert results["provenance"]["config_diff"]["model_type"] == "iecl" and results["provenance"]["learning_rate"] > 0

    create_repo.assert_called_once()
    _, repo_id = create_repo.call_args.args[:2]
    assert repo_id == "user/x"
    assert create_repo.call_args.kwargs["private"] is True
    assert create_repo.call_args.kwargs["exist_ok"] is True
    upload_folder.assert_called_once()
    assert seen_at_upload["repo_id"] == "user/x"
    assert Path(seen_at_upload["folder_path"]) == out

    files = seen_at_upload["files"]
    assert RELEASE_FILES <= files, RELEASE_FILES - files
    # The modeling file's own imports (SAIB, the spectral penalty, ...), and no file of the old formulation.
    assert REMOTE_CODE_FILES <= files, REMOTE_CODE_FILES - files
    assert "view_generator_iecl.py" not in files
    assert not [f for f in files if f.startswith(("checkpoints/", "logs/"))], files
    assert os.path.isdir(out / "checkpoints" / "step_2")  # present locally, left out of the upload

    config = read_json(out / "config.json")
    assert config["model_type"] == "iecl"
    assert config["auto_map"]["AutoModel"].startswith("modeling_iecl.")
    assert not [key for key in config if key.startswith("_")], config  # the recipe's own bookkeeping stays out
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers"
    assert "iecl" in card.data.tags
    assert "user/x" in card.text  # the usage snippet points at the Hub repo


def test_failed_push_keeps_the_output_and_prints_the_retry_command(tmp_path, capsys):
    from huggingface_hub import HfApi

    out = tmp_path / "out"
    with (
        mock.patch.object(HfApi, "create_repo", autospec=True, side_effect=ConnectionError("network is down")),
        mock.patch.object(HfApi, "upload_folder", autospec=True) as upload_folder,
    ):
        code = run_pretrain_in_process(
            [*TINY_ARGS, "--max_train_steps", 2, "--output_dir", out, "--push_to_hub", "--hub_model_id", "user/x"]
        )
    assert code == 1
    upload_folder.assert_not_called()
    printed = capsys.readouterr().err
    assert "network is down" in printed
    assert f"python recipes/push.py --output_dir {out} --hub_model_id user/x" in printed
    assert RELEASE_FILES | {"train_results.json"} <= set(os.listdir(out))

    # The printed command uploads the same folder on its own.
    push = push_module()
    with (
        mock.patch.object(
            HfApi, "create_repo", autospec=True, return_value="https://huggingface.co/user/x"
        ) as create_repo,
        mock.patch.object(HfApi, "upload_folder", autospec=True) as upload_folder,
    ):
        assert push.main(["--output_dir", str(out), "--hub_model_id", "user/x", "--hub_private_repo"]) == 0
    assert create_repo.call_args.kwargs["private"] is True
    kwargs = upload_folder.call_args.kwargs
    assert kwargs["repo_id"] == "user/x" and Path(kwargs["folder_path"]) == out
    files = uploaded_files(out, kwargs["ignore_patterns"])
    assert RELEASE_FILES <= files and not [f for f in files if f.startswith("checkpoints/")]


# ------------------------------------------------------------------------------------------------ bad input


def test_unknown_dataset_offline_says_how_to_pass_local_data(tmp_path):
    with pytest.raises(ValueError) as error:
        run_pretrain_in_process(
            [*TINY_ARGS, "--dataset_name", "nobody-here/no-such-dataset", "--output_dir", tmp_path / "out"]
        )
    message = str(error.value)
    assert "nobody-here/no-such-dataset" in message
    assert "pass local data" in message and "--dataset_name path/to/folder" in message and "image folder" in message
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_missing_image_column_lists_the_available_columns(tmp_path):
    with pytest.raises(ValueError, match=r"--image_column 'nope'.*available columns: \['image', 'label'\]"):
        run_pretrain_in_process([*TINY_ARGS, "--image_column", "nope", "--output_dir", tmp_path / "out"])


def test_unwritable_output_dir_fails_before_any_data_is_read(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    from iecl_hf.training import pretraining  # the recipe's stages

    with mock.patch.object(pretraining, "load_image_dataset", side_effect=AssertionError("data was read")):
        with pytest.raises(ValueError, match="--output_dir .* is not writable"):
            run_pretrain_in_process([*TINY_ARGS, "--output_dir", blocker / "out"])


@pytest.mark.parametrize("steps, accumulation", [(4, 1), (2, 2)])
def test_awkward_and_corrupt_images_are_converted_or_skipped_and_counted(tmp_path, capsys, steps, accumulation):
    good = [encode(random_rgb(seed=10 + i), "PNG") for i in range(18)]
    awkward, corrupt = list(awkward_images().values()), list(corrupt_images().values())
    # Corrupt images first: the preview for views.png must find decodable ones further on.
    images = corrupt + awkward + good
    assert len(images) == 32
    data = write_parquet_dataset(tmp_path / "data", images)
    out = tmp_path / "out"
    # 4 micro-batches of 8 = exactly one pass over the 32 images (with accumulation, the corrupt images all fall in
    # the first micro-batch of a step: images_seen counts each micro-batch, not the last one times the accumulation).
    code = run_pretrain_in_process(
        [
            *TINY_ARGS,
            "--dataset_name",
            data,
            "--cache_dir",
            tmp_path / "cache",
            "--max_train_steps",
            steps,
            "--gradient_accumulation_steps",
            accumulation,
            "--output_dir",
            out,
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert f"WARNING: skipped {len(corrupt)} images" in captured.err  # warnings go to stderr
    assert "WARNING: an image could not be decoded" in captured.err  # warned when it happens, too
    results = read_json(out / "train_results.json")
    assert results["skipped images"] == len(corrupt)
    assert results["step"] == steps
    assert results["images_seen"] == len(images) - len(corrupt)
    assert (out / "views.png").stat().st_size > 0 and (out / "model.safetensors").exists()


@pytest.mark.parametrize("fault", ["loss", "weights"])
def test_non_finite_values_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, fault):
    from safetensors.torch import load_file
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from iecl_hf import IECLConfig, IECLForPreTraining

    original = IECLForPreTraining.forward
    calls = {"forward": 0, "sgd_step": 0}

    def forward(self, *args, **kwargs):
        calls["forward"] += 1
        output = original(self, *args, **kwargs)
        if calls["forward"] == 3 and fault == "loss":
            output.loss = output.loss * float("nan")
        return output

    def after_optimizer_step(optimizer, args, kwargs):  # finite terms, but the update of step 3 leaves inf weights
        if (
            isinstance(optimizer, torch.optim.SGD) and len(optimizer.param_groups) == 2
        ):  # the encoder's (decay / no decay)
            calls["sgd_step"] += 1
            if calls["sgd_step"] == 3 and fault == "weights":
                with torch.no_grad():
                    optimizer.param_groups[0]["params"][0].fill_(float("inf"))

    out = tmp_path / "out"
    hook = register_optimizer_step_post_hook(after_optimizer_step)
    try:
        with mock.patch.object(IECLForPreTraining, "forward", forward):
            with pytest.raises(RuntimeError) as error:
                run_pretrain_in_process(
                    [*TINY_ARGS, "--max_train_steps", 6, "--checkpointing_steps", 1, "--output_dir", out]
                )
    finally:
        hook.remove()
    message = str(error.value)
    assert type(error.value).__name__ == "NonFiniteLossError", message
    if fault == "loss":
        assert "loss=nan" in message and "at step 3" in message
    else:
        assert "Non-finite weights (" in message and "after step 3" in message
    assert "step_2" in message  # names the last good checkpoint

    # The last good checkpoint is intact and loads into the model; nothing after it, no final model.
    assert sorted(os.listdir(out / "checkpoints")) == ["step_1", "step_2"]
    weights = load_file(out / "checkpoints" / "step_2" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    config = IECLConfig(
        backbone="resnet18", backbone_kwargs={"channels": [8, 16, 32, 64]}, stem="cifar_stride2", image_size=32
    )
    IECLForPreTraining(config).load_state_dict(weights, strict=True)
    assert not (out / "model.safetensors").exists() and not (out / "train_results.json").exists()


# ------------------------------------------------------------------------------------------------ SAIB's optimizer


def test_saib_is_trained_by_adamw_with_its_config_weight_decay(tmp_path):
    from iecl_hf.optimization import build_generator_optimizer
    from iecl_hf.training import pretraining  # the recipe's stages

    built = []

    def spy(parameters, lr, weight_decay=0.0):
        parameters = list(parameters)
        optimizer = build_generator_optimizer(parameters, lr, weight_decay)
        built.append((parameters, optimizer))
        return optimizer

    with mock.patch.object(pretraining, "build_generator_optimizer", side_effect=spy):
        assert (
            run_pretrain_in_process(
                [
                    *TINY_ARGS,
                    "--max_train_steps",
                    1,
                    "--knn_every_epochs",
                    0,
                    "--output_dir",
                    tmp_path / "saib",
                    "--generator_learning_rate",
                    0.002,
                    "--saib_weight_decay",
                    0.05,
                ]
            )
            == 0
        )
        assert (
            run_pretrain_in_process(
                [
                    *TINY_ARGS,
                    "--max_train_steps",
                    1,
                    "--knn_every_epochs",
                    0,
                    "--output_dir",
                    tmp_path / "none",
                    "--generator_architecture",
                    "none",
                ]
            )
            == 0
        )
    (saib_parameters, optimizer), (no_parameters, no_optimizer) = built
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [group["lr"] for group in optimizer.param_groups] == [
        0.002
    ]  # constant: the LR schedule drives the encoder optimizer only
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.05]
    assert saib_parameters and {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in saib_parameters}
    assert {p.shape for p in saib_parameters} >= {torch.Size([1, 64, 8, 8])}  # SAIB's position code (8 x 8 patches)
    assert no_parameters == [] and no_optimizer is None
