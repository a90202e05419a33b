#!/usr/bin/env python
r"""Embed a dataset with a frozen IE-CL encoder: every image's pooled feature as an `embedding` column.

    python recipes/embed.py --model_name_or_path outputs/pretrain-default                  # embedded digits, train
    python recipes/embed.py --model_name_or_path CKPT --dataset_name uoft-cs/cifar10 --split test --output_dir E
    accelerate launch --num_processes 4 recipes/embed.py --model_name_or_path you/iecl-cifar10 \
        --dataset_name uoft-cs/cifar10 --output_dir E --push_to_hub --hub_model_id you/cifar10-embedded

The encoder is frozen in eval mode and each image goes through the checkpoint's saved image processor, as in
linear evaluation. Each process embeds its contiguous shard of the split; the main process gathers the shards and
writes the dataset's own columns plus `embedding` (float32 lists, `pooler_output`) in the dataset's order with
`save_to_disk` (a temporary folder, then renamed: never half-written), with `embed_results.json` beside it.
Images that cannot be decoded are skipped: their rows are dropped from the output, counted, and listed in
`embed_results.json` (`skipped_rows`). `--push_to_hub --hub_model_id you/name` pushes the result as a dataset
(`Dataset.push_to_hub`, the split keeps its name). Nearest neighbours: `ds.add_faiss_index("embedding")` (README).
"""

import sys
import time

from accelerate import Accelerator
from accelerate.logging import get_logger

import iecl_hf  # noqa: F401  (registers the Auto classes)
from iecl_hf.cli import run_recipe, speaks_flags
from iecl_hf.cli.embed import EmbedArguments
from iecl_hf.cli.embed import parse_embed_args as parse_args
from iecl_hf.cli.groups import hub_kwargs
from iecl_hf.console import progress_bars_enabled, setup_logging
from iecl_hf.evaluation.embed import (
    check_embed_output_dir,
    embed_split,
    embedded_dataset,
    load_embed_encoder,
    load_embed_split,
    push_embedded,
    results_record,
    save_embedded,
)

logger = get_logger("iecl_hf.recipes.embed")  # under the `iecl_hf` logger that --log_level sets up


@speaks_flags(EmbedArguments)
def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    accelerator = Accelerator()
    check_embed_output_dir(args.output_dir, args.overwrite_output_dir)
    started = time.time()

    encoder, image_processor = load_embed_encoder(
        args.model_name_or_path, say=logger.info, **hub_kwargs(args, args.cache_dir)
    )
    encoder.to(accelerator.device)
    with accelerator.main_process_first():  # one process downloads / prepares the dataset, the others reuse it
        split, columns = load_embed_split(
            args.dataset_name,
            args.dataset_config_name,
            args.split,
            args.image_column,
            args.embedding_column,
            encoder.config.image_size,
            args.cache_dir,
            args.max_samples,
        )
    logger.info(
        f"Embedding {len(split)} images of {args.dataset_name or 'the embedded digits'} [{args.split}] "
        f"(column {columns.image!r}) with {args.model_name_or_path}: {accelerator.num_processes} process(es) on "
        f"{accelerator.device}, batch {args.per_device_eval_batch_size} per process."
    )
    result = embed_split(
        encoder,
        image_processor,
        split,
        columns,
        args.per_device_eval_batch_size,
        accelerator,
        num_workers=args.dataloader_num_workers,
        progress=progress_bars_enabled(),
    )

    exit_code = 0
    if accelerator.is_main_process:
        if result.num_skipped:
            logger.warning(
                f"skipped {result.num_skipped} images that could not be decoded (rows dropped; their "
                f"indices are in embed_results.json)."
            )
        dataset = embedded_dataset(split, result, args.embedding_column)
        results = results_record(
            args, split, columns, result, encoder, image_processor, started, accelerator.num_processes
        )
        save_embedded(dataset, args.output_dir, results)
        logger.info(
            f"Wrote {args.output_dir}: {len(dataset)} rows, {results['num_features']}-d {args.embedding_column!r} "
            f"column, {result.num_skipped} skipped, in {results['seconds']} s."
        )
        if args.push_to_hub:
            error = push_embedded(
                dataset, args.output_dir, args.hub_model_id, args.split, args.hub_private_repo, args.hub_token
            )
            if error:
                print(f"error: {error}", file=sys.stderr)
                exit_code = 1
            else:
                logger.info(f"Pushed to https://huggingface.co/datasets/{args.hub_model_id}")
    accelerator.wait_for_everyone()
    return exit_code


if __name__ == "__main__":
    sys.exit(run_recipe(main, "embed.py"))
