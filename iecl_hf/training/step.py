"""The recipe's training step: one micro-batch from the views to the optimizer, schedule and momentum updates."""

from dataclasses import dataclass

import torch
from accelerate.logging import get_logger

from .callbacks import is_logging_step
from .finite import check_finite_terms
from .pretraining import LOGGED_TERMS, Training, TrainingData

logger = get_logger(__name__)


@dataclass
class StepResult:
    terms: dict  # LOGGED_TERMS of the last micro-batch (tensors)
    images: int  # images (both views count once) of this optimizer step, all processes and micro-batches


class PretrainingStep:
    """One micro-batch: the views (batched augmentation on the device, or the loader's), the forward, the finite
    check, the backward and, at the end of an accumulation, the optimizer, schedule and momentum updates.

    Returns a `StepResult` after an optimizer step, None otherwise (accumulating, or a batch left too small)."""

    def __init__(self, training: Training, data: TrainingData, accelerator, args, last_good_checkpoint):
        self.training, self.data, self.accelerator, self.args = training, data, accelerator, args
        self.last_good_checkpoint = last_good_checkpoint  # () -> path, for the error message
        self.images = 0

    def views(self, batch):
        device, state = self.accelerator.device, self.training.state
        if int(batch["num_skipped"]) and not state.skipped_images:
            logger.warning(  # every process: accelerate's [RANK n] prefix says which, when there are several
                "an image could not be decoded and was skipped; skipped images are counted and reported at the end.",
                main_process_only=False,
            )
        state.skipped_images += int(batch["num_skipped"])
        if "images" in batch:
            images = batch["images"].to(device, non_blocking=True)
            sizes = batch["image_sizes"].to(device, non_blocking=True)
            augment = self.data.device_augmentation
            view_1, view_2 = augment(images, image_sizes=sizes), augment(images, image_sizes=sizes)
        else:
            view_1, view_2 = batch["pixel_values"].to(device), batch["pixel_values_2"].to(device)
        memory_format = self.training.memory_format
        view_1, view_2 = view_1.contiguous(memory_format=memory_format), view_2.contiguous(memory_format=memory_format)
        if (
            self.accelerator.num_processes > 1
        ):  # skipped images can leave ranks with unequal batches: gather needs equal
            size = int(self.accelerator.gather(torch.tensor([len(view_1)], device=device)).min())
            view_1, view_2 = view_1[:size], view_2[:size]
        return view_1, view_2

    def __call__(self, batch) -> StepResult | None:
        training, accelerator = self.training, self.accelerator
        view_1, view_2 = self.views(batch)
        if len(view_1) < 2:
            return None
        with accelerator.accumulate(training.model):
            step = training.state.step + 1
            logging_step = is_logging_step(step, self.args.logging_steps, training.max_train_steps)
            output = training.model(pixel_values=view_1, pixel_values_2=view_2, output_saib_logdet=logging_step)
            terms = {name: getattr(output, name) for name in LOGGED_TERMS if getattr(output, name) is not None}
            check_finite_terms(terms, step, self.last_good_checkpoint())
            accelerator.backward(output.loss)
            for optimizer in training.optimizers:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        self.images += len(view_1) * accelerator.num_processes
        if not accelerator.sync_gradients:
            return None
        training.scheduler.step()
        training.unwrapped.update_momentum_encoder(step / training.max_train_steps)  # MoCo / BYOL; no-op for SimCLR
        training.state.images_seen += self.images
        result, self.images = StepResult(terms, self.images), 0
        return result
