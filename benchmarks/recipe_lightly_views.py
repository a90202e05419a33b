#!/usr/bin/env python
"""recipes/pretrain.py with lightly's per-image SimCLR views (`SimCLRViewTransform`: PIL operations) in the loader
workers instead of torchvision v2's on uint8 tensors. Takes the recipe's flags; use with `--augmentation workers`.

A diagnostic of the gap to lightly's SimCLR (issue 11), run by `benchmarks/quality.py --variants
simclr_lightly_views`: against `simclr_worker_views` only the views' arithmetic differs (the same loop, the same
view distribution); against `lightly_simclr` only the loop does. Needs `.[bench]`.
"""

import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
from lightly_simclr import lightly_view_kwargs  # noqa: E402

import iecl_hf.data.training_data as training_data  # noqa: E402


class LightlyViews:
    """One view of a PIL image by lightly's SimCLRViewTransform, in [0, 1] (the model normalizes); called as the
    recipe calls `SimCLRAugmentation`."""

    def __init__(self, image_size: int = 32):
        from lightly.transforms.simclr_transform import SimCLRViewTransform

        self.transform = SimCLRViewTransform(**lightly_view_kwargs(image_size))

    def __call__(self, image):
        return self.transform(image)


if __name__ == "__main__":
    if "--augmentation=workers" not in sys.argv and "workers" not in sys.argv:
        sys.exit("recipe_lightly_views.py: pass --augmentation workers (the views are made per image in the loader)")
    training_data.SimCLRAugmentation = LightlyViews
    sys.argv[0] = os.path.join(os.path.dirname(HERE), "recipes", "pretrain.py")
    runpy.run_path(sys.argv[0], run_name="__main__")
