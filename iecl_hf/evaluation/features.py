"""Pooled features of a frozen encoder over a dataloader."""

import torch


@torch.no_grad()
def extract_features(encoder, dataloader, device=None, normalize=None, gather=None, progress: str | None = None):
    """Return (features, labels) for every batch of `dataloader` (dicts with "pixel_values" in [0, 1], "labels").

    `encoder` is an `IECLModel` (or anything returning `.pooler_output`); `normalize` maps [0, 1] images to the
    encoder's input; `gather` (e.g. `accelerator.gather_for_metrics`) collects the shards of several processes.
    `progress`: the description of a tqdm bar over the batches (None: no bar; the caller decides which process shows
    one). The encoder's train/eval mode is restored afterwards (BatchNorm statistics are not touched: eval mode).
    """
    was_training = encoder.training
    encoder.eval()
    device = device or next(encoder.parameters()).device
    features, labels = [], []
    if progress is not None:
        from tqdm.auto import tqdm

        dataloader = tqdm(dataloader, desc=progress, unit="batch")
    for batch in dataloader:
        images = batch["pixel_values"].to(device, non_blocking=True)
        if normalize is not None:
            images = normalize(images)
        pooled = encoder(images).pooler_output.float()
        batch_labels = (
            batch["labels"].to(device) if "labels" in batch else torch.full((len(images),), -1, device=device)
        )
        if gather is not None:
            pooled, batch_labels = gather(pooled), gather(batch_labels)
        features.append(pooled.cpu())
        labels.append(batch_labels.cpu())
    encoder.train(was_training)
    return torch.cat(features), torch.cat(labels)
