#!/usr/bin/env python
"""Linear-probe and weighted-kNN evaluation of a frozen IE-CL encoder.

    python recipes/linear_eval.py --model_name_or_path outputs/pretrain-default             # embedded digits
    python recipes/linear_eval.py --model_name_or_path outputs/pretrain-default --random_init  # the floor
    accelerate launch recipes/linear_eval.py --model_name_or_path CKPT --dataset_name ../shared/data/cifar10-small

Protocol: the encoder is frozen in eval mode; train and test images go through the checkpoint's saved image
processor, and their pooled features are extracted once (cached in OUT/features_cache/). A linear head is trained
on the features (cross-entropy, SGD momentum 0.9 lr 0.1 or AdamW lr 1e-2, cosine schedule, 100 epochs, features
standardized); `--augment` trains it on random resized crops through the frozen encoder instead (10 epochs by
default: each epoch runs the encoder). Reported on the test split: linear top-1 / top-5 and weighted kNN top-1
(cosine, k=20 and k=200, temperature 0.07). Without a test split, a stratified 20% of train is held out.

Writes to --output_dir (default: CKPT-linear-eval, or CKPT-linear-eval-random-init):
  eval_results.json      protocol, figures, dataset, split sizes, seed
  config.json, model.safetensors, preprocessor_config.json, *.py
                         IECLForImageClassification (encoder + linear head; standardization folded in), for
                         pipeline("image-classification", model=OUT, trust_remote_code=True)
  features_2d.png        2-D embedding of the test features, coloured by class
  README.md              model card with model-index results (`--update_model_card` also updates CKPT's card)
"""

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import HfArgumentParser

try:
    import iecl_hf
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import iecl_hf

from iecl_hf.data import EMBEDDED_DATASET, load_image_dataset
from iecl_hf.evaluation.eval_card import dataset_identity, render_linear_eval_card, update_model_card
from iecl_hf.evaluation.knn import weighted_knn_predict
from iecl_hf.evaluation.linear_probe import (
    DEFAULT_LEARNING_RATES,
    LinearProbe,
    ProcessorTransform,
    build_classifier,
    cached_features,
    encoded_batches,
    encoder_fingerprint,
    feature_batches,
    feature_statistics,
    fit_linear_probe,
    image_dataloader,
    load_frozen_encoder,
    prepare_eval_splits,
    probe_augmentation,
    steps_per_epoch,
)
from iecl_hf.evaluation.metrics import AccuracyMetric
from iecl_hf.evaluation.plots import EMBEDDING_METHODS, save_features_2d
from iecl_hf.hub.upload import PushError, push_output_folder
from iecl_hf.training.arguments import check_output_dir, reparse_with_config_file

FEATURE_EPOCHS, AUGMENT_EPOCHS = 100, 10


