"""The model card of a pretraining output folder, rendered from `model_card_template.md` with `ModelCard`."""

import os

from huggingface_hub import ModelCard, ModelCardData

from .checkpoints import is_hub_id

TEMPLATE_PATH = os.path.join(os.path.dirname(__file__), "model_card_template.md")
IECL_FIELDS = (
    "framework",
    "generator_architecture",
    "saib_patch_size",
    "saib_dim",
    "saib_expansion",
    "saib_weight_decay",
    "lambda_entropy",
    "entropy_estimator",
    "beta_kl",
    "kl_covariance",
    "encoder_spectral_norm",
    "spectral_norm_weight",
    "tau",
    "projection_hidden_dim",
    "projection_dim",
    "projection_output_batchnorm",
    "batchnorm_per_view",
    "moco_batchnorm_groups",
)


def render_pretraining_card(
    config,
    *,
    repo_id: str,
    dataset_name: str,
    num_train_images,
    steps: int,
    epochs,
    global_batch_size: int,
    optimizer: str,
    learning_rate: float,
    weight_decay: float,
    lr_scheduler_type: str,
    final_figures: dict,
    limitations: str = "",
    initialized_from: str | None = None,
) -> ModelCard:
    """`initialized_from`: the --model_name_or_path the run started from (a Hub id becomes the card's `base_model`)."""
    card_data = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag="image-feature-extraction",
        tags=["iecl", "self-supervised", "contrastive-learning", config.framework, "timm", "custom_code"],
        datasets=[dataset_name] if is_hub_id(dataset_name) else None,
        base_model=initialized_from if initialized_from and is_hub_id(initialized_from) else None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=TEMPLATE_PATH,
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        dataset_name=dataset_name,
        num_train_images=num_train_images,
        initialized_from=f"`{initialized_from}`" if initialized_from else "random weights",
        framework=config.framework,
        backbone=config.backbone + (f" {config.backbone_kwargs}" if config.backbone_kwargs else ""),
        stem=config.stem,
        image_size=config.image_size,
        num_features=final_figures.pop("_num_features", "C"),
        steps=steps,
        epochs=epochs,
        global_batch_size=global_batch_size,
        optimizer=optimizer,
        learning_rate=f"{learning_rate:g}",
        weight_decay=weight_decay,
        lr_scheduler_type=lr_scheduler_type,
        iecl_hyperparameters={name: getattr(config, name) for name in IECL_FIELDS},
        final_figures=final_figures,
        limitations=limitations or "Trained at a small budget; longer training usually changes the figures.",
    )
