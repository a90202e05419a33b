"""A split decoded once into a memory-mapped uint8 array: the loader then only slices it.

Decoding (PNG/JPEG) and resizing every image again in every epoch is what limits the input pipeline on a GPU; here
each image is decoded once per split (same decoder and resize as `make_uint8_dataset`, so the same pixels), stored as
`(N, 3, L, L)` uint8 in a `.npy` file under the cache (letterboxed: each image's own height and width are in the
index), and read back with `np.load(mmap_mode="r")`. A batch is one
fancy-indexed slice (`__getitems__`), already in the layout the device augmentation takes. Undecodable images are
marked once and skipped (and counted) in every batch, as in the per-example path.
"""

import hashlib
import json
import os

import numpy as np
import torch

from .augmentations import Letterbox, load_size_for
from .decoding import decode_image
from .loading import DatasetColumns
from .pipeline import undecoded

# Above this size the array would not be worth a file (ImageNet at 256 px is ~250 GB): decode per example instead.
DECODE_ONCE_MAX_BYTES = 8 * 2**30


def decoded_array_bytes(num_images: int, image_size: int) -> int:
    return num_images * 3 * load_size_for(image_size) ** 2


def default_cache_dir() -> str:
    import datasets

    return os.path.join(datasets.config.HF_DATASETS_CACHE, "iecl_hf_decoded")


class DecodedImages(torch.utils.data.Dataset):
    """Map-style dataset over a decoded split; `__getitems__(indices)` returns a ready training batch
    {"images": uint8 (B', 3, L, L), "image_sizes": (B', 2), "num_skipped": ()} (no labels: pretraining does not
    read them). Use with `collate_fn=passthrough`."""

    def __init__(self, split, columns: DatasetColumns, image_size: int, cache_dir: str | None = None):
        self.columns, self.load_size = columns, load_size_for(image_size)
        # "letterbox": the layout (arrays of the earlier centre-square layout hold other pixels and no sizes).
        key = json.dumps([split._fingerprint, len(split), columns.image, columns.label, self.load_size, "letterbox"])
        stem = os.path.join(cache_dir or default_cache_dir(), hashlib.sha256(key.encode()).hexdigest()[:24])
        if not os.path.exists(stem + ".npz"):  # the index is written last: its presence means the array is whole
            self._decode(split, stem)
        self.images = np.load(stem + ".npy", mmap_mode="r")
        with np.load(stem + ".npz") as index:
            self.valid, self.sizes = index["valid"], index["sizes"]

    def _decode(self, split, stem):
        os.makedirs(os.path.dirname(stem), exist_ok=True)
        temporary = f"{stem}.{os.getpid()}.tmp.npy"
        images = np.lib.format.open_memmap(
            temporary, mode="w+", dtype=np.uint8, shape=(len(split), 3, self.load_size, self.load_size)
        )
        valid = np.zeros(len(split), dtype=bool)
        sizes = np.zeros((len(split), 2), dtype=np.int64)
        letterbox = Letterbox(self.load_size)
        for index, example in enumerate(undecoded(split, self.columns).select_columns([self.columns.image])):
            image = decode_image(example[self.columns.image])
            if image is not None:
                images[index], sizes[index] = letterbox(image).numpy(), letterbox.size(image).numpy()
                valid[index] = True
        images.flush()
        del images
        os.replace(temporary, stem + ".npy")
        np.savez(f"{stem}.{os.getpid()}.tmp.npz", valid=valid, sizes=sizes)
        os.replace(f"{stem}.{os.getpid()}.tmp.npz", stem + ".npz")

    def __len__(self):
        return len(self.valid)

    def __getitems__(self, indices):
        indices = np.asarray(indices, dtype=np.int64)
        kept = indices[self.valid[indices]]
        return {"images": torch.from_numpy(np.ascontiguousarray(self.images[kept])),
                "image_sizes": torch.from_numpy(self.sizes[kept]),
                "num_skipped": torch.tensor(len(indices) - len(kept))}  # fmt: skip

    def __getitem__(self, index):
        return self.__getitems__([index])


def passthrough(batch):
    """The collate function of `DecodedImages`: `__getitems__` already returns the batch."""
    return batch
