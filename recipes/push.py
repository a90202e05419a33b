#!/usr/bin/env python
"""Upload an existing pretraining output folder to the Hugging Face Hub, on its own.

    python recipes/push.py --output_dir outputs/pretrain-default --hub_model_id you/iecl-digits [--hub_private_repo]

This is the command `recipes/pretrain.py --push_to_hub` prints when its upload fails (offline, no token, network
error): the training output is complete on disk, and only the upload is retried. Intermediate checkpoints and logs
stay local (`HfApi.create_repo(exist_ok=True)` + `HfApi.upload_folder(ignore_patterns=...)`).
"""

import argparse
import os
import sys

from iecl_hf.cli.publish import push_release
from iecl_hf.hub.checkpoints import check_model_type, local_model_type

REQUIRED_FILES = ("config.json", "model.safetensors", "README.md")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output_dir", required=True, help="A finished output folder of recipes/pretrain.py.")
    parser.add_argument("--hub_model_id", required=True, help="Repo id, e.g. your-name/iecl-resnet18-cifar10.")
    parser.add_argument("--hub_private_repo", action="store_true", help="Create the repo as private.")
    parser.add_argument("--hub_token", default=None, help="Token (default: the one of `hf auth login` or HF_TOKEN).")
    parser.add_argument("--commit_message", default="Upload IE-CL model")
    return parser.parse_args(argv)


def check_output_folder(folder: str):
    """A clear error unless `folder` is a finished IE-CL output folder (before anything is sent)."""
    if not os.path.isdir(folder):
        raise ValueError(f"--output_dir {folder!r} is not a folder.")
    missing = [name for name in REQUIRED_FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise ValueError(
            f"--output_dir {folder!r} is not a finished pretraining output: {missing} missing. "
            "Finish (or resume) the training first."
        )
    check_model_type(local_model_type(folder), f"--output_dir {folder!r}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        check_output_folder(args.output_dir)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return push_release(
        args,
        say=lambda line: print(f"{line} (from {args.output_dir})"),
        commit_message=args.commit_message,
    )


if __name__ == "__main__":
    sys.exit(main())
