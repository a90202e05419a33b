"""SimCLR augmentations: one spec of the view distribution, executed per image by torchvision (loader workers) or
batched on the device (`batched_augmentation.py`). Output: float in [0, 1]."""

from dataclasses import dataclass

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


@dataclass(frozen=True)
class SimCLRViewSpec:
    """SimCLR's view distribution, in one place: the per-image torchvision path (`SimCLRAugmentation`) and the
    batched on-device path (`BatchedSimCLRAugmentation`) both read it, so they cannot drift apart.

    In order: a random resized crop (area fraction in `crop_scale`, aspect ratio in `crop_ratio`, log-uniform), a
    horizontal flip, with `jitter_p` a colour jitter (brightness, contrast, saturation factors uniform in
    1 +- strength, hue shift uniform in +-`hue`, the four in a random order per image), greyscale, Gaussian blur
    (`blur_kernel` px, sigma uniform in `blur_sigma`), solarize (pixels >= `solarize_threshold` inverted).
    """

    image_size: int
    crop_scale: tuple[float, float]
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_kernel: int | None = None
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5

    @classmethod
    def simclr(cls, image_size: int, jitter_strength: float = 0.5) -> "SimCLRViewSpec":
        """SimCLR's recipe at `image_size` (its CIFAR variant below 96 px: crop scale from 0.2, no blur)."""
        s, kernel = jitter_strength, blur_kernel(image_size)
        return cls(image_size, crop_scale(image_size), brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s,
                   hue=0.2 * s, blur_p=0.5 if kernel else 0.0, blur_kernel=kernel)  # fmt: skip


def torchvision_transform(spec: SimCLRViewSpec) -> v2.Compose:
    """The spec as a per-image torchvision v2 transform: PIL image or uint8 tensor -> float in [0, 1]."""
    steps = [
        v2.ToImage(),
        v2.RandomResizedCrop(spec.image_size, scale=spec.crop_scale, ratio=spec.crop_ratio, antialias=True),
        v2.RandomHorizontalFlip(spec.flip_p),
        v2.RandomApply([v2.ColorJitter(spec.brightness, spec.contrast, spec.saturation, spec.hue)], p=spec.jitter_p),
        v2.RandomGrayscale(p=spec.grayscale_p),
    ]
    if spec.blur_p > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(spec.blur_kernel, sigma=spec.blur_sigma)], p=spec.blur_p))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if spec.solarize_p > 0:
        steps.append(v2.RandomSolarize(spec.solarize_threshold, p=spec.solarize_p))
    return v2.Compose(steps)


class SimCLRAugmentation:
    """SimCLR views one image at a time in the loader workers (torchvision v2), from `SimCLRViewSpec.simclr`."""

    def __init__(self, image_size: int = 32, jitter_strength: float = 0.5, spec: SimCLRViewSpec | None = None):
        self.spec = spec or SimCLRViewSpec.simclr(image_size, jitter_strength)
        self.transform = torchvision_transform(self.spec)

    def __call__(self, image):
        return self.transform(image)

    def __repr__(self):
        return f"SimCLRAugmentation({self.spec})"


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


def load_size_for(image_size: int) -> int:
    """Side of the square the loader hands each decoded image to the batched augmentation in (crops are taken from
    it): the evaluation resize (`resize_size_for`)."""
    return resize_size_for(image_size)


class Letterbox:
    """Decoded PIL image -> uint8 (3, L, L): the whole image resized so its long side is L (aspect ratio kept, the
    short side at least 1 px; a square image is simply resized to L x L), at the top left of an L x L canvas padded
    with zeros. `size(image)` is the (height, width) it takes there: the batched crops are drawn inside it, so they
    cover the whole image, as torchvision's per-image crops do, and never the padding."""

    def __init__(self, load_size: int):
        self.load_size = load_size

    def size(self, image) -> torch.Tensor:
        """(height, width) of the resized image: torchvision's `Resize(size=None, max_size=L)` arithmetic, with a
        1 px floor on the short side (an image thinner than 1/L would otherwise get a zero size)."""
        height, width = v2.functional.get_size(image)
        long = max(height, width)
        return torch.tensor([max(1, int(self.load_size * height / long)), max(1, int(self.load_size * width / long))])

    def __call__(self, image) -> torch.Tensor:
        image = v2.functional.to_image(image)
        height, width = self.size(image).tolist()
        resized = v2.functional.resize(image, [height, width], antialias=True)
        return torch.nn.functional.pad(resized, (0, self.load_size - width, 0, self.load_size - height))
