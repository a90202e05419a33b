"""IE-CL models: the encoder (`IECLModel`), the pretraining objective (`IECLForPreTraining`) and a linear
classifier (`IECLForImageClassification`). The files a checkpoint needs are flat and import only torch,
transformers, timm and each other, so `save_pretrained` output loads with `trust_remote_code=True`."""

from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutputWithNoAttention
from transformers.utils import ModelOutput

from .configuration_iecl import IECLConfig
from .distributed_iecl import gather_with_grad
from .entropy_iecl import BatchEntropy, pixel_features
from .frameworks_iecl import FRAMEWORK_HEADS, ProjectionHead
from .view_generator_iecl import ViewGenerator


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor, scale):
        ctx.scale = scale
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def scale_gradient(tensor: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by `scale` (the generator's stance on the base loss)."""
    return _ScaleGradient.apply(tensor, scale)


def build_backbone(config: IECLConfig) -> nn.Module:
    """`timm.create_model(config.backbone, ...)` with the stem `config.stem` asks for."""
    backbone = timm.create_model(config.backbone, pretrained=False, num_classes=0, **config.backbone_kwargs)
    if config.stem != "timm":
        if not (isinstance(getattr(backbone, "conv1", None), nn.Conv2d) and hasattr(backbone, "maxpool")):
            raise ValueError(
                f"IECLConfig.stem={config.stem!r} needs a ResNet-style backbone with a single `conv1` and a `maxpool`; "
                f"{config.backbone!r} has none. Use stem='timm' for this backbone."
            )
        stride = 1 if config.stem == "cifar" else 2
        conv = nn.Conv2d(backbone.conv1.in_channels, backbone.conv1.out_channels, 3, stride, 1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # timm's ResNet conv init
        backbone.conv1, backbone.maxpool = conv, nn.Identity()
    return backbone


class IECLPreTrainedModel(PreTrainedModel):
    config_class = IECLConfig
    base_model_prefix = "iecl"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True

    def _init_weights(self, module):
        # Only the modules IE-CL owns: the default would re-initialize the timm backbone and erase timm's own init
        # (e.g. the zero-init of the last BN of each residual block).
        if isinstance(module, ProjectionHead) or module is getattr(self, "classifier", None):
            for layer in module.modules():
                if isinstance(layer, nn.Linear):
                    nn.init.kaiming_uniform_(layer.weight, a=5**0.5)  # PyTorch's Linear default
                    if layer.bias is not None:
                        nn.init.zeros_(layer.bias)
                elif isinstance(layer, nn.BatchNorm1d):
                    nn.init.ones_(layer.weight)
                    nn.init.zeros_(layer.bias)
                    nn.init.zeros_(layer.running_mean)
                    nn.init.ones_(layer.running_var)
        elif isinstance(module, ViewGenerator):
            module.reset_parameters()

    # Every checkpoint serves all the Auto classes, whichever head saved it.
    _auto_map = {
        "AutoConfig": "configuration_iecl.IECLConfig",
        "AutoModel": "modeling_iecl.IECLModel",
        "AutoModelForPreTraining": "modeling_iecl.IECLForPreTraining",
        "AutoModelForImageClassification": "modeling_iecl.IECLForImageClassification",
    }

    def save_pretrained(self, save_directory, *args, **kwargs):
        self.config.auto_map = dict(self._auto_map)
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _set_gradient_checkpointing(self, enable: bool = True, *args, **kwargs):
        for module in self.modules():
            if hasattr(module, "set_grad_checkpointing") and isinstance(module, nn.Module) and module is not self:
                module.set_grad_checkpointing(enable)


class IECLModel(IECLPreTrainedModel):
    """The encoder f_theta: a timm backbone. Input: `pixel_values` normalized with the image processor."""

    # A pretraining checkpoint also holds the framework head (projector, momentum encoder, queue) and the
    # generator: the encoder leaves them, silently. Only `iecl.backbone` is the released encoder.
    _keys_to_ignore_on_load_unexpected = [r"head\.", r"view_generator\."]

    def __init__(self, config: IECLConfig):
        super().__init__(config)
        self.backbone = build_backbone(config)
        self.num_features = self.backbone.num_features
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        feature_map = self.backbone.forward_features(pixel_values)
        pooled = self.backbone.forward_head(feature_map, pre_logits=True)
        if not return_dict:
            return (feature_map, pooled)
        return BaseModelOutputWithPoolingAndNoAttention(last_hidden_state=feature_map, pooler_output=pooled)


@dataclass
class IECLForPreTrainingOutput(ModelOutput):
    """Output of `IECLForPreTraining`.

    Args:
        loss: the value of the encoder's objective `L_theta`; its `backward()` also gives the generator the
            gradient of `L_phi` (see `IECLForPreTraining.forward`).
        base_loss: the framework's loss `L_base` (NT-Xent for SimCLR).
        entropy_gain_input: `dH_in`, entropy gain of the generated view over the reference, in pixels (nats).
        entropy_gain_representation: `dH_rep`, the same gain in the encoder's representation.
        preservation_loss: `relu(dH_in - dH_rep)`, unweighted.
        generator_loss: value of the generator's objective `L_phi`.
        perturbation_l1: mean |delta| per image of the generator.
        entropy_input_reference, entropy_input_generated, entropy_representation_reference,
        entropy_representation_generated: the four entropies behind the two gains.
        pooler_output: pooled features of the two encoded views, `(2B, C)` (view 1 then the generated view).
    """

    loss: torch.Tensor | None = None
    base_loss: torch.Tensor | None = None
    entropy_gain_input: torch.Tensor | None = None
    entropy_gain_representation: torch.Tensor | None = None
    preservation_loss: torch.Tensor | None = None
    generator_loss: torch.Tensor | None = None
    perturbation_l1: torch.Tensor | None = None
    entropy_input_reference: torch.Tensor | None = None
    entropy_input_generated: torch.Tensor | None = None
    entropy_representation_reference: torch.Tensor | None = None
    entropy_representation_generated: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None


class IECLForPreTraining(IECLPreTrainedModel):
    """IE-CL pretraining: encoder + projection head + view generator + entropy terms.

    `forward(pixel_values, pixel_values_2)` takes the two standard augmented views **in [0, 1]** (not normalized:
    the generator perturbs pixels; the model normalizes with `config.image_mean/std` before the encoder).
    """

    def __init__(self, config: IECLConfig):
        super().__init__(config)
        self.iecl = IECLModel(config)
        self.head = FRAMEWORK_HEADS[config.framework](config, self.iecl.num_features, self.iecl.backbone)
        self.view_generator = (
            ViewGenerator(config.generator_epsilon, config.generator_width, config.generator_num_blocks)
            if config.use_view_generator
            else None
        )
        self.pixel_entropy = BatchEntropy(config.entropy_estimator, "gaussian", config.logdet_epsilon, config.uniformity_t)
        self.representation_entropy = BatchEntropy(config.entropy_estimator, "cosine", config.logdet_epsilon, config.uniformity_t)
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)
        self.post_init()
        if hasattr(self.head, "reset_momentum_encoder"):
            self.head.reset_momentum_encoder(self.iecl.backbone)

    def update_momentum_encoder(self, progress: float):
        """EMA step of the MoCo/BYOL momentum branch after an optimizer step; `progress` = step / total steps."""
        if hasattr(self.head, "update_momentum_encoder"):
            self.head.update_momentum_encoder(self.iecl.backbone, self.head.momentum_for(progress))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.image_mean.to(images.dtype)) / self.image_std.to(images.dtype)

    def generator_parameters(self):
        return list(self.view_generator.parameters()) if self.view_generator is not None else []

    def encoder_parameters(self):
        generator = {id(p) for p in self.generator_parameters()}
        return [p for p in self.parameters() if id(p) not in generator]

    def set_generator_budget_scale(self, scale: float):
        """Fraction of `generator_epsilon` the generator may use now (the recipe's warm-up sets it each step)."""
        if self.view_generator is not None:
            self.view_generator.budget_scale = float(min(max(scale, 0.0), 1.0))

    def generate_view(self, images: torch.Tensor):
        """T_phi(images) and its delta; the identity when the generator is disabled."""
        if self.view_generator is None:
            return images, torch.zeros_like(images)
        return self.view_generator(images)

    def forward(self, pixel_values: torch.Tensor, pixel_values_2: torch.Tensor, return_dict=None, **kwargs):
        """Gradient routing, in one `loss.backward()` (docs/method.md section 5):

        - encoder + projector (theta) get the gradient of `L_theta = L_base + lambda_pres * relu(dH_in.detach() - dH_rep)`;
        - the generator (phi) gets the gradient of `L_phi = s * L_base - lambda_gen * dH_in` (s = +1 cooperative,
          -1 adversarial).
        The encoder sees the generated view through `scale_gradient(., s)`, so the one backward of `loss` gives the
        generator `s * dL_theta/dview` through the encoder. That is `s * dL_base/dview` exactly when the preservation
        term has no gradient (`lambda_pres = 0` or its relu inactive), at no extra cost. Otherwise its part is taken
        with one input-only backward through the encoder and removed through a zero-valued surrogate, which also
        adds `-lambda_gen * dH_in`; `loss` keeps the value of `L_theta`.
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        batch_size = pixel_values.shape[0]
        generated, delta = self.generate_view(pixel_values_2)
        route_gradients = self.view_generator is not None and torch.is_grad_enabled()
        stance = 1.0 if config.generator_stance == "cooperative" else -1.0
        encoder_input_2 = scale_gradient(generated, stance) if route_gradients else generated

        encoder_inputs = self.normalize(torch.cat([pixel_values, encoder_input_2], dim=0))
        features = self.iecl(encoder_inputs).pooler_output
        base_loss, projections = self.head(features, encoder_inputs.detach(), batch_size)

        # Entropy terms over the global batch. The reference side never gets a gradient: the encoder should keep
        # the generated gain, not earn it by compressing the reference view.
        reference = pixel_values if config.entropy_reference == "view1" else pixel_values_2
        entropy_input_generated = self.pixel_entropy(gather_with_grad(pixel_features(generated, config.pixel_entropy_size)))
        with torch.no_grad():
            entropy_input_reference = self.pixel_entropy(gather_with_grad(pixel_features(reference, config.pixel_entropy_size)))
        entropy_gain_input = entropy_input_generated - entropy_input_reference

        rep = projections if config.representation_level == "projection" else features
        entropy_representation_generated = self.representation_entropy(gather_with_grad(rep[batch_size:]))
        with torch.no_grad():
            if config.entropy_reference == "view1":
                rep_reference = rep[:batch_size]
            else:
                reference_features = self.iecl(self.normalize(pixel_values_2)).pooler_output
                rep_reference = self.head.projector(reference_features) if config.representation_level == "projection" else reference_features
            entropy_representation_reference = self.representation_entropy(gather_with_grad(rep_reference))
        entropy_gain_representation = entropy_representation_generated - entropy_representation_reference

        preservation_loss = F.relu(entropy_gain_input.detach() - entropy_gain_representation)
        loss = base_loss + config.lambda_pres * preservation_loss

        generator_loss = stance * base_loss.detach() - config.lambda_gen * entropy_gain_input.detach()
        if route_gradients:
            surrogate = -config.lambda_gen * entropy_gain_input
            # Same decision on every rank (the value is global), so the collectives in this backward line up.
            if config.lambda_pres > 0 and preservation_loss.item() > 0:
                (preservation_grad,) = torch.autograd.grad(config.lambda_pres * preservation_loss, encoder_input_2, retain_graph=True)
                surrogate = surrogate - stance * (generated * preservation_grad).sum()
            loss = loss + (surrogate - surrogate.detach())

        output = IECLForPreTrainingOutput(
            loss=loss,
            base_loss=base_loss.detach(),
            entropy_gain_input=entropy_gain_input.detach(),
            entropy_gain_representation=entropy_gain_representation.detach(),
            preservation_loss=preservation_loss.detach(),
            generator_loss=generator_loss,
            perturbation_l1=delta.detach().abs().flatten(1).mean(1).mean(),
            entropy_input_reference=entropy_input_reference.detach(),
            entropy_input_generated=entropy_input_generated.detach(),
            entropy_representation_reference=entropy_representation_reference.detach(),
            entropy_representation_generated=entropy_representation_generated.detach(),
            pooler_output=features.detach(),
        )
        return output if return_dict else output.to_tuple()


class IECLForImageClassification(IECLPreTrainedModel):
    """The encoder with a linear head on its pooled features (linear probe / fine-tuning)."""

    _keys_to_ignore_on_load_unexpected = [r"head\.", r"view_generator\."]

    def __init__(self, config: IECLConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.iecl = IECLModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(self.iecl.num_features, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        pooled = self.iecl(pixel_values).pooler_output
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.float())
            else:
                loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        if not return_dict:
            return (loss, logits) if loss is not None else (logits,)
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits)


__all__ = ["IECLPreTrainedModel", "IECLModel", "IECLForPreTraining", "IECLForImageClassification", "IECLForPreTrainingOutput"]
