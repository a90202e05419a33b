"""The JSONL log of every logged step, and the small state of the run that checkpoints carry."""

import json
import os


class JsonlLogger:
    def __init__(self, path: str, enabled: bool = True):
        self.path, self.enabled = path, enabled
        if enabled:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    def log(self, record: dict):
        if self.enabled:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int, epoch: int):
        """On resume: drop the records an interrupted run wrote after the checkpoint at (step, epoch); the resumed
        run logs them again (an epoch-end kNN record carries the checkpoint's step and the next epoch)."""
        if not (self.enabled and os.path.exists(self.path)):
            return
        kept = []
        with open(self.path) as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:  # a line cut short by the kill
                    continue
                if (record.get("step", 0), record.get("epoch", 0)) <= (step, epoch):
                    kept.append(line if line.endswith("\n") else line + "\n")
        temporary = self.path + ".tmp"
        with open(temporary, "w") as handle:
            handle.writelines(kept)
        os.replace(temporary, self.path)


class TrainingState:
    """Step counter, epoch and the history behind the curves; saved by `accelerator.save_state`."""

    def __init__(self):
        self.step, self.epoch, self.images_seen, self.skipped_images = 0, 0, 0, 0
        self.history: list[dict] = []

    def state_dict(self):
        return {
            "step": self.step,
            "epoch": self.epoch,
            "images_seen": self.images_seen,
            "skipped_images": self.skipped_images,
            "history": json.dumps(self.history),
        }

    def load_state_dict(self, state):
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.images_seen, self.skipped_images = int(state["images_seen"]), int(state["skipped_images"])
        self.history = json.loads(state["history"])
