"""Named model presets (`IECLConfig` values) and the training settings that go with some of them.

Top-level so that training, evaluation, benchmarks and the command line all read the same table.
"""

PRESETS = {
    # Half-width ResNet-18 with a stride-2 stem: a few hundred 32 px images/s on 2 CPU cores.
    "cpu": {
        "backbone": "resnet18",
        "backbone_kwargs": {"channels": [32, 64, 128, 256]},
        "stem": "cifar_stride2",
        "image_size": 32,
    },
    # The standard CIFAR ResNet-18 (3x3 stride-1 stem, no max-pool).
    "cifar": {"backbone": "resnet18", "backbone_kwargs": {}, "stem": "cifar", "image_size": 32},
    # STL-10 scale.
    "stl10": {"backbone": "resnet18", "backbone_kwargs": {}, "stem": "timm", "image_size": 96},
    # ImageNet scale.
    "imagenet": {"backbone": "resnet50", "backbone_kwargs": {}, "stem": "timm", "image_size": 224},
    # ViT-S/16 at ImageNet scale (timm builds it at image_size). SAIB works on patches: its 16 px patches are the
    # ViT's own, a 14 x 14 grid. Its optimizer settings are in PRESET_TRAINING_ARGS.
    "vit_small": {
        "backbone": "vit_small_patch16_224",
        "backbone_kwargs": {},
        "stem": "timm",
        "image_size": 224,
        "saib_patch_size": 16,
    },
}

# Training settings a preset brings besides the model, each applied only where the user gave none. The CNN presets
# need none: the pretraining defaults (SGD, 0.3 x global batch / 256, weight decay 5e-4) are the CNN recipe. ViTs
# are trained with AdamW in self-supervised learning (MoCo v3, DINO, iBOT, MAE): with SGD they train unstably and end
# worse (MoCo v3, Chen et al. 2021). The learning rate is DINO's ViT-S rule, 5e-4 x global batch / 256, at the
# default batch (64 images on one process): with a larger global batch, scale the learning rate linearly. Weight
# decay 0.05, DeiT's and MAE's for ViTs (DINO starts at 0.04, MoCo v3 uses 0.1): the CNN value 5e-4 is far too weak
# with AdamW's decoupled decay. The learning rate and weight decay are AdamW's: with another optimizer they are left
# to that optimizer's defaults.
PRESET_TRAINING_ARGS = {
    "vit_small": {"optimizer": "adamw", "learning_rate": 1.25e-4, "weight_decay": 0.05},
}
