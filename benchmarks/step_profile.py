"""Where the time of real training steps goes, read back from a `torch.profiler` run: the labels the code places with
`torch.profiler.record_function` (`step/*` in `PretrainingStep`, `iecl/*` in `IECLForPreTraining.forward`,
`bench/*` in the benchmarks). A label's forward time is its own range; its backward time is that of the backward
ops its forward ops created (autograd's sequence numbers pair them). On the CPU: CPU time; on CUDA: device time.
"""

from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile


def profile_steps(run_step, steps: int, device: torch.device):
    """The profiler's events of `steps` calls of `run_step()`."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(steps):
            run_step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return profiler.events()


def _milliseconds(event, device) -> float:
    return (event.device_time_total if device.type == "cuda" else event.cpu_time_total) / 1000


def _label_of(event, prefix: str) -> str | None:
    """The outermost enclosing range named `prefix...`, or None."""
    label = None
    while event is not None:
        if event.name.startswith(prefix):
            label = event.name
        event = event.cpu_parent
    return label


def label_times(events, prefix: str, device) -> dict:
    """Milliseconds in each label starting with `prefix` (outermost ranges only), summed over the profile."""
    times = defaultdict(float)
    for event in events:
        if event.name.startswith(prefix) and _label_of(event.cpu_parent, prefix) is None:
            times[event.name] += _milliseconds(event, device)
    return dict(times)


def backward_times(events, prefix: str, device) -> dict:
    """Milliseconds of the backward pass per forward label starting with `prefix` (ops made outside any label: None).
    Gradients taken inside a labelled forward (`torch.autograd.grad`) count in that label's forward time."""
    label_of_sequence = {}
    for event in events:
        if event.sequence_nr >= 0 and not event.name.startswith("autograd::"):
            label_of_sequence.setdefault((event.thread, event.sequence_nr), _label_of(event, prefix))
    times = defaultdict(float)
    for event in events:
        if event.name.startswith("autograd::engine::evaluate_function") and _label_of(event, prefix) is None:
            forward_thread = event.fwd_thread if event.fwd_thread else event.thread
            times[label_of_sequence.get((forward_thread, event.sequence_nr))] += _milliseconds(event, device)
    return dict(times)
