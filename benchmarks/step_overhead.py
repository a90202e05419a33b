#!/usr/bin/env python
"""Cost of IE-CL's modules: time of one full IE-CL training step / time of the plain SimCLR step.

    python benchmarks/step_overhead.py                      # standard CIFAR ResNet-18, then the CPU preset
    python benchmarks/step_overhead.py --preset cpu --repeats 5 --batch_size 128
    python benchmarks/step_overhead.py --preset standard --breakdown
    python benchmarks/step_overhead.py --preset cpu --breakdown --overrides lambda_saib_logdet=0.1   # a term's cost

A step is the recipe's own training step (`iecl_hf.training.step.PretrainingStep`) with the recipe's optimizers at
their defaults (`build_optimizers`: the encoder's SGD at 0.3 x batch / 256, weight decay 5e-4; SAIB's AdamW at
`saib_weight_decay`) and its logging steps (the monitors on one step in `logging_steps`, default 10): one forward,
one `loss.backward()` (the one objective: base loss - lambda_entropy H(Z') + beta_kl KL + spectral_norm_weight
L_spectral), the optimizer steps. The IE-CL model has the defaults of `IECLConfig` (SAIB on the query view, the
entropy and KL terms, the spectral-norm penalty with its power iteration every training forward); SAIB's
zero-initialised `restore` layer is drawn at std 0.01, the state of a trained SAIB (same cost as the identity, but
the realistic one). The baseline is the same model with `BASELINE_OVERRIDES` (plain SimCLR: no SAIB, no spectral
norm, no entropy or KL terms). Both run on the same pre-made view tensors (no input pipeline), in interleaved pairs
whose order alternates, after warm-up pairs; the ratio is median(IE-CL step) / median(baseline step). The goal for
the standard model is <= 1.35. The models are `iecl_hf.presets.PRESETS`: `standard` is its `cifar` preset
(full-width ResNet-18, 3x3 stride-1 stem, no max-pool, 32 px), `cpu` its `cpu` preset (half width, stride-2 stem).

Also printed: the ratio of CPU seconds (`time.process_time`), less sensitive to other load on the machine, which
inflates wall-clock times with 2 threads (each parallel region waits for its slowest thread). `--threads 1` gives
the steadiest figures on a shared machine. `--breakdown` also profiles the IE-CL step (`torch.profiler`; CPU time on
the CPU, device time on a GPU) and reads back the `record_function` labels of `IECLForPreTraining.forward`: SAIB,
the backbone (2B), the base loss (projector, loss, SAIB's stance), the entropy and KL terms, the spectral penalty,
each with the backward of the ops it made, then the optimizer steps; and the monitors (`saib_logdet`, the entropy of
the anchors), profiled on a logging step and printed with their cost spread over `logging_steps`.
"""

import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from recipe_step import recipe_step, take_step  # noqa: E402
from step_profile import backward_times, label_times, profile_steps  # noqa: E402

from iecl_hf import BASELINE_OVERRIDES, IECLConfig  # noqa: E402
from iecl_hf.cli.model_flags import parse_overrides  # noqa: E402
from iecl_hf.presets import PRESETS  # noqa: E402

# --preset name -> iecl_hf.presets.PRESETS key. `standard` is the model the goal is set on.
PRESET_NAMES = {"standard": "cifar", "cpu": "cpu", "vit_small": "vit_small"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset",
        choices=["standard", "cpu", "vit_small", "both"],
        default="both",
        help=(
            "standard = CIFAR ResNet-18, PRESETS['cifar'] (the figure of the goal); "
            "cpu = PRESETS['cpu'] (information); vit_small = ViT-S/16 at 224 px, SAIB patch 16 (information)."
        ),
    )
    parser.add_argument("--batch_size", type=int, default=64, help="Images per view (the encoder sees 2x this).")
    parser.add_argument("--repeats", type=int, default=3, help="Timed (baseline, IE-CL) pairs.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed pairs first.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own).")
    parser.add_argument("--device", default="cpu", help="cpu (the goal's setting) or cuda.")
    parser.add_argument("--breakdown", action="store_true", help="Also profile the parts of the IE-CL step.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--overrides",
        default=None,
        help='IECLConfig fields of the IE-CL side, e.g. "lambda_saib_logdet=0.1" (the baseline keeps its own).',
    )
    return parser.parse_args(argv)


