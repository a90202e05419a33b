#!/usr/bin/env python
"""Cost of IE-CL's modules: time of one full IE-CL training step / time of the plain SimCLR step.

    python benchmarks/step_overhead.py                      # standard CIFAR ResNet-18, then the CPU preset
    python benchmarks/step_overhead.py --preset cpu --repeats 5 --batch_size 128
    python benchmarks/step_overhead.py --preset standard --breakdown

A step is what the pretraining recipe does per batch: `output = model(view1, view2, output_saib_logdet=False)` (an
ordinary step: the recipe computes the `saib_logdet` monitor on logging steps only), one `output.loss.backward()`
(the one objective: base loss - lambda_entropy H(Z') + beta_kl KL + spectral_norm_weight L_spectral; every
parameter, SAIB included, gets its gradient from it), one encoder optimizer step (SGD, as the recipe's default) and
one AdamW step of SAIB (weight decay `saib_weight_decay`, as the recipe). The IE-CL model has the defaults of
`IECLConfig` (SAIB on the query view, the entropy and KL terms, the spectral-norm penalty with its power iteration
every training forward); SAIB's zero-initialised `restore` layer is drawn at std 0.01, the state of a trained SAIB
(same cost as the identity, but the realistic one). The baseline is the same model with
`generator_architecture="none", encoder_spectral_norm=False, lambda_entropy=0, beta_kl=0` (plain SimCLR) and no
SAIB optimizer. Both run on the same pre-made view tensors (no input pipeline), in interleaved pairs whose order
alternates, after warm-up pairs; the ratio is median(IE-CL step) / median(baseline step). The goal for the standard
model is <= 1.35. The models are `iecl_hf.training.arguments.PRESETS`: `standard` is its `cifar` preset (full-width
ResNet-18, 3x3 stride-1 stem, no max-pool, 32 px), `cpu` its `cpu` preset (half width, stride-2 stem).

Also printed: the ratio of CPU seconds (`time.process_time`), less sensitive to other load on the machine, which
inflates wall-clock times with 2 threads (each parallel region waits for its slowest thread). `--threads 1` gives
the steadiest figures on a shared machine. `--breakdown` also times the parts of the IE-CL step separately (CPU
seconds on the CPU, synchronized wall-clock on a GPU; medians over the repeats): SAIB forward+backward, the
encoder's forward (2B, projector and base loss included) and backward, the entropy and KL terms, the spectral
penalty, and the `saib_logdet` monitor (not in the timed step: the recipe runs it on one step in `--logging_steps`,
default 10; printed with its cost spread over those steps). The sum of the parts of the timed step leaves out the
optimizer steps and the small glue of the forward.
"""

import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from iecl_hf import BASELINE_OVERRIDES, IECLConfig, IECLForPreTraining  # noqa: E402
from iecl_hf.entropy_iecl import gaussian_kl  # noqa: E402
from iecl_hf.saib_iecl import saib_logdet  # noqa: E402
from iecl_hf.training.arguments import PRESETS, PretrainArguments  # noqa: E402
from iecl_hf.training.optim import build_generator_optimizer, build_optimizer  # noqa: E402

# --preset name -> iecl_hf.training.arguments.PRESETS key. `standard` is the model the goal is set on.
PRESET_NAMES = {"standard": "cifar", "cpu": "cpu", "vit_small": "vit_small"}

# The recipe computes the saib_logdet monitor on one step in --logging_steps (its default).
LOGGING_STEPS = PretrainArguments.__dataclass_fields__["logging_steps"].default


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
    parser.add_argument("--breakdown", action="store_true", help="Also time the parts of the IE-CL step.")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


