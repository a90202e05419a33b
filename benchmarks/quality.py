#!/usr/bin/env python
r"""Representation quality with paired seeds: does IE-CL beat its baseline by more than the seed spread?

    python benchmarks/quality.py --quick                          # minutes: a smoke test of the whole pipeline
    python benchmarks/quality.py --seeds 0 1 2                    # CPU protocol on the validation split
    python benchmarks/quality.py --variants simclr simclr:tau=0.2 coding_rate_only iecl --reference simclr
    python benchmarks/quality.py --protocol test --seeds 100 101 102 103 104   # final figures only: the test split
    python benchmarks/quality.py --variants simclr generation_only preservation_only --seeds 0 1 2   # ablation cells
    python benchmarks/quality.py --variants iecl --seeds 0 1 2 --base_overrides lambda_entropy=3.0 \
        --work_dir runs/sweep-l3 --compare_to runs/quality/results.json   # a sweep point against the defaults' runs
    python benchmarks/quality.py --preset cifar --dataset data/cifar10-large --epochs 30 --batch_size 128 \
        --jobs 6 --variants simclr iecl --seeds 0 1 2               # GPU protocol (several runs share the GPU)
    python benchmarks/quality.py --report a.json b.json --results_file ab.json   # finished runs: table, merged file

Validation protocol (the default): the probe and kNN are scored on a fixed, stratified hold-out of
--validation_size images of --eval_dataset's train split (--split_seed, the same images for every run), the probe
trained on the rest. Every choice (a weight, a temperature, a default) is made there; `--protocol test` scores the
8,000 test images and is for the final tables only, on seeds that chose nothing.

A variant is a name below, optionally followed by `:` and overrides: `field=value` for IECLConfig fields and
`--flag=value` for pretraining flags, comma-separated, e.g. `simclr:tau=0.1,--learning_rate=0.6`. Its runs go to
WORK_DIR/<variant>-seed<seed> and it is paired with its named variant's baseline (`simclr:tau=0.1` with `simclr`);
`--reference V` pairs every variant with V instead (e.g. IE-CL against the tuned baseline).

Paired protocol: for each seed, an IE-CL variant and its baseline share the initial encoder and head weights, the
data order and every augmentation draw (IE-CL's extra modules start from their own random stream), so the
per-seed difference removes most of the seed-to-seed spread. Each run is `recipes/pretrain.py` then
`recipes/linear_eval.py` (linear probe + kNN on --eval_dataset), in subprocesses. Every record carries what produced
it (commit and whether the tree was dirty, the resolved config, the datasets with their fingerprints and the scored
split, epochs, batch, preset, seed, probe settings, package versions, wall time), and two runs are paired only when
all of it but the variants' own overrides matches (otherwise the table says which field differs and refuses).

Prints per variant the mean linear top-1 and kNN top-1, and the mean paired difference to its baseline (or
--reference) with a 95% confidence interval (t over seeds). Finished runs are kept (their eval_results.json) and not
run again, so an interrupted benchmark continues where it stopped (a run stopped mid-pretraining continues from its
last epoch's checkpoint when the same command starts it again), and a finished one prints its table again at no
cost (e.g. with another --reference); every finished run is written to --results_file at once. --compare_to prints
each variant minus the same variant in another results file, paired by seed (a sweep point against the defaults).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from iecl_hf.configuration_iecl import BASELINE_OVERRIDES  # noqa: E402
from iecl_hf.provenance import code_version  # noqa: E402

# Every IE-CL term off, as --model_config_overrides: the plain framework.
BASELINE = ",".join(f"{name}={value}" for name, value in BASELINE_OVERRIDES.items())


RECIPE = "recipes/pretrain.py"
# The local copies of CIFAR-10 the figures in BENCHMARKS.md were measured on (BENCHMARKS.md, Protocol, Data), under
# the repository root. Without them only --quick runs, on the embedded digits.
DEFAULT_DATASETS = {"dataset": "data/cifar10-small", "eval_dataset": "data/cifar10-large"}


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
    # The strongest simple control: SimCLR plus the coding-rate term alone on its own second view, at IE-CL's weight
    # (no SAIB, no KL, no spectral penalty). What IE-CL adds beyond a representation-spread regularizer.
    "coding_rate_only": Variant("generator_architecture=none,beta_kl=0,encoder_spectral_norm=False", "simclr"),
    "simclr_wd_doubled": Variant(BASELINE, "simclr", ("--weight_decay", "1e-3")),
    # lightly's SimCLR (benchmarks/lightly_simclr.py), same backbone, optimizer, schedule and budget: is our
    # baseline the standard SimCLR? Same seed, but not the same initial weights or views (another code path).
    "lightly_simclr": Variant("", "simclr", script="benchmarks/lightly_simclr.py"),
    # SimCLR's projector without its output BatchNorm (the default until 2026-11-29), and IE-CL with it.
    "simclr_plain_head": Variant(f"projection_output_batchnorm=False,{BASELINE}", "simclr"),
    "iecl_plain_head": Variant("projection_output_batchnorm=False", "simclr_plain_head"),
    "moco": Variant(f"framework=moco,{BASELINE}"),
    "moco_iecl": Variant("framework=moco", "moco"),
    # MoCo with Shuffle BN on one device (4 BatchNorm groups of 2B / 4 = 32 rows at batch 64), both sides.
    "moco_shuffle_bn": Variant(f"framework=moco,moco_batchnorm_groups=4,{BASELINE}"),
    "moco_iecl_shuffle_bn": Variant("framework=moco,moco_batchnorm_groups=4", "moco_shuffle_bn"),
    "byol": Variant(f"framework=byol,{BASELINE}"),
    "byol_iecl": Variant("framework=byol", "byol"),
    "simsiam": Variant(f"framework=simsiam,{BASELINE}"),
    "simsiam_iecl": Variant("framework=simsiam", "simsiam"),
}
# The paper's plug-and-play cells: SAIB alone (entropy, KL and spectral penalty off) on each framework; its stance is
# an override (e.g. `saib_only:saib_stance=adversarial`).
SAIB_ALONE = "lambda_entropy=0,beta_kl=0,encoder_spectral_norm=False"
VARIANTS["saib_only"] = Variant(SAIB_ALONE, "simclr")
for _framework in ("moco", "byol", "simsiam"):
    VARIANTS[f"{_framework}_saib_only"] = Variant(f"framework={_framework},{SAIB_ALONE}", _framework)
# The variants a --base_overrides sweep point applies to: those with IE-CL terms on (not the baselines or controls).
SWEPT = {name for name, v in VARIANTS.items() if v.baseline and v.script == RECIPE and BASELINE not in v.overrides}


def run(command, log_path, append=False):
    # This checkout's iecl_hf first: a recipe's own folder is not the root, so `import iecl_hf` would otherwise find
    # the installed (editable) package, another checkout's code when this one is a worktree at another commit.
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
    }
    with open(log_path, "a" if append else "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    if result.returncode != 0:
        with open(log_path) as log:
            tail = log.read()[-3000:]
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}); log {log_path}:\n{tail}")


def parse_variant(spec: str) -> tuple[str, str, tuple]:
    """'simclr:tau=0.1,--learning_rate=0.6' -> ('simclr', 'tau=0.1', ('--learning_rate', '0.6'))."""
    name, _, extra = spec.partition(":")
    if name not in VARIANTS:
        raise argparse.ArgumentTypeError(f"unknown variant {name!r} in {spec!r}; known: {', '.join(VARIANTS)}")
    config, flags = [], []
    for item in filter(None, extra.split(",")):
        key, separator, value = item.partition("=")
        if not separator or not key or not value:
            raise argparse.ArgumentTypeError(f"{item!r} in {spec!r} is not field=value or --flag=value")
        if key.startswith("--"):
            flags += [key, value]
        else:
            config.append(item)
    return name, ",".join(config), tuple(flags)


def variant_spec(spec: str) -> str:
    parse_variant(spec)  # an argparse type: a wrong name or override fails before any run
    return spec


def baseline_of(spec: str, reference: str | None) -> str | None:
    """The variant `spec` is paired with: --reference, else its named variant's baseline."""
    if reference:
        return None if spec == reference else reference
    return VARIANTS[parse_variant(spec)[0]].baseline


