"""The linear-probe protocol on a frozen IE-CL encoder: checkpoint and splits, cached features, the probe itself,
and the `IECLForImageClassification` it becomes.

Protocol (what `recipes/linear_eval.py` runs):
1. The encoder is loaded from an IE-CL checkpoint, frozen, in eval mode (BatchNorm statistics untouched).
2. Train and test images go through the checkpoint's saved image processor (resize / centre crop / normalize,
   exactly what `pipeline("image-classification")` does later); the pooled features are extracted once and
   cached under `OUT/features_cache/`, keyed by the encoder's weights, the preprocessing and the split.
3. A linear layer is trained on the (optionally standardized) features: cross-entropy, SGD with momentum 0.9 or
   AdamW, cosine schedule. With `augment` it trains on augmented crops passed through the frozen encoder instead.
4. The standardization is folded into the linear weights, so the classifier works on raw pooled features.
"""

import copy
import hashlib
import json
import math
import os
from dataclasses import dataclass, field

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2
from tqdm.auto import tqdm

from ..configuration_iecl import IECLConfig
from ..data.augmentations import crop_scale
from ..data.loading import DatasetColumns, detect_columns
from ..data.pipeline import ExampleTransform, TwoViewCollator, apply_example_transform
from ..hub.checkpoints import fetch_config_dict
from ..image_processing import build_image_processor
from ..modeling_iecl import IECLForImageClassification, IECLModel
from ..optimization import PROBE_LEARNING_RATES, build_optimizer
from .features import extract_features

CACHE_FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint


def load_frozen_encoder(name_or_path: str, random_init: bool = False, seed: int = 0, **hub_kwargs):
    """(encoder, image_processor, notice): the `IECLModel` of an IE-CL checkpoint, frozen and in eval mode.

    `random_init` builds an untrained encoder of the same config (seeded): the floor of the evaluation.
    `notice` is a line to print when the checkpoint has no saved image processor (one is built from the config).
    Raises `ValueError` for anything that is not an IE-CL checkpoint.
    """
    from transformers import AutoImageProcessor

    config_dict = fetch_config_dict(name_or_path, **hub_kwargs)
    if random_init:
        config = IECLConfig.from_dict({k: v for k, v in config_dict.items() if k not in ("transformers_version",)})
        torch.manual_seed(seed)
        encoder = IECLModel(config)
    else:
        encoder, loading_info = IECLModel.from_pretrained(name_or_path, output_loading_info=True, **hub_kwargs)
        if loading_info["missing_keys"]:
            missing = sorted(loading_info["missing_keys"])
            raise ValueError(
                f"`model_name_or_path` {name_or_path!r}: the checkpoint lacks {len(missing)} encoder weights (e.g. "
                f"{missing[:3]}); evaluating it would measure a partly random encoder."
            )
    encoder.eval().requires_grad_(False)
    notice = None
    try:
        processor = AutoImageProcessor.from_pretrained(name_or_path, **hub_kwargs)
    except (OSError, ValueError):
        processor = build_image_processor(encoder.config)
        notice = (
            f"{name_or_path!r} has no saved image processor: using the default one of its config "
            f"(resize/centre crop to {encoder.config.image_size} px, mean {encoder.config.image_mean})."
        )
    return encoder, processor, notice


