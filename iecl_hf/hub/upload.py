"""Upload a finished output folder to the Hub; a failure never touches the local files."""

import logging
import shlex
import sys

logger = logging.getLogger(__name__)

# Intermediate training state stays local: only the release (weights, code, processor, card, images) goes up.
DEFAULT_IGNORE_PATTERNS = [
    "checkpoints/*",
    "checkpoint-*/*",
    "step_*/*",
    "*.tmp*",
    "logs/*",
    "features_cache/*",
    "*.pt",
    "*.bin",
]


class PushError(RuntimeError):
    """The upload failed; the local output folder is complete and can be uploaded later on its own."""


def retry_command(folder: str, repo_id: str, private: bool) -> str:
    return f"python recipes/push.py --output_dir {shlex.quote(str(folder))} --hub_model_id {shlex.quote(repo_id)}" + (
        " --hub_private_repo" if private else ""
    )


def push_output_folder(
    folder,
    repo_id: str,
    private: bool = False,
    token=None,
    commit_message: str = "Upload IE-CL model",
    ignore_patterns=None,
) -> str:
    """`HfApi.create_repo(exist_ok=True)` + `HfApi.upload_folder`, leaving out intermediate checkpoints.

    Returns the repo URL. Raises `PushError` (with the command to retry the upload alone) on any Hub failure.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=commit_message,
            ignore_patterns=list(ignore_patterns or DEFAULT_IGNORE_PATTERNS),
        )
    except Exception as error:  # offline, no token, network error, permission, ...
        raise PushError(
            f"Pushing {folder} to the Hub as {repo_id!r} failed ({type(error).__name__}: {error}). "
            "The local output is complete. Log in (`hf auth login` or HF_TOKEN) "
            f"and retry the upload alone with:\n  {retry_command(folder, repo_id, private)}"
        ) from error
    return str(repo_url)


def print_to_stderr(message: str):
    print(message, file=sys.stderr)


def push_release(args, say=print, report_error=print_to_stderr, commit_message: str = "Upload IE-CL model") -> int:
    """--push_to_hub of a recipe (`args`: output_dir and the Hub flags): 0 when pushed, 1 when the upload failed (the
    output folder stays complete; the error says how to retry)."""
    try:
        url = push_output_folder(
            args.output_dir,
            args.hub_model_id,
            private=args.hub_private_repo,
            token=args.hub_token,
            commit_message=commit_message,
        )
    except PushError as error:
        report_error(str(error))
        return 1
    say(f"Pushed to {url}")
    return 0
