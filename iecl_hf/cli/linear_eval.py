"""linear_eval.py's arguments, checked where they are defined, with the defaults that depend on others resolved
once (`LinearEvalArguments.__post_init__`)."""

from dataclasses import dataclass, field

from ..evaluation.plots import EMBEDDING_METHODS
from ..optimization import PROBE_LEARNING_RATES
from .groups import (
    DatasetArguments,
    HubArguments,
    LoggingArguments,
    RequiredCheckpointArguments,
    TrackingArguments,
    default_output_base,
)
from .parser import ConfigFileArguments, option, parse_dataclasses

# The probe's epochs: on cached features epochs are cheap; with --augment each epoch runs the encoder.
FEATURE_EPOCHS, AUGMENT_EPOCHS = 100, 10


@dataclass
class LinearEvalArguments(
    RequiredCheckpointArguments,
    DatasetArguments,
    HubArguments,
    TrackingArguments,
    LoggingArguments,
    ConfigFileArguments,
):
    hub_model_id_example = "e.g. your-name/iecl-resnet18-cifar10-linear"

    random_init: bool = option(False, "Evaluate an untrained encoder of the checkpoint's config instead (the floor).")
    output_dir: str | None = option(
        None,
        "Default: CKPT-linear-eval for a local checkpoint, outputs/OWNER--NAME-linear-eval for a Hub id "
        "(-random-init appended with --random_init).",
    )
    test_split: str = option("test", "If the dataset has no such split, --holdout_fraction of train is held out.")
    holdout_fraction: float = option(
        0.2, "Fraction of train held out (stratified, seeded) when the test split is missing."
    )
    validation_size: int | None = option(
        None,
        "Score N images held out of the train split (stratified, the same for every run with the same --split_seed) "
        "instead of the test split; the probe trains on the rest. For choosing hyperparameters: keep the test split "
        "for the final figures.",
    )
    split_seed: int = option(0, "Seed of the --validation_size hold-out (independent of --seed).")
    max_train_samples: int | None = option(None, "Seeded random subset of the train split (quick runs).")
    max_test_samples: int | None = option(None, "Seeded random subset of the test split.")
    per_device_eval_batch_size: int = option(256, "Images per batch for feature extraction.")
    dataloader_num_workers: int = option(0)
    num_epochs: int | None = option(
        None, f"Probe epochs; default {FEATURE_EPOCHS} on cached features, {AUGMENT_EPOCHS} with --augment."
    )
    batch_size: int = option(256, "Probe mini-batch (per process with --augment).")
    optimizer: str = option("sgd", "SGD with momentum 0.9, or AdamW.", choices=PROBE_LEARNING_RATES)
    learning_rate: float | None = option(None, f"Peak LR of the cosine schedule; default {PROBE_LEARNING_RATES}.")
    weight_decay: float = option(0.0)
    standardize: bool = option(
        True, "Standardize features with train statistics (folded into the saved head). --no_standardize disables."
    )
    augment: bool = option(
        False, "Train the probe on random resized crops + flips through the frozen encoder (heavier protocol)."
    )
    knn_k: list[int] = field(
        default_factory=lambda: [20, 200], metadata={"help": "Neighbour counts of the weighted kNN."}
    )
    knn_temperature: float = option(0.07)
    embedding_2d: str = option("tsne", "features_2d.png method.", choices=EMBEDDING_METHODS)
    overwrite_cache: bool = option(False, "Extract features again even if OUT/features_cache has them.")
    seed: int = option(0)
    update_model_card: bool = option(False, "Also add the results to CKPT's README.md (a local folder).")

    def __post_init__(self):
        super().__post_init__()
        self.check_at_least(1, "per_device_eval_batch_size", "batch_size", "num_epochs", "validation_size")
        self.check_at_least(1, "max_train_samples", "max_test_samples")
        self.check_at_least(0, "dataloader_num_workers")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"--holdout_fraction must be in (0, 1), got {self.holdout_fraction}.")
        if not self.knn_k or min(self.knn_k) < 1 or not self.knn_temperature > 0:
            raise ValueError("--knn_k needs positive integers and --knn_temperature a positive number.")
        if self.num_epochs is None:
            self.num_epochs = AUGMENT_EPOCHS if self.augment else FEATURE_EPOCHS
        if self.learning_rate is None:
            self.learning_rate = PROBE_LEARNING_RATES[self.optimizer]
        if self.output_dir is None:
            suffix = "-linear-eval" + ("-random-init" if self.random_init else "")
            self.output_dir = default_output_base(self.model_name_or_path) + suffix


def parse_linear_eval_args(argv=None) -> LinearEvalArguments:
    """linear_eval.py's arguments from the command line and an optional config file, checked."""
    (args,) = parse_dataclasses((LinearEvalArguments,), argv)
    return args


__all__ = ["FEATURE_EPOCHS", "AUGMENT_EPOCHS", "LinearEvalArguments", "parse_linear_eval_args"]
