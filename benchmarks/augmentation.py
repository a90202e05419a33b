#!/usr/bin/env python
"""Images/s of the SimCLR view pipelines alone: per-image torchvision, our batched implementation (on the 8-bit grid,
with the colour jitter's other execution, and in exact float arithmetic as before 2026-11-29), and kornia's batched
augmentation (the one it replaced; skipped when kornia is not installed).

    python benchmarks/augmentation.py                                  # CPU, 32 px, batches 64 and 256
    python benchmarks/augmentation.py --image_size 96 --device cuda

All make one view per source image from uint8 input of the loader's size (the image size below 96 px, else
size / 0.875), with the distribution of `SimCLRViewSpec.simclr(image_size)`. Interleaved repeats, median reported.
"""

import argparse
import statistics
import time

import torch

from iecl_hf.data import BatchedSimCLRAugmentation, SimCLRViewSpec, load_size_for
from iecl_hf.data.augmentations import torchvision_transform
from iecl_hf.data.batched_augmentation import masked_jitter_by_default


def kornia_augmentation(spec: SimCLRViewSpec):
    try:
        import kornia.augmentation as K
    except ImportError:
        return None
    steps = [
        K.RandomResizedCrop((spec.image_size, spec.image_size), scale=spec.crop_scale, ratio=spec.crop_ratio),
        K.RandomHorizontalFlip(p=spec.flip_p),
        K.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue, p=spec.jitter_p),
        K.RandomGrayscale(p=spec.grayscale_p),
    ]
    if spec.blur_p:
        kernel = spec.blur_kernel
        steps.append(K.RandomGaussianBlur((kernel, kernel), spec.blur_sigma, p=spec.blur_p))
    sequence = torch.nn.Sequential(*steps)
    return lambda images: sequence(images.float() / 255).clamp_(0, 1)


def images_per_second(function, images, seconds, device):
    function(images)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        function(images)
        count += len(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per variant and repeat")
    args = parser.parse_args()
    device = torch.device(args.device)
    spec = SimCLRViewSpec.simclr(args.image_size)
    load = load_size_for(args.image_size)
    ours = BatchedSimCLRAugmentation(spec=spec).to(device)
    masked = masked_jitter_by_default(device)  # the colour jitter's default execution here; the other is timed too
    other = BatchedSimCLRAugmentation(spec=spec, masked_jitter=not masked).to(device)
    per_image = torchvision_transform(spec)
    variants = {
        "batched (ours)": ours,  # uint8 in: each operation stored in 8 bits, as torchvision
        f"batched, {'indexed' if masked else 'masked'} jitter": other,  # the same views, the other execution
        "batched, exact float": lambda images: ours(images.float() / 255),  # before 2026-11-29
        "kornia": kornia_augmentation(spec),
        "torchvision per image": lambda images: torch.stack([per_image(image) for image in images.cpu()]),
    }
    variants = {name: fn for name, fn in variants.items() if fn is not None}
    print(f"{args.image_size} px views from {load} px uint8, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    for batch_size in args.batch_sizes:
        images = torch.randint(0, 256, (batch_size, 3, load, load), dtype=torch.uint8, device=device)
        rates = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, function in variants.items():
                rates[name].append(images_per_second(function, images, args.seconds, device))
        for name, values in rates.items():
            print(f"batch {batch_size:4d}  {name:24s} {statistics.median(values):10.0f} images/s")


if __name__ == "__main__":
    main()
