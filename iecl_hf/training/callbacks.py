"""What happens around the training step, as `TrainingLoop` callbacks: logging, the online kNN and checkpoints."""

import os
import time

from accelerate.logging import get_logger
from tqdm.auto import tqdm

from ..console import progress_bars_enabled
from ..evaluation import extract_features, knn_accuracy
from .checkpointing import save_checkpoint
from .finite import check_finite_weights
from .loop import Callback
from .trackers import tracker_scalars

logger = get_logger(__name__)


def is_logging_step(step: int, logging_steps: int, max_train_steps: int) -> bool:
    """Every `logging_steps` optimizer steps, and the last one. The step computes its monitors and settles its
    deferred checks on these steps only, and `LoggingCallback` records them."""
    return step % logging_steps == 0 or step == max_train_steps


class LoggingCallback(Callback):
    """Every `logging_steps` (and at the last step): the LR, the images/s since the last record and the loss terms,
    to the history (curves, the model card), the JSONL log, Accelerate's trackers and the progress bar (main
    process, hidden at log level warning or error)."""

    def __init__(self, accelerator, logger, scheduler, logging_steps: int, max_train_steps: int, initial_step: int):
        self.accelerator, self.logger, self.scheduler = accelerator, logger, scheduler
        self.logging_steps, self.max_train_steps = logging_steps, max_train_steps
        self.progress = tqdm(
            total=max_train_steps,
            initial=initial_step,
            disable=not (accelerator.is_local_main_process and progress_bars_enabled()),
            desc="pretrain",
        )
        self.window_start, self.window_images = time.perf_counter(), 0

    def on_step_end(self, state, result):
        self.window_images += result.images
        self.progress.update(1)
        if not is_logging_step(state.step, self.logging_steps, self.max_train_steps):
            return
        elapsed = time.perf_counter() - self.window_start
        record = {
            "step": state.step,
            "epoch": state.epoch,
            "lr": self.scheduler.get_last_lr()[0],
            "images_per_second": self.window_images / max(elapsed, 1e-9),
            **{name: round(value.item(), 6) for name, value in result.terms.items()},
        }
        self.window_start, self.window_images = time.perf_counter(), 0
        record_event(state, self.logger, self.accelerator, record)
        self.progress.set_postfix(
            loss=f"{record['loss']:.3f}",
            H_query=f"{record['entropy_query']:.3f}",
            kl=f"{record['kl_loss']:.3f}",
            img_s=f"{record['images_per_second']:.0f}",
        )

    def close(self):
        self.progress.close()


def record_event(state, logger, accelerator, record: dict):
    state.history.append(record)
    logger.log(record)
    accelerator.log(tracker_scalars(record), step=state.step)


class OnlineKnnCallback(Callback):
    """Every `every_epochs` epochs: weighted-kNN top-1 of the encoder's features (bank: training images, queries: the
    validation split)."""

    def __init__(self, accelerator, model, loaders, num_classes, logger, every_epochs: int):
        self.accelerator, self.model, self.loaders = accelerator, model, loaders
        self.num_classes, self.logger, self.every_epochs = num_classes, logger, every_epochs

    def accuracy(self) -> float:
        extract = [
            extract_features(
                self.model.iecl,
                loader,
                self.accelerator.device,
                self.model.normalize,
                self.accelerator.gather_for_metrics,
            )
            for loader in self.loaders
        ]
        return knn_accuracy(*extract[0], *extract[1], self.num_classes)

    def on_epoch_end(self, state):
        if state.epoch % self.every_epochs:
            return
        top1 = self.accuracy()
        record_event(
            state, self.logger, self.accelerator, {"step": state.step, "epoch": state.epoch, "knn_top1": top1}
        )
        logger.info(f"epoch {state.epoch}: online kNN top-1 {100 * top1:.2f}%")


class CheckpointCallback(Callback):
    """Atomic checkpoints every N steps or every epoch (`checkpointing_steps`), never after a non-finite loss term
    (the step's deferred check settles first) nor of non-finite weights; knows the last good one (for error
    messages)."""

    def __init__(
        self, accelerator, output_dir, model, every: str | None, total_limit, extra_writer, last_saved_step=None
    ):
        self.accelerator, self.output_dir, self.model = accelerator, output_dir, model
        self.every, self.total_limit, self.extra_writer = every, total_limit, extra_writer
        self.last_saved_step = last_saved_step
        self.settle_step = lambda: None  # the last step's deferred checks (`StepResult.settle`)

    def last_good(self) -> str:
        if self.last_saved_step is None:
            return "none yet"
        return os.path.join(self.output_dir, "checkpoints", f"step_{self.last_saved_step}")

    def save(self, state):
        self.settle_step()  # a non-finite loss term since the last logging step stops the run here, before writing
        check_finite_weights(self.model, state.step, self.last_good())
        save_checkpoint(self.accelerator, self.output_dir, state.step, self.total_limit, self.extra_writer)
        self.last_saved_step = state.step

    def on_step_end(self, state, result):
        self.settle_step = result.settle
        if self.every and self.every.isdigit() and state.step % int(self.every) == 0:
            self.save(state)

    def on_epoch_end(self, state):
        if self.every == "epoch":
            self.save(state)
