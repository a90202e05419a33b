"""The stages of a linear evaluation, in the order `recipes/linear_eval.py` calls them:

load_encoder -> load_splits -> extract_split_features -> train_probe -> score (-> log_to_trackers) -> results_record
-> save_outputs
"""

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass

import torch
from accelerate.logging import get_logger

from ..console import progress_bars_enabled
from ..data import EMBEDDED_DATASET, load_image_dataset
from ..provenance import provenance
from .eval_card import dataset_identity, render_linear_eval_card, update_model_card
from .knn import weighted_knn_predict
from .linear_probe import (
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
from .metrics import METRIC_SOURCE, top_k_accuracy
from .plots import save_features_2d

logger = get_logger(__name__)


def show_progress(accelerator) -> bool:
    """Progress bars on the main process, unless the log level is warning or error (`setup_logging`)."""
    return accelerator.is_local_main_process and progress_bars_enabled()


def load_encoder(args, accelerator, **hub_kwargs):
    """The frozen encoder (on the device) and the image processor saved beside it."""
    encoder, image_processor, notice = load_frozen_encoder(
        args.model_name_or_path, args.random_init, args.seed, **hub_kwargs
    )
    if notice:
        logger.info(f"notice: {notice}")
    return encoder.to(accelerator.device), image_processor


def load_splits(args, image_size: int, accelerator):
    """Labelled train and test splits (a stratified hold-out of train when there is no test split)."""
    dataset = load_image_dataset(
        args.dataset_name, args.dataset_config_name, image_size=image_size, cache_dir=args.cache_dir
    )
    splits = prepare_eval_splits(
        dataset,
        args.train_split,
        args.test_split,
        args.image_column,
        args.label_column,
        args.holdout_fraction,
        args.seed,
        args.max_train_samples,
        args.max_test_samples,
        args.validation_size,
        args.split_seed,
    )
    for notice in splits.notices:
        logger.info(f"notice: {notice}")
    return splits


@dataclass
class SplitFeatures:
    features: dict  # "train" / "test" -> (N, C) on the device
    labels: dict
    from_cache: dict
    fingerprint: str  # of the encoder's weights


def extract_split_features(encoder, image_processor, splits, args, accelerator) -> SplitFeatures:
    """Pooled features of both splits with the saved preprocessing, extracted once (cached in OUT/features_cache),
    with a progress bar per split."""
    cache_key = {
        "encoder": encoder_fingerprint(encoder),
        "image_processor": image_processor.to_dict(),
        "dataset": args.dataset_name or EMBEDDED_DATASET,
        "dataset_config": args.dataset_config_name,
        "image_column": splits.columns.image,
        "label_column": splits.columns.label,
    }
    result = SplitFeatures({}, {}, {}, cache_key["encoder"])
    for role, split in (("train", splits.train), ("test", splits.test)):
        loader = accelerator.prepare(
            image_dataloader(
                split,
                splits.columns,
                ProcessorTransform(image_processor),
                args.per_device_eval_batch_size,
                num_workers=args.dataloader_num_workers,
            )
        )
        key = {**cache_key, "split": role, "split_fingerprint": split._fingerprint, "num_rows": len(split)}
        features, labels, from_cache = cached_features(
            encoder,
            loader,
            os.path.join(args.output_dir, "features_cache"),
            key,
            accelerator,
            args.overwrite_cache,
            progress=f"features {role}" if show_progress(accelerator) else None,
        )
        result.features[role], result.labels[role] = features.to(accelerator.device), labels.to(accelerator.device)
        result.from_cache[role] = from_cache
        logger.info(
            f"{role}: {len(features)} images, {features.shape[1]}-d features" + (" (cached)" if from_cache else "")
        )
    if min(result.labels["train"].min().item(), result.labels["test"].min().item()) < 0:
        raise ValueError(
            f"`label_column` {splits.columns.label!r} has negative labels (unlabelled images?); use a labelled split."
        )
    return result


def train_probe(encoder, image_processor, splits, split_features: SplitFeatures, args, accelerator):
    """(probe, loss history): every process trains the same probe on the gathered features; with `augment`, on random
    crops through the frozen encoder, the processes sharing the work. A progress bar over the epochs."""
    train_features, train_labels = split_features.features["train"], split_features.labels["train"]
    mean, std = feature_statistics(train_features) if args.standardize else (None, None)
    probe = LinearProbe(train_features.shape[1], len(splits.label_names), mean, std).to(accelerator.device)
    optimizer_kwargs = dict(
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        progress=show_progress(accelerator),
    )
    if args.augment:
        augmented = accelerator.prepare(
            image_dataloader(
                splits.train,
                splits.columns,
                probe_augmentation(image_processor, encoder.config.image_size),
                args.batch_size,
                shuffle=True,
                num_workers=args.dataloader_num_workers,
                seed=args.seed,
            )
        )
        history = fit_linear_probe(
            probe,
            encoded_batches(encoder, augmented),
            args.num_epochs,
            len(augmented),
            accelerator=accelerator,
            **optimizer_kwargs,
        )
    else:
        history = fit_linear_probe(
            probe,
            feature_batches(train_features, train_labels, args.batch_size, args.seed),
            args.num_epochs,
            steps_per_epoch(len(train_features), args.batch_size),
            **optimizer_kwargs,
        )
    return probe, history


def score(probe, split_features: SplitFeatures, num_classes: int, args, accelerator):
    """(figures, linear train top-1) on the test split: linear top-1 / top-5, weighted kNN top-1 per k."""
    features, labels = split_features.features, split_features.labels
    with torch.no_grad():
        test_logits, train_logits = probe(features["test"]), probe(features["train"])
    linear = top_k_accuracy(test_logits, labels["test"], (1, 5) if num_classes > 5 else (1,))
    figures = {"linear_top1": linear["top1"], "linear_top5": linear.get("top5")}
    for k in args.knn_k:
        scores = weighted_knn_predict(
            features["train"], labels["train"], features["test"], num_classes, k, args.knn_temperature
        )
        figures[f"knn_k{k}_top1"] = top_k_accuracy(scores, labels["test"])["top1"]
    return figures, top_k_accuracy(train_logits, labels["train"])["top1"]


def log_to_trackers(accelerator, figures: dict, train_top1: float, history: list):
    """With trackers (`report_to`): the probe's mean loss per epoch (`probe/loss`), then the figures
    (`eval/linear_top1`, `eval/knn_k20_top1`, ...) at the probe's last epoch."""
    for epoch, loss in enumerate(history, start=1):
        accelerator.log({"probe/loss": loss}, step=epoch)
    values = {f"eval/{name}": value for name, value in figures.items() if value is not None}
    accelerator.log({**values, "eval/linear_train_top1": train_top1}, step=len(history))


def results_record(
    args,
    splits,
    split_features: SplitFeatures,
    image_processor,
    image_size,
    figures,
    train_top1,
    history,
    num_processes,
    started,
) -> dict:
    """The content of eval_results.json: protocol, figures, dataset, split sizes, seed, provenance."""
    features = split_features.features
    dataset_type, pretty_name = dataset_identity(args.dataset_name)
    return {
        "checkpoint": args.model_name_or_path,
        "random_init": args.random_init,
        "encoder_fingerprint": split_features.fingerprint,
        "dataset": {
            "name": args.dataset_name or EMBEDDED_DATASET,
            "config": args.dataset_config_name,
            "type": dataset_type,
            "pretty_name": pretty_name,
            "train_split": args.train_split,
            "test_split": splits.test_split,
            # "validation" (a fixed hold-out of train, for choosing) or "test" (for final figures only)
            "scored_split": "validation" if args.validation_size else "test",
            "validation_size": args.validation_size,
            "split_seed": args.split_seed if args.validation_size else None,
            "fingerprints": {"train": splits.train._fingerprint, "test": splits.test._fingerprint},
            "image_column": splits.columns.image,
            "label_column": splits.columns.label,
            "num_train": len(features["train"]),
            "num_test": len(features["test"]),
            "skipped_images": {
                "train": len(splits.train) - len(features["train"]),
                "test": len(splits.test) - len(features["test"]),
            },
            "num_classes": len(splits.label_names),
            "label_names": splits.label_names,
        },
        "protocol": {
            "encoder": "frozen, eval mode; pooled backbone features (pooler_output)",
            "preprocessing": f"saved image processor ({type(image_processor).__name__}), {image_size} px",
            "linear_probe": {
                "loss": "cross-entropy",
                "optimizer": args.optimizer,
                "learning_rate": args.learning_rate,
                "weight_decay": args.weight_decay,
                "schedule": "cosine",
                "epochs": args.num_epochs,
                "batch_size": args.batch_size,
                "standardize": args.standardize,
                "augment": args.augment,
            },
            "knn": {
                "similarity": "cosine",
                "k": args.knn_k,
                "temperature": args.knn_temperature,
                "weighting": "exp(sim / T)",
            },
            "embedding_2d": args.embedding_2d,
        },
        "figures": figures,
        "linear_train_top1": train_top1,
        "probe_final_loss": history[-1] if history else None,
        "metrics_source": METRIC_SOURCE,
        "seed": args.seed,
        "num_features": int(features["train"].shape[1]),
        "image_size": image_size,
        "features_from_cache": split_features.from_cache,
        "num_processes": num_processes,
        "seconds": round(time.time() - started, 1),
        "provenance": provenance(),
    }


def save_outputs(results, encoder, probe, image_processor, splits, split_features: SplitFeatures, args, argv, say):
    """eval_results.json, the classifier (+ processor) for pipeline("image-classification"), features_2d.png, the
    model card (and, with `update_model_card`, the checkpoint's card); then the summary lines."""
    output_dir = args.output_dir
    with open(os.path.join(output_dir, "eval_results.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    build_classifier(encoder, probe, splits.label_names).save_pretrained(output_dir)
    image_processor.save_pretrained(output_dir)
    test_features, test_labels = split_features.features["test"].cpu(), split_features.labels["test"].cpu()
    save_features_2d(
        test_features,
        test_labels,
        splits.label_names,
        os.path.join(output_dir, "features_2d.png"),
        args.embedding_2d,
        seed=args.seed,
    )
    command = "python recipes/linear_eval.py " + shlex.join(sys.argv[1:] if argv is None else [str(a) for a in argv])
    render_linear_eval_card(results, repo_id=args.hub_model_id, command=command).save(
        os.path.join(output_dir, "README.md")
    )
    if args.update_model_card:
        if os.path.isdir(args.model_name_or_path):
            update_model_card(args.model_name_or_path, results)
            say(f"Updated the model card {os.path.join(args.model_name_or_path, 'README.md')}.")
        else:
            say(
                f"notice: `update_model_card`: {args.model_name_or_path!r} is not a local folder; "
                "its card was not changed."
            )

    figures, pretty_name = results["figures"], results["dataset"]["pretty_name"]
    floor = " (random-init floor)" if args.random_init else ""
    top5 = f", top-5 {100 * figures['linear_top5']:.2f} %" if figures["linear_top5"] is not None else ""
    say(
        f"Linear probe{floor} on {pretty_name} [{splits.test_split}, {len(test_features)} images]: "
        f"top-1 {100 * figures['linear_top1']:.2f} %{top5}"
    )
    say("Weighted kNN: " + ", ".join(f"k={k} top-1 {100 * figures[f'knn_k{k}_top1']:.2f} %" for k in args.knn_k))
    say(f"Wrote {output_dir} (eval_results.json, classifier, features_2d.png, README.md) in {results['seconds']} s.")
