"""The frameworks through the recipe: the ablation grid as config files, MoCo and BYOL trained by recipes/pretrain.py,
and resume restoring the queue and the momentum target exactly."""

import hashlib
import math
import shutil

import pytest
import torch
from helpers import (
    REPO,
    TINY_ARGS,
    encode,
    max_abs_difference,
    random_rgb,
    read_json,
    read_jsonl,
    run_pretrain_in_process,
    write_parquet_dataset,
)
from safetensors.torch import load_file

from iecl_hf import BASELINE_OVERRIDES, IECLConfig, IECLForPreTraining
from iecl_hf.cli.pretrain import parse_pretrain_args as parse_args
from iecl_hf.data.pipeline import ExampleTransform

CONFIGS = sorted((REPO / "recipes" / "configs").glob("*.yaml"))
# The paper's ablation cells: (generator_architecture, lambda_entropy > 0, beta_kl > 0, encoder_spectral_norm).
CELLS = {
    "baseline": ("none", False, False, False),
    "generation": ("saib", True, True, False),
    "preservation": ("none", False, False, True),
    "full": ("saib", True, True, True),
}
IECL_FIELDS = (
    "generator_architecture",
    "lambda_entropy",
    "beta_kl",
    "encoder_spectral_norm",
    "spectral_norm_weight",
    "entropy_estimator",
    "kl_covariance",
    "saib_patch_size",
    "saib_dim",
)


def test_the_grid_has_every_cell():
    assert {p.stem for p in CONFIGS} == {f"{fw}_{cell}" for fw in ("simclr", "moco", "byol") for cell in CELLS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_each_cell_is_a_config_change(path):
    framework, cell = path.stem.split("_")
    _, _, values = parse_args(["--config_file", str(path)])
    config = IECLConfig(**values)
    assert config.framework == framework
    assert (
        config.generator_architecture,
        config.lambda_entropy > 0,
        config.beta_kl > 0,
        config.encoder_spectral_norm,
    ) == CELLS[cell]
    if cell == "full":  # full IE-CL is the package default
        assert all(getattr(config, name) == getattr(IECLConfig(framework=framework), name) for name in IECL_FIELDS)
    if cell == "baseline":  # the one baseline of the package, the benchmarks and the tests
        assert {name: getattr(config, name) for name in BASELINE_OVERRIDES} == BASELINE_OVERRIDES
    # The cell is what the model builds: SAIB and the spectral penalty exist exactly when the cell switches them on.
    tiny = IECLConfig(
        **{
            **values,
            "backbone_kwargs": {"channels": [8, 16, 32, 64]},
            "projection_hidden_dim": 16,
            "projection_dim": 8,
            "predictor_hidden_dim": 8,
            "moco_queue_size": 8,
            "saib_dim": 4,
        }
    )
    model = IECLForPreTraining(tiny)
    assert (model.view_generator is not None) == (CELLS[cell][0] == "saib")
    assert (model.spectral_penalty is not None) == CELLS[cell][3]


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["moco", "byol"])
def test_resume_restores_queue_and_target_exactly(framework, tmp_path):
    args = [
        *TINY_ARGS,
        "--max_train_samples",
        32,
        "--max_train_steps",
        4,
        "--checkpointing_steps",
        2,
        "--checkpoints_total_limit",
        0,
        "--knn_every_epochs",
        0,
        "--model_config_overrides",
        f"framework={framework},moco_queue_size=24" + (",moco_batchnorm_groups=4" if framework == "moco" else ""),
    ]
    reference = tmp_path / "reference"
    assert run_pretrain_in_process([*args, "--output_dir", reference]) == 0

    resumed = tmp_path / "resumed"
    shutil.copytree(reference / "checkpoints" / "step_2", tmp_path / "step_2")
    assert (
        run_pretrain_in_process([*args, "--output_dir", resumed, "--resume_from_checkpoint", tmp_path / "step_2"]) == 0
    )

    final_reference, final_resumed = (
        load_file(str(reference / "model.safetensors")),
        load_file(str(resumed / "model.safetensors")),
    )
    state_keys = [k for k in final_reference if k.startswith("head.momentum") or k.startswith("head.queue")]
    assert state_keys  # the framework state is part of what is compared
    step_2 = load_file(str(tmp_path / "step_2" / "model.safetensors"))
    assert any((step_2[k] != final_reference[k]).any() for k in state_keys)  # it changed after the checkpoint
    assert max_abs_difference(reference / "model.safetensors", resumed / "model.safetensors") == 0.0  # bitwise
    if framework == "moco":
        both_views_keys = 4 * 2 * 8  # 4 steps of batch 8: both views' keys enter the queue
        assert (
            int(final_resumed["head.queue_pointer"])
            == int(final_reference["head.queue_pointer"])
            == both_views_keys % 24
        )


