"""Shared test utilities: running the pretraining recipe small (in-process or as a subprocess), tiny image datasets
written to disk (parquet, image folder, save_to_disk) with every kind of awkward image, and safetensors comparisons.

Every run here uses a tiny ResNet (channels 8-64), 32 px images, a few steps, one CPU thread and no network.
"""

import contextlib
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = REPO / "recipes" / "pretrain.py"
PUSH = REPO / "recipes" / "push.py"

# Every file the modeling code imports, copied flat beside the weights for trust_remote_code.
REMOTE_CODE_FILES = {
    "configuration_iecl.py",
    "modeling_iecl.py",
    "distributed_iecl.py",
    "entropy_iecl.py",
    "frameworks_iecl.py",
    "losses_iecl.py",
    "saib_iecl.py",
    "spectral_iecl.py",
    "random_iecl.py",
}

TINY_ARGS = [
    "--backbone_kwargs",
    '{"channels": [8, 16, 32, 64]}',
    "--max_train_samples",
    "64",
    "--per_device_train_batch_size",
    "8",
    "--knn_max_train_samples",
    "64",
    "--knn_max_eval_samples",
    "32",
    "--dataloader_num_workers",
    "0",
    "--logging_steps",
    "1",
]

# A tiny IECLConfig (16 px, channels 8-64) for the tests that build models directly.
TINY_MODEL = dict(
    backbone_kwargs={"channels": [8, 16, 32, 64]},
    stem="cifar_stride2",
    image_size=16,
    projection_hidden_dim=32,
    projection_dim=16,
    predictor_hidden_dim=24,
    saib_dim=8,
)


