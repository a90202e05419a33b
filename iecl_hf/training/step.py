"""The recipe's training step: one micro-batch from the views to the optimizer, schedule and momentum updates.

The benchmarks time this very step (`PretrainingStep.standalone`). Outside logging steps it never waits for the
device: the monitors are not computed, the finite check of the loss terms is deferred (`DeferredFiniteCheck`) and
the count of undecodable images stays on the device until `settle`. Its phases run under
`torch.profiler.record_function` labels (`step/views`, `step/forward`, `step/backward`, `step/optimizer`)."""

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from accelerate.logging import get_logger
from torch.profiler import record_function

from ..data import BatchedSimCLRAugmentation
from .callbacks import is_logging_step
from .finite import DeferredFiniteCheck
from .logs import TrainingState
from .pretraining import LOGGED_TERMS, Training, TrainingData

logger = get_logger(__name__)


@dataclass
class StepResult:
    terms: dict  # LOGGED_TERMS of the last micro-batch (tensors); the monitors among them on logging steps only
    images: int  # images (both views count once) of this optimizer step, all processes and micro-batches
    settle: Callable[[], None]  # the step's deferred checks; a checkpoint calls it before writing anything


class PretrainingStep:
    """One micro-batch: the views (batched augmentation on the device, or the loader's), the forward, the backward
    and, at the end of an accumulation, the optimizer (skipped after a non-finite loss term), schedule and momentum
    updates. On logging steps the forward also computes the monitors and the step settles its deferred checks.

    Returns a `StepResult` after an optimizer step, None otherwise (accumulating, or a batch left too small)."""

    def __init__(self, training: Training, data: TrainingData, accelerator, args, last_good_checkpoint):
        self.training, self.accelerator = training, accelerator
        self.augmentation, self.logging_steps = data.device_augmentation, args.logging_steps
        self.last_good_checkpoint = last_good_checkpoint  # () -> path, for the error message
        self.parameters = [p for o in training.optimizers for group in o.param_groups for p in group["params"]]
        self.finite = DeferredFiniteCheck()
        self.pending_skipped = []  # the loader's counts of undecodable images since the last `settle`
        self.images = 0

    @classmethod
    def standalone(
        cls,
        model,
        optimizers: list,
        accelerator,
        *,
        logging_steps: int,
        max_train_steps: int,
        scheduler=None,
        augmentation=None,
        memory_format=torch.contiguous_format,
    ) -> "PretrainingStep":
        """This step outside a run, for the benchmarks and tests: `model` and `optimizers` prepared by `accelerator`
        (one process), a constant learning rate unless `scheduler` is given, a fresh training state, no checkpoints.
        `augmentation`: the device augmentation of batches of uint8 images (default: the recipe's)."""
        model, *optimizers = accelerator.prepare(model, *optimizers)
        unwrapped = accelerator.unwrap_model(model)
        if scheduler is None:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizers[0].optimizer, lambda step: 1.0)
        if augmentation is None:
            augmentation = BatchedSimCLRAugmentation(unwrapped.config.image_size).to(accelerator.device)
        training = Training(
            model=model,
            unwrapped=unwrapped,
            optimizers=optimizers,
            scheduler=scheduler,
            state=TrainingState(),
            learning_rate=None,  # the run's figures, which the step does not read
            global_batch=None,
            max_train_steps=max_train_steps,
            steps_per_epoch=None,
            memory_format=memory_format,
        )
        data = SimpleNamespace(device_augmentation=augmentation)
        return cls(training, data, accelerator, SimpleNamespace(logging_steps=logging_steps), lambda: "none")

    def views(self, batch):
        device = self.accelerator.device
        self.pending_skipped.append(batch["num_skipped"])
        if "images" in batch:
            images = batch["images"].to(device, non_blocking=True)
            sizes = batch["image_sizes"].to(device, non_blocking=True)
            augment = self.augmentation
            view_1, view_2 = augment(images, image_sizes=sizes), augment(images, image_sizes=sizes)
        else:
            view_1, view_2 = batch["pixel_values"].to(device), batch["pixel_values_2"].to(device)
        memory_format = self.training.memory_format
        view_1, view_2 = view_1.contiguous(memory_format=memory_format), view_2.contiguous(memory_format=memory_format)
        # Skipped images can leave ranks with unequal batches, and gathering needs equal ones (a sync, on several
        # processes only).
        if self.accelerator.num_processes > 1:
            size = int(self.accelerator.gather(torch.tensor([len(view_1)], device=device)).min())
            view_1, view_2 = view_1[:size], view_2[:size]
        return view_1, view_2

    def __call__(self, batch) -> StepResult | None:
        training, accelerator = self.training, self.accelerator
        with record_function("step/views"):
            view_1, view_2 = self.views(batch)
        if len(view_1) < 2:
            return None
        step = training.state.step + 1
        with accelerator.accumulate(training.model):
            logging_step = accelerator.sync_gradients and is_logging_step(
                step, self.logging_steps, training.max_train_steps
            )
            with record_function("step/forward"):
                output = training.model(pixel_values=view_1, pixel_values_2=view_2, output_monitors=logging_step)
                terms = {name: getattr(output, name) for name in LOGGED_TERMS if getattr(output, name) is not None}
                self.finite.record(step, terms)
            with record_function("step/backward"):
                accelerator.backward(output.loss)
            with record_function("step/optimizer"):
                if accelerator.sync_gradients:
                    self.finite.update_unless_not_finite(self.optimizer_steps, self.parameters)
                for optimizer in training.optimizers:
                    optimizer.zero_grad(set_to_none=True)
        self.images += len(view_1) * accelerator.num_processes
        if not accelerator.sync_gradients:
            return None
        training.scheduler.step()
        training.unwrapped.update_momentum_encoder(step / training.max_train_steps)  # MoCo / BYOL; no-op for SimCLR
        training.state.images_seen += self.images
        if logging_step:
            self.settle(now=step)
        result, self.images = StepResult(terms, self.images, self.settle), 0
        return result

    def optimizer_steps(self):
        for optimizer in self.training.optimizers:
            optimizer.step()

    def settle(self, now: int | None = None):
        """The one host sync of the deferred checks: raises `NonFiniteLossError` when a loss term since the last
        settle was not finite (that update was skipped), and adds the undecodable images to the training state.
        `now`: the step the run has reached (default: the training state's)."""
        state = self.training.state
        self.finite.raise_if_any(self.last_good_checkpoint(), now=state.step if now is None else now)
        if not self.pending_skipped:
            return
        skipped = int(sum(torch.as_tensor(count).sum() for count in self.pending_skipped))
        self.pending_skipped = []
        if skipped and not state.skipped_images:
            logger.warning(  # every process: accelerate's [RANK n] prefix says which, when there are several
                "an image could not be decoded and was skipped; skipped images are counted and reported at the end.",
                main_process_only=False,
            )
        state.skipped_images += skipped
