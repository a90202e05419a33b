"""Entropy preservation: a Lipschitz bound on the encoder through its layers' spectral norms.

`L_reg = mean_l relu(sigma_l - 1)^2` over the conv and linear weights of the backbone, `sigma_l` the largest
singular value of the weight reshaped to (out, in * k * k) (Miyato et al.'s spectral normalization), estimated by
one power iteration per training step from persistent vectors (`u`, `v`). A penalty rather than a
reparametrization: the backbone's weights stay plain tensors, so a released checkpoint is a plain timm backbone
with no parametrization keys, and nothing needs folding on save. The vectors are buffers of this module (not of
the backbone): pretraining checkpoints carry them, so resume is exact; the encoder-only classes ignore them.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .random_iecl import own_random_stream

# The power-iteration vectors start from their own random stream (see saib_iecl.SAIB_SEED_OFFSET).
SPECTRAL_SEED_OFFSET = 104729


def spectral_layers(backbone: nn.Module):
    """(name, module) of the backbone's conv and linear layers, in a fixed order."""
    return [(name, module) for name, module in backbone.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def exact_spectral_norms(backbone: nn.Module) -> torch.Tensor:
    """Each layer's spectral norm by SVD of its (out, in * k * k) weight: what the penalty's one-iteration estimate
    approximates from below. Reported at the end of pretraining as a check of that monitor (and of the baseline's
    norms, which have no penalty)."""
    return torch.stack(
        [torch.linalg.matrix_norm(m.weight.detach().float().flatten(1), ord=2) for _, m in spectral_layers(backbone)]
    )


class EncoderSpectralPenalty(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        layers = spectral_layers(backbone)
        self.names = [name for name, _ in layers]
        for index, (_, module) in enumerate(layers):
            rows = module.weight.shape[0]
            columns = module.weight[0].numel()
            self.register_buffer(f"u{index}", torch.empty(rows))
            self.register_buffer(f"v{index}", torch.empty(columns))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        with own_random_stream(SPECTRAL_SEED_OFFSET):
            for buffer in self.buffers():
                buffer.copy_(F.normalize(torch.randn(buffer.shape), dim=0))

    def forward(self, backbone: nn.Module, update: bool = True):
        """(penalty, largest sigma); `update` runs one power iteration first (training steps). In float32 also under
        mixed precision: the vectors are float32 state, and a bf16 sigma would round away the small excess over 1."""
        modules = dict(backbone.named_modules())
        device_type = next(iter(self.buffers())).device.type
        with torch.autocast(device_type, enabled=False):
            return self._penalty(modules, update)

    def _penalty(self, modules: dict, update: bool):
        sigmas = []
        for index, name in enumerate(self.names):
            weight = modules[name].weight.flatten(1)
            u, v = getattr(self, f"u{index}"), getattr(self, f"v{index}")
            if update:
                with torch.no_grad():
                    matrix = weight.detach().float()
                    v.copy_(F.normalize(matrix.t() @ u, dim=0))
                    u.copy_(F.normalize(matrix @ v, dim=0))
            # sigma = u^T W v; its gradient with respect to W is u v^T (u, v held constant).
            sigmas.append(torch.dot(u, weight.float() @ v))
        sigmas = torch.stack(sigmas)
        return F.relu(sigmas - 1).pow(2).mean(), sigmas.detach().max()
