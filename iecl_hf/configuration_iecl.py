"""Configuration of IE-CL models (one field per hyperparameter of docs/method.md)."""

from transformers import PretrainedConfig

FRAMEWORKS = ("simclr", "moco", "byol")
STEMS = ("timm", "cifar", "cifar_stride2")
ENTROPY_ESTIMATORS = ("renyi2", "logdet", "uniformity")
ENTROPY_REFERENCES = ("view1", "untransformed")
REPRESENTATION_LEVELS = ("backbone", "projection")
GENERATOR_STANCES = ("cooperative", "adversarial")


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"IECLConfig.{name}={value!r} is not supported; allowed values: {', '.join(map(repr, allowed))}.")


def _check_positive(name, value, allow_zero=False):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"IECLConfig.{name} must be a number, got {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"IECLConfig.{name} must be {bound}, got {value!r}.")


class IECLConfig(PretrainedConfig):
    r"""
    Configuration of an IE-CL model (`IECLModel`, `IECLForPreTraining`, `IECLForImageClassification`).

    IE-CL adds two plug-in modules to a contrastive framework: a learnable *view generator* that raises the
    entropy gain between augmented views, and an *encoder regularizer* that keeps that gain through the
    encoder. See `docs/method.md` for the equations.

    Args:
        backbone (`str`, *optional*, defaults to `"resnet18"`):
            Name of a timm architecture, built with `timm.create_model(backbone, pretrained=False, num_classes=0)`.
        backbone_kwargs (`dict`, *optional*):
            Extra keyword arguments for `timm.create_model` (e.g. `{"channels": [32, 64, 128, 256]}`).
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
            encoder + queue of negatives) or `"byol"` (momentum target + predictor, no negatives).
        moco_queue_size (`int`, *optional*, defaults to 4096):
            MoCo: number of negatives in the queue.
        momentum_base (`float`, *optional*, defaults to 0.99):
            MoCo: the constant momentum of the key encoder; BYOL: the start of the cosine schedule to 1.
        predictor_hidden_dim (`int`, *optional*, defaults to 512):
            BYOL: hidden size of the predictor.
        projection_hidden_dim (`int`, *optional*, defaults to 512), projection_dim (`int`, *optional*, defaults to 128):
            Sizes of the 2-layer projection head `g`.
        tau (`float`, *optional*, defaults to 0.2):
            Temperature of the InfoNCE / NT-Xent loss.
        use_view_generator (`bool`, *optional*, defaults to `True`):
            Whether the learnable transformation `T_phi` acts on the second view.
        generator_epsilon (`float`, *optional*, defaults to 0.05):
            Budget of the generator: mean |delta| per image, in units of the [0, 1] pixel range.
        generator_width (`int`, *optional*, defaults to 16):
            Channels of the generator's hidden layers.
        generator_num_blocks (`int`, *optional*, defaults to 2):
            Residual blocks in the generator.
        generator_stance (`str`, *optional*, defaults to `"cooperative"`):
            `"cooperative"`: the generator minimizes `+L_base`; `"adversarial"`: it minimizes `-L_base`
            (viewmaker-style). It always maximizes the entropy gain.
        generator_warmup_steps (`int`, *optional*, defaults to 0):
            Steps over which the recipe raises the budget linearly from 0 to `generator_epsilon`.
        lambda_gen (`float`, *optional*, defaults to 1.0):
            Weight of the entropy gain in the generator's objective.
        lambda_pres (`float`, *optional*, defaults to 0.0):
            Weight of the preservation regularizer in the encoder's objective. Off by default: in our sweep
            (BENCHMARKS.md) every weight > 0 lowered linear accuracy at the backbone level; 1.0 at the projection
            level was on par with generator-only (one seed).
        entropy_estimator (`str`, *optional*, defaults to `"renyi2"`):
            Batch entropy estimator: `"renyi2"` (matrix-based Renyi order 2), `"logdet"` (coding rate) or
            `"uniformity"` (negative log of the Gaussian potential).
        entropy_reference (`str`, *optional*, defaults to `"view1"`):
            Reference of the gain: `"view1"` (free) or `"untransformed"` (the second view before the generator,
            one more encoder pass).
        representation_level (`str`, *optional*, defaults to `"projection"`):
            Where the representation entropy is measured: backbone features `h` or projections `z` (measured
            better with the regularizer on: 48.9 vs 43.8 linear top-1, BENCHMARKS.md).
        pixel_entropy_size (`int`, *optional*, defaults to 32):
            Images are average-pooled to at most this side before the pixel-level entropy.
        logdet_epsilon (`float`, *optional*, defaults to 0.5):
            Distortion `eps` of the coding-rate estimator.
        uniformity_t (`float`, *optional*, defaults to 2.0):
            Scale `t` of the uniformity estimator.
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Dropout before the linear head of `IECLForImageClassification`.
    """

    model_type = "iecl"

    def __init__(
        self,
        backbone="resnet18",
        backbone_kwargs=None,
        stem="cifar",
        image_size=32,
        image_mean=None,
        image_std=None,
        framework="simclr",
        moco_queue_size=4096,
        momentum_base=0.99,
        predictor_hidden_dim=512,
        projection_hidden_dim=512,
        projection_dim=128,
        tau=0.2,
        use_view_generator=True,
        generator_epsilon=0.05,
        generator_width=16,
        generator_num_blocks=2,
        generator_stance="cooperative",
        generator_warmup_steps=0,
        lambda_gen=1.0,
        lambda_pres=0.0,
        entropy_estimator="renyi2",
        entropy_reference="view1",
        representation_level="projection",
        pixel_entropy_size=32,
        logdet_epsilon=0.5,
        uniformity_t=2.0,
        classifier_dropout=0.0,
        **kwargs,
    ):
        self.backbone = backbone
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.stem = stem
        self.image_size = image_size
        self.image_mean = list(image_mean if image_mean is not None else (0.485, 0.456, 0.406))
        self.image_std = list(image_std if image_std is not None else (0.229, 0.224, 0.225))
        self.framework = framework
        self.moco_queue_size = moco_queue_size
        self.momentum_base = momentum_base
        self.predictor_hidden_dim = predictor_hidden_dim
        self.projection_hidden_dim = projection_hidden_dim
        self.projection_dim = projection_dim
        self.tau = tau
        self.use_view_generator = use_view_generator
        self.generator_epsilon = generator_epsilon
        self.generator_width = generator_width
        self.generator_num_blocks = generator_num_blocks
        self.generator_stance = generator_stance
        self.generator_warmup_steps = generator_warmup_steps
        self.lambda_gen = lambda_gen
        self.lambda_pres = lambda_pres
        self.entropy_estimator = entropy_estimator
        self.entropy_reference = entropy_reference
        self.representation_level = representation_level
        self.pixel_entropy_size = pixel_entropy_size
        self.logdet_epsilon = logdet_epsilon
        self.uniformity_t = uniformity_t
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
        _check_choice("stem", self.stem, STEMS)
        _check_choice("framework", self.framework, FRAMEWORKS)
        _check_choice("entropy_estimator", self.entropy_estimator, ENTROPY_ESTIMATORS)
        _check_choice("entropy_reference", self.entropy_reference, ENTROPY_REFERENCES)
        _check_choice("representation_level", self.representation_level, REPRESENTATION_LEVELS)
        _check_choice("generator_stance", self.generator_stance, GENERATOR_STANCES)
        if not isinstance(self.use_view_generator, bool):
            raise ValueError(f"IECLConfig.use_view_generator must be True or False, got {self.use_view_generator!r}.")
        for name in ("image_size", "projection_hidden_dim", "projection_dim", "generator_width", "pixel_entropy_size",
                     "moco_queue_size", "predictor_hidden_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"IECLConfig.{name} must be a positive integer, got {value!r}.")
        for name in ("generator_num_blocks", "generator_warmup_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"IECLConfig.{name} must be an integer >= 0, got {value!r}.")
        for name in ("tau", "generator_epsilon", "logdet_epsilon", "uniformity_t"):
            _check_positive(name, getattr(self, name))
        for name in ("lambda_gen", "lambda_pres", "classifier_dropout"):
            _check_positive(name, getattr(self, name), allow_zero=True)
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


__all__ = ["IECLConfig"]
