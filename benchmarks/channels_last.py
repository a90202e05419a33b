#!/usr/bin/env python
"""Effect of `--channels_last` on one IE-CL training step (forward, one backward, both optimizers).

The IE-CL model has the `IECLConfig` defaults (SAIB, entropy and KL terms, spectral-norm penalty); SAIB's AdamW uses
`saib_weight_decay`, as in the recipe. The timed step is an ordinary recipe step: without the `saib_logdet` monitor,
which the recipe computes on logging steps only.

    python benchmarks/channels_last.py                 # CPU preset, batch 64, 8 interleaved pairs
    python benchmarks/channels_last.py --preset cifar --device cuda
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from iecl_hf import IECLConfig, IECLForPreTraining  # noqa: E402
from iecl_hf.training.arguments import PRESETS  # noqa: E402
from iecl_hf.training.optim import build_generator_optimizer, build_optimizer  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", choices=list(PRESETS))
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = IECLConfig(**PRESETS[args.preset])
    size = config.image_size
    views = torch.rand(2, args.batch_size, 3, size, size, device=device)
    runners = {}
    for name, memory_format in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        torch.manual_seed(0)
        model = IECLForPreTraining(config).to(device, memory_format=memory_format)
        optimizers = [
            build_optimizer("sgd", model, 0.01, 5e-4, exclude=model.generator_parameters()),
            build_generator_optimizer(model.generator_parameters(), 1e-3, config.saib_weight_decay),
        ]
        runners[name] = (model, optimizers, [v.contiguous(memory_format=memory_format) for v in views])

    def step(name):
        model, optimizers, (view_1, view_2) = runners[name]
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(view_1, view_2, output_saib_logdet=False).loss.backward()  # an ordinary (non-logging) recipe step
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for name in runners:  # warm-up
        step(name), step(name)
    times = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name in runners:
            times[name].append(step(name))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"{args.preset} preset, batch {args.batch_size}, {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    for name, value in median.items():
        print(f"{name}: median step {value:.3f}s")
    print(f"speedup (contiguous / channels_last): {median['contiguous'] / median['channels_last']:.2f}")


if __name__ == "__main__":
    main()
