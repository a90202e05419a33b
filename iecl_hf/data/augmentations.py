"""SimCLR augmentations, resolution-aware, on CPU workers (torchvision transforms v2). Output: float in [0, 1]."""

import torch
from torchvision.transforms import v2

from ..image_processing import resize_size_for

SMALL_IMAGE_SIZE = 96  # below: CIFAR-style recipe (crop scale from 0.2, no blur); from here up: ImageNet-style


def crop_scale(image_size: int) -> tuple[float, float]:
    """Area range of SimCLR's random resized crop: (0.2, 1) below 96 px (the CIFAR convention), else (0.08, 1)."""
    return (0.2, 1.0) if image_size < SMALL_IMAGE_SIZE else (0.08, 1.0)


def blur_kernel(image_size: int) -> int | None:
    """Odd Gaussian-blur kernel of about 10% of the image side; None below 96 px, where blur removes the whole image
    rather than detail."""
    return None if image_size < SMALL_IMAGE_SIZE else int(0.1 * image_size) // 2 * 2 + 1


class SimCLRAugmentation:
    """Random resized crop, flip, colour jitter (p=0.8), greyscale (p=0.2), blur (only from 96 px up, where it
    removes detail rather than the whole image), as in SimCLR and its CIFAR/STL variants.

    Crop scale and blur by image size: `crop_scale`, `blur_kernel`.
    """

    def __init__(self, image_size: int = 32, jitter_strength: float = 0.5):
        s, kernel = jitter_strength, blur_kernel(image_size)
        steps = [
            v2.ToImage(),
            v2.RandomResizedCrop(image_size, scale=crop_scale(image_size), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]
        if kernel:
            steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5))
        steps.append(v2.ToDtype(torch.float32, scale=True))
        self.transform = v2.Compose(steps)
        self.image_size = image_size

    def __call__(self, image):
        return self.transform(image)

    def __repr__(self):
        return f"SimCLRAugmentation(image_size={self.image_size}, {self.transform!r})"


def eval_transform(image_size: int):
    """Deterministic resize (+ centre crop from 96 px up) to a [0, 1] tensor, matching the saved image processor."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(
                resize_size_for(image_size), interpolation=v2.InterpolationMode.BICUBIC, antialias=True
            ),  # as the image processor
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


class BatchedSimCLRAugmentation(torch.nn.Module):
    """The same SimCLR recipe as `SimCLRAugmentation`, applied to a whole uint8 batch on its device (kornia).

    Measured on this project's 2-core CPU machine (32 px): about 7,000 images/s batched against about 700 for
    per-image torchvision v2 in a worker, which would make the input pipeline the bottleneck. On a GPU the
    augmentation costs a few kernels per step. Input: uint8 or float (B, 3, S, S); output: float in [0, 1].
    """

    def __init__(self, image_size: int = 32, jitter_strength: float = 0.5):
        super().__init__()
        import kornia.augmentation as K

        s, kernel = jitter_strength, blur_kernel(image_size)
        steps = [
            K.RandomResizedCrop((image_size, image_size), scale=crop_scale(image_size)),
            K.RandomHorizontalFlip(),
            K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=0.8),
            K.RandomGrayscale(p=0.2),
        ]
        if kernel:
            steps.append(K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=0.5))
        self.augment = torch.nn.Sequential(*steps)
        self.image_size = image_size

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        return self.augment(images).clamp_(0, 1)


def load_size_for(image_size: int) -> int:
    """Side of the decoded images the loader hands to the batched augmentation (crops are taken from it): the
    evaluation resize (`resize_size_for`)."""
    return resize_size_for(image_size)


def uint8_transform(load_size: int):
    """Decoded PIL image -> uint8 (3, load_size, load_size): resize the short side, centre crop."""
    return v2.Compose([v2.ToImage(), v2.Resize(load_size, antialias=True), v2.CenterCrop(load_size)])