@pytest.mark.parametrize("framework", ["moco", "byol"])
def test_framework_output_loads_as_the_encoder(framework, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    assert (
        run_pretrain_in_process(
            [
                *TINY_ARGS,
                "--max_train_steps",
                2,
                "--knn_every_epochs",
                0,
                "--output_dir",
                out,
                "--framework",
                framework,
                "--moco_queue_size",
                16,
            ]
        )
        == 0
    )
    code = (
        "import sys; sys.modules['iecl_hf'] = None\n"
        "from transformers import AutoModel\n"
        f"m = AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        "assert type(m).__name__ == 'IECLModel', type(m)\n"
        "assert not any(k.startswith('head') for k in m.state_dict())\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_MODULES_CACHE": str(tmp_path / "modules")},
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_channels_last_trains_the_same_model(tmp_path, monkeypatch):
    """--channels_last is a speed option only: same seed, one step, the same weights up to float rounding (the
    convolutions take other kernels; over many steps the rounding differences grow like any two float orders).
    On random colour images: the upscaled digits have exactly constant backgrounds, whose equal activations
    sit on a ReLU's kink together, so one rounding difference flips many of them at once."""
    data = write_parquet_dataset(tmp_path / "rgb", [encode(random_rgb(seed=i), "PNG") for i in range(32)])
    args = [
        *TINY_ARGS,
        "--dataset_name",
        data,
        "--max_train_samples",
        32,
        "--max_train_steps",
        1,
        "--knn_every_epochs",
        0,
    ]
    layouts = []  # at each forward: (views, first conv weight) in channels_last?
    original = IECLForPreTraining.forward

    def recording(model, pixel_values, *rest, **kwargs):
        weight = next(m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
        layouts.append(tuple(t.is_contiguous(memory_format=torch.channels_last) for t in (pixel_values, weight)))
        return original(model, pixel_values, *rest, **kwargs)

    monkeypatch.setattr(IECLForPreTraining, "forward", recording)
    assert run_pretrain_in_process([*args, "--output_dir", tmp_path / "contiguous"]) == 0
    assert layouts and set(layouts) == {(False, False)}
    layouts.clear()
    assert run_pretrain_in_process([*args, "--output_dir", tmp_path / "channels_last", "--channels_last"]) == 0
    assert layouts and set(layouts) == {(True, True)}  # the option reached the model and the views
    difference = max_abs_difference(
        tmp_path / "contiguous" / "model.safetensors", tmp_path / "channels_last" / "model.safetensors"
    )
    assert difference < 1e-4


@pytest.mark.parametrize("framework", ["simclr", "moco", "byol"])
def test_bf16_mixed_precision_trains_every_framework(framework, tmp_path, monkeypatch, capsys):
    """`accelerate launch --mixed_precision bf16` with every IE-CL term on: the spectral penalty, entropy and KL run in
    float32 under autocast, the losses stay finite and the saved weights are float32."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision` sets
    out = tmp_path / "out"
    args = [*TINY_ARGS, "--framework", framework, "--max_train_steps", 2, "--logging_steps", 1, "--output_dir", out]
    assert run_pretrain_in_process([*args, "--knn_every_epochs", 0]) == 0
    assert "mixed precision bf16" in capsys.readouterr().out
    rows = [row for row in read_jsonl(out / "logs" / "train_log.jsonl") if "loss" in row]
    assert len(rows) == 2
    for row in rows:
        assert all(math.isfinite(row[key]) for key in ("loss", "entropy_query", "kl_loss", "spectral_penalty"))
    assert {t.dtype for t in load_file(str(out / "model.safetensors")).values() if t.is_floating_point()} == {
        torch.float32
    }


def test_torch_compile_trains_the_same_model_with_plain_keys(tmp_path):
    """--torch_compile compiles the encoder in place: the same training (aot_eager: dynamo's graph capture and
    AOT autograd without inductor's code generation, so the numerics are eager's) and a checkpoint with the plain
    keys an uncompiled run saves (no `_orig_mod.`)."""
    args = [*TINY_ARGS, "--max_train_samples", 32, "--max_train_steps", 2, "--knn_every_epochs", 0]
    assert run_pretrain_in_process([*args, "--output_dir", tmp_path / "eager"]) == 0
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled_args = [*args, "--output_dir", tmp_path / "compiled", "--torch_compile_backend", "aot_eager"]
    assert run_pretrain_in_process(compiled_args) == 0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the encoder did go through torch.compile
    torch._dynamo.reset()
    eager, compiled = (tmp_path / name / "model.safetensors" for name in ("eager", "compiled"))
    assert sorted(load_file(str(compiled))) == sorted(load_file(str(eager)))
    assert max_abs_difference(eager, compiled) < 1e-5
    losses = [
        [row["loss"] for row in read_jsonl(tmp_path / name / "logs" / "train_log.jsonl")]
        for name in ("eager", "compiled")
    ]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_per_image_augmentation_resumes_with_the_same_data_order(tmp_path, monkeypatch):
    """--augmentation workers resumes (same steps, same batches of images), but not bitwise: the per-image views of
    the batch after a checkpoint are drawn before it is saved (Accelerate's loader fetches one batch ahead), and
    worker processes are seeded per epoch. README, Fault tolerance. The default batched path is bitwise exact."""
    args = [*TINY_ARGS, "--max_train_samples", 32, "--max_train_steps", 4, "--checkpointing_steps", 2,
            "--checkpoints_total_limit", 0, "--knn_every_epochs", 0, "--augmentation", "workers"]  # fmt: skip
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    # Which images each run's training views were made from, in order (the loader runs in this process).
    loaded = {reference: [], resumed: []}
    original = ExampleTransform.transform_example

    def transform_example(transform, raw_image, label=None):
        if "pixel_values_2" in transform.views:  # the training views, not the kNN monitor's
            loaded[current].append(hashlib.sha1(repr(raw_image).encode()).hexdigest())
        return original(transform, raw_image, label)

    monkeypatch.setattr(ExampleTransform, "transform_example", transform_example)
    current = reference
    assert run_pretrain_in_process([*args, "--output_dir", reference]) == 0
    shutil.copytree(reference / "checkpoints" / "step_2", tmp_path / "step_2")  # mid-epoch: 4 steps per epoch
    current = resumed
    assert (
        run_pretrain_in_process([*args, "--output_dir", resumed, "--resume_from_checkpoint", tmp_path / "step_2"]) == 0
    )
    assert len(set(loaded[reference][:32])) == 32  # one epoch: each image once
    assert loaded[resumed][:16] == loaded[reference][16:32]  # steps 3 and 4: the same images in the same order
    logs = [read_jsonl(folder / "logs" / "train_log.jsonl") for folder in (reference, resumed)]
    assert [r["step"] for r in logs[0] if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in logs[1] if "loss" in r] == [3, 4]  # continues after the checkpoint's step
    assert (
        read_json(resumed / "train_results.json")["images_seen"]
        == read_json(reference / "train_results.json")["images_seen"]
    )
