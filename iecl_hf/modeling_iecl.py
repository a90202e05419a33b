"""IE-CL models: the encoder (`IECLModel`), the pretraining objective (`IECLForPreTraining`) and a linear
classifier (`IECLForImageClassification`). The files a checkpoint needs are flat and import only torch,
transformers, timm and each other, so `save_pretrained` output loads with `trust_remote_code=True`."""

from dataclasses import dataclass

import timm
import torch
from torch import nn
from torch.profiler import record_function
from transformers import PreTrainedModel
from transformers.modeling_outputs import (
    BaseModelOutputWithPoolingAndNoAttention,
    ImageClassifierOutputWithNoAttention,
)
from transformers.utils import ModelOutput

from .configuration_iecl import SAIB_STANCES, IECLConfig
from .distributed_iecl import gather_with_grad
from .entropy_iecl import QueryEntropy, gaussian_kl
from .frameworks_iecl import FRAMEWORK_HEADS, MoCoHead, batchnorm_groups, mark_owned, run_views
from .saib_iecl import SAIB, SAIB_LOGDET_IMAGES, saib_logdet
from .spectral_iecl import EncoderSpectralPenalty


def timm_model_kwargs(config: IECLConfig) -> dict:
    """The keywords `build_backbone` gives `timm.create_model` besides `num_classes`: `config.backbone_kwargs`, plus
    `img_size=config.image_size` for the architectures whose input size is fixed at construction (ViT, DeiT, Swin,
    EVA, ...: their position embeddings have one entry per patch of that size). That is timm's own rule: it passes
    `img_size` (from `pretrained_cfg["input_size"]`) exactly when the pretrained cfg says `fixed_input_size`. An
    `img_size` in `backbone_kwargs` wins."""
    kwargs = dict(config.backbone_kwargs)
    pretrained_cfg = timm.models.get_pretrained_cfg(config.backbone)
    if pretrained_cfg is not None and pretrained_cfg.fixed_input_size:
        kwargs.setdefault("img_size", config.image_size)
    return kwargs


