"""Load an image dataset from the embedded default, a local folder / parquet files / image folder, or the Hub."""

import os
from dataclasses import dataclass

import datasets
import numpy as np

EMBEDDED_DATASET = "embedded:digits"
IMAGE_COLUMN_CANDIDATES = ("img", "image", "pixel_values", "images", "jpg", "png")
LABEL_COLUMN_CANDIDATES = ("label", "fine_label", "labels", "class", "cls")


def load_embedded_digits(image_size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> datasets.DatasetDict:
    """scikit-learn's 1,797 handwritten digits (8x8, ships with scikit-learn, no network) as 10-class RGB images.

    Upsampled to `image_size` (bilinear) so the CIFAR-style recipe applies; a fixed stratified split.
    """
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = (digits.images / 16.0 * 255).round().astype(np.uint8)
    images = [
        Image.fromarray(p, mode="L").resize((image_size, image_size), Image.BILINEAR).convert("RGB") for p in pixels
    ]
    train_idx, test_idx = train_test_split(
        np.arange(len(images)), test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )

    def split(indices):
        return datasets.Dataset.from_dict(
            {"image": [images[i] for i in indices], "label": [int(digits.target[i]) for i in indices]},
            features=features,
        )

    return datasets.DatasetDict({"train": split(train_idx), "test": split(test_idx)})


def _local_loader_args(path: str):
    """(path or builder, kwargs) for `datasets.load_dataset`. A folder goes as it is: datasets infers its format
    (parquet/arrow/csv/json files, a repo-style layout, or an image folder with labels from the folder names). A single
    file needs its builder named."""
    if os.path.isdir(path):
        return path, {}
    ext = path.rsplit(".", 1)[-1].lower()
    builder = {"parquet": "parquet", "arrow": "arrow", "csv": "csv", "json": "json", "jsonl": "json"}.get(ext)
    if builder is None:
        raise ValueError(
            f"`dataset_name` {path!r}: cannot read a .{ext} file; give parquet, arrow, csv or json files, or a folder."
        )
    return builder, {"data_files": path}


def load_image_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    streaming: bool = False,
    image_size: int = 32,
    cache_dir: str | None = None,
    **kwargs,
):
    """Load a `DatasetDict` (or `IterableDatasetDict` with `streaming`) by name.

    - `None` or `"embedded:digits"`: the embedded default (no network).
    - a local path: a folder saved with `save_to_disk`, a folder of parquet files (like a Hub repo), parquet/arrow
      files, or an image folder (`class_name/xxx.jpg`, labels from folder names).
    - anything else: a Hub dataset id, e.g. `uoft-cs/cifar10`.
    """
    if dataset_name in (None, "", EMBEDDED_DATASET):
        dataset = load_embedded_digits(image_size)
        return _to_iterable(dataset) if streaming else dataset
    if os.path.exists(dataset_name):
        try:
            if os.path.isdir(dataset_name) and os.path.exists(os.path.join(dataset_name, "dataset_dict.json")):
                dataset = datasets.load_from_disk(dataset_name)
                return _to_iterable(dataset) if streaming else dataset
            builder, builder_kwargs = _local_loader_args(dataset_name)
            return datasets.load_dataset(
                builder, dataset_config_name, streaming=streaming, cache_dir=cache_dir, **builder_kwargs, **kwargs
            )
        except Exception as error:  # datasets fails on empty splits with errors that do not say so
            empty = _empty_local_splits(dataset_name)
            if empty:
                raise ValueError(
                    f"The local dataset {dataset_name!r} has empty split(s) or file(s): {empty} (0 rows). "
                    "Remove them or add images."
                ) from error
            if isinstance(error, ValueError) and str(error).startswith("`dataset_name`"):
                raise
            raise ValueError(
                f"Could not read the local dataset {dataset_name!r} ({type(error).__name__}: {error}). "
                "Expected a folder saved with `save_to_disk`, parquet/arrow files (or a folder of them), "
                "or an image folder (class_name/image.jpg)."
            ) from error
    try:
        return datasets.load_dataset(
            dataset_name, dataset_config_name, streaming=streaming, cache_dir=cache_dir, **kwargs
        )
    except Exception as error:  # offline, unknown id, private repo, ...
        raise ValueError(
            f"Could not load dataset {dataset_name!r} ({type(error).__name__}: {error}). If the Hugging Face Hub is "
            "unreachable or the id is wrong, pass local data instead: a folder of parquet files or one saved with "
            "`save_to_disk` (`dataset_name` path/to/folder), parquet files (`dataset_name` data/train.parquet), an "
            "image folder (class_name/image.jpg), or leave `dataset_name` unset for the embedded digits dataset."
        ) from error


