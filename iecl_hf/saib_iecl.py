"""SAIB, the Sample Augmentation Incremental Block: IE-CL's learnable transformation of the query view.

A deterministic, lightweight, patch-wise residual block (docs/method.md, section 2):

    P  = embed(X) + pos                      patch partition: a linear map of each p x p patch, plus a position code
    U  = act(W1 P)                           1x1 conv, channel expansion e
    U  = U + act(W3 U)                       3x3 conv over the patch grid, skip 1
    P' = P + W2 U                            1x1 conv back to `dim`, skip 2
    X' = X + restore(P')                     patch restore (a linear map back to the p x p pixels), skip 3

`restore` is zero-initialized, so SAIB starts as the exact identity (entropy increment 0) and the training
objective decides how far it moves. `third_skip="literal"` reads skip 3 as the paper writes it instead: `P'` holds
its own skip, so `restore` starts as the left inverse of the patch embedding and SAIB at about `2X + g(X)`. Input and
output are images in the [0, 1] pixel scale (the output is not clamped: a clamp would flatten the Jacobian where it
saturates).
"""

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_iecl import SAIB_THIRD_SKIPS, _check_choice, check_literal_skip_width
from .random_iecl import own_random_stream

# SAIB's initial weights come from their own random stream: switching SAIB on does not shift the draws of the
# encoder, the head or the augmentations (paired comparisons, BENCHMARKS.md).
SAIB_SEED_OFFSET = 7919
# Query images per step on which the `lambda_saib_logdet` term estimates SAIB's entropy increment (16 patch blocks each
# at 32 px). One: the term then adds about 0.1 of a SimCLR step on the CPU preset, four added about 0.8
# (benchmarks/step_overhead.py --overrides lambda_saib_logdet=0.1, BENCHMARKS.md).
SAIB_LOGDET_IMAGES = 1


class SAIB(nn.Module):
    def __init__(
        self,
        image_size: int,
        patch_size: int = 4,
        dim: int = 64,
        expansion: int = 2,
        channels: int = 3,
        third_skip: str = "residual",
    ):
        super().__init__()
        # The config's own checks: SAIB may be built without an IECLConfig.
        _check_choice("saib_third_skip", third_skip, SAIB_THIRD_SKIPS)
        check_literal_skip_width(third_skip, dim, patch_size, channels)
        self.patch_size = patch_size
        self.third_skip = third_skip
        hidden = dim * expansion
        with own_random_stream(SAIB_SEED_OFFSET):  # the layers' default init must not consume the global stream
            self.embed = nn.Conv2d(channels, dim, patch_size, stride=patch_size)
            self.position = nn.Parameter(torch.zeros(1, dim, image_size // patch_size, image_size // patch_size))
            self.expand = nn.Conv2d(dim, hidden, 1)
            self.mix = nn.Conv2d(hidden, hidden, 3, padding=1)
            self.reduce = nn.Conv2d(hidden, dim, 1)
            self.restore = nn.ConvTranspose2d(dim, channels, patch_size, stride=patch_size)
        self.act = nn.GELU()
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        with own_random_stream(SAIB_SEED_OFFSET):
            for module in (self.embed, self.expand, self.mix, self.reduce):
                module.reset_parameters()
            nn.init.trunc_normal_(self.position, std=0.02)
        nn.init.zeros_(self.restore.weight)
        nn.init.zeros_(self.restore.bias)
        if self.third_skip == "literal":
            # restore(embed(X)) = X: the embedding's bias is zeroed (restore's bias is per channel, it cannot undo a
            # per-pixel one) and restore's weight is the pseudo-inverse of the embedding's (full column rank when
            # dim >= C p p), so X' = X + restore(P') = 2X + restore(pos + W2 U). Deterministic: no random draw.
            nn.init.zeros_(self.embed.bias)
            inverse = torch.linalg.pinv(self.embed.weight.flatten(1).double())  # (C p p, dim)
            self.restore.weight.copy_(inverse.T.reshape(self.restore.weight.shape))

    def position_code(self, grid_h: int, grid_w: int) -> torch.Tensor:
        if self.position.shape[-2:] == (grid_h, grid_w):
            return self.position
        return F.interpolate(self.position, size=(grid_h, grid_w), mode="bilinear", align_corners=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"SAIB: image size {h}x{w} is not a multiple of saib_patch_size={self.patch_size}.")
        patches = self.embed(images)
        patches = patches + self.position_code(*patches.shape[-2:]).to(patches.dtype)
        hidden = self.act(self.expand(patches))
        hidden = hidden + self.act(self.mix(hidden))
        patches = patches + self.reduce(hidden)
        return images + self.restore(patches)


def saib_logdet(saib: SAIB, images: torch.Tensor) -> torch.Tensor:
    """SAIB's entropy increment E log|det J|, from the Jacobian blocks of single patches; differentiable in SAIB's
    parameters (the `lambda_saib_logdet` term), and a monitor under `torch.no_grad()`.

    For the patches of every other row and column of the patch grid, the exact Jacobian of the output patch with
    respect to its own input patch (3 p^2 x 3 p^2), holding the other patches fixed; the mean log|det| over those
    patches of every image. The 3x3 conv couples neighbouring patches only, and no two chosen patches are
    neighbours, so one forward-mode pass per input coordinate gives all chosen blocks of all images at once.
    `images`: (N, 3, H, W).
    """
    p = saib.patch_size
    n, c, h, w = images.shape
    size = c * p * p
    tangents = torch.zeros(size, 1, c, h, w, device=images.device, dtype=images.dtype)
    # Coordinate k of the patch (channel, row, column) set to 1 inside every chosen patch.
    grid = torch.zeros(c, p, p, device=images.device, dtype=images.dtype)
    chosen = torch.zeros(h // p, w // p, dtype=torch.bool, device=images.device)
    chosen[::2, ::2] = True
    mask = chosen.repeat_interleave(p, 0).repeat_interleave(p, 1)
    for k in range(size):
        grid.zero_().view(-1)[k] = 1
        tangents[k, 0] = grid.repeat(1, h // p, w // p) * mask
    _, outputs = torch.func.vmap(lambda t: torch.func.jvp(saib, (images,), (t.expand(n, -1, -1, -1),)))(tangents)
    # outputs: (size, N, c, H, W); block of patch (i, j): rows = output coordinates, columns = tangent index k.
    blocks = outputs.reshape(size, n, c, h // p, p, w // p, p).permute(1, 3, 5, 2, 4, 6, 0)
    blocks = blocks[:, chosen].reshape(-1, size, size)
    return torch.linalg.slogdet(blocks.float())[1].mean()