def model_overrides(args, spec):
    name, extra, _ = parse_variant(spec)
    sweep_point = args.base_overrides if name in SWEPT else ""
    return ",".join(o for o in (VARIANTS[name].overrides, sweep_point, extra) if o)


def pretrain_command(args, spec, seed, pretrain_dir):
    """The pretraining command of one run: the recipe, or a reference implementation given the same budget."""
    name, _, extra_flags = parse_variant(spec)
    variant = VARIANTS[name]
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
    if variant.script == RECIPE:
        # A checkpoint each epoch, so that an interrupted run continues (`resumable_pretrain_command`).
        flags.update({"--knn_every_epochs": 0, "--logging_steps": 20, "--checkpointing_steps": "epoch"})
        flags["--model_config_overrides"] = model_overrides(args, spec)
        recipe_only = ["--overwrite_output_dir"]
    command = [sys.executable, variant.script, *(f"{k}={v}" for k, v in flags.items() if v not in (None, ""))]
    command += recipe_only
    return [*command, *variant.pretrain_args, *extra_flags]


def eval_command(args, seed, pretrain_dir, eval_dir):
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
    ]
    if args.protocol == "validation":
        command += ["--validation_size", str(args.validation_size), "--split_seed", str(args.split_seed)]
    if args.max_eval_samples:
        samples = str(args.max_eval_samples)
        command += ["--max_train_samples", samples, "--max_test_samples", samples]
    return command


