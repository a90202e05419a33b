#!/usr/bin/env python
"""Representation quality with paired seeds: does IE-CL beat its baseline by more than the seed spread?

    python benchmarks/quality.py --quick                          # minutes: a smoke test of the whole pipeline
    python benchmarks/quality.py                                  # CPU protocol: main pair, 5 paired seeds
    python benchmarks/quality.py --variants simclr generation_only preservation_only --seeds 0 1 2   # ablation cells
    python benchmarks/quality.py --variants iecl --seeds 0 1 2 --base_overrides lambda_entropy=3.0 \
        --work_dir runs/sweep-l3 --compare_to runs/quality/results.json   # a sweep point against the defaults' runs
    python benchmarks/quality.py --preset cifar --dataset ../shared/data/cifar10-large --epochs 30 --batch_size 128 \
        --jobs 6 --variants simclr iecl --seeds 0 1 2               # GPU protocol (several runs share the GPU)

Paired protocol: for each seed, an IE-CL variant and its baseline share the initial encoder and head weights, the
data order and every augmentation draw (IE-CL's extra modules start from their own random stream), so the
per-seed difference removes most of the seed-to-seed spread. Each run is `recipes/pretrain.py` then
`recipes/linear_eval.py` (linear probe + kNN on --eval_dataset, by default the 8,000 test images of
cifar10-large), in subprocesses. Prints per variant the mean linear top-1 and kNN top-1, and for each IE-CL variant
the mean paired difference to its baseline with a 95% confidence interval (t over seeds). Finished runs are kept
(their eval_results.json) and not run again, so an interrupted benchmark continues where it stopped; every
finished run is written to --results_file at once. --compare_to prints a sweep point against the defaults' runs
(each IE-CL variant minus the same variant there, paired by seed).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from iecl_hf.configuration_iecl import BASELINE_OVERRIDES  # noqa: E402

# Every IE-CL term off, as --model_config_overrides: the plain framework.
BASELINE = ",".join(f"{name}={value}" for name, value in BASELINE_OVERRIDES.items())


RECIPE = "recipes/pretrain.py"
# Programs that take the recipe's flags (the recipe with one part replaced, for a diagnostic).
RECIPE_LIKE = (RECIPE, "benchmarks/recipe_lightly_views.py")


class Variant(NamedTuple):
    overrides: str  # IECLConfig overrides (--model_config_overrides)
    baseline: str | None = None  # the variant it is paired with
    pretrain_args: tuple = ()  # extra pretraining flags
    script: str = RECIPE  # the pretraining program


# The paper's ablation (Table 3) is simclr / generation_only / preservation_only / iecl. simclr_wd_doubled is a
# control for the spectral penalty: on a ResNet (BatchNorm after each conv) the penalty mostly shrinks the conv
# weights, which raises their effective learning rate. Doubling the weight decay shrinks them at least as much
# (total conv-weight norm at the end of the CPU protocol: 50.8 baseline, 43.2 with the penalty, 38.9 doubled).
VARIANTS = {
    "simclr": Variant(BASELINE),
    "iecl": Variant("", "simclr"),  # the package defaults
    "generation_only": Variant("encoder_spectral_norm=False", "simclr"),
    "preservation_only": Variant("generator_architecture=none,lambda_entropy=0,beta_kl=0", "simclr"),
    "terms_without_saib": Variant("generator_architecture=none", "simclr"),
    "simclr_wd_doubled": Variant(BASELINE, "simclr", ("--weight_decay", "1e-3")),
    # lightly's SimCLR (benchmarks/lightly_simclr.py), same backbone, optimizer, schedule and budget: is our
    # baseline the standard SimCLR? Same seed, but not the same initial weights or views (another code path).
    "lightly_simclr": Variant("", "simclr", script="benchmarks/lightly_simclr.py"),
    # lightly's SimCLR with our projection head (no BatchNorm on the projector's output): a diagnostic of the gap.
    "lightly_simclr_iecl_head": Variant(
        "", "simclr", ("--projection_head", "iecl"), script="benchmarks/lightly_simclr.py"
    ),
    # lightly's SimCLR with both views in one encoder batch (BatchNorm statistics over 2B, as ours): a diagnostic.
    "lightly_simclr_joint_forward": Variant(
        "", "simclr", ("--forward", "joint"), script="benchmarks/lightly_simclr.py"
    ),
    # lightly's loop with our batched views instead of lightly's per-image ones: with simclr_worker_views, tells
    # whether the gap to lightly is in the views or in the loop.
    "lightly_simclr_batched_views": Variant(
        "", "lightly_simclr", ("--views", "batched"), script="benchmarks/lightly_simclr.py"
    ),
    # SimCLR's projector without its output BatchNorm (the default until 2026-11-29), and IE-CL with it.
    "simclr_plain_head": Variant(f"projection_output_batchnorm=False,{BASELINE}", "simclr"),
    "iecl_plain_head": Variant("projection_output_batchnorm=False", "simclr_plain_head"),
    # Our SimCLR with torchvision's per-image views in the loader workers instead of the batched ones: are the views'
    # pixels (lightly's path is per image too) the rest of the gap to lightly? Same initial weights, other view draws.
    "simclr_worker_views": Variant(BASELINE, "simclr", ("--augmentation", "workers")),
    # Our SimCLR with lightly's per-image views (PIL operations) in the loader workers: against simclr_worker_views
    # only the views' arithmetic differs (torchvision v2 on uint8 tensors there), against lightly_simclr the loop.
    "simclr_lightly_views": Variant(
        BASELINE, "simclr_worker_views", ("--augmentation", "workers"), script="benchmarks/recipe_lightly_views.py"
    ),
    # BatchNorm statistics per view (lightly's loop) instead of over both views: the rest of the gap to lightly.
    "simclr_per_view_bn": Variant(f"batchnorm_per_view=True,{BASELINE}", "simclr"),
    "iecl_per_view_bn": Variant("batchnorm_per_view=True", "simclr_per_view_bn"),
    "moco": Variant(f"framework=moco,{BASELINE}"),
    "moco_iecl": Variant("framework=moco", "moco"),
    # MoCo with Shuffle BN on one device (4 BatchNorm groups of 2B / 4 = 32 rows at batch 64), both sides.
    "moco_shuffle_bn": Variant(f"framework=moco,moco_batchnorm_groups=4,{BASELINE}"),
    "moco_iecl_shuffle_bn": Variant("framework=moco,moco_batchnorm_groups=4", "moco_shuffle_bn"),
    "byol": Variant(f"framework=byol,{BASELINE}"),
    "byol_iecl": Variant("framework=byol", "byol"),
}
# The variants a --base_overrides sweep point applies to: those with IE-CL terms on (not the baselines or controls).
SWEPT = {name for name, v in VARIANTS.items() if v.baseline and v.script == RECIPE and BASELINE not in v.overrides}


def run(command, log_path):
    # This checkout's iecl_hf first: a recipe's own folder is not the root, so `import iecl_hf` would otherwise find
    # the installed (editable) package, another checkout's code when this one is a worktree at another commit.
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
    }
    with open(log_path, "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    if result.returncode != 0:
        with open(log_path) as log:
            tail = log.read()[-3000:]
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}); log {log_path}:\n{tail}")


def model_overrides(args, variant):
    sweep_point = args.base_overrides if variant in SWEPT else ""
    return ",".join(o for o in (VARIANTS[variant].overrides, sweep_point) if o)


def pretrain_command(args, variant, seed, pretrain_dir):
    """The pretraining command of one run: the recipe, or a reference implementation given the same budget."""
    spec = VARIANTS[variant]
    flags = {
        "--dataset_name": args.dataset,
        "--seed": seed,
        "--per_device_train_batch_size": args.batch_size,
        "--output_dir": pretrain_dir,
        "--num_train_epochs": args.epochs,
        "--preset": args.preset,
        "--dataloader_num_workers": args.workers,
        "--max_train_samples": args.max_train_samples,
    }
    recipe_only = []
    if spec.script in RECIPE_LIKE:
        flags.update({"--knn_every_epochs": 0, "--logging_steps": 20})
        flags["--model_config_overrides"] = model_overrides(args, variant)
        recipe_only = ["--overwrite_output_dir"]
    command = [sys.executable, spec.script, *(f"{k}={v}" for k, v in flags.items() if v not in (None, ""))]
    command += recipe_only
    return [*command, *spec.pretrain_args]


def one_run(args, variant, seed):
    overrides = model_overrides(args, variant)
    run_dir = os.path.join(args.work_dir, f"{variant}-seed{seed}")
    pretrain_dir, eval_dir = os.path.join(run_dir, "pretrain"), os.path.join(run_dir, "eval")
    os.makedirs(run_dir, exist_ok=True)
    start = time.time()
    if not os.path.exists(os.path.join(pretrain_dir, "train_results.json")):
        command = pretrain_command(args, variant, seed, pretrain_dir)
        run(command, os.path.join(run_dir, "pretrain.log"))
    pretrain_seconds = time.time() - start
    if not os.path.exists(os.path.join(eval_dir, "eval_results.json")):
        command = [
            sys.executable,
            "recipes/linear_eval.py",
            "--model_name_or_path",
            pretrain_dir,
            "--dataset_name",
            args.eval_dataset,
            "--output_dir",
            eval_dir,
            "--seed",
            str(seed),
            "--embedding_2d",
            "pca",
            *(
                ["--max_train_samples", str(args.max_eval_samples), "--max_test_samples", str(args.max_eval_samples)]
                if args.max_eval_samples
                else []
            ),
        ]
        run(command, os.path.join(run_dir, "eval.log"))
    with open(os.path.join(eval_dir, "eval_results.json")) as handle:
        figures = json.load(handle)["figures"]
    with open(os.path.join(pretrain_dir, "train_results.json")) as handle:
        train = json.load(handle)
    record = {
        "variant": variant,
        "seed": seed,
        "overrides": overrides,
        "seconds": round(pretrain_seconds, 1),
        "linear_top1": percent(figures, "linear_top1"),
        "knn_top1": percent(figures, "knn_k20_top1"),
        **{k: train.get(k) for k in ("base_loss", "entropy_query", "kl_loss", "saib_logdet", "spectral_norm_max")},
    }
    print(f"  {variant}-seed{seed}: linear {record['linear_top1']}, kNN {record['knn_top1']}", flush=True)
    return record


def percent(figures, key):
    value = figures.get(key)
    return None if value is None else round(100 * value, 2)


def mean_ci(values):
    """Mean and the half-width of its 95% confidence interval (Student t over the values)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5


