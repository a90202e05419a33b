"""The training examples and loader of the pretraining recipe (also what `benchmarks/throughput.py` times).

- `augmentation="batched"` (default): uint8 images for the device augmentation; a map-style split of up to
  `DECODE_ONCE_MAX_BYTES` decoded is decoded once into a memory-mapped array (`DecodedImages`), a larger or streamed
  one is decoded per example.
- `augmentation="workers"`: two torchvision views per example, made in the loader.
"""

import contextlib

import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from .augmentations import SimCLRAugmentation
from .decoded import DECODE_ONCE_MAX_BYTES, DecodedImages, decoded_array_bytes, passthrough
from .pipeline import TwoViewCollator, make_two_view_dataset, make_uint8_dataset


def training_examples(split, columns, image_size: int, augmentation: str = "batched", cache_dir=None,
                      main_process_first=contextlib.nullcontext):  # fmt: skip
    """(dataset, collate_fn) of the training split. `main_process_first`: a context in which one process decodes
    the array first (Accelerate's), so the others read its file."""
    decode_once = isinstance(split, Dataset) and decoded_array_bytes(len(split), image_size) <= DECODE_ONCE_MAX_BYTES
    if augmentation == "batched" and decode_once:
        with main_process_first():
            return DecodedImages(split, columns, image_size, cache_dir), passthrough
    if augmentation == "batched":
        return make_uint8_dataset(split, columns, image_size), TwoViewCollator()
    return make_two_view_dataset(split, columns, SimCLRAugmentation(image_size)), TwoViewCollator()


def training_loader(dataset, collate, batch_size: int, workers: int = 1, seed: int = 0, pin_memory: bool = False,
                    streaming: bool = False) -> DataLoader:  # fmt: skip
    """Shuffled (seeded) full batches; a streamed dataset shuffles itself and caps the workers at its shards."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=not streaming,
        drop_last=True,
        num_workers=min(workers, dataset.num_shards) if streaming else workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=workers > 0 and not streaming,
        generator=torch.Generator().manual_seed(seed),
    )
