#!/usr/bin/env python
"""Linear-probe and weighted-kNN evaluation of a frozen IE-CL encoder.

    python recipes/linear_eval.py --model_name_or_path outputs/pretrain-default             # embedded digits
    python recipes/linear_eval.py --model_name_or_path outputs/pretrain-default --random_init  # the floor
    accelerate launch recipes/linear_eval.py --model_name_or_path CKPT --dataset_name uoft-cs/cifar10

Protocol: the encoder is frozen in eval mode; train and test images go through the checkpoint's saved image
processor, and their pooled features are extracted once (cached in OUT/features_cache/). A linear head is trained
on the features (cross-entropy, SGD momentum 0.9 lr 0.1 or AdamW lr 1e-2, cosine schedule, 100 epochs, features
standardized); `--augment` trains it on random resized crops through the frozen encoder instead (10 epochs by
default: each epoch runs the encoder). Reported on the test split: linear top-1 / top-5 and weighted kNN top-1
(cosine, k=20 and k=200, temperature 0.07). Without a test split, a stratified 20% of train is held out.

Writes to --output_dir (default: CKPT-linear-eval, or outputs/OWNER--NAME-linear-eval for a Hub id; -random-init
appended with --random_init):
  eval_results.json      protocol, figures, dataset, split sizes, seed
  config.json, model.safetensors, preprocessor_config.json, *.py
                         IECLForImageClassification (encoder + linear head; standardization folded in), for
                         pipeline("image-classification", model=OUT, trust_remote_code=True)
  features_2d.png        2-D embedding of the test features, coloured by class
  README.md              model card with model-index results (`--update_model_card` also updates CKPT's card)
  logs/RUN_NAME/         with --report_to tensorboard: the probe's loss per epoch and the figures (eval/linear_top1,
                         eval/knn_k20_top1, ...) at its last epoch
"""

import sys
import time

from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed

import iecl_hf  # noqa: F401  (registers the Auto classes)
from iecl_hf.cli import run_recipe, speaks_flags
from iecl_hf.cli.groups import check_output_dir, hub_kwargs
from iecl_hf.cli.linear_eval import LinearEvalArguments
from iecl_hf.cli.linear_eval import parse_linear_eval_args as parse_args
from iecl_hf.cli.publish import push_release
from iecl_hf.console import setup_logging
from iecl_hf.evaluation.linear_eval import (
    extract_split_features,
    load_encoder,
    load_splits,
    log_to_trackers,
    results_record,
    save_outputs,
    score,
    train_probe,
)
from iecl_hf.training.trackers import resolve_run, start_trackers, tracker_config

logger = get_logger("iecl_hf.recipes.linear_eval")  # under the `iecl_hf` logger that --log_level sets up


@speaks_flags(LinearEvalArguments)
def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    run = resolve_run(args.output_dir, args.run_name, resuming=False)
    args.run_name = run.name
    accelerator = Accelerator(**run.accelerator_kwargs(args.report_to))
    set_seed(args.seed)
    if accelerator.is_main_process:
        check_output_dir(args.output_dir)
    start_trackers(accelerator, "iecl-linear-eval", run, tracker_config(vars(args)))
    started = time.time()

    encoder, image_processor = load_encoder(args, accelerator, **hub_kwargs(args, args.cache_dir))
    splits = load_splits(args, encoder.config.image_size, accelerator)
    split_features = extract_split_features(encoder, image_processor, splits, args, accelerator)
    probe, history = train_probe(encoder, image_processor, splits, split_features, args, accelerator)

    exit_code = 0
    if accelerator.is_main_process:
        figures, train_top1 = score(probe, split_features, len(splits.label_names), args, accelerator)
        log_to_trackers(accelerator, figures, train_top1, history)
        results = results_record(
            args,
            splits,
            split_features,
            image_processor,
            encoder.config.image_size,
            figures,
            train_top1,
            history,
            accelerator.num_processes,
            started,
        )
        save_outputs(results, encoder, probe, image_processor, splits, split_features, args, argv, logger.info)
        if args.push_to_hub:
            exit_code = push_release(
                args,
                say=logger.info,
                commit_message="Upload IE-CL linear-eval classifier",
                report_error=lambda message: print(f"error: {message}", file=sys.stderr),
            )
    accelerator.wait_for_everyone()
    accelerator.end_training()  # closes the trackers
    return exit_code


if __name__ == "__main__":
    sys.exit(run_recipe(main, "linear_eval.py"))