def subprocess_env(**extra) -> dict:
    """Offline, one thread per process (deterministic, and fast on a busy 2-core machine); this checkout's iecl_hf
    first (a recipe's folder is not the root: `import iecl_hf` would find the installed package, which may be
    another checkout's)."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
    )
    env.update({key: str(value) for key, value in extra.items()})
    return env


def run_without_the_package(script: str, *args, directory: Path, **extra_env) -> subprocess.CompletedProcess:
    """`python -c script *args` in `directory`, offline, with no PYTHONPATH (the saved remote code alone, not this
    checkout's iecl_hf) and the Hub and remote-code caches inside `directory`."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(directory / "hf_home"),
        HF_MODULES_CACHE=str(directory / "hf_modules"),  # the copied remote code lands here, not in ~/.cache
        TRANSFORMERS_VERBOSITY="error",
    )
    env.update({key: str(value) for key, value in extra_env.items()})
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def load_script(path: Path, name: str):
    """Import a recipe file as a module (recipes/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def pretrain_module():
    return load_script(PRETRAIN, "iecl_test_pretrain_recipe")


def push_module():
    return load_script(PUSH, "iecl_test_push_recipe")


@contextlib.contextmanager
def single_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def reset_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def run_pretrain_in_process(args):
    """`main(argv)` of recipes/pretrain.py in this process (one thread, Accelerate's singletons reset after)."""
    recipe = pretrain_module()
    try:
        with single_thread():
            return recipe.main([str(a) for a in args])
    finally:
        reset_accelerate_state()


def run_pretrain_subprocess(args, *, launcher=None, script=None, timeout=300, **env):
    """recipes/pretrain.py (or `script`, e.g. a wrapper) in a fresh Python; returns the CompletedProcess."""
    command = [sys.executable, *(launcher or []), str(script or PRETRAIN), *[str(a) for a in args]]
    return subprocess.run(
        command, cwd=REPO, env=subprocess_env(**env), capture_output=True, text=True, timeout=timeout
    )


def block_network(monkeypatch) -> list:
    """Every connection attempt (socket connect, DNS lookup) fails and is recorded in the returned list. The code
    under test may catch the error, so a test asserts the list is empty: it never tried."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("the test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_jsonl(path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_json(path) -> dict:
    with open(path) as handle:
        return json.load(handle)


def max_abs_difference(path_a, path_b) -> float:
    """Largest absolute difference between two safetensors files holding the same tensor names."""
    from safetensors.torch import load_file

    a, b = load_file(str(path_a)), load_file(str(path_b))
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))[:5]
    return max(((a[k].double() - b[k].double()).abs().max().item() if a[k].numel() else 0.0) for k in a)


# ---------------------------------------------------------------------------------------------- images on disk


def encode(image, fmt: str, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def random_rgb(size=(32, 32), seed=0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def awkward_images() -> dict[str, bytes]:
    """Images a real dataset holds that decode (converted to RGB), by name."""
    import numpy as np
    from PIL import Image

    rgb = random_rgb(seed=1)
    palette_transparent = rgb.convert("P", palette=Image.ADAPTIVE, colors=16)
    palette_transparent.info["transparency"] = 0
    rgba = Image.fromarray(np.dstack([np.asarray(rgb), np.full((32, 32), 128, np.uint8)]), "RGBA")
    gradient = np.linspace(0, 255, 3000, dtype=np.uint8)[None, :, None].repeat(2000, 0).repeat(3, 2)
    return {
        "greyscale": encode(rgb.convert("L"), "PNG"),
        "greyscale_alpha": encode(rgb.convert("LA"), "PNG"),
        "rgba": encode(rgba, "PNG"),
        "palette": encode(rgb.convert("P", palette=Image.ADAPTIVE, colors=16), "PNG"),
        "palette_transparent": encode(palette_transparent, "PNG", transparency=0),
        "cmyk_jpeg": encode(rgb.convert("CMYK"), "JPEG"),
        "odd_sized": encode(random_rgb((17, 45), seed=2), "PNG"),
        "one_pixel": encode(random_rgb((1, 1), seed=3), "PNG"),
        "very_large": encode(Image.fromarray(gradient, "RGB"), "JPEG", quality=80),  # 3000 x 2000
        "gif": encode(rgb.convert("P"), "GIF"),
    }


def corrupt_images() -> dict[str, bytes]:
    """Data that is not an image any more: skipped and counted, never a crash."""
    jpeg, png = encode(random_rgb(seed=4), "JPEG"), encode(random_rgb(seed=5), "PNG")
    return {
        "truncated_jpeg": jpeg[: len(jpeg) // 2],
        "truncated_png": png[: len(png) // 2],
        "zero_bytes": b"",
        "not_an_image": b"this is not an image" * 10,
    }


def write_parquet_dataset(folder: Path, images: list[bytes], labels=None, split="train") -> Path:
    """`folder/data/{split}.parquet` with an `image` column (datasets Image feature, raw bytes) [+ `label`]."""
    import datasets

    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    columns = {"image": [{"bytes": data, "path": None} for data in images]}
    features = {"image": datasets.Image()}
    if labels is not None:
        columns["label"] = labels
        features["label"] = (
            datasets.Value("string") if labels and isinstance(labels[0], str) else datasets.Value("int64")
        )
    dataset = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    dataset.to_parquet(str(folder / "data" / f"{split}.parquet"))
    return folder


def write_image_folder(folder: Path, count: int = 8, classes=None) -> Path:
    """PNG files: `folder/<class>/<i>.png` for each class, or `folder/<i>.png` (no labels) without classes."""
    folder = Path(folder)
    for c, name in enumerate(classes or [None]):
        target = folder / name if name else folder
        target.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            random_rgb(seed=100 * c + i).save(target / f"{i}.png")
    return folder


# ---------------------------------------------------------------------------------------------- fault injection

# Runs recipes/pretrain.py in this subprocess and injects faults, so the recipe itself carries no test hooks:
#   IECL_TEST_KILL_AT_FORWARD=N          SIGKILL inside the N-th training forward of this process (between checkpoints)
#   IECL_TEST_KILL_WRITING_CHECKPOINT=N  SIGKILL inside `accelerator.save_state` of the step-N checkpoint, after the
#                                        weights, optimizer and RNG files and before the run's own state is written
#   IECL_TEST_DUMP_START=path            save the model's weights as the first training forward of this process
#                                        sees them
FAULT_WRAPPER = r"""
import importlib.util, os, signal, sys

import accelerate.accelerator
from safetensors.torch import save_file

from iecl_hf import IECLForPreTraining

kill_at_forward = int(os.environ.get("IECL_TEST_KILL_AT_FORWARD", "0"))
kill_writing = os.environ.get("IECL_TEST_KILL_WRITING_CHECKPOINT")
dump_start = os.environ.get("IECL_TEST_DUMP_START")
calls = {"forward": 0}

original_forward = IECLForPreTraining.forward


def forward(self, *args, **kwargs):
    calls["forward"] += 1
    if calls["forward"] == 1 and dump_start:
        save_file({k: v.detach().clone().contiguous() for k, v in self.state_dict().items()}, dump_start)
    if calls["forward"] == kill_at_forward:
        os.kill(os.getpid(), signal.SIGKILL)
    return original_forward(self, *args, **kwargs)


IECLForPreTraining.forward = forward

original_save_custom_state = accelerate.accelerator.save_custom_state


def save_custom_state(obj, path, index=0, **kwargs):
    if kill_writing and os.path.basename(os.path.normpath(path)).endswith(f"step_{kill_writing}") and index == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return original_save_custom_state(obj, path, index, **kwargs)


accelerate.accelerator.save_custom_state = save_custom_state

spec = importlib.util.spec_from_file_location("pretrain_recipe", sys.argv[1])
recipe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe)
sys.exit(recipe.main(sys.argv[2:]))
"""


def write_fault_wrapper(folder: Path) -> Path:
    path = Path(folder) / "fault_wrapper.py"
    path.write_text(FAULT_WRAPPER)
    return path


def run_with_faults(args, folder: Path, timeout=300, **env):
    """recipes/pretrain.py through FAULT_WRAPPER (see above) in a fresh Python."""
    wrapper = write_fault_wrapper(folder)
    return run_pretrain_subprocess([PRETRAIN, *args], script=wrapper, timeout=timeout, **env)