def run_dir_name(spec: str, seed: int) -> str:
    return f"{spec.replace(':', '@').replace('--', '').replace('/', '_')}-seed{seed}"


# Pretraining arguments that differ between the runs of one comparison by design (or say nothing of the result).
PER_RUN_ARGS = {"output_dir", "seed", "model_config_overrides", "overwrite_output_dir", "logging_dir", "run_name"}
# Kept in the record, not compared: a resumed run ends with the weights of the uninterrupted one
# (tests/test_reliability.py), and how often it saved says nothing of the result.
RESUME_ARGS = {"checkpointing_steps", "checkpoints_total_limit", "resume_from_checkpoint"}


def resumable_pretrain_command(command: list[str], run_dir: str) -> tuple[list[str], bool]:
    """`(command, resumed)`: the recipe's command continues the run's newest checkpoint when the run folder's last
    pretraining was started with this very command on this very code (the same commit, a clean tree), and starts
    over otherwise. The command and the commit are recorded in RUN_DIR/pretrain_command.json before it runs. A
    reference implementation's command (no `--overwrite_output_dir`: not the recipe) never resumes."""
    if "--overwrite_output_dir" not in command:
        return command, False
    record, started = os.path.join(run_dir, "pretrain_command.json"), {"command": command, **code_version()}
    previous = None
    if os.path.exists(record):
        with open(record) as handle:
            previous = json.load(handle)
    with open(record, "w") as handle:
        json.dump(started, handle)
    if previous != started or started["dirty"] is not False:
        return command, False
    # With a complete checkpoint in --output_dir the recipe resumes from it; without one, it starts from scratch.
    return [*command, "--resume_from_checkpoint=latest"], True


EVAL_DATASET_FIELDS = (
    "name",
    "scored_split",
    "validation_size",
    "split_seed",
    "fingerprints",
    "num_train",
    "num_test",
)


def run_provenance(train: dict, evaluation: dict) -> dict:
    """What produced a run, from the records its pretraining and its evaluation wrote themselves."""
    pretrain, scored = train.get("provenance", {}), evaluation.get("provenance", {})
    dataset = evaluation.get("dataset", {})
    return {
        "commit": pretrain.get("commit"),
        "dirty": pretrain.get("dirty"),
        "eval_commit": scored.get("commit"),
        "config_diff": pretrain.get("config_diff"),
        "pretrain_dataset": pretrain.get("dataset"),
        "pretrain_args": {k: v for k, v in train.get("args", {}).items() if k not in PER_RUN_ARGS},
        "eval_dataset": {key: dataset.get(key) for key in EVAL_DATASET_FIELDS},
        "probe": evaluation.get("protocol", {}).get("linear_probe"),
        "knn": evaluation.get("protocol", {}).get("knn"),
        "versions": pretrain.get("versions"),
        "device": pretrain.get("device"),
        "pretrain_wall_seconds": pretrain.get("wall_seconds"),
        "eval_seconds": evaluation.get("seconds"),
    }