def encoder_fingerprint(model: nn.Module) -> str:
    """Short hash of every weight and buffer: the identity of an encoder, whatever folder or id it came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------
# Data


@dataclass
class EvalSplits:
    """Labelled train and test splits, their columns and class names, and the notices to print."""

    train: datasets.Dataset
    test: datasets.Dataset
    columns: DatasetColumns
    label_names: list[str]
    test_split: str  # what the test split is, in words (a split name, or the held-out part of train)
    notices: list[str] = field(default_factory=list)


def prepare_eval_splits(
    dataset,
    train_split: str = "train",
    test_split: str = "test",
    image_column: str | None = None,
    label_column: str | None = None,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
    validation_size: int | None = None,
    split_seed: int = 0,
) -> EvalSplits:
    """Pick the labelled train and test splits of a `DatasetDict`.

    Without a `test_split`, a stratified `holdout_fraction` of the train split (seeded) is the test split, with a
    notice. With `validation_size`, the scored split is instead a fixed, stratified hold-out of that many train images
    (seeded by `split_seed` alone, so every run scores the same images) and the probe trains on the rest: the split on
    which hyperparameters are chosen, leaving the test split for the final figures. Labels that are not a
    `ClassLabel` (ints, strings) are encoded over both splits. `max_*_samples` keep a seeded random subset.
    """
    if isinstance(dataset, datasets.Dataset):
        dataset = datasets.DatasetDict({train_split: dataset})
    if isinstance(dataset, datasets.IterableDatasetDict):
        raise ValueError("Linear evaluation needs the whole dataset: load it without streaming.")
    available = list(dataset)
    if train_split not in dataset:
        raise ValueError(
            f"`train_split` {train_split!r} is not a split of the dataset; available splits: {available}."
        )
    train = dataset[train_split]
    columns = detect_columns(train.features, image_column, label_column, require_label=True, string_labels=True)
    notices = []
    if validation_size is not None:
        if not 0 < validation_size < len(train):
            raise ValueError(
                f"`validation_size` must be between 1 and the train split's size - 1 ({len(train) - 1}), "
                f"got {validation_size}."
            )
        train, _, label_names = _encode_labels(train, None, columns.label)
        train, test, stratified = _holdout(train, columns.label, validation_size, split_seed)
        test_description = (
            f"validation ({validation_size} images held out of {train_split!r}"
            f"{', stratified' if stratified else ''}, split seed {split_seed})"
        )
    elif test_split in dataset:
        test = dataset[test_split]
        detect_columns(test.features, columns.image, columns.label, require_label=True, string_labels=True)
        train, test, label_names = _encode_labels(train, test, columns.label)
        test_description = test_split
    else:
        train, _, label_names = _encode_labels(train, None, columns.label)
        train, test, stratified = _holdout(train, columns.label, holdout_fraction, seed)
        test_description = f"{train_split} (held-out {holdout_fraction:.0%})"
        notices.append(
            f"No {test_split!r} split (splits: {available}): holding out {holdout_fraction:.0%} of {train_split!r} "
            f"({'stratified by label, ' if stratified else ''}seed {seed}) as the test split. "
            "Use `test_split` NAME for another split, `holdout_fraction` to change the fraction."
        )
    columns = DatasetColumns(image=columns.image, label=columns.label, label_names=label_names)
    train = _subset(train, max_train_samples, seed)
    test = _subset(test, max_test_samples, seed)
    return EvalSplits(train, test, columns, label_names, test_description, notices)


def _encode_labels(train, test, column):
    """(train, test, class names); plain int / string labels become a ClassLabel shared by both splits."""
    feature = train.features[column]
    if isinstance(feature, datasets.ClassLabel):
        return train, test, list(feature.names)
    values = set(train.unique(column)) | (set(test.unique(column)) if test is not None else set())
    if None in values:
        raise ValueError(
            f"`label_column` {column!r} has missing labels (None); remove those rows or pick another column."
        )
    values = sorted(values, key=lambda value: (isinstance(value, str), value))
    index = {value: i for i, value in enumerate(values)}
    names = [str(value) for value in values]

    def encode(split):
        if split is None:
            return None
        features = split.features.copy()
        features[column] = datasets.ClassLabel(names=names)
        return split.map(
            lambda labels: {column: [index[v] for v in labels]}, input_columns=column, batched=True, features=features
        )

    return encode(train), encode(test), names


def _holdout(train, column, fraction, seed):
    from sklearn.model_selection import train_test_split

    indices, labels = np.arange(len(train)), np.asarray(train[column])
    try:
        train_idx, test_idx = train_test_split(indices, test_size=fraction, random_state=seed, stratify=labels)
        stratified = True
    except ValueError:  # a class with a single image cannot be stratified
        train_idx, test_idx = train_test_split(indices, test_size=fraction, random_state=seed)
        stratified = False
    return train.select(np.sort(train_idx)), train.select(np.sort(test_idx)), stratified


def _subset(split, max_samples, seed):
    if max_samples is None or max_samples >= len(split):
        return split
    return split.shuffle(seed=seed).select(range(max_samples))


class ProcessorTransform:
    """PIL image -> normalized `pixel_values` (3, H, W) with a transformers image processor (the saved one)."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, image):
        return self.image_processor(image, return_tensors="pt")["pixel_values"][0]


