#!/usr/bin/env python
"""Cost of IE-CL's modules: time of one full IE-CL training step / time of the plain SimCLR step.

    python benchmarks/step_overhead.py                      # standard CIFAR ResNet-18, then the CPU preset
    python benchmarks/step_overhead.py --preset cpu --repeats 5 --batch_size 128
    python benchmarks/step_overhead.py --preset standard --breakdown

A step is what the pretraining recipe does per batch: `output = model(view1, view2)`, `output.loss.backward()`
(which also gives the generator the gradient of its own objective), one encoder optimizer step (SGD, as the
recipe's default) and one Adam step of the generator. The baseline is the same model with
`use_view_generator=False, lambda_pres=0` (plain SimCLR) and no generator optimizer. Both run on the same
pre-made view tensors (no input pipeline), in interleaved pairs whose order alternates, after warm-up pairs;
the ratio is median(IE-CL step) / median(baseline step). The goal for the standard model is <= 1.35.

Also printed: the ratio of CPU seconds (`time.process_time`), less sensitive to other load on the machine, which
inflates wall-clock times with 2 threads (each parallel region waits for its slowest thread). `--threads 1` gives
the steadiest figures on a shared machine. `--breakdown` also times the parts of the IE-CL step that the baseline
does not have (CPU seconds, medians over the repeats).
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from iecl_hf import IECLConfig, IECLForPreTraining  # noqa: E402
from iecl_hf.entropy_iecl import pixel_features  # noqa: E402
from iecl_hf.training.optim import build_encoder_optimizer, build_generator_optimizer  # noqa: E402

PRESETS = {
    # The model the goal is set on: full-width ResNet-18 with the CIFAR stem (3x3 stride 1, no max-pool).
    "standard": dict(backbone="resnet18", backbone_kwargs={}, stem="cifar", image_size=32),
    # The CPU preset: half-width ResNet-18 with a 3x3 stride-2 stem, about 16 times cheaper.
    "cpu": dict(backbone="resnet18", backbone_kwargs={"channels": [32, 64, 128, 256]}, stem="cifar_stride2", image_size=32),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=["standard", "cpu", "both"], default="both",
                        help="standard = CIFAR ResNet-18 (the figure of the goal); cpu = the CPU preset (information).")
    parser.add_argument("--batch_size", type=int, default=64, help="Images per view (the encoder sees 2x this).")
    parser.add_argument("--repeats", type=int, default=3, help="Timed (baseline, IE-CL) pairs.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed pairs first.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own).")
    parser.add_argument("--device", default="cpu", help="cpu (the goal's setting) or cuda.")
    parser.add_argument("--breakdown", action="store_true", help="Also time the extra parts of the IE-CL step.")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


class Trainer:
    """One model and its optimizers; `step()` is one recipe training step on fixed views."""

    def __init__(self, config, views):
        torch.manual_seed(0)
        self.device = views[0].device
        self.model = IECLForPreTraining(config).to(self.device).train()
        self.encoder_optimizer = build_encoder_optimizer("sgd", self.model.encoder_parameters(), lr=0.075, weight_decay=1e-6)
        self.generator_optimizer = build_generator_optimizer(self.model.generator_parameters(), lr=1e-3)
        self.views = views

    def step(self):
        """Returns (wall-clock seconds, CPU seconds of this process)."""
        synchronize(self.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        self.encoder_optimizer.zero_grad(set_to_none=True)
        if self.generator_optimizer is not None:
            self.generator_optimizer.zero_grad(set_to_none=True)
        output = self.model(*self.views)
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


def breakdown(trainer, repeats):
    """Medians of the parts of the IE-CL step (and of the encoder's own passes, for scale), in CPU seconds."""
    model, (view1, view2), device = trainer.model, trainer.views, trainer.device
    config = model.config
    parts = {name: [] for name in ("generator forward+backward", "encoder forward (2B)", "encoder backward (2B, full)",
                                   "extra input-only backward", "entropy terms (fwd+bwd)")}
    for _ in range(repeats):
        def generator_pass():
            generated, _ = model.view_generator(view2)
            generated.sum().backward()
        parts["generator forward+backward"].append(timed(generator_pass, device))

        with torch.no_grad():
            generated, _ = model.view_generator(view2)
        encoder_input_2 = generated.detach().requires_grad_(True)
        state = {}

        def encoder_forward():
            inputs = model.normalize(torch.cat([view1, encoder_input_2]))
            state["features"] = model.iecl(inputs).pooler_output
            state["loss"], state["projections"] = model.head(state["features"], inputs.detach(), view1.shape[0])
        parts["encoder forward (2B)"].append(timed(encoder_forward, device))
        parts["extra input-only backward"].append(
            timed(lambda: torch.autograd.grad(state["loss"], encoder_input_2, retain_graph=True), device))
        parts["encoder backward (2B, full)"].append(timed(lambda: state["loss"].backward(), device))

        def entropy_terms():
            generated_pixels = generated.detach().requires_grad_(True)
            features = state["features"].detach().requires_grad_(True)
            batch = view1.shape[0]
            gain_input = model.pixel_entropy(pixel_features(generated_pixels, config.pixel_entropy_size)) - model.pixel_entropy(
                pixel_features(view1, config.pixel_entropy_size))
            gain_rep = model.representation_entropy(features[batch:]) - model.representation_entropy(features[:batch].detach())
            (gain_input + gain_rep).backward()
        parts["entropy terms (fwd+bwd)"].append(timed(entropy_terms, device))
        model.zero_grad(set_to_none=True)
    return {name: statistics.median(values) for name, values in parts.items()}


def run_preset(name, args):
    torch.manual_seed(args.seed)
    base = dict(PRESETS[name])
    size = base["image_size"]
    device = torch.device(args.device)
    views = tuple(torch.rand(args.batch_size, 3, size, size).to(device) for _ in range(2))
    iecl = Trainer(IECLConfig(**base), views)
    baseline = Trainer(IECLConfig(**base, use_view_generator=False, lambda_pres=0.0), views)
    # Leave the identity generator: a trained generator perturbs (same cost, but the realistic state).
    with torch.no_grad():
        torch.nn.init.normal_(iecl.model.view_generator.to_delta.weight, std=0.01)

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
    print(f"[{name}] {base['backbone']} stem={base['stem']} channels={base['backbone_kwargs'].get('channels', 'default')} "
          f"{size}x{size}, batch {args.batch_size} (x2 views), {device.type}, {torch.get_num_threads()} threads; "
          f"encoder {encoder_params / 1e6:.2f}M params, generator {generator_params / 1e3:.1f}k params")
    print(f"[{name}] baseline (SimCLR) step: median {base_time:.3f}s  ({', '.join(f'{t:.3f}' for t in times['baseline'])})")
    print(f"[{name}] IE-CL step:           median {iecl_time:.3f}s  ({', '.join(f'{t:.3f}' for t in times['iecl'])})")
    pair_ratios = [i / b for i, b in zip(times["iecl"], times["baseline"])]
    print(f"[{name}] per-pair ratios: {', '.join(f'{r:.2f}' for r in pair_ratios)}")
    # CPU seconds of this process: less sensitive to other load on the machine than wall-clock time.
    if device.type == "cpu":
        print(f"[{name}] CPU-time ratio (process_time): {cpu_ratio:.2f}")
    if args.breakdown:
        parts = breakdown(iecl, max(args.repeats, 1))
        reference = base_cpu if device.type == "cpu" else base_time
        unit = "CPU seconds" if device.type == "cpu" else "seconds (wall-clock, synchronized)"
        print(f"[{name}] breakdown of the IE-CL step, {unit} (baseline step: {reference:.3f}s):")
        for part, seconds in parts.items():
            print(f"[{name}]   {part:<30s} {seconds:.4f}s  ({seconds / reference:.2f} x baseline step)")
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
