"""Upload a finished output folder to the Hub; a failure never touches the local files."""

import logging

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


def push_output_folder(
    folder,
    repo_id: str,
    private: bool = False,
    token=None,
    commit_message: str = "Upload IE-CL model",
    ignore_patterns=None,
) -> str:
    """`HfApi.create_repo(exist_ok=True)` + `HfApi.upload_folder`, leaving out intermediate checkpoints.

    Returns the repo URL. Raises `PushError` (saying that the local folder is complete) on any Hub failure.
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
            "The local output is complete. Log in (`hf auth login` or HF_TOKEN) and retry the upload alone."
        ) from error
    return str(repo_url)