def ci_text(differences):
    """'+1.20 (+0.01 .. +2.39)': the mean paired difference and its 95% confidence interval."""
    mean, half = mean_ci(differences)
    return f"{mean:+.2f} ({mean - half:+.2f} .. {mean + half:+.2f})"


def summarize(records):
    by_key = {(r["variant"], r["seed"]): r for r in records}
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in records)]
    lines = [
        (
            "| variant | seeds | linear top-1 (per seed) | kNN top-1 | paired diff. linear (95% CI) | "
            "paired diff. kNN (95% CI) |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for variant in variants:
        runs = sorted((r for r in records if r["variant"] == variant), key=lambda r: r["seed"])
        linear = [r["linear_top1"] for r in runs]
        knn = [r["knn_top1"] for r in runs]
        cells = [
            f"{statistics.mean(linear):.2f} ({', '.join(f'{x:.2f}' for x in linear)})",
            f"{statistics.mean(knn):.2f}",
        ]
        baseline = VARIANTS[variant].baseline
        for metric in ("linear_top1", "knn_top1"):
            pairs = [
                (r[metric], by_key[(baseline, r["seed"])][metric]) for r in runs if (baseline, r["seed"]) in by_key
            ]
            if baseline and pairs:
                cells.append(f"{ci_text([a - b for a, b in pairs])}, n={len(pairs)}")
            else:
                cells.append("-")
        lines.append(f"| {variant} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(records, reference):
    """Each variant minus the same variant of `reference` (another run's records), paired by seed: a sweep point
    against the defaults, on the seeds both have."""
    by_key = {(r["variant"], r["seed"]): r for r in reference}
    lines = [
        "| variant | seeds | minus reference, linear (95% CI) | minus reference, kNN (95% CI) |",
        "|---|---|---|---|",
    ]
    for variant in [v for v in VARIANTS if any(r["variant"] == v for r in records)]:
        runs = sorted(
            (r for r in records if r["variant"] == variant and (variant, r["seed"]) in by_key), key=lambda r: r["seed"]
        )
        if not runs or all(r["overrides"] == by_key[(variant, r["seed"])]["overrides"] for r in runs):
            continue  # nothing to compare, or the very same runs (e.g. linked baselines)
        cells = []
        for metric in ("linear_top1", "knn_top1"):
            differences = [r[metric] - by_key[(variant, r["seed"])][metric] for r in runs]
            per_seed = ", ".join(f"{d:+.2f}" for d in differences)
            cells.append(f"{ci_text(differences)}; per seed {per_seed}")
        seeds = ",".join(str(r["seed"]) for r in runs)
        lines.append(f"| {variant} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="../shared/data/cifar10-small", help="pretraining data")
    parser.add_argument(
        "--eval_dataset",
        default="../shared/data/cifar10-large",
        help="linear probe and kNN (its test split is scored)",
    )
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["simclr", "iecl"],
        choices=list(VARIANTS),
        help="an IE-CL variant runs after its baseline for each seed",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--base_overrides",
        default="",
        help="IECLConfig overrides added to every IE-CL variant (a sweep point), e.g. 'lambda_entropy=0.3'",
    )
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs in parallel (a GPU fits several; on a 2-core CPU keep 1)"
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--work_dir", default="runs/quality")
    parser.add_argument("--results_file", default=None)
    parser.add_argument(
        "--compare_to",
        default=None,
        help="another run's results file (e.g. the defaults' runs): also print each variant minus the same variant "
        "there, paired by seed (a sweep point against the defaults)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 epoch on 512 images, 1 seed: checks the pipeline in minutes"
    )
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.max_train_samples, args.max_eval_samples, args.seeds = 1, 512, 512, [0]
    if args.compare_to:  # read now: a wrong path fails before hours of runs, not after
        with open(args.compare_to) as handle:
            reference = json.load(handle)
    for name in ("dataset", "eval_dataset"):
        if not os.path.exists(getattr(args, name)):
            print(f"{getattr(args, name)} not found: using the embedded digits dataset")
            setattr(args, name, "embedded:digits")
    # Seed by seed, the baseline first: an interrupted benchmark leaves complete pairs.
    baselines = [VARIANTS[v].baseline for v in args.variants if VARIANTS[v].baseline]
    wanted = list(args.variants) + [b for b in dict.fromkeys(baselines) if b not in args.variants]
    ordered = sorted(wanted, key=lambda v: VARIANTS[v].baseline is not None)
    jobs = [(v, s) for s in args.seeds for v in ordered]
    print(
        f"{len(jobs)} runs: {args.epochs} epochs, batch {args.batch_size}, preset {args.preset}, "
        f"pretraining on {args.dataset}, "
        f"evaluation on {args.eval_dataset}, {args.jobs} in parallel",
        flush=True,
    )
    os.makedirs(args.work_dir, exist_ok=True)
    results_file = args.results_file or os.path.join(args.work_dir, "results.json")
    records = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for future in [pool.submit(one_run, args, *job) for job in jobs]:
            try:
                records.append(future.result())
            except RuntimeError as error:
                print(error, flush=True)
            with open(results_file, "w") as handle:
                json.dump(records, handle, indent=1)
    print()
    print(summarize(records))
    if args.compare_to:
        print(f"\nagainst {args.compare_to}:\n" + compare(records, reference))
    print(f"\nall runs: {results_file}")


if __name__ == "__main__":
    main()
