"""The batched on-device SimCLR views against torchvision's per-image transform built from the same spec.

Not against itself: the crop boxes are compared with torchvision's own sampler (`RandomResizedCrop.get_params`), the
probabilities and jitter ranges with the values inside torchvision's transform objects, and the pixels, for fixed
parameters, with torchvision's functional operations applied one image at a time.
"""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torchvision import transforms
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from iecl_hf.data import SimCLRViewSpec
from iecl_hf.data.augmentations import Letterbox, torchvision_transform
from iecl_hf.data.batched_augmentation import (
    BRIGHTNESS,
    CONTRAST,
    HUE,
    SATURATION,
    BatchedSimCLRAugmentation,
    ViewParams,
    apply_view_params,
    sample_crop_boxes,
    sample_view_params,
)

DRAWS = 4000


def torchvision_boxes(height, width, scale, ratio, n, seed=0):
    """(n, 4) boxes (left, top, width, height) from torchvision's sampler."""
    torch.manual_seed(seed)
    image = torch.zeros(3, height, width)
    rows = [transforms.RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)]
    return np.array([(j, i, w, h) for i, j, h, w in rows], dtype=np.float64)


def box_statistics(boxes, height, width):
    """Area fraction, log aspect ratio, and the offsets as fractions of their ranges."""
    left, top, w, h = boxes.T
    return {
        "area": w * h / (height * width),
        "log_ratio": np.log(w / h),
        "left": (left + 0.5) / (width - w + 1),
        "top": (top + 0.5) / (height - h + 1),
    }


@pytest.mark.parametrize("image_size, height, width", [(32, 32, 32), (96, 110, 110), (32, 24, 64)])
def test_crop_boxes_follow_torchvision(image_size, height, width):
    spec = SimCLRViewSpec.simclr(image_size)
    generator = torch.Generator().manual_seed(1)
    ours = sample_crop_boxes(spec, DRAWS, height, width, generator=generator).double().numpy()
    reference = torchvision_boxes(height, width, spec.crop_scale, spec.crop_ratio, DRAWS)
    assert ours[:, 2].max() <= width and ours[:, 3].max() <= height and ours.min() >= 0
    assert (ours[:, 0] + ours[:, 2] <= width).all() and (ours[:, 1] + ours[:, 3] <= height).all()
    ours_stats, reference_stats = box_statistics(ours, height, width), box_statistics(reference, height, width)
    for key in ours_stats:
        p_value = stats.ks_2samp(ours_stats[key], reference_stats[key]).pvalue
        assert p_value > 1e-3, (key, p_value)


def test_letterboxed_crops_follow_torchvision_on_the_whole_image():
    """Non-square images are letterboxed (`Letterbox`: the whole image, long side to the array's side, padding
    after it): the crops of each image are drawn inside its own extent and follow torchvision's sampler on that
    image, both of a batch's two shapes, so they reach the long side's ends as the per-image crops do (crops from
    the centre square would not: their left offsets would all lie in the middle)."""
    spec = SimCLRViewSpec.simclr(32)
    shapes = torch.tensor([[24, 32], [32, 20]]).repeat(DRAWS, 1)  # (height, width), alternating
    generator = torch.Generator().manual_seed(1)
    boxes = sample_crop_boxes(spec, 2 * DRAWS, 32, 32, generator=generator, image_sizes=shapes).double().numpy()
    for index, (height, width) in enumerate(((24, 32), (32, 20))):
        ours = boxes[index::2]
        assert (ours[:, 0] + ours[:, 2] <= width).all() and (ours[:, 1] + ours[:, 3] <= height).all()
        reference = torchvision_boxes(height, width, spec.crop_scale, spec.crop_ratio, DRAWS)
        ours_stats, reference_stats = box_statistics(ours, height, width), box_statistics(reference, height, width)
        for key in ours_stats:
            p_value = stats.ks_2samp(ours_stats[key], reference_stats[key]).pvalue
            assert p_value > 1e-3, (height, width, key, p_value)
    # Without the sizes the same batch's crops cover the padding (the whole 32 x 32 array): the test can fail.
    unsized = sample_crop_boxes(spec, 2 * DRAWS, 32, 32, generator=torch.Generator().manual_seed(1)).numpy()
    assert (unsized[0::2, 1] + unsized[0::2, 3] > 24).any()


