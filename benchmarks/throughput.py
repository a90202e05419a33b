#!/usr/bin/env python
"""Training throughput (images/s) of iecl-hf against the plain-PyTorch floor and lightly's SimCLR.

    python benchmarks/throughput.py                       # CPU preset, batch 64 and 256
    python benchmarks/throughput.py --batch_sizes 64 --steps 5 --repeats 3
    python benchmarks/throughput.py --preset cifar --mixed_precision bf16 --channels_last --torch_compile  # GPU

Variants, timed in interleaved repeats within one run (median reported), same backbone / projector:
- floor:     a minimal plain-PyTorch SimCLR step on pre-made view tensors (no input pipeline), by design: the speed
             the library's step is measured against (with the recipe's optimizer at its defaults);
- pipeline:  the recipe's input pipeline alone (loader decode + batched SimCLR augmentation of two views);
- baseline:  iecl-hf SimCLR (`BASELINE_OVERRIDES`) through the recipe's own step (`PretrainingStep`), input pipeline
             included, with the recipe's optimizers at its defaults (`build_optimizers`, `PretrainArguments`) and its
             logging steps (the monitors on one step in `logging_steps`);
- iecl:      iecl-hf IE-CL (defaults: SAIB, entropy and KL terms, spectral-norm penalty) through the same step;
- lightly:   lightly's NTXentLoss + SimCLRProjectionHead + SimCLRTransform, in the loop style of lightly's examples
             (needs `pip install -e ".[bench]"`).
Images/s counts source images per second (each gives two views). `--mixed_precision bf16` is Accelerate's, as in the
recipe; `--channels_last` and `--torch_compile` are the recipe's speed options. `--breakdown` also profiles each model
variant's steps (loading, augmentation, forward, backward, optimizer: the `record_function` labels of the step,
read back from `torch.profiler`), which names where the baseline's extra time over the floor goes.
"""

import argparse
import itertools
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.profiler import record_function
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from recipe_step import recipe_step, take_step  # noqa: E402
from step_profile import label_times, profile_steps  # noqa: E402

from iecl_hf import BASELINE_OVERRIDES, IECLConfig  # noqa: E402
from iecl_hf.cli.pretrain import PretrainArguments  # noqa: E402
from iecl_hf.data import (  # noqa: E402
    BatchedSimCLRAugmentation,
    detect_columns,
    load_image_dataset,
)
from iecl_hf.data.training_data import training_examples, training_loader  # noqa: E402
from iecl_hf.frameworks_iecl import ProjectionHead  # noqa: E402
from iecl_hf.modeling_iecl import build_backbone  # noqa: E402
from iecl_hf.optimization import build_optimizer, pretraining_learning_rate  # noqa: E402
from iecl_hf.presets import PRESETS  # noqa: E402
from iecl_hf.training.pretraining import apply_speed_options  # noqa: E402

# The local CIFAR-10 copy of BENCHMARKS.md (Protocol, Data), under the repository root; the embedded digits without it.
DEFAULT_DATASET = "data/cifar10-small"


def load_split(path, num_images):
    """The first `num_images` training images of `path` (a local path or a Hub id, as given); the default copy
    falls back to the embedded digits when it is missing."""
    if path == DEFAULT_DATASET:
        path = os.path.join(os.path.dirname(__file__), "..", DEFAULT_DATASET)
        if not os.path.exists(path):
            print(f"{DEFAULT_DATASET} not found: using the embedded digits dataset")
            path = None
    dataset = load_image_dataset(path)
    split = dataset["train"]
    return split.select(range(min(num_images, len(split))))


def infinite(loader):
    while True:
        yield from loader


class SpeedOptions:
    """The recipe's speed options, applied the recipe's way: Accelerate's mixed precision, channels_last model and
    views, the encoder compiled in place (`apply_speed_options`)."""

    def __init__(self, mixed_precision="no", channels_last=False, torch_compile=False):
        self.mixed_precision, self.channels_last, self.torch_compile = mixed_precision, channels_last, torch_compile

    def prepare(self, model, encoder) -> torch.memory_format:
        return apply_speed_options(model, encoder, channels_last=self.channels_last, torch_compile=self.torch_compile)

    def autocast(self, device):
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.mixed_precision == "bf16")

    def __str__(self):
        parts = [f"mixed_precision {self.mixed_precision}"]
        parts += ["channels_last"] if self.channels_last else []
        parts += ["torch_compile"] if self.torch_compile else []
        return ", ".join(parts)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# The phases of a step: the labels of PretrainingStep (and of the other variants' steps below).
PHASES = {
    "loading": "bench/loading",
    "augmentation": "step/views",
    "forward": "step/forward",
    "backward": "step/backward",
    "optimizer": "step/optimizer",
}


