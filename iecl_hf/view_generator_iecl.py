"""The learnable transformation T_phi: a budgeted, noise-driven residual perturbation of an image."""

import torch
import torch.nn.functional as F
from torch import nn


class NoisyResidualBlock(nn.Module):
    """conv-act-conv with a fresh noise channel concatenated to its input, plus the skip connection."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width + 1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x):
        noise = torch.randn_like(x[:, :1])
        return x + self.conv2(self.act(self.conv1(torch.cat([x, noise], dim=1))))


class ViewGenerator(nn.Module):
    """T_phi(v) = clamp(v + delta, 0, 1), with mean |delta| per image <= epsilon * budget_scale.

    A small encoder-decoder: a stride-2 conv, residual blocks at half resolution (fresh noise concatenated to
    each), bilinear upsampling, and a full-resolution output conv that also sees the image and fresh noise.
    Half resolution keeps it cheap (on 2 CPU cores, full-resolution blocks cost as much as a half-width
    ResNet-18). The output conv is zero-initialized, so the generator starts as the exact identity. Fresh noise on
    every call makes two calls on the same image give different views. Fully convolutional (any resolution).
    Input and output are images in [0, 1].
    """

    def __init__(self, epsilon: float = 0.05, width: int = 16, num_blocks: int = 2):
        super().__init__()
        self.epsilon = epsilon
        self.budget_scale = 1.0  # set by the training loop for a warm-up of the budget; not a learned quantity
        self.stem = nn.Conv2d(3 + 1, width, 3, stride=2, padding=1)
        self.blocks = nn.ModuleList(NoisyResidualBlock(width) for _ in range(num_blocks))
        self.act = nn.LeakyReLU(0.2)
        self.to_delta = nn.Conv2d(width + 3 + 1, 3, 3, padding=1)
        self.reset_parameters()

    def reset_parameters(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0.2, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.to_delta.weight)
        nn.init.zeros_(self.to_delta.bias)

    def perturbation(self, images: torch.Tensor) -> torch.Tensor:
        """The budgeted delta for `images` (B, 3, H, W)."""
        x = self.act(self.stem(torch.cat([images, torch.randn_like(images[:, :1])], dim=1)))
        for block in self.blocks:
            x = self.act(block(x))
        x = F.interpolate(x, size=images.shape[-2:], mode="bilinear", align_corners=False)
        delta = self.to_delta(torch.cat([x, images, torch.randn_like(images[:, :1])], dim=1))
        budget = self.epsilon * self.budget_scale
        if budget <= 0:
            return torch.zeros_like(delta)
        mean_abs = delta.abs().flatten(1).mean(dim=1).view(-1, 1, 1, 1)
        # Scale down only what exceeds the budget (a hard L1 constraint); a zero delta stays exactly zero.
        return delta * (budget / torch.clamp(mean_abs, min=budget))

    def forward(self, images: torch.Tensor):
        delta = self.perturbation(images)
        return (images + delta).clamp(0, 1), delta
