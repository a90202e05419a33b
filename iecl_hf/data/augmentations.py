"""SimCLR augmentations, resolution-aware, on CPU workers (torchvision transforms v2). Output: float in [0, 1]."""

import torch
from torchvision.transforms import v2


class SimCLRAugmentation:
    """Random resized crop, flip, colour jitter (p=0.8), greyscale (p=0.2), blur (only from 96 px up, where it
    removes detail rather than the whole image), as in SimCLR and its CIFAR/STL variants.

    Crop scale: (0.2, 1.0) below 96 px (the CIFAR convention), (0.08, 1.0) from 96 px up.
    """

    def __init__(self, image_size: int = 32, jitter_strength: float = 0.5):
        s = jitter_strength
        small = image_size < 96
        steps = [
            v2.ToImage(),
            v2.RandomResizedCrop(image_size, scale=(0.2, 1.0) if small else (0.08, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
            v2.RandomGrayscale(p=0.2),
        ]
        if not small:
            kernel = int(0.1 * image_size) // 2 * 2 + 1
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
    resize = image_size if image_size <= 64 else int(round(image_size / 0.875))
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),  # as the image processor
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

        s = jitter_strength
        small = image_size < 96
        steps = [
            K.RandomResizedCrop((image_size, image_size), scale=(0.2, 1.0) if small else (0.08, 1.0)),
            K.RandomHorizontalFlip(),
            K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=0.8),
            K.RandomGrayscale(p=0.2),
        ]
        if not small:
            kernel = int(0.1 * image_size) // 2 * 2 + 1
            steps.append(K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=0.5))
        self.augment = torch.nn.Sequential(*steps)
        self.image_size = image_size

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        return self.augment(images).clamp_(0, 1)


def load_size_for(image_size: int) -> int:
    """Side of the decoded images the loader hands to the batched augmentation (crops are taken from it)."""
    return image_size if image_size <= 64 else int(round(image_size / 0.875))


def uint8_transform(load_size: int):
    """Decoded PIL image -> uint8 (3, load_size, load_size): resize the short side, centre crop."""
    return v2.Compose([v2.ToImage(), v2.Resize(load_size, antialias=True), v2.CenterCrop(load_size)])
