"""embed.py's arguments, checked where they are defined, with the default --output_dir filled in."""

import os
from dataclasses import dataclass

from ..data import EMBEDDED_DATASET
from .groups import HubArguments, LoggingArguments, RequiredCheckpointArguments, default_output_base
from .parser import ConfigFileArguments, option, parse_dataclasses


@dataclass
class EmbedArguments(RequiredCheckpointArguments, HubArguments, LoggingArguments, ConfigFileArguments):
    # --push_to_hub pushes the embedded dataset as a dataset repo named by --hub_model_id.
    hub_model_id_example = "a dataset repo, e.g. your-name/cifar10-embeddings"

    dataset_name: str | None = option(
        None,
        "Hub id (uoft-cs/cifar10), local folder/parquet/image folder; "
        "unset: the embedded digits dataset (no network).",
    )
    dataset_config_name: str | None = option(None, "Configuration name of the Hub dataset.")
    split: str = option("train", "The split to embed.")
    image_column: str | None = option(None, "Image column (detected: an Image feature, img/image).")
    cache_dir: str | None = option(None, "datasets / Hub cache folder.")
    output_dir: str | None = option(
        None,
        "Where the embedded dataset goes (save_to_disk: the dataset's columns + --embedding_column, in the "
        "dataset's order, and embed_results.json). Images that cannot be decoded are skipped: their rows are DROPPED "
        "from the output, counted, and their row indices listed in embed_results.json. Written to a temporary folder, "
        "then renamed. Default: CKPT-embeddings-DATASET-SPLIT (outputs/OWNER--NAME-embeddings-... for a Hub id).",
    )
    overwrite_output_dir: bool = option(False, "Replace --output_dir if it is not empty.")
    embedding_column: str = option("embedding", "Name of the new column (float32 lists, the pooled features).")
    per_device_eval_batch_size: int = option(256, "Images per batch and process.")
    dataloader_num_workers: int = option(0, "Loader processes that decode and preprocess (0: in the main process).")
    max_samples: int | None = option(None, "Embed only the first N rows of the split (quick runs).")

    def __post_init__(self):
        super().__post_init__()
        self.check_at_least(1, "per_device_eval_batch_size", "max_samples")
        self.check_at_least(0, "dataloader_num_workers")
        if not self.embedding_column:
            raise ValueError("--embedding_column must be a column name, e.g. embedding.")
        if self.output_dir is None:
            dataset = os.path.basename(os.path.normpath(self.dataset_name or EMBEDDED_DATASET.replace(":", "-")))
            self.output_dir = f"{default_output_base(self.model_name_or_path)}-embeddings-{dataset}-{self.split}"


def parse_embed_args(argv=None) -> EmbedArguments:
    """embed.py's arguments from the command line and an optional config file, checked."""
    (args,) = parse_dataclasses((EmbedArguments,), argv)
    return args
