"""Atomic checkpoints: `accelerator.save_state` into a temporary folder, then one rename.

A run killed while writing leaves only a `.tmp-*` folder, which `latest` never picks and the next save removes.
"""

import os
import re
import shutil

CHECKPOINT_DIR = "checkpoints"
_STEP_PATTERN = re.compile(r"^step_(\d+)$")


def checkpoint_root(output_dir) -> str:
    return os.path.join(str(output_dir), CHECKPOINT_DIR)


def list_checkpoints(output_dir) -> list[tuple[int, str]]:
    """Complete checkpoints as (step, path), oldest first."""
    root = checkpoint_root(output_dir)
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), os.path.join(root, name)) for name in os.listdir(root) if (m := _STEP_PATTERN.match(name))]
    return sorted(found)


def resolve_checkpoint(resume_from_checkpoint, output_dir) -> str | None:
    """`latest` -> the newest complete checkpoint of output_dir (None if there is none); a path -> itself."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1][1] if checkpoints else None
    if not os.path.isdir(resume_from_checkpoint):
        raise ValueError(f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a folder; give a checkpoint folder or 'latest'.")
    return resume_from_checkpoint


def save_checkpoint(accelerator, output_dir, step: int, total_limit: int | None = None, extra_writer=None) -> str:
    """Save the full training state at `step` atomically; keep the newest `total_limit` checkpoints."""
    root = checkpoint_root(output_dir)
    final = os.path.join(root, f"step_{step}")
    temporary = os.path.join(root, f".tmp-step_{step}")
    if accelerator.is_main_process:
        os.makedirs(root, exist_ok=True)
        for name in os.listdir(root):  # leftovers of a save that was killed
            if name.startswith(".tmp-"):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    if accelerator.is_main_process and extra_writer is not None:
        extra_writer(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(temporary, final)
        if total_limit:
            for _, path in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(path, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
