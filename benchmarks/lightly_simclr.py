#!/usr/bin/env python
"""lightly's SimCLR (NTXentLoss, SimCLRProjectionHead, SimCLRTransform) in the loop style of lightly's examples,
with the same backbone, optimizer, schedule and budget as recipes/pretrain.py, saved as an IE-CL encoder checkpoint
so recipes/linear_eval.py evaluates it with the same protocol. Run by `benchmarks/quality.py --variants
lightly_simclr`; needs `.[bench]`.
"""

import argparse
import json
import math
import os
import sys

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from iecl_hf import IECLConfig, IECLModel, build_image_processor  # noqa: E402
from iecl_hf.data import decode_image, detect_columns, load_image_dataset  # noqa: E402
from iecl_hf.data.augmentations import blur_kernel, crop_scale  # noqa: E402
from iecl_hf.optimization import (  # noqa: E402
    build_optimizer,
    build_scheduler,
    default_warmup_steps,
    pretraining_learning_rate,
)
from iecl_hf.presets import PRESETS  # noqa: E402
from iecl_hf.provenance import provenance  # noqa: E402


def lightly_view_kwargs(image_size: int, normalize: dict | None = None) -> dict:
    """lightly's SimCLR view parameters set to our recipe's (`SimCLRViewSpec.simclr`): its crop scale, jitter
    strength 0.5, blur only where ours has one; `normalize` ({"mean", "std"}) or None for views in [0, 1]."""
    return {
        "input_size": image_size,
        "cj_strength": 0.5,
        "min_scale": crop_scale(image_size)[0],
        "gaussian_blur": 0.0 if blur_kernel(image_size) is None else 0.5,
        "normalize": normalize,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset_name", default=None)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per_device_train_batch_size", type=int, default=64)
    parser.add_argument("--num_train_epochs", type=int, default=10)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--dataloader_num_workers", type=int, default=1)
    parser.add_argument("--max_train_samples", type=int, default=None)
    args = parser.parse_args()

    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # The plain-SimCLR config (no SAIB, no entropy/KL terms, no spectral penalty): only its encoder is saved.
    config = IECLConfig(
        **PRESETS[args.preset],
        generator_architecture="none",
        encoder_spectral_norm=False,
        lambda_entropy=0.0,
        beta_kl=0.0,
    )
    split = load_image_dataset(args.dataset_name)["train"]
    if args.max_train_samples:
        split = split.select(range(min(args.max_train_samples, len(split))))
    columns = detect_columns(split.features)
    transform = SimCLRTransform(
        **lightly_view_kwargs(config.image_size, {"mean": config.image_mean, "std": config.image_std})
    )

    class Views(torch.utils.data.Dataset):
        def __len__(self):
            return len(split)

        def __getitem__(self, index):
            return transform(decode_image(split[index][columns.image])), 0

    loader = DataLoader(
        Views(),
        batch_size=args.per_device_train_batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.dataloader_num_workers,
        persistent_workers=args.dataloader_num_workers > 0,
    )
    encoder = IECLModel(config).to(device)
    head = SimCLRProjectionHead(encoder.num_features, config.projection_hidden_dim, config.projection_dim).to(device)
    criterion = NTXentLoss(temperature=config.tau)
    lr = pretraining_learning_rate("sgd", args.per_device_train_batch_size)  # the recipe's rule, one process
    optimizer = build_optimizer("sgd", torch.nn.ModuleList([encoder, head]), lr, 5e-4)
    steps = args.num_train_epochs * len(loader)
    scheduler = build_scheduler("cosine", optimizer, default_warmup_steps(steps), steps)
    encoder.train()
    for epoch in range(args.num_train_epochs):
        epoch_losses = []
        for batch, _ in loader:
            x0, x1 = batch[0].to(device), batch[1].to(device)
            z0, z1 = head(encoder(x0).pooler_output), head(encoder(x1).pooler_output)
            loss = criterion(z0, z1)
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"non-finite loss at epoch {epoch}")
            epoch_losses.append(loss.item())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}", flush=True)
    encoder.save_pretrained(args.output_dir)
    build_image_processor(config).save_pretrained(args.output_dir)
    # Written last, as the recipe does: quality.py takes it as the sign of a finished run.
    with open(os.path.join(args.output_dir, "train_results.json"), "w") as handle:
        json.dump(
            {
                "base_loss": sum(epoch_losses) / len(epoch_losses),
                "epochs": args.num_train_epochs,
                "args": vars(args),
                "provenance": provenance(),
            },
            handle,
            default=str,
        )


if __name__ == "__main__":
    main()
