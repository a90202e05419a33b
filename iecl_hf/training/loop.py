"""The step iterator of a run: it owns the epochs, `set_epoch`, mid-epoch resume and the end of training, so the
recipe's loop body is the training step alone. Callbacks hear of each optimizer step and each finished epoch.

    loop = TrainingLoop(accelerator, loader, state, max_train_steps, steps_per_epoch, callbacks=[...])
    for batch in loop.micro_batches():
        result = train_step(batch)       # None until an optimizer step is taken (gradient accumulation)
        if result is not None:
            loop.step_done(result)
"""

import math
import sys


class Callback:
    """A hook on the events of `TrainingLoop`; override the ones you need. `result` is what the step returned."""

    def on_step_end(self, state, result):
        pass

    def on_epoch_end(self, state):
        pass


class TrainingLoop:
    def __init__(
        self,
        accelerator,
        loader,
        state,
        max_train_steps: int,
        steps_per_epoch: int | None,
        gradient_accumulation_steps: int = 1,
        streamed_data=None,
        callbacks=(),
    ):
        """`steps_per_epoch` None: a streamed dataset (`streamed_data`, whose `set_epoch` reshuffles), epochs without
        a known length; `state` is the checkpointed `TrainingState` (step, epoch), from which the loop continues."""
        self.accelerator, self.loader, self.state = accelerator, loader, state
        self.max_train_steps, self.steps_per_epoch = max_train_steps, steps_per_epoch
        self.accumulation, self.streamed_data, self.callbacks = (
            gradient_accumulation_steps,
            streamed_data,
            list(callbacks),
        )
        self.num_epochs = math.ceil(max_train_steps / steps_per_epoch) if steps_per_epoch else sys.maxsize

    def micro_batches(self):
        """Every micro-batch from where `state` stands to the last optimizer step, epoch after epoch."""
        while self.state.step < self.max_train_steps and self.state.epoch < self.num_epochs:
            for batch in self._epoch_batches():
                yield batch
                if self.state.step >= self.max_train_steps:
                    # The last step may close an epoch: count it, without the epoch events (the final kNN and
                    # checkpoint of the run follow).
                    if self.steps_per_epoch and self.state.step % self.steps_per_epoch == 0:
                        self.state.epoch += 1
                    return
            self.state.epoch += 1
            for callback in self.callbacks:
                callback.on_epoch_end(self.state)

    def step_done(self, result):
        """Count an optimizer step and tell the callbacks."""
        self.state.step += 1
        for callback in self.callbacks:
            callback.on_step_end(self.state, result)

    def _epoch_batches(self):
        if self.steps_per_epoch is None:
            self.streamed_data.set_epoch(self.state.epoch)
            return self.loader
        self.loader.set_epoch(self.state.epoch)
        done_in_epoch = self.state.step - self.state.epoch * self.steps_per_epoch
        if done_in_epoch > 0:  # resumed mid-epoch: the same shuffle, without the batches already seen
            return self.accelerator.skip_first_batches(self.loader, done_in_epoch * self.accumulation)
        return self.loader
