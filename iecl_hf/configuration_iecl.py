"""Configuration of IE-CL models (one field per hyperparameter of docs/method.md)."""

from transformers import PretrainedConfig

FRAMEWORKS = ("simclr", "moco", "byol", "simsiam")
STEMS = ("timm", "cifar", "cifar_stride2")
GENERATOR_ARCHITECTURES = ("saib", "none")
# How SAIB takes the base loss's gradient (the entropy and KL terms always reach it): as the encoder does
# ("cooperative": an easier query view), not at all ("detached"), or reversed ("adversarial": a harder query view).
SAIB_STANCES = {"cooperative": 1.0, "detached": 0.0, "adversarial": -1.0}
# How SAIB's patch restore starts (skip 3, docs/method.md section 1): at zero, SAIB the identity ("residual"), or
# as the left inverse of the patch embedding, SAIB about 2X + g(X) (the paper's formula read literally).
SAIB_THIRD_SKIPS = ("residual", "literal")
ENTROPY_ESTIMATORS = ("coding_rate", "gaussian")
KL_COVARIANCES = ("diagonal", "full")

# The fields whose default depends on the framework (unset, None, takes the framework's value), as measured in
# BENCHMARKS.md: the projector head, and the temperature chosen on the validation split for SimCLR (0.1 beat 0.2 on
# both sides of the paired comparison); MoCo keeps MoCo v2's 0.2; BYOL and SimSiam have no temperature. The resolved
# values are saved in config.json, so a later change of these defaults cannot change a saved model.
FRAMEWORK_DEFAULTS = {
    "simclr": {"projection_output_batchnorm": True, "tau": 0.1},
    "moco": {"projection_output_batchnorm": False, "tau": 0.2},
    "byol": {"projection_output_batchnorm": False, "tau": 0.2},  # unused: no temperature in its loss
    "simsiam": {"projection_output_batchnorm": True, "tau": 0.2},  # unused; SimSiam's projector ends in a BN
}

# Every IE-CL term off: the framework's own baseline (plain SimCLR, MoCo v2 or BYOL), the other side of each paired
# comparison in BENCHMARKS.md. The terms are still computed as monitors; they no longer reach the loss.
BASELINE_OVERRIDES = {
    "generator_architecture": "none",
    "lambda_saib_logdet": 0,
    "encoder_spectral_norm": False,
    "lambda_entropy": 0,
    "beta_kl": 0,
}


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(
            f"IECLConfig.{name}={value!r} is not supported; allowed values: {', '.join(map(repr, allowed))}."
        )


def check_literal_skip_width(third_skip, saib_dim, saib_patch_size, channels=3):
    """The literal third skip inverts SAIB's patch embedding, which needs as many channels as a patch has pixels."""
    patch_pixels = channels * saib_patch_size**2
    if third_skip == "literal" and saib_dim < patch_pixels:
        raise ValueError(
            f"IECLConfig.saib_third_skip='literal' needs saib_dim >= {patch_pixels} (the pixels of a "
            f"{saib_patch_size} x {saib_patch_size} patch), for the patch restore to invert the embedding; got "
            f"saib_dim={saib_dim}. Raise saib_dim or use saib_third_skip='residual'."
        )


def _check_positive(name, value, allow_zero=False):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"IECLConfig.{name} must be a number, got {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"IECLConfig.{name} must be {bound}, got {value!r}.")


