"""The image processor saved beside every checkpoint (a built-in transformers class, so no remote code)."""

from transformers import BitImageProcessor

from .configuration_iecl import IECLConfig


def build_image_processor(config: IECLConfig) -> BitImageProcessor:
    """Evaluation preprocessing: resize the short side, centre crop to `image_size`, normalize like training.

    Small images (<= 64 px, CIFAR/STL scale) are resized straight to the crop size; larger ones keep the usual
    crop ratio of 0.875 (resize 256, crop 224).
    """
    size = config.image_size
    shortest_edge = size if size <= 64 else int(round(size / 0.875))
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
