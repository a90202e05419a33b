"""Shared test settings: never touch the network; small CPU models."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

# The CPU preset of the project (half-width ResNet-18, stride-2 stem), on tiny images.
SMALL_BACKBONE = {"backbone_kwargs": {"channels": [32, 64, 128, 256]}, "stem": "cifar_stride2"}


@pytest.fixture
def small_config_kwargs():
    return dict(SMALL_BACKBONE, image_size=16)