@dataclass
class LinearEvalArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "IE-CL checkpoint: a folder written by recipes/pretrain.py, or a Hub id. Required."})
    random_init: bool = field(default=False, metadata={"help": "Evaluate an untrained encoder of the checkpoint's config instead (the floor)."})
    revision: str | None = field(default=None, metadata={"help": "Revision of a Hub checkpoint."})
    output_dir: str | None = field(default=None, metadata={"help": "Default: CKPT-linear-eval (CKPT-linear-eval-random-init with --random_init)."})
    dataset_name: str | None = field(default=None, metadata={"help": "Hub id, local folder/parquet/image folder; unset: the embedded digits dataset (no network)."})
    dataset_config_name: str | None = field(default=None)
    image_column: str | None = field(default=None, metadata={"help": "Image column (detected: img/image)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (detected: a ClassLabel, label, fine_label, ...)."})
    train_split: str = field(default="train")
    test_split: str = field(default="test", metadata={"help": "If the dataset has no such split, --holdout_fraction of train is held out."})
    holdout_fraction: float = field(default=0.2, metadata={"help": "Fraction of train held out (stratified, seeded) when the test split is missing."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Seeded random subset of the train split (quick runs)."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Seeded random subset of the test split."})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets / Hub cache folder."})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Images per batch for feature extraction."})
    dataloader_num_workers: int = field(default=0)
    num_epochs: int | None = field(default=None, metadata={"help": f"Probe epochs; default {FEATURE_EPOCHS} on cached features, {AUGMENT_EPOCHS} with --augment."})
    batch_size: int = field(default=256, metadata={"help": "Probe mini-batch (per process with --augment)."})
    optimizer: str = field(default="sgd", metadata={"help": "sgd (momentum 0.9) | adamw."})
    learning_rate: float | None = field(default=None, metadata={"help": f"Peak LR of the cosine schedule; default {DEFAULT_LEARNING_RATES}."})
    weight_decay: float = field(default=0.0)
    standardize: bool = field(default=True, metadata={"help": "Standardize features with train statistics (folded into the saved head). --no_standardize disables."})
    augment: bool = field(default=False, metadata={"help": "Train the probe on random resized crops + flips through the frozen encoder (heavier protocol)."})
    knn_k: list[int] = field(default_factory=lambda: [20, 200], metadata={"help": "Neighbour counts of the weighted kNN."})
    knn_temperature: float = field(default=0.07)
    embedding_2d: str = field(default="tsne", metadata={"help": "features_2d.png method: tsne | pca."})
    accuracy_metric: str = field(default="accuracy", metadata={"help": "Name or local path for evaluate.load (offline: our own identical code)."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Extract features again even if OUT/features_cache has them."})
    seed: int = field(default=0)
    update_model_card: bool = field(default=False, metadata={"help": "Also add the results to CKPT's README.md (a local folder)."})
    push_to_hub: bool = field(default=False)
    hub_model_id: str | None = field(default=None)
    hub_private_repo: bool = field(default=False)
    hub_token: str | None = field(default=None)
    config_file: str | None = field(default=None, metadata={"help": "YAML or JSON file with any of these arguments; command-line flags win."})


def parse_args(argv=None) -> LinearEvalArguments:
    parser = HfArgumentParser(LinearEvalArguments)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    if args.config_file:
        (args,) = reparse_with_config_file(parser, (LinearEvalArguments,), args.config_file, argv)
    if not args.model_name_or_path:
        raise ValueError("--model_name_or_path is required (a folder written by recipes/pretrain.py, or a Hub id).")
    for name in ("per_device_eval_batch_size", "batch_size", "num_epochs", "max_train_samples", "max_test_samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}.")
    if not 0 < args.holdout_fraction < 1:
        raise ValueError(f"--holdout_fraction must be in (0, 1), got {args.holdout_fraction}.")
    if args.optimizer not in DEFAULT_LEARNING_RATES:
        raise ValueError(f"--optimizer {args.optimizer!r} is not supported; allowed values: {', '.join(DEFAULT_LEARNING_RATES)}.")
    if args.embedding_2d not in EMBEDDING_METHODS:
        raise ValueError(f"--embedding_2d {args.embedding_2d!r} is not supported; allowed values: {', '.join(EMBEDDING_METHODS)}.")
    if not args.knn_k or min(args.knn_k) < 1 or not args.knn_temperature > 0:
        raise ValueError("--knn_k needs positive integers and --knn_temperature a positive number.")
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/iecl-resnet18-cifar10-linear).")
    if args.num_epochs is None:
        args.num_epochs = AUGMENT_EPOCHS if args.augment else FEATURE_EPOCHS
    if args.learning_rate is None:
        args.learning_rate = DEFAULT_LEARNING_RATES[args.optimizer]
    if args.output_dir is None:
        checkpoint = args.model_name_or_path.rstrip("/")
        base = checkpoint if os.path.isdir(checkpoint) else os.path.join("outputs", checkpoint.replace("/", "--"))
        args.output_dir = base + "-linear-eval" + ("-random-init" if args.random_init else "")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    accelerator = Accelerator()
    set_seed(args.seed)
    say = accelerator.print
    if accelerator.is_main_process:
        check_output_dir(args.output_dir)
    started = time.time()

    # Model: the frozen encoder and the image processor saved beside it.
    hub_kwargs = {k: v for k, v in {"revision": args.revision, "token": args.hub_token, "cache_dir": args.cache_dir}.items() if v}
    encoder, image_processor, notice = load_frozen_encoder(args.model_name_or_path, args.random_init, args.seed, **hub_kwargs)
    if notice:
        say(f"notice: {notice}")
    encoder.to(accelerator.device)
    image_size = encoder.config.image_size

    # Data: labelled train and test splits.
    dataset = load_image_dataset(args.dataset_name, args.dataset_config_name, image_size=image_size, cache_dir=args.cache_dir)
    splits = prepare_eval_splits(dataset, args.train_split, args.test_split, args.image_column, args.label_column,
                                 args.holdout_fraction, args.seed, args.max_train_samples, args.max_test_samples)
    for notice in splits.notices:
        say(f"notice: {notice}")
    num_classes = len(splits.label_names)

    # Features of both splits, extracted once with the saved preprocessing (cached).
    cache_key = {"encoder": encoder_fingerprint(encoder), "image_processor": image_processor.to_dict(),
                 "dataset": args.dataset_name or EMBEDDED_DATASET, "dataset_config": args.dataset_config_name,
                 "image_column": splits.columns.image, "label_column": splits.columns.label}
    features, labels, from_cache = {}, {}, {}
    for role, split in (("train", splits.train), ("test", splits.test)):
        loader = accelerator.prepare(image_dataloader(split, splits.columns, ProcessorTransform(image_processor),
                                                      args.per_device_eval_batch_size, num_workers=args.dataloader_num_workers))
        key = {**cache_key, "split": role, "split_fingerprint": split._fingerprint, "num_rows": len(split)}
        features[role], labels[role], from_cache[role] = cached_features(
            encoder, loader, os.path.join(args.output_dir, "features_cache"), key, accelerator, args.overwrite_cache)
        features[role], labels[role] = features[role].to(accelerator.device), labels[role].to(accelerator.device)
        say(f"{role}: {len(features[role])} images, {features[role].shape[1]}-d features" + (" (cached)" if from_cache[role] else ""))
    if min(labels["train"].min().item(), labels["test"].min().item()) < 0:
        raise ValueError(f"--label_column {splits.columns.label!r} has negative labels (unlabelled images?); use a labelled split.")

    # Linear probe (every process trains the same probe on the gathered features; with --augment they share the work).
    mean, std = feature_statistics(features["train"]) if args.standardize else (None, None)
    probe = LinearProbe(features["train"].shape[1], num_classes, mean, std).to(accelerator.device)
    optimizer_kwargs = dict(optimizer=args.optimizer, learning_rate=args.learning_rate, weight_decay=args.weight_decay)
    if args.augment:
        augmented = accelerator.prepare(image_dataloader(splits.train, splits.columns, probe_augmentation(image_processor, image_size),
                                                         args.batch_size, shuffle=True, num_workers=args.dataloader_num_workers, seed=args.seed))
        history = fit_linear_probe(probe, encoded_batches(encoder, augmented), args.num_epochs, len(augmented),
                                   accelerator=accelerator, **optimizer_kwargs)
    else:
        history = fit_linear_probe(probe, feature_batches(features["train"], labels["train"], args.batch_size, args.seed),
                                   args.num_epochs, steps_per_epoch(len(features["train"]), args.batch_size), **optimizer_kwargs)

    exit_code = 0
    if accelerator.is_main_process:
        # Figures on the test split: linear top-1 / top-5, weighted kNN top-1.
        metric = AccuracyMetric(args.accuracy_metric)
        if metric.notice:
            say(f"notice: {metric.notice}")
        with torch.no_grad():
            test_logits = probe(features["test"])
            train_predictions = probe(features["train"]).argmax(1)
        figures = {"linear_top1": metric.accuracy(test_logits.argmax(1), labels["test"]),
                   "linear_top5": metric.top_k_accuracy(test_logits, labels["test"], 5) if num_classes > 5 else None}
        for k in args.knn_k:
            scores = weighted_knn_predict(features["train"], labels["train"], features["test"], num_classes, k, args.knn_temperature)
            figures[f"knn_k{k}_top1"] = metric.accuracy(scores.argmax(1), labels["test"])

        dataset_type, pretty_name = dataset_identity(args.dataset_name)
        results = {
            "checkpoint": args.model_name_or_path,
            "random_init": args.random_init,
            "encoder_fingerprint": cache_key["encoder"],
            "dataset": {"name": args.dataset_name or EMBEDDED_DATASET, "config": args.dataset_config_name, "type": dataset_type,
                        "pretty_name": pretty_name, "train_split": args.train_split, "test_split": splits.test_split,
                        "image_column": splits.columns.image, "label_column": splits.columns.label,
                        "num_train": len(features["train"]), "num_test": len(features["test"]),
                        "skipped_images": {"train": len(splits.train) - len(features["train"]), "test": len(splits.test) - len(features["test"])},
                        "num_classes": num_classes, "label_names": splits.label_names},
            "protocol": {
                "encoder": "frozen, eval mode; pooled backbone features (pooler_output)",
                "preprocessing": f"saved image processor ({type(image_processor).__name__}), {image_size} px",
                "linear_probe": {"loss": "cross-entropy", "optimizer": args.optimizer, "learning_rate": args.learning_rate,
                                 "weight_decay": args.weight_decay, "schedule": "cosine", "epochs": args.num_epochs,
                                 "batch_size": args.batch_size, "standardize": args.standardize, "augment": args.augment},
                "knn": {"similarity": "cosine", "k": args.knn_k, "temperature": args.knn_temperature, "weighting": "exp(sim / T)"},
                "embedding_2d": args.embedding_2d,
            },
            "figures": figures,
            "linear_train_top1": metric.accuracy(train_predictions, labels["train"]),
            "probe_final_loss": history[-1] if history else None,
            "metrics_source": metric.source,
            "seed": args.seed,
            "num_features": int(features["train"].shape[1]),
            "image_size": image_size,
            "features_from_cache": from_cache,
            "num_processes": accelerator.num_processes,
            "seconds": round(time.time() - started, 1),
            "versions": {"iecl_hf": iecl_hf.__version__, "torch": torch.__version__, "transformers": __import__("transformers").__version__},
        }

        # Save: results, the classifier (+ processor), the 2-D picture, the model card(s).
        with open(os.path.join(args.output_dir, "eval_results.json"), "w") as handle:
            json.dump(results, handle, indent=2)
        classifier = build_classifier(encoder, probe, splits.label_names)
        classifier.save_pretrained(args.output_dir)
        image_processor.save_pretrained(args.output_dir)
        save_features_2d(features["test"].cpu(), labels["test"].cpu(), splits.label_names,
                         os.path.join(args.output_dir, "features_2d.png"), args.embedding_2d, seed=args.seed)
        command = "python recipes/linear_eval.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        render_linear_eval_card(results, repo_id=args.hub_model_id, command=command).save(os.path.join(args.output_dir, "README.md"))
        if args.update_model_card:
            if os.path.isdir(args.model_name_or_path):
                update_model_card(args.model_name_or_path, results)
                say(f"Updated the model card {os.path.join(args.model_name_or_path, 'README.md')}.")
            else:
                say(f"notice: --update_model_card: {args.model_name_or_path!r} is not a local folder; its card was not changed.")

        floor = " (random-init floor)" if args.random_init else ""
        say(f"Linear probe{floor} on {pretty_name} [{splits.test_split}, {len(features['test'])} images]: "
            f"top-1 {100 * figures['linear_top1']:.2f} %" + (f", top-5 {100 * figures['linear_top5']:.2f} %" if figures["linear_top5"] is not None else ""))
        say("Weighted kNN: " + ", ".join(f"k={k} top-1 {100 * figures[f'knn_k{k}_top1']:.2f} %" for k in args.knn_k))
        say(f"Wrote {args.output_dir} (eval_results.json, classifier, features_2d.png, README.md) in {results['seconds']} s.")

        if args.push_to_hub:
            try:
                url = push_output_folder(args.output_dir, args.hub_model_id, private=args.hub_private_repo, token=args.hub_token,
                                         commit_message="Upload IE-CL linear-eval classifier")
                say(f"Pushed to {url}")
            except PushError as error:
                print(f"error: {error}", file=sys.stderr)
                exit_code = 1
    accelerator.wait_for_everyone()
    return exit_code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as error:  # bad input: say what is wrong, no traceback
        print(f"linear_eval.py: error: {error}", file=sys.stderr)
        sys.exit(2)