def test_letterboxed_views_never_show_the_padding():
    """A white non-square image, letterboxed on black: every pixel of every view is white (no jitter or greyscale
    to change it); a crop that reached into the padding would bring black in."""
    spec = SimCLRViewSpec(32, crop_scale=(0.2, 1.0), jitter_p=0.0, grayscale_p=0.0)
    letterbox, whites = Letterbox(32), [Image.new("RGB", size, "white") for size in ((64, 24), (18, 40), (32, 32))]
    images = torch.stack([letterbox(image) for image in whites]).repeat(100, 1, 1, 1)
    sizes = torch.stack([letterbox.size(image) for image in whites]).repeat(100, 1)
    assert sizes[:3].tolist() == [[12, 32], [32, 14], [32, 32]]  # (height, width), the long side 32
    assert (images[0, :, 12:] == 0).all() and (images[0, :, :12] == 255).all()  # image at the top, then padding
    augmentation = BatchedSimCLRAugmentation(spec=spec)
    views = augmentation(images, generator=torch.Generator().manual_seed(5), image_sizes=sizes)
    assert (views == 1.0).all()
    unsized = augmentation(images, generator=torch.Generator().manual_seed(5))
    assert (unsized < 1.0).any()  # the check above can fail


def test_letterbox_keeps_a_square_images_pixels():
    """A square image is only resized (no padding): the pixels the centre-square loader gave, so CIFAR-style data
    trains exactly as before."""
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    before = v2.Compose([v2.ToImage(), v2.Resize(32, antialias=True), v2.CenterCrop(32)])(image)
    assert torch.equal(Letterbox(32)(image), before) and Letterbox(32).size(image).tolist() == [32, 32]


