"""iecl-hf: IE-CL (Maximizing Incremental Information Entropy for Contrastive Learning) for Hugging Face."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
)

from .configuration_iecl import BASELINE_OVERRIDES, IECLConfig
from .image_processing import build_image_processor
from .modeling_iecl import (
    IECLForImageClassification,
    IECLForPreTraining,
    IECLForPreTrainingOutput,
    IECLModel,
    IECLPreTrainedModel,
)

__version__ = "0.1.0"

# Installed package: the Auto classes find the local classes.
AutoConfig.register(IECLConfig.model_type, IECLConfig, exist_ok=True)
AutoModel.register(IECLConfig, IECLModel, exist_ok=True)
AutoModelForPreTraining.register(IECLConfig, IECLForPreTraining, exist_ok=True)
AutoModelForImageClassification.register(IECLConfig, IECLForImageClassification, exist_ok=True)

# Hub without the package: save_pretrained copies the modeling files and writes `auto_map`.
IECLConfig.register_for_auto_class()
IECLModel.register_for_auto_class("AutoModel")
IECLForPreTraining.register_for_auto_class("AutoModelForPreTraining")
IECLForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "BASELINE_OVERRIDES",
    "IECLConfig",
    "IECLModel",
    "IECLForPreTraining",
    "IECLForPreTrainingOutput",
    "IECLForImageClassification",
    "IECLPreTrainedModel",
    "build_image_processor",
]
