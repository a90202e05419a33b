"""Embed a whole dataset with a frozen IE-CL encoder: every image's pooled feature as an `embedding` column next to
the dataset's own columns (what `recipes/embed.py` runs).

Stages: load_embed_encoder -> load_embed_split -> embed_split (each process its contiguous shard, gathered batch by
batch onto the main process) -> embedded_dataset (the dataset's order) -> save_embedded (temporary folder, then
rename) -> push_embedded.

The encoder is frozen in eval mode and every image goes through the checkpoint's saved image processor, as in linear
evaluation (`load_frozen_encoder`), so a row's embedding is `encoder(processor(image)).pooler_output`. Images are
decoded by `decode_image` (greyscale, palette, RGBA and CMYK converted); one that cannot be decoded is skipped and
counted, as in pretraining and linear evaluation: its row is dropped from the output, the other rows keep their order,
and the dropped row indices are recorded in `embed_results.json`.
"""

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch

from ..data import EMBEDDED_DATASET, load_image_dataset
from ..data.decoding import decode_image
from ..data.loading import DatasetColumns, detect_columns
from ..data.pipeline import undecoded
from .linear_probe import encoder_fingerprint, load_frozen_encoder

RESULTS_FILE = "embed_results.json"


# ----------------------------------------------------------------------------------------------------------------
# Inputs


def load_embed_encoder(name_or_path: str, say=print, **hub_kwargs):
    """(encoder, image_processor): the frozen `IECLModel` of an IE-CL checkpoint and its saved image processor (one
    built from the config, with a notice, when the checkpoint has none). `ValueError` naming `model_name_or_path` for
    anything that is not an IE-CL checkpoint."""
    encoder, image_processor, notice = load_frozen_encoder(name_or_path, **hub_kwargs)
    if notice:
        say(f"notice: {notice}")
    return encoder, image_processor


def load_embed_split(
    dataset_name: str | None,
    dataset_config_name: str | None = None,
    split: str = "train",
    image_column: str | None = None,
    embedding_column: str = "embedding",
    image_size: int = 32,
    cache_dir: str | None = None,
    max_samples: int | None = None,
) -> tuple[datasets.Dataset, DatasetColumns]:
    """(split, columns): one split of an image dataset (the embedded digits when `dataset_name` is None), its first
    `max_samples` rows, and its image column (detected or checked). Errors name the argument: `split`,
    `image_column`, `embedding_column`."""
    dataset = load_image_dataset(dataset_name, dataset_config_name, image_size=image_size, cache_dir=cache_dir)
    if isinstance(dataset, datasets.Dataset):
        dataset = datasets.DatasetDict({"train": dataset})
    if split not in dataset:
        raise ValueError(f"`split` {split!r} is not a split of the dataset; available splits: {list(dataset)}.")
    rows = dataset[split]
    columns = detect_columns(rows.features, image_column)
    if embedding_column in rows.column_names:
        raise ValueError(
            f"`embedding_column` {embedding_column!r} is already a column of the dataset (columns: "
            f"{rows.column_names}); pass another name, or remove that column first."
        )
    if max_samples is not None and max_samples < len(rows):
        rows = rows.select(range(max_samples))
    if len(rows) == 0:
        raise ValueError(f"`split` {split!r} has no rows: nothing to embed.")
    return rows, columns


# ----------------------------------------------------------------------------------------------------------------
# Sharding


def shard_range(num_rows: int, num_processes: int, process_index: int) -> range:
    """The rows of one process: contiguous, the first `num_rows % num_processes` processes one row more (the split
    of `accelerator.split_between_processes`)."""
    per_process, extras = divmod(num_rows, num_processes)
    start = process_index * per_process + min(process_index, extras)
    return range(start, start + per_process + (1 if process_index < extras else 0))


def rows_per_round(num_rows: int, num_processes: int, batch_size: int) -> list[int]:
    """Images covered by each round (one batch per process, the shorter shards idle at the end), over all processes:
    what the progress bar advances by."""
    shards = [len(shard_range(num_rows, num_processes, index)) for index in range(num_processes)]
    rounds = math.ceil(max(shards) / batch_size)
    return [sum(min(batch_size, max(0, size - r * batch_size)) for size in shards) for r in range(rounds)]


