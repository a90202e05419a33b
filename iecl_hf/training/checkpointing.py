"""Atomic checkpoints: `accelerator.save_state` into a temporary folder, then one rename.

A run killed while writing leaves only a `.tmp-*` folder, which `latest` never picks and the next save removes.
`latest` also skips any `step_N` folder without its weights (e.g. copied by hand and cut short).
"""

import json
import os
import re
import shutil

from ..configuration_iecl import IECLConfig
from ..hub.checkpoints import local_model_type

CHECKPOINT_DIR = "checkpoints"
TEMPORARY_PREFIX = ".tmp-"
WEIGHTS_NAME = "model.safetensors"  # what `accelerator.save_state` writes for the model (safe serialization)
_STEP_PATTERN = re.compile(r"^step_(\d+)$")


def checkpoint_root(output_dir) -> str:
    return os.path.join(str(output_dir), CHECKPOINT_DIR)


def is_complete_checkpoint(path) -> bool:
    return os.path.isfile(os.path.join(path, WEIGHTS_NAME))


def list_checkpoints(output_dir) -> list[tuple[int, str]]:
    """Complete checkpoints as (step, path), oldest first."""
    root = checkpoint_root(output_dir)
    if not os.path.isdir(root):
        return []
    found = [
        (int(m.group(1)), os.path.join(root, name)) for name in os.listdir(root) if (m := _STEP_PATTERN.match(name))
    ]
    return sorted((step, path) for step, path in found if is_complete_checkpoint(path))


def resolve_checkpoint(resume_from_checkpoint, output_dir) -> str | None:
    """`latest` -> the newest complete checkpoint of output_dir (None if there is none); a path -> itself."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1][1] if checkpoints else None
    if not os.path.isdir(resume_from_checkpoint):
        raise ValueError(
            f"`resume_from_checkpoint` {resume_from_checkpoint!r} is not a folder; give a checkpoint folder "
            f"(OUTPUT_DIR/{CHECKPOINT_DIR}/step_N) or 'latest'."
        )
    return resume_from_checkpoint


def check_resume_checkpoint(path: str, model=None):
    """Raise `ValueError` unless `path` is a training checkpoint this recipe wrote for this very model.

    Without `model`, only the folder's kind is checked (cheap, before loading any data): another model type's
    `save_pretrained` folder, a saved IE-CL model (no optimizer / RNG state) or a folder without safetensors weights.
    With `model`, the names and shapes of the saved weights are compared to the model's (read from the safetensors
    header, nothing is unpickled).
    """
    flag = f"`resume_from_checkpoint` {path!r}"
    if os.path.isfile(os.path.join(path, "config.json")):
        model_type = local_model_type(path)
        if model_type != IECLConfig.model_type:
            raise ValueError(
                f"{flag} holds a checkpoint of another model type ({model_type!r}), not an IE-CL training "
                f"checkpoint. Give a folder OUTPUT_DIR/{CHECKPOINT_DIR}/step_N "
                "written by recipes/pretrain.py, or 'latest'."
            )
        raise ValueError(
            f"{flag} is a saved IE-CL model (save_pretrained), not a training checkpoint: it has no optimizer, "
            f"scheduler or RNG state. Resume from OUTPUT_DIR/{CHECKPOINT_DIR}/step_N (or 'latest')."
        )
    if not is_complete_checkpoint(path):
        found = sorted(os.listdir(path))[:8]
        raise ValueError(
            f"{flag} is not a training checkpoint of recipes/pretrain.py: no {WEIGHTS_NAME} in it (found {found}). "
            f"Give a folder OUTPUT_DIR/{CHECKPOINT_DIR}/step_N, or 'latest'."
        )
    if model is None:
        return
    from safetensors import safe_open

    with safe_open(os.path.join(path, WEIGHTS_NAME), framework="pt") as handle:
        saved = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    mismatched = sorted(name for name in set(saved) & set(expected) if saved[name] != expected[name])
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"{len(missing)} weights of this model are missing (e.g. {missing[:3]})")
        if unexpected:
            details.append(f"{len(unexpected)} weights belong to another model (e.g. {unexpected[:3]})")
        if mismatched:
            name = mismatched[0]
            details.append(
                f"{len(mismatched)} weights have other shapes (e.g. {name}: checkpoint {list(saved[name])}, "
                f"model {list(expected[name])})"
            )
        raise ValueError(
            f"{flag} was written for another model: {'; '.join(details)}. Resume with the same model "
            "arguments (`preset`, `backbone`, `framework`, ... or the same `config_file`) as the run that wrote it."
        )


def _fsync_tree(folder):
    """Flush the files of `folder` to disk, so the rename publishes complete files even after a power loss."""
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            except OSError:
                pass
            finally:
                os.close(fd)


def save_checkpoint(accelerator, output_dir, step: int, total_limit: int | None = None, extra_writer=None) -> str:
    """Save the full training state at `step` atomically; keep the newest `total_limit` checkpoints (0/None: all)."""
    root = checkpoint_root(output_dir)
    final = os.path.join(root, f"step_{step}")
    temporary = os.path.join(root, f"{TEMPORARY_PREFIX}step_{step}")
    if accelerator.is_main_process:
        os.makedirs(root, exist_ok=True)
        for name in os.listdir(root):  # leftovers of a save that was killed
            if name.startswith(TEMPORARY_PREFIX):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    if accelerator.is_main_process and extra_writer is not None:
        extra_writer(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _fsync_tree(temporary)
        previous = None
        if os.path.exists(final):  # re-saving a step: moved aside first, removed after the rename
            previous = os.path.join(root, f"{TEMPORARY_PREFIX}old-step_{step}")
            os.replace(final, previous)
        os.replace(temporary, final)
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        if total_limit:
            for _, path in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(path, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def check_free_space(output_dir, required_bytes: int):
    """Fail before training when the output folder's disk cannot hold the checkpoints and the final model."""
    free = shutil.disk_usage(output_dir).free
    if free < required_bytes:
        raise ValueError(
            f"`output_dir` {str(output_dir)!r} has {free / 2**20:.0f} MiB free; this run needs about "
            f"{required_bytes / 2**20:.0f} MiB (checkpoints and the final model). Free some space, choose "
            "another folder, or lower `checkpoints_total_limit`."
        )