def probe_augmentation(image_processor, image_size: int):
    """Crops for the augmented protocol: random resized crop + flip, normalized like the image processor."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(image_size, scale=crop_scale(image_size), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(image_processor.image_mean), list(image_processor.image_std)),
        ]
    )


def image_dataloader(
    split,
    columns: DatasetColumns,
    transform,
    batch_size: int,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
) -> torch.utils.data.DataLoader:
    """Batches {"pixel_values", "labels", "num_skipped"}; undecodable images are skipped and counted."""
    dataset = apply_example_transform(split, ExampleTransform(columns, {"pixel_values": transform}))
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=TwoViewCollator(),
        generator=generator,
    )


def cached_features(
    encoder,
    dataloader,
    cache_dir: str,
    key: dict,
    accelerator=None,
    overwrite: bool = False,
    progress: str | None = None,
):
    """(features, labels, from_cache): features of a frozen encoder, from `cache_dir` when an extraction with the
    same `key` (encoder fingerprint, preprocessing, dataset, split, ...) is there.

    Files: `cache_dir/<split>-<hash of key>.pt`, loaded with `torch.load(weights_only=True)`. `progress`: the
    description of a progress bar over the extraction's batches (None: none).
    """
    digest = hashlib.sha256(
        json.dumps({**key, "format": CACHE_FORMAT_VERSION}, sort_keys=True, default=str).encode()
    ).hexdigest()
    path = os.path.join(cache_dir, f"{key.get('split', 'features')}-{digest[:16]}.pt")
    if os.path.exists(path) and not overwrite:
        cached = torch.load(path, weights_only=True)
        return cached["features"], cached["labels"], True
    gather = accelerator.gather_for_metrics if accelerator is not None else None
    features, labels = extract_features(encoder, dataloader, gather=gather, progress=progress)
    if accelerator is None or accelerator.is_main_process:
        os.makedirs(cache_dir, exist_ok=True)
        temporary = f"{path}.tmp{os.getpid()}"
        torch.save(
            {"features": features, "labels": labels, "key": json.dumps(key, sort_keys=True, default=str)}, temporary
        )
        os.replace(temporary, path)
    return features, labels, False


# ----------------------------------------------------------------------------------------------------------------
# The probe


class LinearProbe(nn.Module):
    """`linear((features - feature_mean) / feature_std)`; zero-initialized (the problem is convex, so the result
    does not depend on a random init). Without statistics it is a plain linear layer."""

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        feature_mean: torch.Tensor | None = None,
        feature_std: torch.Tensor | None = None,
    ):
        super().__init__()
        mean = torch.zeros(num_features) if feature_mean is None else feature_mean.detach().float().clone()
        std = torch.ones(num_features) if feature_std is None else feature_std.detach().float().clone()
        self.register_buffer("feature_mean", mean)
        self.register_buffer("feature_std", std)
        self.linear = nn.Linear(num_features, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.feature_mean) / self.feature_std)

    @torch.no_grad()
    def folded(self) -> nn.Linear:
        """One `nn.Linear` on raw features with the same logits: W' = W / std, b' = b - W' mean."""
        weight = self.linear.weight.double() / self.feature_std.double()
        bias = self.linear.bias.double() - weight @ self.feature_mean.double()
        linear = nn.Linear(weight.shape[1], weight.shape[0]).to(self.linear.weight.device)
        linear.weight.copy_(weight.float())
        linear.bias.copy_(bias.float())
        return linear


def feature_statistics(features: torch.Tensor, eps: float = 1e-6):
    """Per-dimension mean and std (a constant dimension gets std 1, so it stays constant instead of exploding)."""
    features = features.float()
    std = features.std(dim=0, unbiased=False)
    return features.mean(dim=0), torch.where(std > eps, std, torch.ones_like(std))


def feature_batches(features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int = 0):
    """`batches(epoch)`: shuffled mini-batches of in-memory features, a fixed order per (seed, epoch)."""

    def batches(epoch):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(features), generator=generator).to(features.device)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield features[index], labels[index]

    return batches


