#!/usr/bin/env python
"""Representation quality: pretrain + linear eval, same budget for every variant, several seeds.

    python benchmarks/quality.py --quick                 # minutes: a smoke test of the whole pipeline
    python benchmarks/quality.py                         # CPU preset, cifar10-small, batch 64, 4 epochs (about 2 h on 2 cores)
    python benchmarks/quality.py --jobs 8 --epochs 30 --sweep   # on a GPU machine: the defaults sweep too

Each run is `recipes/pretrain.py` then `recipes/linear_eval.py` (the recipes' own protocol), in subprocesses.
Prints, per variant: linear top-1 (mean +- std over seeds), kNN top-1, and the final entropy terms; writes
every run's figures to --results_file. lightly's SimCLR is trained by `benchmarks/lightly_simclr.py` with the same
backbone, budget and optimizer and evaluated with the same linear_eval protocol.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The ablation grid and the main pair (docs/method.md): a config change each.
MAIN_VARIANTS = {
    "simclr": "use_view_generator=False,lambda_pres=0",
    "iecl": "",  # the package defaults (since the 2026-11-28 sweep: generator on, regularizer off)
    "generator_only": "lambda_pres=0",
    "regularizer_only": "use_view_generator=False,lambda_pres=1.0",
    "full": "lambda_pres=1.0",
}
# Alternatives docs/method.md asks the sweep to try before a default is fixed.
SWEEP_VARIANTS = {
    "iecl_warmup": "generator_warmup_steps=WARMUP",
    "iecl_adversarial_warmup": "generator_stance=adversarial,generator_warmup_steps=WARMUP",
    "iecl_untransformed_ref": "entropy_reference=untransformed",
    "iecl_projection_level": "representation_level=projection",
    "iecl_logdet": "entropy_estimator=logdet",
    "iecl_eps0.1": "generator_epsilon=0.1",
    "iecl_lgen0.1": "lambda_gen=0.1",
    "iecl_lgen10": "lambda_gen=10.0",
    "iecl_lpres10": "lambda_pres=10.0",
}


def run(command, log_path):
    with open(log_path, "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        with open(log_path) as log:
            tail = log.read()[-3000:]
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}); log {log_path}:\n{tail}")


def one_run(args, variant, overrides, seed):
    name = f"{variant}-seed{seed}"
    run_dir = os.path.join(args.work_dir, name)
    os.makedirs(run_dir, exist_ok=True)
    pretrain_dir, eval_dir = os.path.join(run_dir, "pretrain"), os.path.join(run_dir, "eval")
    start = time.time()
    common = ["--seed", str(seed), "--per_device_train_batch_size", str(args.batch_size), "--output_dir", pretrain_dir,
              "--num_train_epochs", str(args.epochs), "--preset", args.preset, "--dataloader_num_workers", str(args.workers)]
    if args.max_train_samples:
        common += ["--max_train_samples", str(args.max_train_samples)]
    if variant == "lightly_simclr":
        command = [sys.executable, "benchmarks/lightly_simclr.py", "--dataset_name", args.dataset, *common]
    else:
        overrides = overrides.replace("WARMUP", str(args.warmup_steps))
        if args.base_overrides and variant != "simclr":
            overrides = ",".join(o for o in (args.base_overrides, overrides) if o)
        command = [sys.executable, "recipes/pretrain.py", "--dataset_name", args.dataset, *common, "--knn_every_epochs", "0",
                   "--logging_steps", "20", *(["--model_config_overrides", overrides] if overrides else [])]
    run(command, os.path.join(run_dir, "pretrain.log"))
    pretrain_seconds = time.time() - start
    eval_command = [sys.executable, "recipes/linear_eval.py", "--model_name_or_path", pretrain_dir, "--dataset_name", args.dataset,
                    "--output_dir", eval_dir, "--seed", str(seed), "--embedding_2d", args.embedding_2d]
    if args.max_eval_samples:
        eval_command += ["--max_train_samples", str(args.max_eval_samples), "--max_test_samples", str(args.max_eval_samples)]
    run(eval_command, os.path.join(run_dir, "eval.log"))
    with open(os.path.join(eval_dir, "eval_results.json")) as handle:
        evaluation = json.load(handle)
    train = {}
    train_results = os.path.join(pretrain_dir, "train_results.json")
    if os.path.exists(train_results):
        with open(train_results) as handle:
            train = json.load(handle)
    record = {"variant": variant, "seed": seed, "overrides": overrides, "pretrain_seconds": round(pretrain_seconds, 1),
              "linear_top1": percent(evaluation["figures"], "linear_top1"), "knn_top1": percent(evaluation["figures"], "knn_k20_top1"),
              **{k: train.get(k) for k in ("entropy_gain_input", "entropy_gain_representation", "perturbation_l1", "base_loss")}}
    print(f"  {name}: linear {record['linear_top1']}, kNN {record['knn_top1']}, {pretrain_seconds:.0f}s", flush=True)
    return record


def percent(figures, key):
    """A figure of eval_results.json (a fraction) as a percentage, or None when the run did not produce it."""
    value = figures.get(key)
    return None if value is None else round(100 * value, 2)


def summarize(records):
    by_variant = {}
    for record in records:
        by_variant.setdefault(record["variant"], []).append(record)
    lines = ["| variant | seeds | linear top-1 (mean +- std) | kNN top-1 | dH_in | dH_rep | mean abs delta | pretrain s |",
             "|---|---|---|---|---|---|---|---|"]
    for variant, runs in by_variant.items():
        linear = [r["linear_top1"] for r in runs if r["linear_top1"] is not None]
        knn = [r["knn_top1"] for r in runs if r["knn_top1"] is not None]
        mean = lambda xs: statistics.mean(xs) if xs else float("nan")  # noqa: E731
        std = statistics.stdev(linear) if len(linear) > 1 else 0.0
        term = lambda key: mean([r[key] for r in runs if r.get(key) is not None])  # noqa: E731
        lines.append(f"| {variant} | {len(runs)} | {mean(linear):.2f} +- {std:.2f} ({', '.join(f'{x:.1f}' for x in linear)}) | "
                     f"{mean(knn):.2f} | {term('entropy_gain_input'):.4f} | {term('entropy_gain_representation'):.4f} | "
                     f"{term('perturbation_l1'):.4f} | {term('pretrain_seconds'):.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="../shared/data/cifar10-small")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4, help="default 4: the default run (9 runs) takes about 1.5-2 h on 2 CPU cores")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the main pair (simclr, iecl)")
    parser.add_argument("--other_seeds", type=int, nargs="+", default=[0], help="seeds of the other variants")
    parser.add_argument("--sweep", action="store_true", help="also run the alternatives of docs/method.md")
    parser.add_argument("--base_overrides", default="", help="IECLConfig overrides under every IE-CL variant, e.g. the "
                        "pre-sweep defaults 'lambda_pres=1.0,representation_level=backbone' (BENCHMARKS.md)")
    parser.add_argument("--variants", nargs="+", default=None, help="run only these variants")
    parser.add_argument("--no_lightly", action="store_true")
    parser.add_argument("--confirm_best_seeds", type=int, nargs="*", default=[], help="after the sweep, run the best IE-CL variant with these seeds too")
    parser.add_argument("--warmup_steps", type=int, default=None, help="generator budget warm-up (default: half the run)")
    parser.add_argument("--max_train_samples", type=int, default=None)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (a GPU fits several small runs)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--embedding_2d", default="pca", help="features_2d.png of each eval: pca (fast) or tsne")
    parser.add_argument("--work_dir", default="runs/quality")
    parser.add_argument("--results_file", default=None)
    parser.add_argument("--quick", action="store_true", help="1 epoch on 1,000 images, 1 seed: checks the pipeline in minutes")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.max_train_samples, args.max_eval_samples = 1, 1000, 1000
        args.seeds, args.other_seeds = [0], [0]
    if not os.path.exists(args.dataset):
        print(f"{args.dataset} not found: using the embedded digits dataset")
        args.dataset = "embedded:digits"
    if args.warmup_steps is None:
        images = args.max_train_samples or 10_000
        args.warmup_steps = max(1, args.epochs * (images // args.batch_size) // 2)
    variants = dict(MAIN_VARIANTS, **(SWEEP_VARIANTS if args.sweep else {}))
    if not args.no_lightly:
        variants["lightly_simclr"] = None
    if args.variants:
        variants = {k: v for k, v in {**MAIN_VARIANTS, **SWEEP_VARIANTS, "lightly_simclr": None}.items() if k in args.variants}
    jobs = [(v, o or "", s) for v, o in variants.items() for s in (args.seeds if v in ("simclr", "iecl") else args.other_seeds)]
    if not args.variants and not args.sweep:  # generator_only is the default configuration now: run it once, as "iecl"
        jobs = [job for job in jobs if job[0] != "generator_only"]
    print(f"{len(jobs)} runs: {args.epochs} epochs, batch {args.batch_size}, preset {args.preset}, dataset {args.dataset}, {args.jobs} in parallel")
    os.makedirs(args.work_dir, exist_ok=True)
    results_file = args.results_file or os.path.join(args.work_dir, "results.json")
    records = []

    def execute(job_list):
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(one_run, args, *job) for job in job_list]
            for future in futures:
                try:
                    records.append(future.result())
                except RuntimeError as error:
                    print(error, flush=True)
                with open(results_file, "w") as handle:
                    json.dump(records, handle, indent=1)

    execute(jobs)
    if args.confirm_best_seeds:
        iecl_runs = [r for r in records if r["variant"] not in ("simclr", "lightly_simclr", "regularizer_only") and r["linear_top1"] is not None]
        best = max(iecl_runs, key=lambda r: r["linear_top1"])
        print(f"best IE-CL variant of the sweep: {best['variant']} ({best['linear_top1']}); confirming with seeds {args.confirm_best_seeds}")
        done = {r["seed"] for r in records if r["variant"] == best["variant"]}
        execute([(best["variant"], best["overrides"], s) for s in args.confirm_best_seeds if s not in done])
    print()
    print(summarize(records))
    print(f"\nall runs: {results_file}")


if __name__ == "__main__":
    main()