def prepare_output_for_fresh_start(output_dir, overwrite: bool = False, remove: bool = True) -> str | None:
    """Before a run that does not resume: never train over an unfinished run's checkpoints by accident.

    - no checkpoints: only leftovers to clear (a partial checkpoint, the log of a run killed before its first one);
    - the checkpoints of a finished run (its `train_results.json` is at the newest checkpoint's step), or
      `overwrite`: they, the old JSONL log and `train_results.json` are removed, so pruning, `latest` and the
      next fresh start only ever see this run's;
    - the checkpoints of an unfinished run: `ValueError` (resume it, overwrite it, or choose another folder).
    Returns a note to print, or None. `remove=False` only checks (the other processes of a multi-process run).
    """
    checkpoints = list_checkpoints(output_dir)
    root = checkpoint_root(output_dir)
    finished_step = None
    try:
        with open(os.path.join(str(output_dir), "train_results.json")) as handle:
            finished_step = int(json.load(handle)["step"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    newest = checkpoints[-1][0] if checkpoints else None
    if checkpoints and not overwrite and finished_step != newest:
        raise ValueError(
            f"`output_dir` {str(output_dir)!r} holds the checkpoints of an unfinished run (newest: step_{newest}). "
            "Continue it with `resume_from_checkpoint` latest, start over with `overwrite_output_dir`, or choose "
            "another `output_dir`."
        )
    if remove:  # the old run's final model stays until this run overwrites it; its "finished" marker goes now
        shutil.rmtree(root, ignore_errors=True)
        for stale in (os.path.join("logs", "train_log.jsonl"), "train_results.json"):
            if os.path.exists(os.path.join(str(output_dir), stale)):
                os.remove(os.path.join(str(output_dir), stale))
    if not checkpoints:
        return None
    unfinished = overwrite and finished_step != newest
    reason = "an unfinished run (`overwrite_output_dir`)" if unfinished else "a finished earlier run"
    return f"Removed the checkpoints and log of {reason} in {output_dir} (starting from scratch)."