def assemble(num_rows: int, indices, embeddings) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, embeddings) in the dataset's order, from the pieces the processes gathered in any order.

    `indices` and `embeddings` are lists of arrays (one per gathered piece; index -1 marks padding). Rows missing
    from the result are the skipped (undecodable) images. Raises `RuntimeError` if a row came back twice or is out of
    range (a sharding bug, never silently written).
    """
    indices = np.concatenate([np.asarray(piece, dtype=np.int64).reshape(-1) for piece in indices])
    embeddings = np.concatenate([np.asarray(piece, dtype=np.float32) for piece in embeddings])
    keep = indices >= 0
    indices, embeddings = indices[keep], embeddings[keep]
    order = np.argsort(indices, kind="stable")
    indices, embeddings = indices[order], embeddings[order]
    if len(indices) and (indices[-1] >= num_rows or (np.diff(indices) == 0).any()):
        raise RuntimeError(f"embedding rows out of range or repeated (of {num_rows} rows): a sharding error.")
    return indices, embeddings


# ----------------------------------------------------------------------------------------------------------------
# Embedding


class ImageBatches(torch.utils.data.Dataset):
    """Batch `b` of the rows `rows` of a split: {"pixel_values", "indices" (the dataset rows of the decodable images),
    "num_skipped"}. One Arrow slice per batch, `decode_image` per image (None: skipped and counted) and one call of
    the image processor on the batch's images (a batched call costs a quarter of per-image calls)."""

    def __init__(self, split: datasets.Dataset, columns: DatasetColumns, image_processor, rows: range, batch_size):
        self.images = undecoded(split.select_columns([columns.image]), columns)
        self.column, self.image_processor = columns.image, image_processor
        self.rows, self.batch_size = rows, batch_size

    def __len__(self):
        return math.ceil(len(self.rows) / self.batch_size)

    def __getitem__(self, index):
        start = self.rows.start + index * self.batch_size
        stop = min(start + self.batch_size, self.rows.stop)
        decoded = [decode_image(value) for value in self.images[start:stop][self.column]]
        kept = [(start + offset, image) for offset, image in enumerate(decoded) if image is not None]
        if kept:
            pixel_values = self.image_processor([image for _, image in kept], return_tensors="pt")["pixel_values"]
        else:
            pixel_values = torch.empty(0)
        return {
            "pixel_values": pixel_values,
            "indices": torch.tensor([row for row, _ in kept], dtype=torch.int64),
            "num_skipped": len(decoded) - len(kept),
        }


@dataclass
class Embeddings:
    """What `embed_split` returns on the main process (the others: empty arrays, their `skipped` count only)."""

    indices: np.ndarray  # the dataset rows that have an embedding, ascending
    embeddings: np.ndarray  # (len(indices), num_features) float32
    num_rows: int
    skipped_rows: list = field(default_factory=list)  # rows whose image could not be decoded

    @property
    def num_skipped(self) -> int:
        return len(self.skipped_rows)


@torch.inference_mode()
def embed_split(
    encoder,
    image_processor,
    split: datasets.Dataset,
    columns: DatasetColumns,
    batch_size: int = 256,
    accelerator=None,
    num_workers: int = 0,
    progress: bool = True,
) -> Embeddings:
    """Pooled features of every row of `split`: each process embeds its contiguous shard (`shard_range`), and each
    round of batches is gathered onto the main process (padded to the batch size, indices -1 on the padding), which
    puts them back in the dataset's order (`assemble`). With `accelerator=None`: one process, on the encoder's device.
    A tqdm bar (main process only) counts images over all processes."""
    from tqdm.auto import tqdm

    num_processes = accelerator.num_processes if accelerator is not None else 1
    process_index = accelerator.process_index if accelerator is not None else 0
    is_main = accelerator is None or accelerator.is_main_process
    device = next(encoder.parameters()).device
    rows = shard_range(len(split), num_processes, process_index)
    loader = torch.utils.data.DataLoader(
        ImageBatches(split, columns, image_processor, rows, batch_size),
        batch_size=None,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    batches = iter(loader)
    autocast = accelerator.autocast if accelerator is not None else _no_autocast
    num_features = encoder.num_features
    pieces_indices, pieces_embeddings = [], []
    bar = tqdm(total=len(split), unit="img", desc="embed", disable=not (progress and is_main))
    was_training = encoder.training
    encoder.eval()
    for round_rows in rows_per_round(len(split), num_processes, batch_size):
        batch = next(batches, None)  # None: this process's shard is done, the others still send one batch
        indices = batch["indices"] if batch is not None else torch.empty(0, dtype=torch.int64)
        if len(indices):
            with autocast():
                pooled = encoder(batch["pixel_values"].to(device, non_blocking=True)).pooler_output
            pooled = pooled.float()
        else:
            pooled = torch.empty(0, num_features, device=device)
        if num_processes > 1:
            indices, pooled = _gather_padded(accelerator, indices.to(device), pooled, batch_size)
        if is_main:
            pieces_indices.append(indices.cpu().numpy())
            pieces_embeddings.append(pooled.cpu().numpy())
        bar.update(round_rows)
    bar.close()
    encoder.train(was_training)
    if not is_main:
        return Embeddings(np.empty(0, np.int64), np.empty((0, num_features), np.float32), len(split))
    kept, embeddings = assemble(len(split), pieces_indices, pieces_embeddings)
    skipped = np.setdiff1d(np.arange(len(split)), kept).tolist()
    return Embeddings(kept, embeddings, len(split), skipped)


def _no_autocast():
    import contextlib

    return contextlib.nullcontext()


def _gather_padded(accelerator, indices, pooled, batch_size):
    """Every process's batch, padded to `batch_size` rows (index -1), gathered: equal shapes, no size exchange."""
    padding = batch_size - len(indices)
    indices = torch.cat([indices, torch.full((padding,), -1, dtype=torch.int64, device=indices.device)])
    pooled = torch.cat([pooled, pooled.new_zeros(padding, pooled.shape[1])])
    return accelerator.gather(indices), accelerator.gather(pooled)


# ----------------------------------------------------------------------------------------------------------------
# Output


def embedded_dataset(split: datasets.Dataset, result: Embeddings, column: str = "embedding") -> datasets.Dataset:
    """`split` with `column` (float32 lists) added, in the dataset's order; rows whose image could not be decoded
    are dropped. The dataset's columns keep their features (images stay images)."""
    import pyarrow as pa

    num_features = result.embeddings.shape[1]
    values = np.zeros((result.num_rows, num_features), np.float32)
    values[result.indices] = result.embeddings
    valid = np.zeros(result.num_rows, bool)
    valid[result.indices] = True
    offsets = pa.array(np.arange(result.num_rows + 1, dtype=np.int32) * num_features)
    lists = pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1)), mask=pa.array(~valid))
    dataset = split.add_column(column, lists, feature=datasets.List(datasets.Value("float32")))
    return dataset.select(result.indices) if result.num_skipped else dataset


