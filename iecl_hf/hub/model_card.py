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
    "saib_third_skip",
    "saib_weight_decay",
    "lambda_saib_logdet",
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


def timm_pretrained_id(backbone: str) -> str | None:
    """The Hub id of the weights `timm.create_model(backbone, pretrained=True)` loads (its default tag, or the tag in
    the name), e.g. 'timm/resnet18.a1_in1k'; None if timm names none."""
    import timm

    try:
        pretrained_cfg = timm.models.get_pretrained_cfg(backbone)
    except Exception:  # an unknown name or tag
        return None
    hub_id = getattr(pretrained_cfg, "hf_hub_id", None)
    return hub_id if hub_id and is_hub_id(hub_id) else None


def starting_weights(config, initialized_from: str | None) -> tuple[str, str | None]:
    """(the card's "initialized from" text, its `base_model`: a Hub id or None). A checkpoint the run continued
    (`model_name_or_path`) comes first; then the backbone's starting weights (`backbone_pretrained`,
    `backbone_checkpoint`), which its config records, also when it was continued from a local folder."""
    backbone_pretrained = getattr(config, "backbone_pretrained", False)
    timm_id = timm_pretrained_id(config.backbone) if backbone_pretrained else None
    checkpoint = getattr(config, "backbone_checkpoint", None)
    if initialized_from:
        text = f"`{initialized_from}`"
    elif backbone_pretrained:
        text = f"timm's pretrained `{config.backbone}` weights" + (f" (`{timm_id}`)" if timm_id else "")
        if config.stem != "timm":
            text += f", the first conv fresh (`{config.stem}` stem)"
    elif checkpoint:
        text = f"backbone weights from `{checkpoint}`"
    else:
        text = "random weights"
    candidates = [initialized_from, timm_id]
    return text, next((name for name in candidates if name and is_hub_id(name)), None)


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
    """`initialized_from`: the `model_name_or_path` the run started from (a Hub id becomes the card's `base_model`;
    without one, the Hub id of the timm weights `backbone_pretrained` started the backbone from)."""
    initialized_text, base_model = starting_weights(config, initialized_from)
    card_data = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        pipeline_tag="image-feature-extraction",
        tags=["iecl", "self-supervised", "contrastive-learning", config.framework, "timm", "custom_code"],
        datasets=[dataset_name] if is_hub_id(dataset_name) else None,
        base_model=base_model,
    )
    return ModelCard.from_template(
        card_data,
        template_path=TEMPLATE_PATH,
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        dataset_name=dataset_name,
        num_train_images=num_train_images,
        initialized_from=initialized_text,
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
