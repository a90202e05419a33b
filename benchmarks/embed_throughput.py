#!/usr/bin/env python
"""Throughput of `recipes/embed.py` against the bare forward pass of the same encoder at the same batch.

    python benchmarks/embed_throughput.py                       # data/cifar10-small if present, else digits
    python benchmarks/embed_throughput.py --max_samples 256 --repeats 1          # smoke test
    python benchmarks/embed_throughput.py --model_name_or_path outputs/pretrain-default --dataset_name DATA

Three timings over the same images (the first --max_samples rows of --split), images/s:
- bare forward: `encoder(pixel_values).pooler_output` in inference mode on pixel tensors made beforehand by the
  checkpoint's image processor (no loading, decoding or preprocessing), batches of --batch_size;
- embed stage: `iecl_hf.evaluation.embed.embed_split`, what the recipe runs per image (decode, preprocess, forward,
  gather, reassemble in the dataset's order);
- recipe: `recipes/embed.py`'s `main()` end to end, in this process (loading the encoder and the dataset, the
  embedding, the new column, `save_to_disk` into a temporary folder and the rename).
Each is repeated --repeats times, the order rotating per repeat; the medians are printed with the ratios to the bare
forward. Goal: the recipe at >= 0.8x the bare forward over the 10k images of cifar10-small on the CPU.
The encoder is the checkpoint given, else a random-init encoder of the `cpu` preset (the default CPU pretraining
model; the weights do not change the cost).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from iecl_hf import IECLConfig, IECLModel, build_image_processor  # noqa: E402
from iecl_hf.evaluation.embed import embed_split, load_embed_encoder, load_embed_split  # noqa: E402
from iecl_hf.presets import PRESETS  # noqa: E402

DEFAULT_DATASET = REPO / "data" / "cifar10-small"  # the local CIFAR-10 copy of BENCHMARKS.md (Protocol, Data)
GOAL = 0.8


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset_name",
        default=str(DEFAULT_DATASET) if DEFAULT_DATASET.exists() else None,
        help="Dataset (as recipes/embed.py takes it); default data/cifar10-small if present, else the "
        "embedded digits.",
    )
    parser.add_argument("--split", default="train")
    parser.add_argument("--model_name_or_path", default=None, help="Default: a random-init encoder, cpu preset.")
    parser.add_argument("--batch_size", type=int, default=256, help="--per_device_eval_batch_size of the recipe.")
    parser.add_argument("--max_samples", type=int, default=None, help="The first N rows (default: the whole split).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dataloader_num_workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    return parser.parse_args(argv)


def random_init_checkpoint(folder: str) -> str:
    config = IECLConfig(**PRESETS["cpu"])
    torch.manual_seed(0)
    IECLModel(config).save_pretrained(folder)
    build_image_processor(config).save_pretrained(folder)
    return folder


def load_recipe():
    import importlib.util

    spec = importlib.util.spec_from_file_location("embed_recipe", REPO / "recipes" / "embed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_bare_forward(encoder, pixel_values: torch.Tensor, num_images: int, batch_size: int) -> float:
    """Seconds for `num_images` images through the encoder in batches, cycling over the pre-made `pixel_values`."""
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, num_images, batch_size):
            rows = torch.arange(start, min(start + batch_size, num_images)) % len(pixel_values)
            encoder(pixel_values[rows]).pooler_output.float()
    return time.perf_counter() - started


def time_embed_stage(encoder, image_processor, split, columns, args) -> float:
    started = time.perf_counter()
    result = embed_split(
        encoder, image_processor, split, columns, args.batch_size, num_workers=args.dataloader_num_workers
    )
    elapsed = time.perf_counter() - started
    assert len(result.indices) + result.num_skipped == len(split)
    return elapsed


def time_recipe(recipe, checkpoint, output_dir, args) -> float:
    from accelerate.state import AcceleratorState, GradientState

    argv = ["--model_name_or_path", checkpoint, "--split", args.split, "--output_dir", output_dir]
    argv += ["--overwrite_output_dir", "--per_device_eval_batch_size", str(args.batch_size)]
    argv += ["--dataloader_num_workers", str(args.dataloader_num_workers)]
    if args.dataset_name:
        argv += ["--dataset_name", args.dataset_name]
    if args.max_samples:
        argv += ["--max_samples", str(args.max_samples)]
    started = time.perf_counter()
    try:
        code = recipe.main(argv)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    elapsed = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"recipes/embed.py exited with {code}")
    return elapsed


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as work:
        checkpoint = args.model_name_or_path or random_init_checkpoint(os.path.join(work, "encoder"))
        encoder, image_processor = load_embed_encoder(checkpoint)
        split, columns = load_embed_split(
            args.dataset_name,
            split=args.split,
            image_size=encoder.config.image_size,
            max_samples=args.max_samples,
        )
        num_images = len(split)
        # The bare forward's input: the processor's tensors of (at most) the first 4096 images, cycled.
        sample = split.select(range(min(num_images, 4096)))
        pixel_values = image_processor(list(sample[columns.image]), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            encoder(pixel_values[: args.batch_size])  # warm-up
        recipe = load_recipe()
        output_dir = os.path.join(work, "embedded")

        timings = {"bare forward": [], "embed stage": [], "recipes/embed.py": []}
        runs = {
            "bare forward": lambda: time_bare_forward(encoder, pixel_values, num_images, args.batch_size),
            "embed stage": lambda: time_embed_stage(encoder, image_processor, split, columns, args),
            "recipes/embed.py": lambda: time_recipe(recipe, checkpoint, output_dir, args),
        }
        names = list(runs)
        for repeat in range(args.repeats):
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                timings[name].append(runs[name]())

    dataset = args.dataset_name or "embedded digits"
    print(
        f"embed throughput: {os.path.basename(os.path.normpath(dataset))} [{args.split}], {num_images} images, batch "
        f"{args.batch_size}, {args.model_name_or_path or 'cpu preset (random init)'}, "
        f"{encoder.config.image_size} px, {torch.get_num_threads()} threads, {args.dataloader_num_workers} loader "
        f"workers, median of {args.repeats}"
    )
    bare = num_images / statistics.median(timings["bare forward"])
    for name, seconds in timings.items():
        rate = num_images / statistics.median(seconds)
        ratio = "" if name == "bare forward" else f"  {rate / bare:.2f}x the bare forward"
        met = "met" if rate / bare >= GOAL else "NOT met"
        goal = f" (goal >= {GOAL}x: {met})" if name == "recipes/embed.py" else ""
        print(f"  {name:<18} {rate:8.1f} images/s{ratio}{goal}")


if __name__ == "__main__":
    main()
