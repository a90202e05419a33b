#!/usr/bin/env python
r"""Export the encoder of an IE-CL checkpoint in timm's own format, for timm and for transformers without remote code.

    python recipes/export_timm.py --model_name_or_path outputs/stl10 --output_dir outputs/stl10-timm
    python recipes/export_timm.py --model_name_or_path outputs/stl10 --output_dir outputs/stl10-timm \
        --push_to_hub --hub_model_id you/iecl-resnet18-stl10-timm

Writes --output_dir (to a temporary folder, then renamed): config.json (`architecture`, `pretrained_cfg` with the
checkpoint's mean/std and input size), model.safetensors (timm's key names) and README.md, by timm's `save_for_hf`.
Then `timm.create_model("local-dir:DIR", pretrained=True, num_classes=0)` (or `"hf-hub:you/name"`) gives the same
pooled features as `AutoModel.from_pretrained(CKPT, trust_remote_code=True)`, and `AutoModel.from_pretrained(DIR)`
loads it as a `TimmWrapperModel`. Only backbones timm builds by name (`stem="timm"`): for the CIFAR stems the command
refuses and points to `IECLModel.backbone`, the plain timm module. The stages live in `iecl_hf.hub.export_timm`.
"""

import sys

from accelerate import PartialState
from accelerate.logging import get_logger

from iecl_hf.cli import run_recipe, speaks_flags
from iecl_hf.cli.export_timm import ExportTimmArguments, parse_export_args
from iecl_hf.cli.groups import hub_kwargs
from iecl_hf.console import setup_logging
from iecl_hf.hub.export_timm import load_exportable_encoder, push_timm_folder, write_timm_folder
from iecl_hf.hub.upload import PushError

logger = get_logger("iecl_hf.recipes.export_timm")  # under the `iecl_hf` logger that --log_level sets up


@speaks_flags(ExportTimmArguments)
def main(argv=None) -> int:
    args = parse_export_args(argv)
    setup_logging(args.log_level)
    PartialState()  # accelerate's logger needs its state (one process here)
    encoder = load_exportable_encoder(args.model_name_or_path, **hub_kwargs(args, args.cache_dir))
    folder = write_timm_folder(encoder, args.output_dir, args.model_name_or_path, args.hub_model_id)
    logger.info(
        f"Wrote the encoder ({encoder.config.backbone}, timm's format) to {folder}: "
        f'timm.create_model("local-dir:{folder}", pretrained=True, num_classes=0) or AutoModel.from_pretrained('
        f'"{folder}")'
    )
    if not args.push_to_hub:
        return 0
    try:
        url = push_timm_folder(folder, args.hub_model_id, private=args.hub_private_repo, token=args.hub_token)
    except PushError as error:
        retry = f"hf upload {args.hub_model_id} {folder}{' --private' if args.hub_private_repo else ''}"
        print(f"export_timm.py: error: {error} With the hf command: {retry}", file=sys.stderr)
        return 1
    logger.info(f'Pushed to {url}: timm.create_model("hf-hub:{args.hub_model_id}", pretrained=True, num_classes=0)')
    return 0


if __name__ == "__main__":
    sys.exit(run_recipe(main, "export_timm.py"))