def _empty_local_splits(path: str) -> list[str]:
    """Names of the empty splits (save_to_disk folders) or empty parquet files under a local dataset path."""
    import json

    empty = []
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "dataset_dict.json")):
        try:
            with open(os.path.join(path, "dataset_dict.json")) as handle:
                splits = json.load(handle).get("splits", [])
            for split in splits:
                with open(os.path.join(path, split, "state.json")) as handle:
                    if not json.load(handle).get("_data_files"):
                        empty.append(split)
        except (OSError, ValueError):
            pass
        return empty
    files = (
        [path] if os.path.isfile(path) else [os.path.join(root, f) for root, _, names in os.walk(path) for f in names]
    )
    for file in sorted(files):
        if file.endswith(".parquet"):
            try:
                import pyarrow.parquet as pq

                if pq.ParquetFile(file).metadata.num_rows == 0:
                    empty.append(os.path.relpath(file, path) if file != path else os.path.basename(file))
            except Exception:
                pass
    return empty


def _to_iterable(dataset: datasets.DatasetDict) -> datasets.IterableDatasetDict:
    return datasets.IterableDatasetDict(
        {name: split.to_iterable_dataset(num_shards=1) for name, split in dataset.items()}
    )


def is_class_id_feature(feature) -> bool:
    """A ClassLabel, or an integer Value: something `int(label)` turns into a class id."""
    if isinstance(feature, datasets.ClassLabel):
        return True
    return isinstance(feature, datasets.Value) and (
        feature.dtype.startswith("int") or feature.dtype.startswith("uint")
    )


@dataclass
class DatasetColumns:
    image: str
    label: str | None
    label_names: list[str] | None


def detect_columns(
    features,
    image_column: str | None = None,
    label_column: str | None = None,
    require_label: bool = False,
    string_labels: bool = False,
) -> DatasetColumns:
    """Find the image and label columns (or check the given ones), with an error listing what exists.
    `string_labels`: a string column is labels too (the caller encodes them, as linear evaluation does)."""

    def is_label(feature) -> bool:
        return is_class_id_feature(feature) or (
            string_labels and isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
        )

    if features is None:
        raise ValueError(
            "The dataset has no known features (a streaming dataset without a schema): pass `image_column`."
        )
    available = list(features)
    if image_column is not None:
        if image_column not in features:
            raise ValueError(
                f"`image_column` {image_column!r} is not a column of the dataset; available columns: {available}."
            )
    else:
        typed = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
        named = [name for name in IMAGE_COLUMN_CANDIDATES if name in features]
        if not (typed or named):
            raise ValueError(
                f"No image column found (looked for an Image feature or one of {list(IMAGE_COLUMN_CANDIDATES)}); "
                f"available columns: {available}. Pass `image_column` NAME."
            )
        image_column = (typed or named)[0]
    if label_column is not None:
        if label_column not in features:
            raise ValueError(
                f"`label_column` {label_column!r} is not a column of the dataset; available columns: {available}."
            )
        if not is_label(features[label_column]):
            expected = (
                "labels (a ClassLabel, an integer or a string Value)"
                if string_labels
                else "integer class ids (a ClassLabel or an integer Value)"
            )
            raise ValueError(
                f"`label_column` {label_column!r} holds {features[label_column]!r}, not {expected}; "
                f"available columns: {available}."
            )
    else:
        typed = [name for name, feature in features.items() if isinstance(feature, datasets.ClassLabel)]
        named = [name for name in LABEL_COLUMN_CANDIDATES if name in features and is_label(features[name])]
        label_column = (typed or named or [None])[0]
    if require_label and label_column is None:
        raise ValueError(
            f"The dataset has no label column (looked for a ClassLabel or one of {list(LABEL_COLUMN_CANDIDATES)}); "
            f"available columns: {available}. Pass `label_column` NAME, or use a labelled dataset."
        )
    label_names = None
    if label_column is not None and isinstance(features[label_column], datasets.ClassLabel):
        label_names = list(features[label_column].names)
    return DatasetColumns(image=image_column, label=label_column, label_names=label_names)