# Provenance that may differ between paired runs: the variant's own config (checked through its overrides) and times.
NOT_COMPARED = {"config_diff", "pretrain_wall_seconds", "eval_seconds"}


def mismatch(a: dict, b: dict) -> str | None:
    """Why records `a` and `b` may not be paired (the first field that differs beyond the variants' own
    overrides), or None."""
    pa, pb = a.get("provenance"), b.get("provenance")
    if not pa or not pb or not pa.get("commit") or not pb.get("commit"):
        missing = a if not (pa and pa.get("commit")) else b
        return f"{missing['variant']} seed {missing['seed']} has no provenance (a record written before it existed)"
    own_flags = set()
    for spec in (a["variant"], b["variant"]):
        name, _, flags = parse_variant(spec)
        own_flags |= {flag.lstrip("-") for flag in (*VARIANTS[name].pretrain_args[::2], *flags[::2])}
    for field in pa.keys() | pb.keys():
        if field in NOT_COMPARED:
            continue
        va, vb = pa.get(field), pb.get(field)
        if field == "pretrain_args":
            ignored = own_flags | RESUME_ARGS
            va, vb = ({k: v for k, v in d.items() if k not in ignored} for d in (va or {}, vb or {}))
        if va != vb:
            differing = []
            if isinstance(va, dict) and isinstance(vb, dict):
                differing = sorted(k for k in va.keys() | vb.keys() if va.get(k) != vb.get(k))
            detail = f" ({', '.join(differing)})" if differing else f": {va!r} vs {vb!r}"
            return f"{field} differs{detail}"
    return None


def one_run(args, spec, seed):
    overrides = model_overrides(args, spec)
    run_dir = os.path.join(args.work_dir, run_dir_name(spec, seed))
    pretrain_dir, eval_dir = os.path.join(run_dir, "pretrain"), os.path.join(run_dir, "eval")
    os.makedirs(run_dir, exist_ok=True)
    if not os.path.exists(os.path.join(pretrain_dir, "train_results.json")):
        command, resumed = resumable_pretrain_command(pretrain_command(args, spec, seed, pretrain_dir), run_dir)
        run(command, os.path.join(run_dir, "pretrain.log"), append=resumed)
    if not os.path.exists(os.path.join(eval_dir, "eval_results.json")):
        run(eval_command(args, seed, pretrain_dir, eval_dir), os.path.join(run_dir, "eval.log"))
    with open(os.path.join(eval_dir, "eval_results.json")) as handle:
        evaluation = json.load(handle)
    with open(os.path.join(pretrain_dir, "train_results.json")) as handle:
        train = json.load(handle)
    figures = evaluation["figures"]
    record = {
        "variant": spec,
        "seed": seed,
        "overrides": overrides,
        "scored_split": evaluation.get("dataset", {}).get("scored_split", "test"),
        "linear_top1": percent(figures, "linear_top1"),
        "knn_top1": percent(figures, "knn_k20_top1"),
        **{k: train.get(k) for k in ("base_loss", "entropy_query", "kl_loss", "saib_logdet", "spectral_norm_max")},
        "provenance": run_provenance(train, evaluation),
    }
    print(f"  {spec}-seed{seed}: linear {record['linear_top1']}, kNN {record['knn_top1']}", flush=True)
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
    """'+1.20 (+0.01 .. +2.39)': the mean paired difference and its 95% confidence interval (none from one pair)."""
    mean, half = mean_ci(differences)
    if len(differences) < 2:
        return f"{mean:+.2f} (one pair: no interval)"
    return f"{mean:+.2f} ({mean - half:+.2f} .. {mean + half:+.2f})"


def paired_differences(records, spec, baseline, metric):
    """([variant - baseline] by seed, or None and the reason the runs may not be paired)."""
    by_key = {(r["variant"], r["seed"]): r for r in records}
    differences = []
    for r in sorted((r for r in records if r["variant"] == spec), key=lambda r: r["seed"]):
        other = by_key.get((baseline, r["seed"]))
        if other is None:
            continue
        reason = mismatch(r, other)
        if reason:
            return None, f"not paired with {baseline}, seed {r['seed']}: {reason}"
        differences.append(r[metric] - other[metric])
    return differences, None


