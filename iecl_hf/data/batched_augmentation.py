"""SimCLR views of a whole batch on its device, with per-image random parameters and a few kernels per step.

The parameters of every image are drawn in a few tensor ops (`sample_view_params`) with the algorithms of
torchvision's transforms (crop: up to 10 tries of area and log-ratio, then a centre crop; jitter: factors uniform in
their ranges, the four in a random order per image), then applied to the batch at once (`apply_view_params`): the
crops in one `grid_sample` call (bilinear: `resized_crop` without antialiasing, exactly), flips, greyscale and
solarize as masked selects, the jitter as batched blends and an RGB <-> HSV round trip (each operation once per
image), the blur as one grouped convolution.
`tests/test_augmentation_distribution.py` checks both against torchvision's transform built from the same
`SimCLRViewSpec`.

A uint8 batch is kept on the 8-bit grid after every operation, as torchvision's uint8 kernels keep it (the crop and
the blur round, the jitter and greyscale truncate, the hue round trip bins): the same pixels as the per-image path on
the same parameters, within about one level. A float batch keeps exact values.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .augmentations import SimCLRViewSpec

CROP_TRIES = 10  # as torchvision's RandomResizedCrop
GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # columns of ViewParams.factors, ids in ViewParams.order


@dataclass
class ViewParams:
    """Per-image parameters of one batch of views (B images)."""

    boxes: torch.Tensor  # (B, 4) float: left, top, width, height of the crop, in pixels of the input
    flip: torch.Tensor  # (B,) bool
    jitter: torch.Tensor  # (B,) bool: colour jitter applied
    factors: torch.Tensor  # (B, 4): brightness, contrast, saturation factors and hue shift
    order: torch.Tensor  # (B, 4) long: a permutation of the four jitter operations per image
    grayscale: torch.Tensor  # (B,) bool
    blur: torch.Tensor  # (B,) bool
    sigma: torch.Tensor  # (B,) float
    solarize: torch.Tensor  # (B,) bool


def _uniform(low, high, shape, device, generator):
    return low + (high - low) * torch.rand(shape, device=device, generator=generator)


def sample_crop_boxes(
    spec: SimCLRViewSpec, batch: int, height: int, width: int, device=None, generator=None, image_sizes=None
):
    """(B, 4) boxes (left, top, width, height): torchvision's RandomResizedCrop sampling, vectorized. Each image tries
    `CROP_TRIES` (area, log aspect ratio) draws and keeps the first that fits; none fitting gives a centre crop at
    the nearest allowed ratio. `image_sizes` (B, 2): each image's own (height, width) at the top left of the
    `height` x `width` array (letterboxed images, `Letterbox`); None: every image fills the array."""
    if image_sizes is None:
        heights = torch.full((batch,), float(height), device=device)
        widths = torch.full((batch,), float(width), device=device)
    else:
        heights, widths = image_sizes.to(device=device, dtype=torch.float32).unbind(dim=1)
    target_area = (heights * widths)[:, None] * _uniform(*spec.crop_scale, (batch, CROP_TRIES), device, generator)
    log_ratio = _uniform(
        math.log(spec.crop_ratio[0]), math.log(spec.crop_ratio[1]), (batch, CROP_TRIES), device, generator
    )
    ratio = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(target_area * ratio))
    h = torch.round(torch.sqrt(target_area / ratio))
    fits = (w > 0) & (w <= widths[:, None]) & (h > 0) & (h <= heights[:, None])
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first try that fits (0 when none does)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)

    # No try fits: the whole image, cut to the ratio range.
    min_ratio, max_ratio = min(spec.crop_ratio), max(spec.crop_ratio)
    in_ratio = widths / heights
    fallback_w = torch.where(in_ratio > max_ratio, torch.round(heights * max_ratio), widths)
    fallback_h = torch.where(in_ratio < min_ratio, torch.round(widths / min_ratio), heights)
    any_fit = fits.any(dim=1)
    w = torch.where(any_fit, w, fallback_w)
    h = torch.where(any_fit, h, fallback_h)
    # Position: uniform over the valid offsets (torch.randint(0, H - h + 1) per image); centred in the fallback.
    top = torch.floor(torch.rand(batch, device=device, generator=generator) * (heights - h + 1))
    left = torch.floor(torch.rand(batch, device=device, generator=generator) * (widths - w + 1))
    top = torch.where(any_fit, top, (heights - h) // 2)
    left = torch.where(any_fit, left, (widths - w) // 2)
    return torch.stack([left, top, w, h], dim=1)


def sample_view_params(
    spec: SimCLRViewSpec, batch: int, height: int, width: int, device=None, generator=None, image_sizes=None
):
    """Every random choice of one batch of views, in a few tensor ops (from `generator`, else the device's RNG).
    `image_sizes`: as in `sample_crop_boxes`."""

    def bernoulli(p):
        return torch.rand(batch, device=device, generator=generator) < p

    def around_one(strength):
        return _uniform(max(0.0, 1 - strength), 1 + strength, batch, device, generator)

    boxes = sample_crop_boxes(spec, batch, height, width, device, generator, image_sizes)
    flip = bernoulli(spec.flip_p)
    jitter = bernoulli(spec.jitter_p)
    factors = torch.stack([around_one(spec.brightness), around_one(spec.contrast), around_one(spec.saturation),
                           _uniform(-spec.hue, spec.hue, batch, device, generator)], dim=1)  # fmt: skip
    order = torch.rand(batch, 4, device=device, generator=generator).argsort(dim=1)  # a uniform random permutation
    grayscale = bernoulli(spec.grayscale_p)
    blur = bernoulli(spec.blur_p)
    sigma = _uniform(*spec.blur_sigma, batch, device, generator)
    solarize = bernoulli(spec.solarize_p)
    return ViewParams(boxes, flip, jitter, factors, order, grayscale, blur, sigma, solarize)


# ---------------------------------------------------------------------------------------------- the operations


def _per_image(mask: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, 1, 1, 1)


# How an operation's float result is stored, as torchvision's kernels store it for uint8 images (values in [0, 1]
# here; k / 255 is level k). `_stored` applies one of them on the 8-bit grid and keeps the exact result otherwise.
def truncated(images: torch.Tensor) -> torch.Tensor:
    """`.to(uint8)` of a non-negative result (blends, greyscale). The small offset absorbs float error on the
    [0, 1] scale: a result within 1e-3 level under a whole level is that level."""
    return torch.floor(images * 255 + 1e-3) / 255


def rounded(images: torch.Tensor) -> torch.Tensor:
    """`.round_().to(uint8)` (resize, blur)."""
    return torch.round(images * 255) / 255


def binned(images: torch.Tensor) -> torch.Tensor:
    """`to_dtype(float -> uint8, scale=True)`: `x * (255 + 1 - 1e-3)`, truncated (the hue round trip)."""
    return torch.floor(images * (256 - 1e-3)) / 255


def _stored(images: torch.Tensor, storage, uint8: bool) -> torch.Tensor:
    return storage(images) if uint8 else images


def grey(images: torch.Tensor, uint8: bool = False) -> torch.Tensor:
    """(B, 1, H, W) luma of RGB images (truncated to a level with `uint8`, as torchvision's uint8 greyscale)."""
    r, g, b = images.unbind(dim=1)
    luma = (GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b).unsqueeze(1)
    return _stored(luma, truncated, uint8)


def _blend(images, other, factor, uint8):
    """factor * images + (1 - factor) * other, clamped to [0, 1] (torchvision's blend; truncated with `uint8`)."""
    factor = factor.view(-1, 1, 1, 1)
    return _stored((factor * images + (1 - factor) * other).clamp(0, 1), truncated, uint8)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV, all three in [0, 1] (hue as a fraction of the turn)."""
    r, g, b = images.unbind(dim=1)
    # Elementwise over the three channels: the same values as max/min over dim 1, about 10x faster on a CPU.
    value = torch.maximum(torch.maximum(r, g), b)
    spread = value - torch.minimum(torch.minimum(r, g), b)
    safe_spread = torch.where(spread > 0, spread, torch.ones_like(spread))
    saturation = torch.where(value > 0, spread / torch.where(value > 0, value, torch.ones_like(value)), 0.0)
    # The sector of the largest channel (red first, then green, on ties), as a position on the hue circle in 0..6.
    hue = torch.where(
        value == r,
        (g - b) / safe_spread,
        torch.where(value == g, (b - r) / safe_spread + 2, (r - g) / safe_spread + 4),
    )
    hue = torch.where(spread > 0, (hue / 6).remainder(1.0), 0.0)
    return torch.stack([hue, saturation, value], dim=1)


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = images.unbind(dim=1)
    sector = torch.floor(hue * 6)
    fraction = hue * 6 - sector
    sector = sector.long().remainder(6).unsqueeze(1)
    p = value * (1 - saturation)
    q = value * (1 - saturation * fraction)
    t = value * (1 - saturation * (1 - fraction))
    # Per sector 0..5, (r, g, b) = (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q).
    r = torch.stack([value, q, p, p, t, value], dim=1).gather(1, sector)
    g = torch.stack([t, value, value, q, p, p], dim=1).gather(1, sector)
    b = torch.stack([p, p, t, value, value, q], dim=1).gather(1, sector)
    return torch.cat([r, g, b], dim=1)


def shift_hue(images: torch.Tensor, shift: torch.Tensor, uint8: bool = False) -> torch.Tensor:
    hsv = rgb_to_hsv(images)
    hue = (hsv[:, 0] + shift.view(-1, 1, 1)).remainder(1.0)
    return _stored(hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1)), binned, uint8)


def brightness(images, factor, uint8=False):
    return _blend(images, torch.zeros_like(images), factor, uint8)


def contrast(images, factor, uint8=False):
    return _blend(images, grey(images, uint8).mean(dim=(1, 2, 3), keepdim=True), factor, uint8)


def saturation(images, factor, uint8=False):
    return _blend(images, grey(images, uint8), factor, uint8)


JITTER_OPERATIONS = {BRIGHTNESS: brightness, CONTRAST: contrast, SATURATION: saturation, HUE: shift_hue}


def masked_jitter_by_default(device: torch.device) -> bool:
    """The colour jitter's default execution on `device` (`colour_jitter`): masked off the CPU."""
    return device.type != "cpu"


def colour_jitter(
    images: torch.Tensor,
    factors: torch.Tensor,
    order: torch.Tensor,
    apply: torch.Tensor,
    uint8: bool = False,
    masked: bool | None = None,
) -> torch.Tensor:
    """The four jitter operations on the images where `apply` holds, each image in its own order: at each of the 4
    positions, each operation acts on the images whose order names it there.

    Two executions, the same views. Indexed (the CPU's): each operation runs on just the chosen images, so every
    image gets each operation once; but finding them (`nonzero`) makes the host wait for the device, 16 times a
    batch. Masked (`masked=True`, the default off the CPU): each operation runs on the whole batch and the result is
    kept where chosen, with no wait and static shapes; it does 4x the arithmetic (the hue round trip dominates on a
    CPU), which a GPU has to spare for small images."""
    if masked is None:
        masked = masked_jitter_by_default(images.device)
    images = images.clone()
    for position in range(4):
        for operation_id, operation in JITTER_OPERATIONS.items():
            chosen = apply & (order[:, position] == operation_id)
            if masked:
                images = torch.where(_per_image(chosen), operation(images, factors[:, operation_id], uint8), images)
                continue
            chosen = chosen.nonzero().squeeze(1)
            if len(chosen):
                images[chosen] = operation(images[chosen], factors[chosen, operation_id], uint8)
    return images


def gaussian_blur(images: torch.Tensor, kernel_size: int, sigma: torch.Tensor) -> torch.Tensor:
    """A separable Gaussian blur with one sigma per image (reflect padding): one grouped convolution per axis."""
    batch, channels, height, width = images.shape
    offsets = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - (kernel_size - 1) / 2
    kernels = torch.exp(-0.5 * (offsets / sigma.view(-1, 1).to(images.dtype)) ** 2)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # (B*C, k)
    flat = images.reshape(1, batch * channels, height, width)
    pad = kernel_size // 2
    flat = F.conv2d(
        F.pad(flat, (pad, pad, 0, 0), mode="reflect"), kernels.view(-1, 1, 1, kernel_size), groups=batch * channels
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, pad, pad), mode="reflect"), kernels.view(-1, 1, kernel_size, 1), groups=batch * channels
    )
    return flat.view(batch, channels, height, width)


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its box and resize it to `size` x `size`, bilinear: exactly `resized_crop` without
    antialiasing (the crop, then `interpolate(align_corners=False)`), for the whole batch in one `grid_sample`.
    The sample positions are clamped to the box, as interpolating the cut-out crop clamps them to its edges."""
    _, _, height, width = images.shape
    left, top, w, h = boxes.to(images.dtype).unbind(dim=1)
    steps = torch.arange(size, device=images.device, dtype=images.dtype) + 0.5  # output pixel centres
    xs = left[:, None] + ((steps[None] * w[:, None] / size) - 0.5).clamp(min=0).minimum(w[:, None] - 1)
    ys = top[:, None] + ((steps[None] * h[:, None] / size) - 0.5).clamp(min=0).minimum(h[:, None] - 1)
    grid = torch.stack(  # (B, size, size, 2) of (x, y) in [-1, 1], pixel centres at the ends (align_corners=True)
        [
            (2 * xs / (width - 1) - 1)[:, None, :].expand(-1, size, -1),
            (2 * ys / (height - 1) - 1)[:, :, None].expand(-1, -1, size),
        ],
        dim=-1,
    )
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)


def apply_view_params(
    images: torch.Tensor, params: ViewParams, spec: SimCLRViewSpec, uint8: bool = False, masked: bool | None = None
) -> torch.Tensor:
    """(B, 3, H, W) float images in [0, 1] -> (B, 3, S, S) views with the given parameters. `uint8`: every
    operation's result stored on the 8-bit grid as torchvision's uint8 kernels store it (the images are uint8 / 255);
    solarize comes after the conversion to float, as in `torchvision_transform`. `masked`: the colour jitter's
    execution (`colour_jitter`); with it, nothing here waits for the device."""
    views = _stored(resized_crops(images, params.boxes, spec.image_size), rounded, uint8)
    views = torch.where(_per_image(params.flip), views.flip(-1), views)
    views = colour_jitter(views, params.factors.to(views.dtype), params.order, params.jitter, uint8, masked)
    views = torch.where(_per_image(params.grayscale), grey(views, uint8).expand_as(views), views)
    if spec.blur_p > 0:
        blurred = _stored(gaussian_blur(views, spec.blur_kernel, params.sigma), rounded, uint8)
        views = torch.where(_per_image(params.blur), blurred, views)
    if spec.solarize_p > 0:
        views = torch.where(_per_image(params.solarize) & (views >= spec.solarize_threshold), 1 - views, views)
    return views.clamp(0, 1)


class BatchedSimCLRAugmentation(torch.nn.Module):
    """SimCLR views of a uint8 (or [0, 1] float) batch (B, 3, H, W) on its device, from `SimCLRViewSpec.simclr`.
    A uint8 batch stays on the 8-bit grid after each operation, as torchvision's transform of uint8 images; a float
    batch is computed exactly. The views are float in [0, 1] either way. `masked_jitter`: the colour jitter's
    execution (`colour_jitter`; None: masked off the CPU); the views are the same. `image_sizes` (B, 2): each
    image's (height, width) at the top left of the batch's array (letterboxed, `Letterbox`); the crops stay inside
    it. None: every image fills the array."""

    def __init__(
        self,
        image_size: int = 32,
        jitter_strength: float = 0.5,
        spec: SimCLRViewSpec | None = None,
        masked_jitter: bool | None = None,
    ):
        super().__init__()
        self.spec = spec or SimCLRViewSpec.simclr(image_size, jitter_strength)
        self.masked_jitter = masked_jitter

    @torch.no_grad()
    def forward(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        image_sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        uint8 = images.dtype == torch.uint8
        images = images.float() / 255 if uint8 else images.float()
        batch, _, height, width = images.shape
        params = sample_view_params(self.spec, batch, height, width, images.device, generator, image_sizes)
        return apply_view_params(images, params, self.spec, uint8, self.masked_jitter)

    def extra_repr(self) -> str:
        return str(self.spec)