def results_record(args, split, columns, result: Embeddings, encoder, image_processor, started, num_processes):
    """The content of embed_results.json: what was embedded with what, and the skipped rows."""
    from ..provenance import provenance

    return {
        "checkpoint": args.model_name_or_path,
        "encoder_fingerprint": encoder_fingerprint(encoder),
        "dataset": {
            "name": args.dataset_name or EMBEDDED_DATASET,
            "config": args.dataset_config_name,
            "split": args.split,
            "fingerprint": split._fingerprint,
            "image_column": columns.image,
            "max_samples": args.max_samples,
        },
        "embedding_column": args.embedding_column,
        "embedding": "pooled backbone features (pooler_output) of the frozen encoder in eval mode, float32",
        "preprocessing": f"saved image processor ({type(image_processor).__name__}), {encoder.config.image_size} px",
        "num_features": int(result.embeddings.shape[1]),
        "num_rows": result.num_rows,
        "num_embedded": len(result.indices),
        "skipped_images": result.num_skipped,
        "skipped_rows": result.skipped_rows,
        "per_device_eval_batch_size": args.per_device_eval_batch_size,
        "num_processes": num_processes,
        "seconds": round(time.time() - started, 1),
        "provenance": provenance(),
    }


def check_embed_output_dir(output_dir: str, overwrite: bool = False):
    """Fail before any work if `output_dir` holds something (without `overwrite`) or its parent is not writable."""
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)) and not overwrite:
        raise ValueError(
            f"`output_dir` {output_dir!r} already exists and is not empty; pass `overwrite_output_dir` to replace "
            "it, or choose another folder."
        )
    parent = os.path.dirname(os.path.abspath(output_dir))
    try:
        os.makedirs(parent, exist_ok=True)
        probe = os.path.join(parent, f".write-test-{os.getpid()}")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ValueError(
            f"`output_dir` {output_dir!r}: {parent!r} is not writable ({error}); choose another folder."
        ) from error


def save_embedded(dataset: datasets.Dataset, output_dir: str, results: dict | None = None):
    """`save_to_disk` into a temporary folder beside `output_dir` (+ embed_results.json), then renamed into place:
    `output_dir` holds the old content or the complete new one, never half of it."""
    output_dir = os.path.abspath(output_dir)
    parent, name = os.path.split(output_dir)
    temporary = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
    previous = os.path.join(parent, f".{name}.old-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        dataset.save_to_disk(temporary)
        if results is not None:
            with open(os.path.join(temporary, RESULTS_FILE), "w") as handle:
                json.dump(results, handle, indent=2)
        if os.path.lexists(output_dir):
            os.replace(output_dir, previous)
        os.replace(temporary, output_dir)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    shutil.rmtree(previous, ignore_errors=True)


def push_embedded(dataset: datasets.Dataset, output_dir: str, repo_id: str, split: str, private=False, token=None):
    """`Dataset.push_to_hub` as the split `split` of the dataset repo `repo_id`; returns the error line on failure
    (the local output is complete), else None."""
    try:
        dataset.push_to_hub(repo_id, split=split, private=private, token=token)
    except Exception as error:  # offline, no token, permission, ...
        return (
            f"pushing the embeddings to the Hub as the dataset {repo_id!r} failed ({type(error).__name__}: {error}). "
            f"The local output {output_dir} is complete; log in (`hf auth login` or HF_TOKEN) and retry with "
            f"datasets.load_from_disk({output_dir!r}).push_to_hub({repo_id!r}, split={split!r})."
        )
    return None


__all__ = [
    "Embeddings",
    "ImageBatches",
    "assemble",
    "check_embed_output_dir",
    "embed_split",
    "embedded_dataset",
    "load_embed_encoder",
    "load_embed_split",
    "push_embedded",
    "results_record",
    "rows_per_round",
    "save_embedded",
    "shard_range",
]
