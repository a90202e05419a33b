"""Issue 5 through the recipe: the ablation grid as config files, MoCo and BYOL trained by recipes/pretrain.py,
and resume restoring the queue and the momentum target exactly."""

import shutil
from pathlib import Path

import pytest
from helpers import REPO, TINY_ARGS, max_abs_difference, run_pretrain_in_process
from safetensors.torch import load_file

from iecl_hf import IECLConfig
from iecl_hf.training.arguments import parse_args

CONFIGS = sorted((REPO / "recipes" / "configs").glob("*.yaml"))
CELLS = {"baseline": (False, 0.0), "generator": (True, 0.0), "regularizer": (False, 1.0), "full": (True, 1.0)}


def test_the_grid_has_every_cell():
    assert {p.stem for p in CONFIGS} == {f"{fw}_{cell}" for fw in ("simclr", "moco", "byol") for cell in CELLS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_each_cell_is_a_config_change(path):
    framework, cell = path.stem.split("_")
    _, _, values = parse_args(["--config_file", str(path)])
    values.pop("_preset")
    config = IECLConfig(**values)
    assert config.framework == framework
    assert (config.use_view_generator, config.lambda_pres) == CELLS[cell]


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["moco", "byol"])
def test_resume_restores_queue_and_target_exactly(framework, tmp_path):
    args = [*TINY_ARGS, "--max_train_samples", 32, "--max_train_steps", 4, "--checkpointing_steps", 2,
            "--checkpoints_total_limit", 0, "--knn_every_epochs", 0,
            "--model_config_overrides", f"framework={framework},moco_queue_size=24"]
    reference = tmp_path / "reference"
    assert run_pretrain_in_process([*args, "--output_dir", reference]) == 0

    resumed = tmp_path / "resumed"
    shutil.copytree(reference / "checkpoints" / "step_2", tmp_path / "step_2")
    assert run_pretrain_in_process([*args, "--output_dir", resumed, "--resume_from_checkpoint", tmp_path / "step_2"]) == 0

    final_reference, final_resumed = load_file(str(reference / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    state_keys = [k for k in final_reference if k.startswith("head.momentum") or k.startswith("head.queue")]
    assert state_keys  # the framework state is part of what is compared
    step_2 = load_file(str(tmp_path / "step_2" / "model.safetensors"))
    assert any((step_2[k] != final_reference[k]).any() for k in state_keys)  # it changed after the checkpoint
    assert max_abs_difference(reference / "model.safetensors", resumed / "model.safetensors") <= 1e-6
    if framework == "moco":
        assert int(final_resumed["head.queue_pointer"]) == int(final_reference["head.queue_pointer"]) == (4 * 8) % 24


@pytest.mark.parametrize("framework", ["moco", "byol"])
def test_framework_output_loads_as_the_encoder(framework, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    assert run_pretrain_in_process([*TINY_ARGS, "--max_train_steps", 2, "--knn_every_epochs", 0, "--output_dir", out,
                                    "--framework", framework, "--moco_queue_size", 16]) == 0
    code = (
        "import sys; sys.modules['iecl_hf'] = None\n"
        "from transformers import AutoModel\n"
        f"m = AutoModel.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        "assert type(m).__name__ == 'IECLModel', type(m)\n"
        "assert not any(k.startswith('head') for k in m.state_dict())\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_MODULES_CACHE": str(tmp_path / "modules")})
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_channels_last_trains_the_same_model(tmp_path):
    """--channels_last is a speed option only: same seed, one step, the same weights up to float rounding (the
    convolutions take other kernels; over many steps the rounding differences grow like any two float orders)."""
    args = [*TINY_ARGS, "--max_train_samples", 32, "--max_train_steps", 1, "--knn_every_epochs", 0]
    assert run_pretrain_in_process([*args, "--output_dir", tmp_path / "contiguous"]) == 0
    assert run_pretrain_in_process([*args, "--output_dir", tmp_path / "channels_last", "--channels_last"]) == 0
    difference = max_abs_difference(tmp_path / "contiguous" / "model.safetensors", tmp_path / "channels_last" / "model.safetensors")
    assert difference < 1e-4