def build_backbone(config: IECLConfig, pretrained: bool = False) -> nn.Module:
    """`timm.create_model(config.backbone, ...)` with the stem `config.stem` asks for, at `config.image_size` for the
    architectures built for one input size (`timm_model_kwargs`).

    `pretrained=True`: timm downloads and loads its pretrained weights of `config.backbone`. The model classes never
    ask for it (a checkpoint brings its own weights to `from_pretrained`); the training code does, for a fresh model
    with `config.backbone_pretrained` (`iecl_hf.training.starting_point`). A CIFAR stem replaces the first conv after
    timm built it, so that conv starts fresh either way. A ViT's weights trained at another size load all the same:
    timm resamples their position embeddings to `img_size`."""
    backbone = timm.create_model(config.backbone, pretrained=pretrained, num_classes=0, **timm_model_kwargs(config))
    if config.stem != "timm":
        if not (isinstance(getattr(backbone, "conv1", None), nn.Conv2d) and hasattr(backbone, "maxpool")):
            raise ValueError(
                f"IECLConfig.stem={config.stem!r} needs a ResNet-style backbone "
                "with a single `conv1` and a `maxpool`; "
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
    # The timm backbone is one block for `device_map="auto"` (timm has no model parallelism), as TimmWrapperModel.
    _no_split_modules = ["IECLModel"]

    def _init_weights(self, module):
        # Only the layers IE-CL owns (marked by `mark_owned`): the default would re-initialize the timm backbone and
        # erase timm's own init (e.g. the zero-init of the last BN of each residual block). Leaf layers, so that
        # `from_pretrained` initializes whatever a checkpoint lacks (an encoder-only checkpoint has no head).
        if getattr(module, "_iecl_owned", False):
            if isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(module.weight, a=5**0.5)  # PyTorch's Linear default
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm1d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
                nn.init.zeros_(module.running_mean)
                nn.init.ones_(module.running_var)
                nn.init.zeros_(module.num_batches_tracked)
        elif isinstance(module, (SAIB, EncoderSpectralPenalty)):
            module.reset_parameters()  # both draw from their own random streams
        elif isinstance(module, MoCoHead):
            module.reset_queue()

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
    """The encoder f_theta: a timm backbone. Input: `pixel_values` normalized with the image processor.

    Attributes:
        backbone (`nn.Module`): the plain timm module, `timm.create_model(config.backbone, num_classes=0,
            **timm_model_kwargs(config))` with its first conv replaced for the CIFAR stems. Its state dict has timm's
            key names, and timm's API works on it (`forward_features`, `forward_intermediates`, `forward_head`,
            `set_grad_checkpointing`), so it goes into code that expects a timm model as it is.
            `recipes/export_timm.py` writes it as a timm folder for `stem="timm"`; for the CIFAR stems, which timm
            cannot build by name, this attribute is the way out.
    """

    # A pretraining checkpoint also holds the framework head (projector, momentum encoder, queue) and the
    # generator: the encoder leaves them, silently. Only `iecl.backbone` is the released encoder.
    _keys_to_ignore_on_load_unexpected = [r"head\.", r"view_generator\.", r"spectral_penalty\."]

    def __init__(self, config: IECLConfig):
        super().__init__(config)
        self.backbone = build_backbone(config)
        self.num_features = self.backbone.num_features
        self.post_init()

    @property
    def gradient_checkpointing(self) -> bool:
        """Whether the backbone recomputes its activations in the backward pass (timm's `grad_checkpointing`, set by
        `gradient_checkpointing_enable`); what transformers' `is_gradient_checkpointing` reads."""
        return bool(getattr(self.backbone, "grad_checkpointing", False))

    def forward(self, pixel_values: torch.Tensor, output_hidden_states=None, return_dict=None, **kwargs):
        """`last_hidden_state`: the final feature map; `pooler_output`: the pooled features (what the linear probe
        and the pipeline use); with `output_hidden_states`, `hidden_states` holds the feature map after the stem and
        after each stage (timm's `forward_intermediates`), the last one equal to `last_hidden_state`."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        hidden_states = None
        if output_hidden_states:
            feature_map, intermediates = self.backbone.forward_intermediates(pixel_values)
            hidden_states = tuple(intermediates)
        else:
            feature_map = self.backbone.forward_features(pixel_values)
        pooled = self.backbone.forward_head(feature_map, pre_logits=True)
        if not return_dict:
            return tuple(v for v in (feature_map, pooled, hidden_states) if v is not None)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=feature_map, pooler_output=pooled, hidden_states=hidden_states
        )


@dataclass
class IECLForPreTrainingOutput(ModelOutput):
    """Output of `IECLForPreTraining`.

    Args:
        loss: the IE-CL objective `L = L_base + beta_kl KL - lambda_entropy H(Z') + spectral_norm_weight L_spectral`
            (SAIB takes `L_base`'s gradient as `config.saib_stance` says), `- lambda_saib_logdet E log|det J|` when
            that weight is set.
        base_loss: the framework's loss `L_base` (NT-Xent for SimCLR, InfoNCE with a queue for MoCo,
            BYOL's regression).
        entropy_query: `H(Z')`, the entropy of the query projections (nats per dimension, the configured estimator).
        entropy_anchor: the same estimator on the anchor projections (a monitor, no gradient).
        kl_loss: `KL(p_phi || q)` of the query projections to the anchor projections (nats per dimension).
        spectral_penalty: `L_spectral = mean_l relu(sigma_l - 1)^2` (0 when `encoder_spectral_norm=False`).
        spectral_norm_max: the largest layer spectral norm of the backbone (a monitor).
        saib_logdet: SAIB's entropy increment `E log|det J|` (patch Jacobian blocks): the loss's term, on
            `SAIB_LOGDET_IMAGES` query images, when `lambda_saib_logdet > 0`; else a monitor on one image (training
            mode only).
        pooler_output: pooled features of the two encoded views, `(2B, C)` (anchor view, then query view).
    """

    loss: torch.Tensor | None = None
    base_loss: torch.Tensor | None = None
    entropy_query: torch.Tensor | None = None
    entropy_anchor: torch.Tensor | None = None
    kl_loss: torch.Tensor | None = None
    spectral_penalty: torch.Tensor | None = None
    spectral_norm_max: torch.Tensor | None = None
    saib_logdet: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None


class IECLForPreTraining(IECLPreTrainedModel):
    """IE-CL pretraining: encoder + framework head + SAIB on the query branch + the entropy terms.

    `forward(pixel_values, pixel_values_2)` takes the two standard augmented views **in [0, 1]** (not normalized:
    SAIB transforms pixels; the model normalizes with `config.image_mean/std` before the encoder). The first view is
    the anchor, the second becomes the query view `SAIB(v2)`.
    """

    def __init__(self, config: IECLConfig):
        super().__init__(config)
        self.iecl = IECLModel(config)
        self.head = FRAMEWORK_HEADS[config.framework](config, self.iecl.num_features, self.iecl.backbone)
        self.view_generator = (
            SAIB(
                config.image_size,
                config.saib_patch_size,
                config.saib_dim,
                config.saib_expansion,
                third_skip=config.saib_third_skip,
            )
            if config.generator_architecture == "saib"
            else None
        )
        self.spectral_penalty = EncoderSpectralPenalty(self.iecl.backbone) if config.encoder_spectral_norm else None
        self.query_entropy = QueryEntropy(
            config.entropy_estimator, config.coding_rate_epsilon, config.covariance_ridge
        )
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)
        self.post_init()
        if hasattr(self.head, "reset_momentum_encoder"):
            self.head.reset_momentum_encoder(self.iecl.backbone)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, then: the normalization buffers from the config, and, for a checkpoint
        without the momentum branch (an encoder-only checkpoint), the momentum branch as a copy of the loaded encoder,
        as a fresh model has it."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        # Non-persistent buffers are in no checkpoint: loading leaves them as they were allocated.
        model.image_mean.copy_(torch.tensor(model.config.image_mean).view(1, 3, 1, 1))
        model.image_std.copy_(torch.tensor(model.config.image_std).view(1, 3, 1, 1))
        if hasattr(model.head, "reset_momentum_encoder") and any(".momentum_" in key for key in info["missing_keys"]):
            model.head.reset_momentum_encoder(model.iecl.backbone)
        return (model, info) if output_loading_info else model

    def update_momentum_encoder(self, progress: float):
        """EMA step of the MoCo/BYOL momentum branch after an optimizer step; `progress` = step / total steps."""
        if hasattr(self.head, "update_momentum_encoder"):
            self.head.update_momentum_encoder(self.iecl.backbone, self.head.momentum_for(progress))

    def encode(self, normalized_images: torch.Tensor) -> torch.Tensor:
        return self.iecl(normalized_images).pooler_output

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.image_mean.to(images.dtype)) / self.image_std.to(images.dtype)

    def generator_parameters(self):
        """SAIB's parameters (trained by their own optimizer, with `saib_weight_decay`)."""
        return list(self.view_generator.parameters()) if self.view_generator is not None else []

    def encoder_parameters(self):
        generator = {id(p) for p in self.generator_parameters()}
        return [p for p in self.parameters() if id(p) not in generator]

    def query_view(self, images: torch.Tensor) -> torch.Tensor:
        """SAIB(images), the view of the query branch; the images themselves without SAIB."""
        return images if self.view_generator is None else self.view_generator(images)

    def generate_view(self, images: torch.Tensor):
        """The query view and its difference to `images` (for pictures: views.png)."""
        generated = self.query_view(images)
        return generated, generated - images

    def stance_term(self, base_loss: torch.Tensor, query_view: torch.Tensor):
        """A term of value 0 whose gradient gives SAIB (and nothing else) `(stance - 1) dL_base/dX'`, so that SAIB
        takes the base loss's gradient times `SAIB_STANCES[config.saib_stance]` (1, 0 or -1) while the encoder takes
        it whole; the entropy and KL terms reach SAIB unchanged. The cooperative stance adds nothing."""
        stance = SAIB_STANCES[self.config.saib_stance]
        if stance == 1.0 or self.view_generator is None or not (torch.is_grad_enabled() and query_view.requires_grad):
            return 0.0
        # dL_base/dX' on the query view only: one backward pass to the input (no parameter gradients).
        (base_gradient,) = torch.autograd.grad(base_loss, query_view, retain_graph=True)
        return (stance - 1.0) * ((query_view - query_view.detach()) * base_gradient).sum()

    def saib_entropy_increment(self, images: torch.Tensor, monitor: bool):
        """SAIB's `E log|det J|` as `(term, monitor)`. With `lambda_saib_logdet > 0` the term is estimated on
        `SAIB_LOGDET_IMAGES` images with its graph (its gradient reaches SAIB only: the images are data) and the
        monitor is its value; otherwise the term is None and `monitor=True` estimates the value on one image."""
        if self.view_generator is None:
            return None, None
        images = images.detach()
        if self.config.lambda_saib_logdet > 0:
            with record_function("iecl/saib_logdet"):
                term = saib_logdet(self.view_generator, images[:SAIB_LOGDET_IMAGES])
            return term, term.detach()
        if not monitor:
            return None, None
        with record_function("iecl/monitors"), torch.no_grad():
            return None, saib_logdet(self.view_generator, images[:1])

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_values_2: torch.Tensor,
        output_saib_logdet: bool | None = None,
        output_monitors: bool | None = None,
        return_dict=None,
        **kwargs,
    ):
        """One objective for every trained parameter (encoder, heads, SAIB): one `loss.backward()` gives each the
        gradient of `loss`. The anchor side of the KL is detached (the query distribution moves toward the anchor).

        `output_monitors` (default: True) also computes the terms the loss does not use, for logging:
        `entropy_anchor`, and `entropy_query` / `kl_loss` when their weight is 0 (plain SimCLR); without it they
        are None. `output_saib_logdet` (default: in training mode, with `output_monitors`) computes the
        `saib_logdet` monitor (about a SAIB forward on 3 p^2 images). The recipe asks for both on logging steps
        only. The parts run under `torch.profiler.record_function` labels (`iecl/saib`, `iecl/backbone`,
        `iecl/base_loss`, `iecl/entropy`, `iecl/kl`, `iecl/spectral`, `iecl/saib_logdet`, `iecl/monitors`), which
        benchmarks/step_overhead.py reads back from a profile.
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        output_monitors = True if output_monitors is None else output_monitors
        optimize_entropy, optimize_kl = config.lambda_entropy > 0, config.beta_kl > 0
        batch_size = pixel_values.shape[0]
        with record_function("iecl/saib"):
            query_view = self.query_view(pixel_values_2)
        # Both views through the encoder as one batch of 2B (BatchNorm statistics over both, as in SimCLR), or as
        # groups (`batchnorm_per_view`: one per view; MoCo's `moco_batchnorm_groups`).
        with record_function("iecl/backbone"):
            encoder_inputs = self.normalize(torch.cat([pixel_values, query_view], dim=0))
            features = run_views(self.encode, encoder_inputs, batchnorm_groups(config))
        with record_function("iecl/base_loss"):
            # The anchor branch (MoCo's keys, BYOL's targets) sees the standard views: SAIB acts on the query branch
            # only.
            anchor_inputs = (
                self.normalize(torch.cat([pixel_values, pixel_values_2], dim=0))
                if self.view_generator is not None
                else encoder_inputs.detach()
            )
            base_loss, projections = self.head(features, anchor_inputs, batch_size)
            loss = base_loss + self.stance_term(base_loss, query_view)

        entropy_query = kl_loss = entropy_anchor = None
        if optimize_entropy or optimize_kl or output_monitors:
            anchor = gather_with_grad(projections[:batch_size])
            query = gather_with_grad(projections[batch_size:])
        if optimize_entropy or output_monitors:
            with record_function("iecl/entropy"), torch.set_grad_enabled(torch.is_grad_enabled() and optimize_entropy):
                entropy_query = self.query_entropy(query)
        if optimize_kl or output_monitors:
            with (
                record_function("iecl/kl"),
                torch.set_grad_enabled(torch.is_grad_enabled() and optimize_kl),
                torch.autocast(query.device.type, enabled=False),
            ):
                kl_loss = gaussian_kl(query, anchor.detach(), config.kl_covariance, config.covariance_ridge)
        if optimize_entropy:
            loss = loss - config.lambda_entropy * entropy_query
        if optimize_kl:
            loss = loss + config.beta_kl * kl_loss
        spectral_penalty = spectral_norm_max = None
        if self.spectral_penalty is not None:
            with record_function("iecl/spectral"):
                spectral_penalty, spectral_norm_max = self.spectral_penalty(self.iecl.backbone, update=self.training)
                if config.spectral_norm_weight > 0:
                    loss = loss + config.spectral_norm_weight * spectral_penalty
        if output_saib_logdet is None:
            output_saib_logdet = self.training and output_monitors
        logdet_term, logdet_monitor = self.saib_entropy_increment(pixel_values_2, output_saib_logdet)
        if logdet_term is not None:
            loss = loss - config.lambda_saib_logdet * logdet_term
        if output_monitors:
            with record_function("iecl/monitors"), torch.no_grad():
                entropy_anchor = self.query_entropy(anchor)

        output = IECLForPreTrainingOutput(
            loss=loss,
            base_loss=base_loss.detach(),
            entropy_query=detached(entropy_query),
            entropy_anchor=entropy_anchor,
            kl_loss=detached(kl_loss),
            spectral_penalty=detached(spectral_penalty),
            spectral_norm_max=spectral_norm_max,
            saib_logdet=logdet_monitor,
            pooler_output=features.detach(),
        )
        return output if return_dict else output.to_tuple()


def detached(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach()


class IECLForImageClassification(IECLPreTrainedModel):
    """The encoder with a linear head on its pooled features (linear probe / fine-tuning)."""

    _keys_to_ignore_on_load_unexpected = [r"head\.", r"view_generator\.", r"spectral_penalty\."]

    def __init__(self, config: IECLConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.iecl = IECLModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = (
            nn.Linear(self.iecl.num_features, config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        mark_owned(self.classifier)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        encoded = self.iecl(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(encoded.pooler_output))
        # transformers' classification loss: regression, single-label or multi-label from `config.problem_type`
        # (inferred from num_labels and the labels' dtype when unset).
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        if not return_dict:
            return tuple(v for v in (loss, logits, encoded.hidden_states) if v is not None)
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=encoded.hidden_states)


__all__ = [
    "IECLPreTrainedModel",
    "IECLModel",
    "IECLForPreTraining",
    "IECLForImageClassification",
    "IECLForPreTrainingOutput",
]