class IECLConfig(PretrainedConfig):
    r"""
    Configuration of an IE-CL model (`IECLModel`, `IECLForPreTraining`, `IECLForImageClassification`).

    IE-CL plugs into a contrastive framework: a learnable block (SAIB) transforms the query view, the objective
    maximizes the entropy of the query representations `H(Z')` while a Gaussian KL keeps them close to the anchor
    ones, and a spectral-norm penalty bounds the encoder's Lipschitz constant (entropy preservation):

        L = L_base + beta_kl KL(p_phi || q) - lambda_entropy H(Z') + spectral_norm_weight L_spectral
            (+ SAIB weight decay)

    Every term can be switched off (a weight of 0, `generator_architecture="none"`, `encoder_spectral_norm=False`),
    so the paper's ablation is a set of config changes. See `docs/method.md` for the equations and their sources.

    Args:
        backbone (`str`, *optional*, defaults to `"resnet18"`):
            Name of a timm architecture, built with `timm.create_model(backbone, pretrained=False, num_classes=0)`.
        backbone_kwargs (`dict`, *optional*):
            Extra keyword arguments for `timm.create_model` (e.g. `{"channels": [32, 64, 128, 256]}`).
        backbone_pretrained (`bool`, *optional*, defaults to `False`):
            Start pretraining from timm's pretrained weights of `backbone` (its default tag, or the tag in the name,
            e.g. `"resnet50.a1_in1k"`), downloaded by timm. Read only when the training code builds a fresh model
            (`iecl_hf.training.starting_point`); `from_pretrained` loads a checkpoint's own weights and never
            downloads these. With a CIFAR stem the replaced first conv starts fresh (timm's 7x7 stem does not fit).
        backbone_checkpoint (`str`, *optional*):
            Start pretraining from the backbone weights of a local timm folder (`config.json` + `model.safetensors`,
            e.g. written by `recipes/export_timm.py`) or a `.safetensors` file with timm's key names; the offline
            alternative to `backbone_pretrained`, read at the same time only. Recorded as given (a path on the
            machine that trained).
        stem (`str`, *optional*, defaults to `"cifar"`):
            `"timm"` keeps the backbone's own stem; `"cifar"` replaces it by a 3x3 stride-1 conv without max-pool;
            `"cifar_stride2"` by a 3x3 stride-2 conv without max-pool. The CIFAR stems need a ResNet-style
            backbone (`conv1` + `maxpool`).
        image_size (`int`, *optional*, defaults to 32):
            Side of the square training crops and of the image processor's output.
        image_mean (`list[float]`, *optional*), image_std (`list[float]`, *optional*):
            Normalization the encoder expects (ImageNet statistics by default).
        framework (`str`, *optional*, defaults to `"simclr"`):
            Framework that provides the base loss: `"simclr"` (NT-Xent), `"moco"` (MoCo v2, symmetrized: momentum
            encoder + queue of negatives), `"byol"` (momentum target + predictor, no negatives) or `"simsiam"`
            (predictor, stop-gradient target from the same encoder, symmetric negative cosine; no momentum network).
        moco_queue_size (`int`, *optional*, defaults to 4096):
            MoCo: number of negatives in the queue; each step enqueues the keys of both views.
        moco_batchnorm_groups (`int`, *optional*, defaults to 1):
            MoCo: Shuffle BN on one device. Each process's 2B rows go through the encoder and the heads as this
            many BatchNorm groups, the key branch's rows shuffled first (the reference CIFAR demo's
            SplitBatchNorm), so that a query and its positive key are normalized over different sets of images and
            cannot match through the batch statistics. 1: the 2B rows as one batch. Groups differ by at most
            one row; the recipe needs at least as many images per process as groups (2 rows per group).
        momentum_base (`float`, *optional*, defaults to 0.99):
            MoCo: the constant momentum of the key encoder; BYOL: the start of the cosine schedule to 1.
        predictor_hidden_dim (`int`, *optional*, defaults to 512):
            BYOL and SimSiam: hidden size of the predictor.
        projection_hidden_dim (`int`, *optional*, defaults to 512),
        projection_dim (`int`, *optional*, defaults to 128):
            Sizes of the 2-layer projection head `g`.
        projection_output_batchnorm (`bool`, *optional*):
            End the projection head in a BatchNorm (`Linear-BN-ReLU-Linear-BN`, SimCLR v2's and lightly's
            projector) instead of a plain Linear. BYOL's predictor never has one. Unset: `True` for SimCLR, `False`
            for MoCo and BYOL (`FRAMEWORK_DEFAULTS`: the heads measured best, or measured at all, in
            BENCHMARKS.md).
        batchnorm_per_view (`bool`, *optional*, defaults to `False`):
            Run each view through the encoder and the heads as its own batch of B, so that BatchNorm normalizes each
            view with its own statistics (lightly's SimCLR loop). `False`: the two views as one batch of 2B, as in
            SimCLR's reference code. Pretraining only; evaluation uses the running statistics either way.
        tau (`float`, *optional*):
            Temperature of the NT-Xent (SimCLR) and InfoNCE (MoCo) losses. Unset: 0.1 for SimCLR (chosen on the
            validation split, BENCHMARKS.md), 0.2 for MoCo (MoCo v2's value); BYOL and SimSiam do not use it.
        generator_architecture (`str`, *optional*, defaults to `"saib"`):
            The learnable transformation of the query view: `"saib"` (the paper's Sample Augmentation Incremental
            Block, identity at initialization) or `"none"` (the query view is the second standard view).
        saib_stance (`str`, *optional*, defaults to `"cooperative"`):
            How SAIB takes the gradient of the base loss: `"cooperative"` (as the encoder: SAIB minimizes it, which
            pulls it toward easier views), `"detached"` (not at all: SAIB is trained by the entropy and KL terms and
            its weight decay only) or `"adversarial"` (reversed: SAIB maximizes the base loss, a harder query view,
            held near the anchor by the KL term and its weight decay). The encoder's gradient is the same for all
            three; `"detached"` and `"adversarial"` cost one more backward pass to the query view per step.
        saib_third_skip (`str`, *optional*, defaults to `"residual"`):
            How SAIB's third skip `X' = X + restore(P')` starts: `"residual"` (`restore` zero-initialized: SAIB starts
            as the identity, entropy increment 0) or `"literal"` (the paper's formula read literally: `P'` holds its
            own skip, so `restore` starts as the left inverse of the patch embedding and SAIB at about `2X + g(X)`;
            needs `saib_dim >= 3 * saib_patch_size**2`).
        saib_patch_size (`int`, *optional*, defaults to 4):
            Side of SAIB's patches; must divide `image_size` (4 at 32 px: an 8 x 8 grid).
        saib_dim (`int`, *optional*, defaults to 64):
            Channels of SAIB's patch embedding.
        saib_expansion (`int`, *optional*, defaults to 2):
            Channel expansion of SAIB's 1x1 -> 3x3 -> 1x1 stack.
        saib_weight_decay (`float`, *optional*, defaults to 0.01):
            `gamma R(g_phi)`: decoupled weight decay of SAIB's optimizer (AdamW).
        lambda_saib_logdet (`float`, *optional*, defaults to 0.0):
            Weight of `-E log|det J_SAIB|`, SAIB's own entropy increment (the quantity of the paper's title: for an
            invertible map, `H(SAIB(X)) = H(X) + E log|det J|`), estimated each step from the Jacobian blocks of single
            patches of `SAIB_LOGDET_IMAGES` (1) query images (`saib_iecl.saib_logdet`). It reaches SAIB only, in every
            `saib_stance`. 0: off (the paper's objective has no such term; `saib_logdet` stays a monitor).
        lambda_entropy (`float`, *optional*, defaults to 1.0):
            Weight of `-H(Z')`, the entropy of the query projections, in the objective. On SimCLR 1.0 beat 0.1, 0.3
            and 3.0; on MoCo and BYOL it beat 0.1 (BENCHMARKS.md).
        entropy_estimator (`str`, *optional*, defaults to `"coding_rate"`):
            Estimator of `H(Z')`: `"coding_rate"` (`1/(2d) logdet(I + d/(B eps^2) Z Z^T)`) or `"gaussian"`
            (`1/(2d) logdet(2 pi e (Cov + ridge I))`).
        coding_rate_epsilon (`float`, *optional*, defaults to 0.5):
            Distortion `eps` of the coding rate.
        beta_kl (`float`, *optional*, defaults to 0.1):
            Weight of `KL(p_phi || q)`, the Gaussian KL of the query projections to the (detached) anchor ones.
        kl_covariance (`str`, *optional*, defaults to `"diagonal"`):
            Covariance of the Gaussians of the KL: `"diagonal"` or `"full"`.
        covariance_ridge (`float`, *optional*, defaults to 1e-3):
            Ridge added to the covariances of the KL and of the `"gaussian"` estimator.
        encoder_spectral_norm (`bool`, *optional*, defaults to `True`):
            Entropy preservation: the penalty `mean_l relu(sigma_l - 1)^2` on the spectral norms of the backbone's
            conv and linear layers (a Lipschitz bound), with weight `spectral_norm_weight`.
        spectral_norm_weight (`float`, *optional*, defaults to 1.0):
            `eta`, the weight of the spectral-norm penalty.
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Dropout before the linear head of `IECLForImageClassification`.
    """

    model_type = "iecl"

    # fmt: off
    def __init__(
        self,
        # the encoder
        backbone="resnet18", backbone_kwargs=None, stem="cifar", image_size=32, image_mean=None, image_std=None,
        backbone_pretrained=False, backbone_checkpoint=None,
        # the framework (its base loss and heads)
        framework="simclr", moco_queue_size=4096, moco_batchnorm_groups=1, momentum_base=0.99,
        predictor_hidden_dim=512, projection_hidden_dim=512, projection_dim=128, projection_output_batchnorm=None,
        batchnorm_per_view=False, tau=None,
        # generation: SAIB on the query view
        generator_architecture="saib", saib_stance="cooperative", saib_third_skip="residual", saib_patch_size=4,
        saib_dim=64, saib_expansion=2, saib_weight_decay=0.01, lambda_saib_logdet=0.0,
        # the query-entropy and KL terms
        lambda_entropy=1.0, entropy_estimator="coding_rate", coding_rate_epsilon=0.5,
        beta_kl=0.1, kl_covariance="diagonal", covariance_ridge=1e-3,
        # preservation: the spectral-norm penalty on the encoder
        encoder_spectral_norm=True, spectral_norm_weight=1.0,
        classifier_dropout=0.0,
        **kwargs,
    ):  # fmt: on
        self.backbone = backbone
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.backbone_pretrained = backbone_pretrained
        self.backbone_checkpoint = backbone_checkpoint
        self.stem = stem
        self.image_size = image_size
        self.image_mean = list(image_mean if image_mean is not None else (0.485, 0.456, 0.406))
        self.image_std = list(image_std if image_std is not None else (0.229, 0.224, 0.225))
        self.framework = framework
        self.moco_queue_size = moco_queue_size
        self.moco_batchnorm_groups = moco_batchnorm_groups
        self.momentum_base = momentum_base
        self.predictor_hidden_dim = predictor_hidden_dim
        self.projection_hidden_dim = projection_hidden_dim
        self.projection_dim = projection_dim
        # An unknown framework fails validation below; until then it resolves like SimCLR.
        measured = FRAMEWORK_DEFAULTS.get(framework, FRAMEWORK_DEFAULTS["simclr"])
        if projection_output_batchnorm is None:
            projection_output_batchnorm = measured["projection_output_batchnorm"]
        self.projection_output_batchnorm = projection_output_batchnorm
        self.batchnorm_per_view = batchnorm_per_view
        self.tau = measured["tau"] if tau is None else tau
        self.generator_architecture = "none" if generator_architecture is None else generator_architecture
        self.saib_stance = saib_stance
        self.saib_third_skip = saib_third_skip
        self.saib_patch_size = saib_patch_size
        self.saib_dim = saib_dim
        self.saib_expansion = saib_expansion
        self.saib_weight_decay = saib_weight_decay
        self.lambda_saib_logdet = lambda_saib_logdet
        self.lambda_entropy = lambda_entropy
        self.entropy_estimator = entropy_estimator
        self.coding_rate_epsilon = coding_rate_epsilon
        self.beta_kl = beta_kl
        self.kl_covariance = kl_covariance
        self.covariance_ridge = covariance_ridge
        self.encoder_spectral_norm = encoder_spectral_norm
        self.spectral_norm_weight = spectral_norm_weight
        self.classifier_dropout = classifier_dropout
        super().__init__(**kwargs)
        self.validate_iecl()

    def validate_iecl(self):
        """Raise `ValueError` naming the field for any value the model cannot use."""
        import timm  # local import: configs load fast and without timm until validated

        if not isinstance(self.backbone, str) or not timm.is_model(self.backbone):
            raise ValueError(
                f"IECLConfig.backbone={self.backbone!r} is not a timm architecture; allowed values: any name in "
                "`timm.list_models()`, e.g. 'resnet18', 'resnet50', 'vit_small_patch16_224'."
            )
        if not isinstance(self.backbone_kwargs, dict):
            raise ValueError(f"IECLConfig.backbone_kwargs must be a dict, got {type(self.backbone_kwargs).__name__}.")
        self._validate_backbone_weights(timm)
        _check_choice("stem", self.stem, STEMS)
        _check_choice("framework", self.framework, FRAMEWORKS)
        _check_choice("generator_architecture", self.generator_architecture, GENERATOR_ARCHITECTURES)
        _check_choice("saib_stance", self.saib_stance, tuple(SAIB_STANCES))
        _check_choice("saib_third_skip", self.saib_third_skip, SAIB_THIRD_SKIPS)
        _check_choice("entropy_estimator", self.entropy_estimator, ENTROPY_ESTIMATORS)
        _check_choice("kl_covariance", self.kl_covariance, KL_COVARIANCES)
        for name in ("encoder_spectral_norm", "projection_output_batchnorm", "batchnorm_per_view"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"IECLConfig.{name} must be True or False, got {getattr(self, name)!r}.")
        for name in (
            "image_size",
            "projection_hidden_dim",
            "projection_dim",
            "moco_queue_size",
            "moco_batchnorm_groups",
            "predictor_hidden_dim",
            "saib_patch_size",
            "saib_dim",
            "saib_expansion",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"IECLConfig.{name} must be a positive integer, got {value!r}.")
        if self.batchnorm_per_view and self.framework == "moco" and self.moco_batchnorm_groups > 1:
            raise ValueError(
                "IECLConfig: batchnorm_per_view=True and moco_batchnorm_groups>1 both set the BatchNorm groups; "
                "choose one."
            )
        if self.image_size % self.saib_patch_size:
            raise ValueError(
                f"IECLConfig.saib_patch_size={self.saib_patch_size} must divide image_size={self.image_size} "
                "(SAIB cuts the image into whole patches)."
            )
        if self.generator_architecture == "saib":
            check_literal_skip_width(self.saib_third_skip, self.saib_dim, self.saib_patch_size)
        for name in ("tau", "coding_rate_epsilon", "covariance_ridge"):
            _check_positive(name, getattr(self, name))
        for name in (
            "lambda_entropy",
            "beta_kl",
            "saib_weight_decay",
            "lambda_saib_logdet",
            "spectral_norm_weight",
            "classifier_dropout",
        ):
            _check_positive(name, getattr(self, name), allow_zero=True)
        if self.lambda_saib_logdet > 0 and self.generator_architecture == "none":
            raise ValueError(
                f"IECLConfig.lambda_saib_logdet={self.lambda_saib_logdet!r} weighs SAIB's entropy increment, but "
                "generator_architecture='none' has no SAIB; set generator_architecture='saib' or lambda_saib_logdet=0."
            )
        if not (isinstance(self.momentum_base, (int, float)) and 0 <= self.momentum_base < 1):
            raise ValueError(f"IECLConfig.momentum_base must be in [0, 1), got {self.momentum_base!r}.")
        if self.classifier_dropout >= 1:
            raise ValueError(f"IECLConfig.classifier_dropout must be < 1, got {self.classifier_dropout!r}.")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if len(value) != 3 or any(not isinstance(v, (int, float)) for v in value):
                raise ValueError(f"IECLConfig.{name} must be 3 numbers (one per RGB channel), got {value!r}.")
        if any(v <= 0 for v in self.image_std):
            raise ValueError(f"IECLConfig.image_std must be > 0 per channel, got {self.image_std!r}.")

    def _validate_backbone_weights(self, timm):
        """`backbone_pretrained` / `backbone_checkpoint`: one source of starting weights, one timm has."""
        if not isinstance(self.backbone_pretrained, bool):
            raise ValueError(
                f"IECLConfig.backbone_pretrained must be True or False, got {self.backbone_pretrained!r}."
            )
        if self.backbone_checkpoint is not None and not (
            isinstance(self.backbone_checkpoint, str) and self.backbone_checkpoint.strip()
        ):
            raise ValueError(
                "IECLConfig.backbone_checkpoint must be the path of a timm folder or a .safetensors file, got "
                f"{self.backbone_checkpoint!r}."
            )
        if self.backbone_pretrained and self.backbone_checkpoint is not None:
            raise ValueError(
                f"IECLConfig: backbone_pretrained=True and backbone_checkpoint={self.backbone_checkpoint!r} both give "
                "the backbone's starting weights; choose one."
            )
        if self.backbone_pretrained and not timm.models.is_model_pretrained(self.backbone):
            raise ValueError(
                f"IECLConfig.backbone_pretrained=True: timm has no pretrained weights for {self.backbone!r}; choose "
                "a backbone it has weights for (`timm.list_models(pretrained=True)`) or pass backbone_checkpoint."
            )


__all__ = ["IECLConfig"]
