"""From a dataset split to training batches: decode robustly, augment twice, collate, skip and count bad images."""

import datasets
import torch

from .augmentations import Letterbox, eval_transform, load_size_for
from .decoding import decode_image
from .loading import DatasetColumns


class ExampleTransform:
    """Batch transform for `Dataset.with_transform`: one output dict per example, or None for an undecodable image.

    `views` maps output keys to image transforms (e.g. two draws of the SimCLR augmentation).
    """

    def __init__(self, columns: DatasetColumns, views: dict):
        self.columns, self.views = columns, views

    def transform_example(self, raw_image, label=None):
        image = decode_image(raw_image)
        if image is None:
            return None
        example = {key: transform(image) for key, transform in self.views.items()}
        if self.columns.label is not None:
            example["labels"] = torch.tensor(int(label))
        return example

    def __call__(self, batch):
        images = batch[self.columns.image]
        labels = batch[self.columns.label] if self.columns.label is not None else [None] * len(images)
        return {"example": [self.transform_example(image, label) for image, label in zip(images, labels)]}


class TwoViewCollator:
    """Stacks the decodable examples; `num_skipped` counts the images that could not be decoded."""

    def __call__(self, examples):
        examples = [e["example"] for e in examples]  # ExampleTransform wraps each example (None: undecodable)
        valid = [e for e in examples if e is not None]
        batch = {key: torch.stack([e[key] for e in valid]) for key in (valid[0] if valid else {})}
        batch["num_skipped"] = torch.tensor(len(examples) - len(valid))
        return batch


def undecoded(dataset, columns: DatasetColumns):
    """Keep images as raw bytes, so one corrupt file is skipped by our decoder instead of crashing the loader."""
    feature = dataset.features[columns.image] if dataset.features is not None else None
    if isinstance(feature, datasets.Image):
        return dataset.cast_column(columns.image, datasets.Image(decode=False))
    return dataset


def apply_example_transform(dataset, transform: ExampleTransform):
    """Attach `transform` lazily: `with_transform` on a map-style split, a lazy `map` on a streamed one."""
    dataset = undecoded(dataset, transform.columns)
    if isinstance(dataset, datasets.IterableDataset):
        keep = [c for c in (transform.columns.image, transform.columns.label) if c]
        return dataset.select_columns(keep).map(
            lambda example: {
                "example": transform.transform_example(
                    example[transform.columns.image], example.get(transform.columns.label)
                )
            },
            remove_columns=keep,
        )
    return dataset.with_transform(transform)


def make_two_view_dataset(dataset, columns: DatasetColumns, augmentation):
    """Each example -> {"pixel_values", "pixel_values_2" (two augmented views in [0, 1]), "labels"?}."""
    return apply_example_transform(
        dataset, ExampleTransform(columns, {"pixel_values": augmentation, "pixel_values_2": augmentation})
    )


def make_uint8_dataset(dataset, columns: DatasetColumns, image_size: int):
    """Each example -> {"images" (uint8, letterboxed to the load size), "image_sizes", "labels"?}: the loader only
    decodes and resizes; the SimCLR augmentation runs batched on the device (`BatchedSimCLRAugmentation`)."""
    letterbox = Letterbox(load_size_for(image_size))
    return apply_example_transform(
        dataset, ExampleTransform(columns, {"images": letterbox, "image_sizes": letterbox.size})
    )


def make_eval_dataset(dataset, columns: DatasetColumns, image_size: int):
    """Each example -> {"pixel_values" (deterministic resize/crop, in [0, 1]), "labels"?}."""
    return apply_example_transform(dataset, ExampleTransform(columns, {"pixel_values": eval_transform(image_size)}))
