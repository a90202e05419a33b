"""The image processor saved beside every checkpoint (a built-in transformers class, so no remote code)."""

from transformers import BitImageProcessor

from .configuration_iecl import IECLConfig


def resize_size_for(image_size: int) -> int:
    """The short side images are resized to before the centre crop to `image_size`: the crop size itself for small
    images (<= 64 px, CIFAR/STL scale), else the usual crop ratio of 0.875 (resize 256, crop 224)."""
    return image_size if image_size <= 64 else int(round(image_size / 0.875))


def build_image_processor(config: IECLConfig) -> BitImageProcessor:
    """Evaluation preprocessing: resize the short side (`resize_size_for`), centre crop to `image_size`, normalize
    like training."""
    size = config.image_size
    shortest_edge = resize_size_for(size)
    return BitImageProcessor(
        do_resize=True,
        size={"shortest_edge": shortest_edge},
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_normalize=True,
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
        do_convert_rgb=True,
    )
