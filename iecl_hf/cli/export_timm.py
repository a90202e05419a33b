"""export_timm.py's arguments, checked where they are defined, with the default --output_dir filled in."""

from dataclasses import dataclass

from ..hub.export_timm import check_export_dir
from .groups import HubArguments, LoggingArguments, RequiredCheckpointArguments, default_output_base
from .parser import ConfigFileArguments, option, parse_dataclasses


@dataclass
class ExportTimmArguments(RequiredCheckpointArguments, HubArguments, LoggingArguments, ConfigFileArguments):
    hub_model_id_example = "e.g. your-name/iecl-resnet50-timm"

    model_name_or_path: str | None = option(
        None, "An IE-CL checkpoint (a folder written by recipes/pretrain.py, or a Hub id) with stem 'timm'."
    )
    cache_dir: str | None = option(None, "Hub cache folder.")
    output_dir: str | None = option(
        None,
        "The timm folder to write (config.json, model.safetensors, README.md): written to a temporary folder, then "
        "renamed; an earlier export there is replaced. Default: CKPT-timm for a local checkpoint, "
        "outputs/OWNER--NAME-timm for a Hub id.",
    )

    def __post_init__(self):
        super().__post_init__()
        if self.output_dir is None:
            self.output_dir = default_output_base(self.model_name_or_path) + "-timm"


def parse_export_args(argv=None) -> ExportTimmArguments:
    """export_timm.py's arguments from the command line and an optional config file, checked; the output folder too
    (before anything is loaded)."""
    (args,) = parse_dataclasses((ExportTimmArguments,), argv)
    check_export_dir(args.output_dir)
    return args