def summarize(records, reference=None):
    variants = list(dict.fromkeys(r["variant"] for r in records))
    splits = sorted({r.get("scored_split", "test") for r in records})
    lines = [
        f"scored on: {', '.join(splits)}",
        "",
        (
            "| variant | seeds | linear top-1 (per seed) | kNN top-1 | paired diff. linear (95% CI) | "
            "paired diff. kNN (95% CI) |"
        ),
        "|---|---|---|---|---|---|",
    ]
    refusals = []
    for variant in variants:
        runs = sorted((r for r in records if r["variant"] == variant), key=lambda r: r["seed"])
        linear = [r["linear_top1"] for r in runs]
        knn = [r["knn_top1"] for r in runs]
        cells = [
            f"{statistics.mean(linear):.2f} ({', '.join(f'{x:.2f}' for x in linear)})",
            f"{statistics.mean(knn):.2f}",
        ]
        baseline = baseline_of(variant, reference)
        for metric in ("linear_top1", "knn_top1"):
            differences, reason = paired_differences(records, variant, baseline, metric) if baseline else ([], None)
            if reason:
                refusals.append(f"{variant}: {reason}")
                cells.append("refused")
            elif differences:
                cells.append(f"{ci_text(differences)} vs {baseline}, n={len(differences)}")
            else:
                cells.append("-")
        lines.append(f"| {variant} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + sorted(set(refusals)))


def compare(records, reference):
    """Each variant minus the same variant of `reference` (another run's records), paired by seed: a sweep point
    against the defaults, on the seeds both have."""
    by_key = {(r["variant"], r["seed"]): r for r in reference}
    lines = [
        "| variant | seeds | minus reference, linear (95% CI) | minus reference, kNN (95% CI) |",
        "|---|---|---|---|",
    ]
    for variant in dict.fromkeys(r["variant"] for r in records):
        runs = sorted(
            (r for r in records if r["variant"] == variant and (variant, r["seed"]) in by_key), key=lambda r: r["seed"]
        )
        if not runs or all(r["overrides"] == by_key[(variant, r["seed"])]["overrides"] for r in runs):
            continue  # nothing to compare, or the very same runs (e.g. linked baselines)
        reasons = [reason for r in runs if (reason := mismatch(r, by_key[(variant, r["seed"])]))]
        if reasons:
            lines.append(f"| {variant} | refused: {reasons[0]} | | |")
            continue
        cells = []
        for metric in ("linear_top1", "knn_top1"):
            differences = [r[metric] - by_key[(variant, r["seed"])][metric] for r in runs]
            per_seed = ", ".join(f"{d:+.2f}" for d in differences)
            cells.append(f"{ci_text(differences)}; per seed {per_seed}")
        seeds = ",".join(str(r["seed"]) for r in runs)
        lines.append(f"| {variant} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(records, path):
    with open(path, "w") as handle:
        json.dump(records, handle, indent=1)


def run_difference(a: dict, b: dict) -> str | None:
    """None when records `a` and `b` are one run, else how they differ. A run's record is rebuilt from its own files
    by every call that collects it: read from two results files it has the same provenance and figures (only its
    `overrides`, written by the caller, may differ)."""
    if a.get("provenance") != b.get("provenance"):
        return mismatch(a, b) or "the same settings, run twice"
    if (a.get("linear_top1"), a.get("knn_top1")) != (b.get("linear_top1"), b.get("knn_top1")):
        return "other figures"
    return None


def known_variant(record: dict):
    """A results file of an older quality.py may name a variant that left it: say which commit reads it."""
    try:
        parse_variant(record["variant"])
    except argparse.ArgumentTypeError as error:
        commit = (record.get("provenance") or {}).get("commit") or "the one that wrote it (see HISTORY.md)"
        raise ValueError(f"{error}. Report this file from its own commit, {commit}") from None


def merge_results(paths) -> list[dict]:
    """The records of several results files in one list, each run once: a shared baseline's runs are in every
    file that paired with them. A variant and seed held from two different runs (another commit, another package
    version) is an error, not a silent choice between them."""
    merged, source = {}, {}
    for path in paths:
        with open(path) as handle:
            for record in json.load(handle):
                key = (record["variant"], record["seed"])
                kept, first = merged.setdefault(key, record), source.setdefault(key, path)
                if why := run_difference(kept, record):
                    where = f"twice in {path}" if path == first else f"in {first} and in {path}"
                    raise ValueError(
                        f"{key[0]} seed {key[1]} is {where}, from two different runs ({why}): report the files of "
                        "one environment together, or the two runs separately"
                    )
    return list(merged.values())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=DEFAULT_DATASETS["dataset"], help="pretraining data")
    parser.add_argument(
        "--eval_dataset",
        default=DEFAULT_DATASETS["eval_dataset"],
        help="linear probe and kNN (--protocol says which of its splits is scored)",
    )
    parser.add_argument(
        "--protocol",
        choices=["validation", "test"],
        default="validation",
        help="validation: score a fixed hold-out of the eval dataset's train split (for every choice); test: the "
        "test split (final tables only, on seeds that chose nothing)",
    )
    parser.add_argument("--validation_size", type=int, default=5000, help="images in the validation hold-out")
    parser.add_argument("--split_seed", type=int, default=0, help="seed of the validation hold-out (fixed)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["simclr", "iecl"],
        type=variant_spec,
        help=f"NAME[:field=value,--flag=value,...] with NAME one of {', '.join(VARIANTS)}; a variant runs after "
        "its baseline for each seed",
    )
    parser.add_argument(
        "--reference",
        type=variant_spec,
        default=None,
        help="pair every variant with this one instead of its own baseline (e.g. the tuned baseline)",
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
    parser.add_argument(
        "--results_file",
        default=None,
        help="where the records go (default WORK_DIR/results.json); with --report, the merged records of the files "
        "read (a shared reference's runs once)",
    )
    parser.add_argument(
        "--compare_to",
        default=None,
        help="another run's results file (e.g. the defaults' runs): also print each variant minus the same variant "
        "there, paired by seed (a sweep point against the defaults)",
    )
    parser.add_argument(
        "--report",
        nargs="+",
        default=None,
        metavar="RESULTS_FILE",
        help="run nothing: print the table of these results files (merged, each run once; e.g. with another "
        "--reference); with --results_file, also write the merged records",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 epoch on 512 images, 1 seed: checks the pipeline in minutes"
    )
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.max_train_samples, args.max_eval_samples, args.seeds = 1, 512, 512, [0]
        args.validation_size = min(args.validation_size, 256)
    if args.report:
        try:
            records = merge_results(args.report)
            for record in records:
                known_variant(record)
        except ValueError as error:
            parser.error(str(error))
        if args.results_file:
            write_results(records, args.results_file)
        print(summarize(records, args.reference))
        if args.results_file:
            print(f"\nmerged runs: {args.results_file}")
        return
    if args.compare_to:  # read now: a wrong path fails before hours of runs, not after
        with open(args.compare_to) as handle:
            reference = json.load(handle)
    for name, default in DEFAULT_DATASETS.items():  # an explicit dataset (a path or a Hub id) is used as given
        if getattr(args, name) != default or os.path.exists(os.path.join(ROOT, default)):
            continue
        if not args.quick:
            parser.error(
                f"--{name} defaults to {default} (under the repository root), the local copy of CIFAR-10 the "
                "figures in BENCHMARKS.md were measured on (BENCHMARKS.md, Protocol, Data), and it is missing: "
                f"put the copy there, or pass --{name} (e.g. uoft-cs/cifar10; the figures will differ)."
            )
        print(f"{default} not found: the smoke test uses the embedded digits dataset")
        setattr(args, name, "embedded:digits")
    # Seed by seed, the baselines first: an interrupted benchmark leaves complete pairs.
    baselines = [baseline_of(v, args.reference) for v in args.variants]
    wanted = list(dict.fromkeys([*filter(None, baselines), *args.variants]))
    jobs = [(v, s) for s in args.seeds for v in wanted]
    print(
        f"{len(jobs)} runs: {args.epochs} epochs, batch {args.batch_size}, preset {args.preset}, "
        f"pretraining on {args.dataset}, evaluation on {args.eval_dataset} ({args.protocol} protocol), "
        f"{args.jobs} in parallel",
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
            write_results(records, results_file)
    print()
    print(summarize(records, args.reference))
    if args.compare_to:
        print(f"\nagainst {args.compare_to}:\n" + compare(records, reference))
    print(f"\nall runs: {results_file}")


if __name__ == "__main__":
    main()
