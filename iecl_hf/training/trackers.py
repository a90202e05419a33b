"""Accelerate's trackers (`report_to`): named by `run_name`, handed only values every tracker accepts, and continued
by a resumed run.

In the output folder, under logs/ (which the Hub upload leaves out):
    logs/RUN_NAME/PROJECT/    TensorBoard's event files (accelerate's TensorBoardTracker writes to logging_dir/PROJECT)
    logs/tracker_run.json     the run's name and W&B id, which a resumed run reads back
"""

import json
import os
import re
import secrets
from dataclasses import dataclass

from accelerate.utils import ProjectConfiguration

RUN_FILE = os.path.join("logs", "tracker_run.json")
SECRET_ARGUMENTS = ("hub_token",)  # trackers upload their config: the token stays out


def tracker_names(report_to: str) -> list[str] | None:
    """`report_to` ("tensorboard,wandb", "all", "none") as accelerate's `log_with`; None: no tracker."""
    names = [name.strip() for name in report_to.split(",") if name.strip() and name.strip() != "none"]
    return names or None


def tracker_value(value):
    """int, float, str and bool stay; None becomes "None", lists and dicts JSON text, anything else its str()."""
    if value is None:
        return "None"
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)


def tracker_config(*parts: dict) -> dict:
    """The run's arguments and model config merged (the later part wins) for `init_trackers`. TensorBoard's hparams
    take only scalars, so each value goes through `tracker_value`."""
    merged = {}
    for part in parts:
        merged.update(part)
    return {key: tracker_value(value) for key, value in merged.items() if key not in SECRET_ARGUMENTS}


def tracker_scalars(record: dict) -> dict:
    """A pretraining log record under stable tracker names: `knn_top1` -> `knn/top1`, the others -> `train/NAME`.
    The record's step is the tracker's step, passed apart."""
    if "knn_top1" in record:
        return {"knn/top1": record["knn_top1"]}
    return {f"train/{name}": value for name, value in record.items() if name != "step"}


@dataclass
class TrackerRun:
    output_dir: str
    name: str
    wandb_id: str

    @property
    def logging_dir(self) -> str:
        return os.path.join(self.output_dir, "logs", self.name)

    def accelerator_kwargs(self, report_to: str) -> dict:
        """`Accelerator` keywords: the trackers, the output folder and the run's logging folder inside it."""
        return {
            "log_with": tracker_names(report_to),
            "project_config": ProjectConfiguration(project_dir=self.output_dir, logging_dir=self.logging_dir),
        }


def resolve_run(output_dir: str, run_name: str | None, resuming: bool) -> TrackerRun:
    """The run's name (`run_name`, else the resumed run's, else the output folder's name) and W&B id (the resumed
    run's, else a new one: a name alone would make a fresh run in the same project continue an older one)."""
    stored = {}
    if resuming:
        try:
            with open(os.path.join(output_dir, RUN_FILE)) as handle:
                stored = json.load(handle)
        except (OSError, ValueError):  # a run that had no tracker, or an older output folder: a new identity
            pass
    name = run_name or stored.get("run_name") or os.path.basename(os.path.normpath(os.path.abspath(output_dir)))
    wandb_id = stored.get("wandb_id") or f"{re.sub(r'[^A-Za-z0-9_-]', '-', name)[:48]}-{secrets.token_hex(4)}"
    return TrackerRun(output_dir, name, wandb_id)


def start_trackers(accelerator, project: str, run: TrackerRun, config: dict, first_step: int = 0):
    """`init_trackers` with the run's identity. `first_step`: the first step this process logs; TensorBoard hides
    what the folder holds from that step on (what an interrupted run logged after its checkpoint, or all of an
    overwritten run: a fresh start passes 0), so a resumed run continues one clean curve in the same folder."""
    if not accelerator.log_with:
        return
    if accelerator.is_main_process:
        os.makedirs(run.logging_dir, exist_ok=True)  # W&B's `dir` must exist
        with open(os.path.join(run.output_dir, RUN_FILE), "w") as handle:
            json.dump({"run_name": run.name, "wandb_id": run.wandb_id}, handle)
    accelerator.init_trackers(
        project,
        config=config,
        init_kwargs={
            "tensorboard": {"purge_step": first_step},
            "wandb": {"name": run.name, "id": run.wandb_id, "resume": "allow", "dir": run.logging_dir},
        },
    )