def test_letterbox_resizes_the_long_side_as_torchvision_and_keeps_a_thin_image():
    """The image part is torchvision's `Resize(size=None, max_size=L)`; an image thinner than 1/L (300 x 1) keeps a
    1 px short side, where that resize would fail on a zero size, and its crop is torchvision's fallback."""
    rng = np.random.default_rng(1)
    for width, height in ((500, 375), (17, 45), (33, 31)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        boxed = Letterbox(32)(image)
        expected = v2.Compose([v2.ToImage(), v2.Resize(size=None, max_size=32, antialias=True)])(image)
        h, w = Letterbox(32).size(image).tolist()
        assert torch.equal(boxed[:, :h, :w], expected) and max(h, w) == 32
        assert (boxed[:, h:] == 0).all() and (boxed[:, :, w:] == 0).all()
    thin = Image.new("RGB", (300, 1), "white")
    assert Letterbox(32)(thin).shape == (3, 32, 32) and Letterbox(32).size(thin).tolist() == [1, 32]
    box = sample_crop_boxes(SimCLRViewSpec.simclr(32), 1, 32, 32, image_sizes=Letterbox(32).size(thin)[None])
    assert box.tolist() == [[15.0, 0.0, 1.0, 1.0]]  # no try fits: the centre, cut to the 4:3 ratio limit


def test_a_wrong_crop_scale_range_is_detected():
    """The comparison above has the power to see a wrong scale range (0.08 instead of CIFAR's 0.2)."""
    spec = SimCLRViewSpec.simclr(32)
    wrong = SimCLRViewSpec(32, crop_scale=(0.08, 1.0))
    generator = torch.Generator().manual_seed(1)
    ours = sample_crop_boxes(wrong, DRAWS, 32, 32, generator=generator).double().numpy()
    reference = torchvision_boxes(32, 32, spec.crop_scale, spec.crop_ratio, DRAWS)
    area = box_statistics(ours, 32, 32)["area"], box_statistics(reference, 32, 32)["area"]
    assert stats.ks_2samp(*area).pvalue < 1e-6


def transform_parts(spec):
    """The torchvision transform's own settings: p of each random step, and the ColorJitter ranges."""
    parts = {}
    for step in torchvision_transform(spec).transforms:
        if isinstance(step, v2.RandomHorizontalFlip):
            parts["flip"] = step.p
        elif isinstance(step, v2.RandomGrayscale):
            parts["grayscale"] = step.p
        elif isinstance(step, v2.RandomApply) and isinstance(step.transforms[0], v2.ColorJitter):
            parts["jitter"], parts["color_jitter"] = step.p, step.transforms[0]
        elif isinstance(step, v2.RandomApply) and isinstance(step.transforms[0], v2.GaussianBlur):
            parts["blur"], parts["gaussian_blur"] = step.p, step.transforms[0]
    return parts


def test_the_spec_holds_simclrs_published_values():
    """The values themselves, not only their agreement with a transform built from the same spec: SimCLR's (Chen et
    al. 2020, appendix A; jitter strength 0.5 as its CIFAR runs) with the CIFAR crop scale below 96 px."""
    small, large = SimCLRViewSpec.simclr(32), SimCLRViewSpec.simclr(224)
    for spec in (small, large):
        assert (spec.brightness, spec.contrast, spec.saturation, spec.hue) == pytest.approx((0.4, 0.4, 0.4, 0.1))
        assert (spec.jitter_p, spec.grayscale_p, spec.flip_p, spec.solarize_p) == (0.8, 0.2, 0.5, 0.0)
        assert spec.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    assert small.crop_scale == (0.2, 1.0) and small.blur_p == 0.0 and small.blur_kernel is None
    assert large.crop_scale == (0.08, 1.0) and large.blur_p == 0.5 and large.blur_kernel == 23  # ~10% of the side
    assert large.blur_sigma == (0.1, 2.0)


@pytest.mark.parametrize("image_size", [32, 96])
def test_probabilities_and_jitter_ranges_match_torchvision(image_size):
    spec = SimCLRViewSpec.simclr(image_size)
    parts = transform_parts(spec)
    n = 20000
    params = sample_view_params(spec, n, image_size, image_size, generator=torch.Generator().manual_seed(2))
    expected = {"flip": parts["flip"], "jitter": parts["jitter"], "grayscale": parts["grayscale"],
                "blur": parts.get("blur", 0.0)}  # fmt: skip
    assert expected["jitter"] == 0.8 and expected["grayscale"] == 0.2 and expected["flip"] == 0.5
    assert (image_size >= 96) == ("blur" in parts)
    for name, p in expected.items():
        rate = getattr(params, name).double().mean().item()
        assert abs(rate - p) <= 4.5 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12, (name, rate, p)

    jitter = parts["color_jitter"]
    for column, interval in ((BRIGHTNESS, jitter.brightness), (CONTRAST, jitter.contrast),
                             (SATURATION, jitter.saturation), (HUE, jitter.hue)):  # fmt: skip
        values = params.factors[:, column].double().numpy()
        low, high = interval
        assert values.min() >= low and values.max() <= high, (column, values.min(), values.max(), interval)
        assert stats.kstest(values, stats.uniform(loc=low, scale=high - low).cdf).pvalue > 1e-3, column
    if "gaussian_blur" in parts:
        blur = parts["gaussian_blur"]
        assert list(blur.kernel_size) == [spec.blur_kernel] * 2
        low, high = blur.sigma
        sigma = params.sigma.double().numpy()
        assert sigma.min() >= low and sigma.max() <= high
        assert stats.kstest(sigma, stats.uniform(loc=low, scale=high - low).cdf).pvalue > 1e-3


def test_the_jitter_order_is_a_uniform_random_permutation_per_image():
    """torchvision's ColorJitter applies its four operations in a random order (torch.randperm(4)) per call."""
    n = 24 * 1000
    params = sample_view_params(SimCLRViewSpec.simclr(32), n, 32, 32, generator=torch.Generator().manual_seed(3))
    assert (params.order.sort(dim=1).values == torch.arange(4)).all()  # each row is a permutation
    codes = (params.order * torch.tensor([64, 16, 4, 1])).sum(dim=1)
    counts = torch.bincount(codes, minlength=256)[torch.unique(codes)]
    assert len(counts) == 24
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3


def reference_view(image, params, index, spec):
    """One view with torchvision's functional operations, one image at a time."""
    left, top, w, h = (int(v) for v in params.boxes[index].tolist())
    size = [spec.image_size, spec.image_size]
    view = TF.resized_crop(image, top, left, h, w, size, interpolation=v2.InterpolationMode.BILINEAR, antialias=False)
    if params.flip[index]:
        view = TF.horizontal_flip(view)
    if params.jitter[index]:
        operations = {BRIGHTNESS: TF.adjust_brightness, CONTRAST: TF.adjust_contrast,
                      SATURATION: TF.adjust_saturation, HUE: TF.adjust_hue}  # fmt: skip
        for operation in params.order[index].tolist():
            view = operations[operation](view, params.factors[index, operation].item())
    if params.grayscale[index]:
        view = TF.rgb_to_grayscale(view, num_output_channels=3)
    if spec.blur_p > 0 and params.blur[index]:
        sigma = params.sigma[index].item()
        view = TF.gaussian_blur(view, [spec.blur_kernel, spec.blur_kernel], [sigma, sigma])
    if spec.solarize_p > 0 and params.solarize[index]:
        view = TF.solarize(view, spec.solarize_threshold)
    return view


@pytest.mark.parametrize("image_size, load_size", [(32, 32), (96, 110)])
def test_fixed_parameters_give_torchvisions_pixels(image_size, load_size):
    spec = SimCLRViewSpec.simclr(image_size)
    spec = SimCLRViewSpec(**{**spec.__dict__, "solarize_p": 0.5})  # solarize too (no preset uses it yet)
    n = 24
    generator = torch.Generator().manual_seed(4)
    images = torch.rand(n, 3, load_size, load_size, generator=generator)
    params = sample_view_params(spec, n, load_size, load_size, generator=generator)
    # Every branch taken by some images and skipped by others.
    for mask in (params.flip, params.jitter, params.grayscale, params.solarize):
        assert 0 < int(mask.sum()) < n
    ours = apply_view_params(images, params, spec)
    for index in range(n):
        expected = reference_view(images[index], params, index, spec)
        torch.testing.assert_close(ours[index], expected, rtol=0, atol=2e-5, msg=f"image {index}")


def smooth_uint8_images(n, size, generator):
    """Photo-like uint8 images: smooth colour fields plus a little noise (pure noise makes the hue of near-grey
    pixels flip on a one-level difference, which hides what the test measures)."""
    coarse = torch.nn.functional.interpolate(torch.rand(n, 3, 6, 6, generator=generator), size=size, mode="bicubic")
    noise = torch.rand(n, 3, size, size, generator=generator)
    return (coarse.clamp(0, 1) * 200 + 40 * noise).round().clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("image_size, load_size", [(32, 32), (96, 110)])
def test_uint8_images_stay_on_torchvisions_8_bit_grid(image_size, load_size):
    """On uint8 images torchvision stores every operation's result in 8 bits (the blends truncate), so its views
    are about 1.25 levels darker than exact float arithmetic gives. The batched path on a uint8 batch matches them:
    no bias, and nearly every pixel within one level (the crop's uint8 kernel rounds a little differently)."""
    spec = SimCLRViewSpec.simclr(image_size)
    n = 48
    generator = torch.Generator().manual_seed(4)
    images = smooth_uint8_images(n, load_size, generator)
    params = sample_view_params(spec, n, load_size, load_size, generator=generator)
    expected = torch.stack([reference_view(images[i], params, i, spec) for i in range(n)]).float()
    for uint8, matches in ((True, True), (False, False)):  # exact float arithmetic: the darkening is missing
        levels = apply_view_params(images.float() / 255, params, spec, uint8=uint8) * 255
        difference = levels - expected
        close = (
            abs(difference.mean().item()) < 0.1
            and difference.abs().mean().item() < 0.3
            and (difference.abs() <= 1 + 1e-3).float().mean().item() > 0.95
        )
        assert close == matches, (uint8, difference.mean().item(), difference.abs().mean().item())
    views = BatchedSimCLRAugmentation(spec=spec)(images)
    torch.testing.assert_close(views * 255, (views * 255).round(), rtol=0, atol=1e-3)  # whole levels


@pytest.mark.parametrize("image_size, load_size", [(32, 32), (96, 110)])
@pytest.mark.parametrize("uint8", [True, False])
def test_the_masked_jitter_gives_the_indexed_views(image_size, load_size, uint8):
    """The two executions of the colour jitter (indexed on the CPU, masked on a GPU) make the same views."""
    spec = SimCLRViewSpec.simclr(image_size)
    generator = torch.Generator().manual_seed(7)
    images = smooth_uint8_images(32, load_size, generator).float() / 255
    params = sample_view_params(spec, 32, load_size, load_size, generator=generator)
    assert 0 < int(params.jitter.sum()) < 32
    indexed = apply_view_params(images, params, spec, uint8=uint8, masked=False)
    masked = apply_view_params(images, params, spec, uint8=uint8, masked=True)
    torch.testing.assert_close(masked, indexed, rtol=0, atol=1e-6)


TRACE_THE_VIEWS = """
import torch
from iecl_hf.data import SimCLRViewSpec
from iecl_hf.data.batched_augmentation import apply_view_params, sample_view_params

spec = SimCLRViewSpec.simclr(96)

def views(images, masked):
    params = sample_view_params(spec, 4, 110, 110, images.device)
    return apply_view_params(images, params, spec, uint8=True, masked=masked)

for masked in (True, False):
    try:
        shape = torch.compile(views, backend="eager", fullgraph=True)(torch.rand(4, 3, 110, 110), masked).shape
        print(masked, "traced", tuple(shape))
    except Exception as error:
        print(masked, "failed", type(error).__name__, "data-dependent" in str(error))
"""


def test_the_masked_views_never_wait_for_the_device():
    """Sampling and the masked views trace as one graph with static shapes (torch.compile, fullgraph): nothing reads
    a value back to the host, which on a GPU would stall the queue. The indexed jitter cannot be traced so. (In a
    subprocess: tracing leaves autograd state that breaks the fork-based tests that follow.)"""
    result = subprocess.run([sys.executable, "-c", TRACE_THE_VIEWS], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "True traced (4, 3, 96, 96)" in lines, result.stdout
    assert any(line.startswith("False failed") and line.endswith("True") for line in lines), result.stdout


def test_the_module_draws_from_the_given_generator_and_keeps_the_range():
    augmentation = BatchedSimCLRAugmentation(32)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    first = augmentation(images, generator=torch.Generator().manual_seed(5))
    second = augmentation(images, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert first.shape == (16, 3, 32, 32) and first.min() >= 0 and first.max() <= 1
    assert not torch.equal(first, augmentation(images, generator=torch.Generator().manual_seed(6)))


def test_view_params_fields_are_per_image():
    params = sample_view_params(SimCLRViewSpec.simclr(32), 7, 32, 32)
    assert isinstance(params, ViewParams)
    for name, value in params.__dict__.items():
        assert value.shape[0] == 7, name