class Trainer:
    """One model and its optimizers; `step()` is one recipe training step on fixed views."""

    def __init__(self, config, views):
        torch.manual_seed(0)
        self.device = views[0].device
        self.model = IECLForPreTraining(config).to(self.device).train()
        self.encoder_optimizer = build_optimizer(
            "sgd", self.model, lr=0.075, weight_decay=1e-6, exclude=self.model.generator_parameters()
        )
        self.generator_optimizer = build_generator_optimizer(
            self.model.generator_parameters(), lr=1e-3, weight_decay=config.saib_weight_decay
        )
        self.views = views

    def step(self):
        """Returns (wall-clock seconds, CPU seconds of this process)."""
        synchronize(self.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        self.encoder_optimizer.zero_grad(set_to_none=True)
        if self.generator_optimizer is not None:
            self.generator_optimizer.zero_grad(set_to_none=True)
        output = self.model(*self.views, output_saib_logdet=False)  # an ordinary (non-logging) step of the recipe
        output.loss.backward()
        self.encoder_optimizer.step()
        if self.generator_optimizer is not None:
            self.generator_optimizer.step()
        synchronize(self.device)
        return time.perf_counter() - start, time.process_time() - start_cpu


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """On CPU, CPU seconds of this process (all threads): robust to other load on the machine. On GPU, wall-clock."""
    if device.type == "cuda":
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - start
    start = time.process_time()
    fn()
    return time.process_time() - start


STEP_PARTS = (
    "SAIB forward+backward",
    "encoder forward (2B)",
    "encoder backward (2B)",
    "entropy+KL terms (fwd+bwd)",
    "spectral penalty (power it. + fwd+bwd)",
)
MONITOR = "saib_logdet monitor (logging steps)"


def breakdown(trainer, repeats):
    """Medians of the parts of the IE-CL step, each run as in `IECLForPreTraining.forward` (CPU seconds on the CPU).

    Gradients are cut between the parts (each backward stops at a detached input), so no part is counted twice:
    the encoder backward ends at the query view, where SAIB's backward (timed in the first part) takes over, and
    the terms on the projections end at the projections, whose backward through the encoder is the encoder's.
    """
    model, (view1, view2), device = trainer.model, trainer.views, trainer.device
    config = model.config
    batch = view1.shape[0]
    parts = {name: [] for name in (*STEP_PARTS, MONITOR)}
    for _ in range(1 + repeats):  # the first round is a warm-up (first calls of vmap/jvp, allocator), not counted

        def saib_pass():
            model.view_generator(view2).sum().backward()

        parts["SAIB forward+backward"].append(timed(saib_pass, device))

        with torch.no_grad():
            query_view = model.view_generator(view2)
        # Requires grad like SAIB's output in the real step: the encoder's backward also gives the gradient of
        # its input.
        query_view = query_view.detach().requires_grad_(True)
        state = {}

        def encoder_forward():
            inputs = model.normalize(torch.cat([view1, query_view]))
            anchor_inputs = model.normalize(torch.cat([view1, view2]))
            state["features"] = model.iecl(inputs).pooler_output
            state["loss"], state["projections"] = model.head(state["features"], anchor_inputs, batch)

        parts["encoder forward (2B)"].append(timed(encoder_forward, device))
        parts["encoder backward (2B)"].append(timed(lambda: state["loss"].backward(), device))

        def entropy_terms():
            projections = state["projections"].detach().requires_grad_(True)
            anchor, query = projections[:batch], projections[batch:]
            entropy_query = model.query_entropy(query)
            with torch.autocast(device.type, enabled=False):
                kl_loss = gaussian_kl(query, anchor.detach(), config.kl_covariance, config.covariance_ridge)
            with torch.no_grad():
                model.query_entropy(anchor)  # the entropy_anchor monitor
            (config.beta_kl * kl_loss - config.lambda_entropy * entropy_query).backward()

        parts["entropy+KL terms (fwd+bwd)"].append(timed(entropy_terms, device))

        def spectral():
            penalty, _ = model.spectral_penalty(model.iecl.backbone, update=True)
            (config.spectral_norm_weight * penalty).backward()

        parts["spectral penalty (power it. + fwd+bwd)"].append(timed(spectral, device))

        parts[MONITOR].append(timed(lambda: saib_logdet(model.view_generator, view2[:1].detach()), device))
        model.zero_grad(set_to_none=True)
    return {name: statistics.median(values[1:]) for name, values in parts.items()}


def run_preset(name, args):
    torch.manual_seed(args.seed)
    base = copy.deepcopy(PRESETS[PRESET_NAMES[name]])
    size = base["image_size"]
    device = torch.device(args.device)
    views = tuple(torch.rand(args.batch_size, 3, size, size).to(device) for _ in range(2))
    iecl = Trainer(IECLConfig(**base), views)
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
        parts = breakdown(iecl, max(args.repeats, 1))
        reference = base_cpu if device.type == "cpu" else base_time
        iecl_reference = statistics.median(cpu_times["iecl"]) if device.type == "cpu" else iecl_time
        unit = "CPU seconds" if device.type == "cpu" else "seconds (wall-clock, synchronized)"
        print(
            f"[{name}] breakdown of the IE-CL step, {unit} "
            f"(baseline step: {reference:.3f}s, IE-CL step: {iecl_reference:.3f}s):"
        )
        for part in STEP_PARTS:
            print(f"[{name}]   {part:<40s} {parts[part]:.4f}s  ({parts[part] / reference:.2f} x baseline step)")
        total = sum(parts[part] for part in STEP_PARTS)
        print(
            f"[{name}]   {'sum of the parts (no optimizer steps)':<40s} {total:.4f}s  "
            f"({total / reference:.2f} x baseline step)"
        )
        monitor = parts[MONITOR]
        print(
            f"[{name}]   {MONITOR:<40s} {monitor:.4f}s  ({monitor / reference:.2f} x baseline step on a logging step; "
            f"{monitor / LOGGING_STEPS / reference:.3f} x per step at the recipe's --logging_steps {LOGGING_STEPS})"
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