def encoded_batches(encoder, dataloader):
    """`batches(epoch)`: features of (augmented) image batches through the frozen encoder (the `augment` protocol)."""
    device = next(encoder.parameters()).device

    def batches(epoch):
        if hasattr(dataloader, "set_epoch"):
            dataloader.set_epoch(epoch)
        for batch in dataloader:
            if len(batch["pixel_values"]) == 0:
                continue
            with torch.no_grad():
                features = encoder(batch["pixel_values"].to(device)).pooler_output.float()
            yield features, batch["labels"].to(device)

    return batches


def make_optimizer(probe: nn.Module, name: str = "sgd", learning_rate: float | None = None, weight_decay: float = 0.0):
    """The probe's optimizer (`build_optimizer`: SGD momentum 0.9, AdamW, ...); without `learning_rate`, the probe's
    default for the optimizer (`PROBE_LEARNING_RATES`)."""
    if learning_rate is None:
        if name not in PROBE_LEARNING_RATES:
            raise ValueError(
                f"`optimizer` {name!r} has no default probe `learning_rate`; pass one, or use one of "
                f"{', '.join(PROBE_LEARNING_RATES)}."
            )
        learning_rate = PROBE_LEARNING_RATES[name]
    return build_optimizer(name, probe, learning_rate, weight_decay)


def fit_linear_probe(
    probe: LinearProbe,
    batches,
    epochs: int,
    steps_per_epoch: int,
    optimizer: str = "sgd",
    learning_rate: float | None = None,
    weight_decay: float = 0.0,
    accelerator=None,
    progress: bool = False,
) -> list[float]:
    """Train `probe` in place with cross-entropy and a cosine schedule (to 0 over all steps); returns the mean
    training loss of each epoch. With `accelerator`, the probe is prepared (DDP over processes: the `augment`
    protocol).
    `progress`: a tqdm bar over the epochs with the last epoch's loss (the caller decides which process shows it)."""
    torch_optimizer = make_optimizer(probe, optimizer, learning_rate, weight_decay)
    # Stepped by hand once per optimizer step (a prepared scheduler would step once per process).
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(torch_optimizer, T_max=max(epochs * steps_per_epoch, 1))
    model, step_optimizer = probe, torch_optimizer
    if accelerator is not None:
        model, step_optimizer = accelerator.prepare(probe, torch_optimizer)
    model.train()
    history = []
    bar = tqdm(total=epochs, desc="linear probe", unit="epoch", disable=not progress)
    for epoch in range(epochs):
        total, count = 0.0, 0
        for features, labels in batches(epoch):
            loss = F.cross_entropy(model(features), labels)
            step_optimizer.zero_grad(set_to_none=True)
            if accelerator is not None:
                accelerator.backward(loss)
            else:
                loss.backward()
            step_optimizer.step()
            scheduler.step()
            total, count = total + loss.item() * len(labels), count + len(labels)
        history.append(total / max(count, 1))
        bar.update(1)
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    bar.close()
    model.eval()
    return history


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    return max(math.ceil(num_examples / batch_size), 1)


def build_classifier(encoder: IECLModel, probe: LinearProbe, label_names: list[str]) -> IECLForImageClassification:
    """`IECLForImageClassification` = the encoder's weights + the probe folded into one linear head, with
    `id2label` / `label2id` from the class names (what `pipeline("image-classification")` shows)."""
    config = copy.deepcopy(encoder.config)
    config.id2label = {i: str(name) for i, name in enumerate(label_names)}
    config.label2id = {str(name): i for i, name in enumerate(label_names)}
    model = IECLForImageClassification(config)
    model.iecl.load_state_dict(encoder.state_dict())
    folded = probe.folded()
    with torch.no_grad():
        model.classifier.weight.copy_(folded.weight)
        model.classifier.bias.copy_(folded.bias)
    return model.eval()


__all__ = [
    "EvalSplits",
    "LinearProbe",
    "ProcessorTransform",
    "build_classifier",
    "cached_features",
    "encoded_batches",
    "encoder_fingerprint",
    "feature_batches",
    "feature_statistics",
    "fit_linear_probe",
    "image_dataloader",
    "load_frozen_encoder",
    "make_optimizer",
    "prepare_eval_splits",
    "probe_augmentation",
    "steps_per_epoch",
]
