#!/usr/bin/env python
"""The same SimCLR view parameters executed four ways, compared pixel by pixel on real images (issue 11):

- PIL: torchvision's functional operations on PIL images, the arithmetic of lightly's `SimCLRTransform`;
- torchvision v2 on uint8 tensors: our per-image path (`--augmentation workers`);
- ours, batched on a uint8 batch (the recipe's default path: each result stored on the 8-bit grid);
- ours, batched in exact float (the default until 2026-11-29).

    python benchmarks/view_pixels.py --dataset_name ../shared/data/cifar10-small --num_images 2000

Prints, per execution, the difference to the PIL views in levels of 255 (mean, mean absolute, share of pixels more
than one level away) and the views' mean brightness and saturation. A gap between two SimCLR implementations that
the pixels cannot explain is in the loop, or is noise.
"""

import argparse
import os
import sys

import torch
import torchvision.transforms.functional as pil_ops
import torchvision.transforms.v2.functional as tensor_ops

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from iecl_hf.data import decode_image, detect_columns, load_image_dataset  # noqa: E402
from iecl_hf.data.augmentations import SimCLRViewSpec  # noqa: E402
from iecl_hf.data.batched_augmentation import (  # noqa: E402
    BRIGHTNESS,
    CONTRAST,
    HUE,
    SATURATION,
    apply_view_params,
    sample_view_params,
)

OPERATIONS = {
    "PIL": {BRIGHTNESS: pil_ops.adjust_brightness, CONTRAST: pil_ops.adjust_contrast,
            SATURATION: pil_ops.adjust_saturation, HUE: pil_ops.adjust_hue},
    "tensor": {BRIGHTNESS: tensor_ops.adjust_brightness, CONTRAST: tensor_ops.adjust_contrast,
               SATURATION: tensor_ops.adjust_saturation, HUE: tensor_ops.adjust_hue},
}  # fmt: skip


def per_image_view(image, params, index, spec, kind):
    """One view of a PIL image (`kind` "PIL") or of its uint8 tensor ("tensor"), as a uint8 (3, S, S) tensor."""
    left, top, w, h = (int(v) for v in params.boxes[index].tolist())
    size = [spec.image_size, spec.image_size]
    view = image if kind == "PIL" else tensor_ops.pil_to_tensor(image)
    if kind == "PIL":  # lightly: torchvision's RandomResizedCrop on PIL (bilinear)
        view = pil_ops.resized_crop(view, top, left, h, w, size, pil_ops.InterpolationMode.BILINEAR)
    else:  # our torchvision_transform: v2 on uint8, antialias=True
        view = tensor_ops.resized_crop(view, top, left, h, w, size, antialias=True)
    if params.flip[index]:
        view = pil_ops.hflip(view) if kind == "PIL" else tensor_ops.horizontal_flip(view)
    if params.jitter[index]:
        for operation in params.order[index].tolist():
            view = OPERATIONS[kind][operation](view, params.factors[index, operation].item())
    if params.grayscale[index]:
        view = pil_ops.rgb_to_grayscale(view, 3) if kind == "PIL" else tensor_ops.rgb_to_grayscale(view, 3)
    return tensor_ops.pil_to_tensor(view) if kind == "PIL" else view


def saturation(levels):
    """Mean HSV saturation of (N, 3, S, S) views in levels of 255."""
    top, bottom = levels.amax(1), levels.amin(1)
    return ((top - bottom) / top.clamp_min(1e-6)).mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_name", default="../shared/data/cifar10-small")
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--image_size", type=int, default=32, help="the images are used at their size (CIFAR: 32)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    split = load_image_dataset(args.dataset_name)["train"]
    split = split.select(range(min(args.num_images, len(split))))
    column = detect_columns(split.features).image
    images = [decode_image(example[column]).convert("RGB") for example in split]
    images = [image for image in images if image.size == (args.image_size, args.image_size)]
    spec = SimCLRViewSpec.simclr(args.image_size)
    batch = torch.stack([tensor_ops.pil_to_tensor(image) for image in images])
    params = sample_view_params(spec, len(images), args.image_size, args.image_size,
                                generator=torch.Generator().manual_seed(args.seed))  # fmt: skip

    views = {kind: torch.stack([per_image_view(im, params, i, spec, kind) for i, im in enumerate(images)]).float()
             for kind in ("PIL", "tensor")}  # fmt: skip
    views["batched, 8-bit grid"] = apply_view_params(batch.float() / 255, params, spec, uint8=True) * 255
    views["batched, exact float"] = apply_view_params(batch.float() / 255, params, spec) * 255

    print(f"{len(images)} images of {args.dataset_name}, {args.image_size} px, one view each, the same parameters")
    print("| execution | minus PIL: mean (levels) | mean abs. | > 1 level | mean brightness | mean saturation |")
    print("|---|---|---|---|---|---|")
    for kind, levels in views.items():
        difference = levels - views["PIL"]
        print(
            f"| {kind} | {difference.mean():+.3f} | {difference.abs().mean():.3f} | "
            f"{100 * (difference.abs() > 1 + 1e-3).float().mean():.1f}% | {levels.mean():.2f} | "
            f"{saturation(levels):.4f} |"
        )


if __name__ == "__main__":
    main()
