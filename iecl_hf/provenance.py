"""What produced a results record: the code version and the package versions, written by the run itself."""

import os
import platform
import subprocess

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*command) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", PACKAGE_ROOT, *command], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def code_version() -> dict:
    """{"commit", "dirty"} of the checkout that holds this package (both None for an installed wheel)."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return {"commit": None, "dirty": None}
    # Tracked files only: run folders and caches beside the code do not make a tree dirty.
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict:
    import accelerate
    import datasets
    import timm
    import torch
    import transformers

    from . import __version__

    return {
        "iecl_hf": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "timm": timm.__version__,
        "datasets": datasets.__version__,
        "accelerate": accelerate.__version__,
    }


def provenance() -> dict:
    """The code version, the package versions and the hardware, for a results record."""
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    return {**code_version(), "versions": package_versions(), "device": device}
