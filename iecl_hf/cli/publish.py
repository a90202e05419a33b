"""--push_to_hub of the recipes: the upload of the output folder, and on failure the command that retries it alone
(recipes/push.py)."""

import shlex
import sys

from ..hub.upload import PushError, push_output_folder


def retry_command(folder: str, repo_id: str, private: bool) -> str:
    return f"python recipes/push.py --output_dir {shlex.quote(str(folder))} --hub_model_id {shlex.quote(repo_id)}" + (
        " --hub_private_repo" if private else ""
    )


def print_to_stderr(message: str):
    print(message, file=sys.stderr)


def push_release(args, say=print, report_error=print_to_stderr, commit_message: str = "Upload IE-CL model") -> int:
    """Upload `args.output_dir` as `args.hub_model_id` (the recipe's Hub arguments): 0 when pushed, 1 when the upload
    failed (the output folder stays complete; the error says how to retry)."""
    try:
        url = push_output_folder(
            args.output_dir,
            args.hub_model_id,
            private=args.hub_private_repo,
            token=args.hub_token,
            commit_message=commit_message,
        )
    except PushError as error:
        report_error(f"{error} With:\n  {retry_command(args.output_dir, args.hub_model_id, args.hub_private_repo)}")
        return 1
    say(f"Pushed to {url}")
    return 0