class Floor:
    """Plain PyTorch, by design: backbone + projector + NT-Xent + the optimizer on pre-made tensors, no library code
    in the step. The optimizer is the recipe's at its defaults (`build_optimizer`: SGD at 0.3 x batch / 256, weight
    decay 5e-4), so that the variants differ in their steps only."""

    def __init__(self, config, batch_size, device, options=None):
        self.device, self.options = device, options or SpeedOptions()
        self.backbone = build_backbone(config).to(device)
        self.projector = ProjectionHead.from_config(config, self.backbone.num_features).to(device)
        memory_format = self.options.prepare(self.backbone, self.backbone)
        defaults = PretrainArguments(per_device_train_batch_size=batch_size)
        learning_rate = defaults.learning_rate or pretraining_learning_rate(defaults.optimizer, batch_size)
        modules = torch.nn.ModuleList([self.backbone, self.projector])
        self.optimizer = build_optimizer(defaults.optimizer, modules, learning_rate, defaults.weight_decay)
        self.views = torch.rand(2 * batch_size, 3, config.image_size, config.image_size, device=device)
        self.views = self.views.contiguous(memory_format=memory_format)
        self.batch_size, self.tau = batch_size, config.tau

    def step(self):
        with record_function("step/forward"):
            with self.options.autocast(self.device):
                z = F.normalize(self.projector(self.backbone(self.views)).float(), dim=1)
            logits = z @ z.t() / self.tau
            logits.fill_diagonal_(float("-inf"))
            n = self.batch_size
            targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(self.device)
            loss = F.cross_entropy(logits, targets)
        with record_function("step/backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with record_function("step/optimizer"):
            self.optimizer.step()
        return self.batch_size


class Recipe:
    """The recipe's training data (the decoded uint8 array) and, unless `model=False`, its step (`recipe_step`): the
    batched augmentation on the device, the model, both optimizers."""

    def __init__(self, config, split, batch_size, device, workers, model=True, options=None):
        dataset, collate = training_examples(split, detect_columns(split.features), config.image_size)
        self.batches = infinite(
            training_loader(dataset, collate, batch_size, workers, pin_memory=device.type == "cuda")
        )
        self.augmentation = BatchedSimCLRAugmentation(config.image_size).to(device)
        self.device = device
        options = options or SpeedOptions()
        speed = {"mixed_precision": options.mixed_precision, "channels_last": options.channels_last,
                 "torch_compile": options.torch_compile}  # fmt: skip
        self.train_step = (
            recipe_step(config, batch_size, device, augmentation=self.augmentation, **speed) if model else None
        )

    def step(self):
        with record_function("bench/loading"):
            batch = next(self.batches)
        if self.train_step is None:  # the input pipeline alone
            images = batch["images"].to(self.device, non_blocking=True)
            sizes = batch["image_sizes"].to(self.device, non_blocking=True)
            self.augmentation(images, image_sizes=sizes), self.augmentation(images, image_sizes=sizes)
            return len(images)
        take_step(self.train_step, batch)
        return len(batch["images"])


class Lightly:
    """lightly's SimCLR in the loop style of its examples (torchvision-style dataset + SimCLRTransform)."""

    def __init__(self, config, split, batch_size, device, workers):
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
        from lightly.transforms import SimCLRTransform

        columns = detect_columns(split.features)
        transform = SimCLRTransform(input_size=config.image_size, gaussian_blur=0.0, cj_strength=0.5, min_scale=0.2)

        class Images(torch.utils.data.Dataset):
            def __len__(self):
                return len(split)

            def __getitem__(self, index):
                return transform(split[index][columns.image].convert("RGB")), 0

        loader = DataLoader(
            Images(),
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
        )
        self.batches = infinite(loader)
        self.backbone = build_backbone(
            IECLConfig(**{k: getattr(config, k) for k in ("backbone", "backbone_kwargs", "stem", "image_size")})
        ).to(device)
        self.head = SimCLRProjectionHead(
            self.backbone.num_features, config.projection_hidden_dim, config.projection_dim
        ).to(device)
        self.criterion = NTXentLoss(temperature=config.tau)
        self.optimizer = torch.optim.SGD(
            [*self.backbone.parameters(), *self.head.parameters()], lr=0.01, momentum=0.9, weight_decay=5e-4
        )
        self.device = device

    def step(self):
        with record_function("bench/loading"):  # its views are made in the loader: waiting for them is loading
            (x0, x1), _ = next(self.batches)
            x0, x1 = x0.to(self.device), x1.to(self.device)
        with record_function("step/forward"):
            z0, z1 = self.head(self.backbone(x0)), self.head(self.backbone(x1))
            loss = self.criterion(z0, z1)
        with record_function("step/backward"):
            loss.backward()
        with record_function("step/optimizer"):
            self.optimizer.step()
            self.optimizer.zero_grad()
        return len(x0)


def breakdown(runners, steps, device):
    """Per-phase milliseconds of each model variant's step, from a profile of `steps` steps, as a markdown table."""
    lines = [
        f"phases of a step (ms per step, profile of {steps} steps; the floor has no loading or augmentation)",
        f"| variant | step | {' | '.join(PHASES)} |",
        f"|---|---|{'---|' * len(PHASES)}",
    ]
    for name, runner in runners.items():
        if name == "pipeline":
            continue
        events = profile_steps(runner.step, steps, device)
        times = {**label_times(events, "bench/", device), **label_times(events, "step/", device)}
        values = {phase: times[label] / steps for phase, label in PHASES.items() if label in times}
        cells = " | ".join(f"{values[p]:.1f}" if p in values else "-" for p in PHASES)
        lines.append(f"| {name} | {sum(values.values()):.1f} | {cells} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["cpu", "cifar"], default="cpu")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        help="a local path or a Hub id; the default falls back to the embedded digits",
    )
    parser.add_argument("--variants", nargs="+", default=["floor", "pipeline", "baseline", "iecl", "lightly"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--mixed_precision", choices=["no", "bf16"], default="no", help="the recipe's speed options")
    parser.add_argument(
        "--channels_last",
        action="store_true",
        help="the recipe's channels_last (model and views); compare with a run without",
    )
    parser.add_argument("--torch_compile", action="store_true", help="floor, baseline and iecl: the encoder compiled")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="then profile the phases of each model variant's step (separate steps: the profiler slows them a little)",
    )
    args = parser.parse_args()
    options = SpeedOptions(args.mixed_precision, args.channels_last, args.torch_compile)
    device = torch.device(args.device)
    torch.manual_seed(0)
    preset = PRESETS[args.preset]
    split = load_split(args.dataset, 4096)
    print(
        f"device {device}, preset {args.preset}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{len(split)} images, {args.steps} steps x {args.repeats} interleaved repeats, {options}"
    )
    for batch_size in args.batch_sizes:
        builders = {
            "floor": lambda: Floor(IECLConfig(**preset), batch_size, device, options),
            "pipeline": lambda: Recipe(IECLConfig(**preset), split, batch_size, device, args.workers, model=False),
            "baseline": lambda: Recipe(
                IECLConfig(**preset, **BASELINE_OVERRIDES), split, batch_size, device, args.workers, options=options
            ),
            "iecl": lambda: Recipe(IECLConfig(**preset), split, batch_size, device, args.workers, options=options),
            "lightly": lambda: Lightly(IECLConfig(**preset), split, batch_size, device, args.workers),
        }
        runners = {}
        for name in args.variants:
            try:
                runners[name] = builders[name]()
                runners[name].step()  # warm-up
            except ImportError as error:
                print(f"  {name}: skipped ({error}; pip install -e '.[bench]')")
        rates = {name: [] for name in runners}
        peak = {}
        for _, name in itertools.product(range(args.repeats), list(runners)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync(device)
            start, images = time.perf_counter(), 0
            for _ in range(args.steps):
                images += runners[name].step()
            sync(device)
            rates[name].append(images / (time.perf_counter() - start))
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated() / 2**20
        median = {name: statistics.median(values) for name, values in rates.items()}
        print(f"\nbatch {batch_size}")
        print(f"| variant | images/s (median) | repeats | {'peak GPU MiB |' if peak else ''}")
        print(f"|---|---|---|{'---|' if peak else ''}")
        for name, value in median.items():
            extra = f" {peak[name]:.0f} |" if peak else ""
            print(f"| {name} | {value:.1f} | {', '.join(f'{v:.0f}' for v in rates[name])} |{extra}")
        ratio = lambda a, b: f"{median[a] / median[b]:.2f}" if a in median and b in median else "n/a"  # noqa: E731
        step_ratio = (
            (median["baseline"] / median["iecl"]) if "iecl" in median and "baseline" in median else float("nan")
        )
        print(
            f"ratios (speed): baseline/floor {ratio('baseline', 'floor')}, "
            f"baseline/lightly {ratio('baseline', 'lightly')}, "
            f"iecl/baseline {ratio('iecl', 'baseline')} (step time IE-CL/baseline "
            f"{step_ratio:.2f}), "
            f"pipeline/baseline {ratio('pipeline', 'baseline')}"
        )
        if args.breakdown:
            print(breakdown(runners, args.repeats * args.steps, device))
    print(f"\nprocess peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
