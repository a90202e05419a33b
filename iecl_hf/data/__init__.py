"""Data for the recipes: loading any image dataset, decoding robustly, and the SimCLR augmentations."""

from .augmentations import Letterbox, SimCLRAugmentation, SimCLRViewSpec, eval_transform, load_size_for
from .batched_augmentation import BatchedSimCLRAugmentation
from .decoding import decode_image
from .loading import (
    EMBEDDED_DATASET,
    DatasetColumns,
    detect_columns,
    load_embedded_digits,
    load_image_dataset,
)
from .pipeline import TwoViewCollator, make_eval_dataset, make_two_view_dataset, make_uint8_dataset

__all__ = [
    "SimCLRAugmentation",
    "SimCLRViewSpec",
    "BatchedSimCLRAugmentation",
    "load_size_for",
    "Letterbox",
    "make_uint8_dataset",
    "eval_transform",
    "decode_image",
    "DatasetColumns",
    "EMBEDDED_DATASET",
    "detect_columns",
    "load_embedded_digits",
    "load_image_dataset",
    "TwoViewCollator",
    "make_eval_dataset",
    "make_two_view_dataset",
]