class Trainer:
    """The recipe's step (`recipe_step`) on fixed views; `step()` times one optimizer step."""

    def __init__(self, config, views):
        torch.manual_seed(0)
        self.device = views[0].device
        self.train_step = recipe_step(config, len(views[0]), self.device)
        self.model = self.train_step.training.unwrapped
        self.batch = {
            "pixel_values": views[0],
            "pixel_values_2": views[1],
            "num_skipped": torch.zeros((), dtype=torch.long),
        }

    def take(self):
        take_step(self.train_step, self.batch)

    def step(self):
        """Returns (wall-clock seconds, CPU seconds of this process)."""
        synchronize(self.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        self.take()
        synchronize(self.device)
        return time.perf_counter() - start, time.process_time() - start_cpu


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# The labels of IECLForPreTraining.forward, as the breakdown names them.
STEP_PARTS = {
    "iecl/saib": "SAIB",
    "iecl/backbone": "encoder (2B)",
    "iecl/base_loss": "projector, base loss, SAIB stance",
    "iecl/entropy": "entropy term",
    "iecl/kl": "KL term",
    "iecl/spectral": "spectral penalty (power it.)",
    "iecl/saib_logdet": "SAIB log|det J| term",
}


def breakdown(trainer, steps):
    """Seconds per step of each part of the IE-CL step, (forward, backward), from profiles of `steps` ordinary steps
    and of one logging step (for the monitors)."""
    device, train_step = trainer.device, trainer.train_step
    logging_steps = train_step.logging_steps
    train_step.logging_steps = 10**9  # ordinary steps only (the last step of the run is far)
    events = profile_steps(trainer.take, steps, device)
    train_step.logging_steps = 1
    trainer.take()  # the monitors' first call (vmap, allocations) is not a logging step's cost
    monitors = label_times(profile_steps(trainer.take, 1, device), "iecl/monitors", device)
    train_step.logging_steps = logging_steps
    forward, backward = label_times(events, "iecl/", device), backward_times(events, "iecl/", device)
    parts = {
        label: (forward.get(label, 0.0) / steps / 1000, backward.get(label, 0.0) / steps / 1000)
        for label in STEP_PARTS
    }
    optimizer = label_times(events, "step/optimizer", device).get("step/optimizer", 0.0) / steps / 1000
    return parts, optimizer, monitors.get("iecl/monitors", 0.0) / 1000, logging_steps


def run_preset(name, args):
    torch.manual_seed(args.seed)
    base = copy.deepcopy(PRESETS[PRESET_NAMES[name]])
    size = base["image_size"]
    device = torch.device(args.device)
    views = tuple(torch.rand(args.batch_size, 3, size, size).to(device) for _ in range(2))
    iecl = Trainer(IECLConfig(**{**base, **parse_overrides(args.overrides)}), views)
    baseline = Trainer(IECLConfig(**base, **BASELINE_OVERRIDES), views)
    # SAIB starts as the identity (restore = 0); a trained SAIB transforms (same cost, but the realistic state).
    with torch.no_grad():
        torch.nn.init.normal_(iecl.model.view_generator.restore.weight, std=0.01)

    times = {"baseline": [], "iecl": []}
    cpu_times = {"baseline": [], "iecl": []}
    for repeat in range(args.warmup + args.repeats):
        order = [("baseline", baseline), ("iecl", iecl)]
        if repeat % 2:
            order.reverse()  # alternate who goes first, so drift and cache effects fall on both
        for label, trainer in order:
            elapsed, cpu = trainer.step()
            if repeat >= args.warmup:
                times[label].append(elapsed)
                cpu_times[label].append(cpu)

    base_time, iecl_time = statistics.median(times["baseline"]), statistics.median(times["iecl"])
    base_cpu = statistics.median(cpu_times["baseline"])
    cpu_ratio = statistics.median(cpu_times["iecl"]) / base_cpu
    generator_params = sum(p.numel() for p in iecl.model.generator_parameters())
    encoder_params = sum(p.numel() for p in iecl.model.iecl.parameters())
    print(
        f"[{name}] {base['backbone']} stem={base['stem']} "
        f"channels={base['backbone_kwargs'].get('channels', 'default')} "
        f"{size}x{size}, batch {args.batch_size} (x2 views), {device.type}, {torch.get_num_threads()} threads; "
        f"encoder {encoder_params / 1e6:.2f}M params, SAIB {generator_params / 1e3:.1f}k params"
    )
    print(
        f"[{name}] baseline (SimCLR) step: median {base_time:.3f}s  "
        f"({', '.join(f'{t:.3f}' for t in times['baseline'])})"
    )
    print(f"[{name}] IE-CL step:           median {iecl_time:.3f}s  ({', '.join(f'{t:.3f}' for t in times['iecl'])})")
    pair_ratios = [i / b for i, b in zip(times["iecl"], times["baseline"])]
    print(f"[{name}] per-pair ratios: {', '.join(f'{r:.2f}' for r in pair_ratios)}")
    # CPU seconds of this process: less sensitive to other load on the machine than wall-clock time.
    if device.type == "cpu":
        print(f"[{name}] CPU-time ratio (process_time): {cpu_ratio:.2f}")
    if args.breakdown:
        parts, optimizer, monitor, logging_steps = breakdown(iecl, max(args.repeats, 1))
        reference = base_time
        unit = "profiled seconds per step" + (" of device time" if device.type == "cuda" else "")
        print(
            f"[{name}] breakdown of the IE-CL step, {unit} "
            f"(baseline step: {reference:.3f}s, IE-CL step: {iecl_time:.3f}s, wall-clock medians):"
        )
        for label, (forward, backward) in parts.items():
            total = forward + backward
            print(
                f"[{name}]   {STEP_PARTS[label]:<36s} {total:.4f}s (forward {forward:.4f}s, backward {backward:.4f}s; "
                f"{total / reference:.2f} x baseline step)"
            )
        print(f"[{name}]   {'optimizer steps':<36s} {optimizer:.4f}s  ({optimizer / reference:.2f} x baseline step)")
        per_step = monitor / logging_steps / reference
        print(
            f"[{name}]   {'monitors (logging steps)':<36s} {monitor:.4f}s  ({monitor / reference:.2f} x baseline step "
            f"on a logging step; {per_step:.3f} x per step at logging_steps {logging_steps})"
        )
    return iecl_time / base_time


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    presets = ["standard", "cpu"] if args.preset == "both" else [args.preset]
    ratios = {name: run_preset(name, args) for name in presets}
    for name in presets:  # wall-clock ratios; the `ratio:` line is the standard model's, the one with the goal
        print(f"{'ratio' if name == 'standard' else f'ratio ({name} preset, for information)'}: {ratios[name]:.2f}")


if __name__ == "__main__":
    main()
