"""recipes/embed.py: a dataset embedded by a frozen IE-CL encoder (every row, in the dataset's order, written whole),
its errors, its Hub push (patched), the sharding over processes, and nearest neighbours on the result.

The encoder is a quarter-width ResNet-18 (32 px) trained 20 SimCLR steps on the embedded digits (about 8 s): on the
360 test digits its cosine nearest neighbour shares the label 72-80% of the time (3 seeds), against 32-42% for the
random-init encoder and 10% for chance. The tests require more than 50%.
"""

import json
import os
import runpy
import sys

import datasets
import numpy as np
import pytest
import torch
from helpers import (
    REPO,
    corrupt_images,
    encode,
    free_port,
    load_script,
    random_rgb,
    reset_accelerate_state,
    single_thread,
    subprocess_env,
    write_parquet_dataset,
)
from transformers import AutoImageProcessor

from iecl_hf import BASELINE_OVERRIDES, IECLConfig, IECLForPreTraining, IECLModel, build_image_processor
from iecl_hf.cli.embed import EmbedArguments, parse_embed_args
from iecl_hf.data import SimCLRAugmentation, load_image_dataset
from iecl_hf.evaluation.embed import RESULTS_FILE, assemble, rows_per_round, shard_range

RECIPE = REPO / "recipes" / "embed.py"
NEAREST_NEIGHBOUR_THRESHOLD = 0.5  # measured 0.72-0.80 (trained 20 steps), 0.32-0.42 random init, chance 0.10


@pytest.fixture(scope="module")
def recipe():
    return load_script(RECIPE, "iecl_test_embed_recipe")


def run(recipe, *argv):
    """Exit code of `main(argv)` in this process (one thread; Accelerate's singletons reset after)."""
    try:
        with single_thread():
            return recipe.main([str(a) for a in argv])
    finally:
        reset_accelerate_state()


def cosine_nearest_neighbour_agreement(embeddings, labels) -> float:
    """Fraction of rows whose nearest other row (cosine similarity) has the same label."""
    embeddings = np.asarray(embeddings, np.float64)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    labels = np.asarray(labels)
    return float((labels[similarity.argmax(1)] == labels).mean())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An encoder trained 20 SimCLR steps (batch 64) on the embedded digits' train split, saved as a pretraining
    checkpoint with its image processor."""
    path = tmp_path_factory.mktemp("ckpt")
    config = IECLConfig(
        backbone_kwargs={"channels": [8, 16, 32, 64]},
        stem="cifar_stride2",
        image_size=32,
        projection_hidden_dim=64,
        projection_dim=32,
        tau=0.2,  # the temperature NEAREST_NEIGHBOUR_THRESHOLD was measured at (at 0.1 these 20 steps reach about 0.5)
        **BASELINE_OVERRIDES,
    )
    images = load_image_dataset(None)["train"]["image"]
    augmentation = SimCLRAugmentation(32)
    generator = torch.Generator().manual_seed(0)
    with single_thread():
        torch.manual_seed(0)
        model = IECLForPreTraining(config)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=5e-4)
        for _ in range(20):
            rows = torch.randint(len(images), (64,), generator=generator).tolist()
            views = [torch.stack([augmentation(images[i]) for i in rows]) for _ in range(2)]
            loss = model(pixel_values=views[0], pixel_values_2=views[1]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.save_pretrained(path)
    build_image_processor(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def embedded(recipe, checkpoint, tmp_path_factory):
    """The test split of the embedded digits, embedded: (output folder, source split)."""
    out = tmp_path_factory.mktemp("embed") / "digits-test"
    assert run(recipe, "--model_name_or_path", checkpoint, "--split", "test", "--output_dir", out) == 0
    return out, load_image_dataset(None)["test"]


def test_every_row_in_the_datasets_order(embedded, checkpoint):
    out, source = embedded
    result = datasets.load_from_disk(str(out))
    assert len(result) == len(source) == 360
    assert result.column_names == ["image", "label", "embedding"]
    assert all(result.features[name] == source.features[name] for name in ("image", "label"))
    assert result.features["embedding"] == datasets.List(datasets.Value("float32"))
    assert result["label"] == source["label"]
    record = json.loads((out / RESULTS_FILE).read_text())
    assert record["num_rows"] == record["num_embedded"] == 360 and record["skipped_images"] == 0
    assert record["dataset"]["split"] == "test" and record["num_features"] == 64

    # Each embedding is the pooled feature of a direct forward through the saved processor.
    rows = [0, 1, 255, 256, 359]  # both batches of 256
    encoder = IECLModel.from_pretrained(checkpoint).eval()
    processor = AutoImageProcessor.from_pretrained(checkpoint)
    with torch.no_grad():
        expected = encoder(processor([source[i]["image"] for i in rows], return_tensors="pt")["pixel_values"])
    embeddings = torch.tensor(result.select(rows)["embedding"])
    torch.testing.assert_close(embeddings, expected.pooler_output, atol=1e-5, rtol=1e-4)
    assert not list(out.parent.glob(".*tmp*"))  # the temporary folder was renamed


def test_nearest_neighbours_share_the_label_well_above_chance(embedded):
    result = datasets.load_from_disk(str(embedded[0]))
    agreement = cosine_nearest_neighbour_agreement(result["embedding"], result["label"])
    assert agreement > NEAREST_NEIGHBOUR_THRESHOLD, agreement


def test_nearest_neighbours_with_datasets_faiss_index_as_in_the_readme(embedded, tmp_path, monkeypatch):
    """The README's search snippet, run on the embedded digits at the path it names."""
    pytest.importorskip("faiss")
    readme = (REPO / "README.md").read_text()
    blocks = [b for b in readme.split("```python\n")[1:] if "add_faiss_index" in b]
    assert len(blocks) == 1, "the README shows one search snippet"
    snippet = blocks[0].split("```", 1)[0]
    target = tmp_path / "outputs" / "cifar10-embeddings"
    target.parent.mkdir()
    os.symlink(embedded[0], target)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(snippet, "README search snippet", "exec"), namespace)
    dataset, neighbours = namespace["ds"], namespace["neighbours"]
    assert len(neighbours["label"]) == 5 and neighbours["label"][0] == dataset[0]["label"]  # image 0 itself first

    # faiss's nearest neighbours (L2, the index's default) share the label as the cosine ones do.
    queries = np.asarray(dataset["embedding"], np.float32)
    _, found = dataset.get_nearest_examples_batch("embedding", queries, k=2)
    labels = np.asarray(dataset["label"])
    agreement = float(np.mean([example["label"][1] == label for example, label in zip(found, labels)]))
    assert agreement > NEAREST_NEIGHBOUR_THRESHOLD, agreement


@pytest.fixture(scope="module")
def awkward_dataset(tmp_path_factory):
    """11 labelled rows (label = row index), rows 2, 5 and 9 not decodable, the others decodable."""
    corrupt = list(corrupt_images().values())
    images = [encode(random_rgb((32 + i, 30), seed=i), "PNG") for i in range(11)]
    images[2], images[5], images[9] = corrupt[0], corrupt[1], corrupt[3]
    return write_parquet_dataset(tmp_path_factory.mktemp("awkward"), images, labels=list(range(11)))


def test_undecodable_images_are_dropped_counted_and_listed(recipe, checkpoint, awkward_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--model_name_or_path", checkpoint, "--dataset_name", awkward_dataset, "--output_dir", out]
    assert run(recipe, *args, "--per_device_eval_batch_size", 4) == 0
    assert "WARNING: skipped 3 images that could not be decoded" in capsys.readouterr().err  # a warning: stderr
    result = datasets.load_from_disk(str(out))
    assert result["label"] == [0, 1, 3, 4, 6, 7, 8, 10]
    assert all(len(e) == 64 for e in result["embedding"])
    record = json.loads((out / RESULTS_FILE).read_text())
    assert record["skipped_images"] == 3 and record["skipped_rows"] == [2, 5, 9]
    assert record["num_rows"] == 11 and record["num_embedded"] == 8
    assert "DROPPED" in EmbedArguments.__dataclass_fields__["output_dir"].metadata["help"]  # --help says so


@pytest.mark.slow
def test_two_processes_write_what_one_process_writes(recipe, checkpoint, awkward_dataset, tmp_path):
    """Two CPU processes (gloo), uneven shards (6 + 5 rows) with undecodable rows in both, batch 2 (three rounds,
    the second shard idle in the last): the same rows, order and embeddings as one process."""
    import subprocess

    common = ["--model_name_or_path", checkpoint, "--dataset_name", awkward_dataset, "--per_device_eval_batch_size", 2]
    assert run(recipe, *common, "--output_dir", tmp_path / "one") == 0
    launcher = [
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]
    command = [sys.executable, *launcher, str(RECIPE), *map(str, common), "--output_dir", str(tmp_path / "two")]
    completed = subprocess.run(
        command, cwd=REPO, env=subprocess_env(ACCELERATE_USE_CPU="1"), capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
    assert "2 process(es)" in completed.stdout
    one, two = datasets.load_from_disk(str(tmp_path / "one")), datasets.load_from_disk(str(tmp_path / "two"))
    assert two["label"] == one["label"] == [0, 1, 3, 4, 6, 7, 8, 10]
    np.testing.assert_allclose(np.asarray(two["embedding"]), np.asarray(one["embedding"]), atol=1e-5)
    record = json.loads((tmp_path / "two" / RESULTS_FILE).read_text())
    assert record["num_processes"] == 2 and record["skipped_rows"] == [2, 5, 9]


@pytest.mark.parametrize("num_rows", [1, 3, 7, 10, 11])
@pytest.mark.parametrize("num_processes", [1, 2, 3, 4])
@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_shards_gathered_round_by_round_come_back_in_order(num_rows, num_processes, batch_size):
    """What `embed_split` does across processes, without them: each process takes its contiguous shard, drops its
    undecodable rows (every third row here), pads each batch to `batch_size` with index -1, and the main process
    receives each round as the processes' batches concatenated in rank order (`accelerator.gather`)."""
    shards = [shard_range(num_rows, num_processes, index) for index in range(num_processes)]
    assert [row for shard in shards for row in shard] == list(range(num_rows))  # contiguous, disjoint, complete
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    per_round = rows_per_round(num_rows, num_processes, batch_size)
    assert sum(per_round) == num_rows

    def embedding(row):
        return np.full(4, row, np.float32) + np.arange(4, dtype=np.float32) / 10

    gathered_indices, gathered_embeddings = [], []
    for round_index in range(len(per_round)):
        round_indices, round_embeddings = [], []
        for shard in shards:
            rows = list(shard)[round_index * batch_size : (round_index + 1) * batch_size]
            kept = [row for row in rows if row % 3 != 2]
            padding = batch_size - len(kept)
            round_indices.append(np.array(kept + [-1] * padding, np.int64))
            round_embeddings.append(np.stack([embedding(row) for row in kept] + [np.zeros(4, np.float32)] * padding))
        gathered_indices.append(np.concatenate(round_indices))
        gathered_embeddings.append(np.concatenate(round_embeddings))
    indices, embeddings = assemble(num_rows, gathered_indices, gathered_embeddings)
    expected = [row for row in range(num_rows) if row % 3 != 2]
    assert indices.tolist() == expected
    np.testing.assert_array_equal(embeddings, np.stack([embedding(row) for row in expected]))


def test_a_row_gathered_twice_is_an_error_not_a_silent_duplicate():
    with pytest.raises(RuntimeError, match="sharding error"):
        assemble(3, [np.array([0, 1]), np.array([1, 2])], [np.zeros((2, 4)), np.zeros((2, 4))])
    with pytest.raises(RuntimeError, match="sharding error"):
        assemble(2, [np.array([0, 2])], [np.zeros((2, 4))])


def test_push_to_hub_pushes_the_dataset(recipe, checkpoint, tmp_path, monkeypatch):
    calls = []

    def push_to_hub(self, repo_id, **kwargs):
        calls.append((repo_id, kwargs, len(self), self.column_names))

    monkeypatch.setattr(datasets.Dataset, "push_to_hub", push_to_hub)
    out = tmp_path / "out"
    hub = ["--push_to_hub", "--hub_model_id", "you/digits-embedded", "--hub_private_repo"]
    args = ["--model_name_or_path", checkpoint, "--split", "test", "--max_samples", 20, "--output_dir", out, *hub]
    assert run(recipe, *args) == 0
    ((repo_id, kwargs, num_rows, columns),) = calls
    assert repo_id == "you/digits-embedded" and kwargs["split"] == "test" and kwargs["private"] is True
    assert num_rows == 20 and columns == ["image", "label", "embedding"]
    assert len(datasets.load_from_disk(str(out))) == 20


def test_a_failed_push_keeps_the_local_output_and_says_how_to_retry(recipe, checkpoint, tmp_path, monkeypatch, capsys):
    def push_to_hub(self, repo_id, **kwargs):
        raise ConnectionError("Hub unreachable")

    monkeypatch.setattr(datasets.Dataset, "push_to_hub", push_to_hub)
    out = tmp_path / "out"
    args = ["--model_name_or_path", checkpoint, "--max_samples", 10, "--output_dir", out]
    assert run(recipe, *args, "--push_to_hub", "--hub_model_id", "you/digits-embedded") == 1
    error = capsys.readouterr().err
    assert "ConnectionError: Hub unreachable" in error and "push_to_hub('you/digits-embedded', split='train')" in error
    assert len(datasets.load_from_disk(str(out))) == 10


def test_not_an_iecl_checkpoint_is_a_clear_cli_error(tmp_path, monkeypatch, capsys):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path / "vit"
    )
    argv = [str(RECIPE), "--model_name_or_path", str(tmp_path / "vit"), "--output_dir", str(tmp_path / "out")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(RECIPE), run_name="__main__")
    reset_accelerate_state()
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err.strip()
    assert stderr.startswith("embed.py: error: --model_name_or_path") and "\n" not in stderr
    assert "is not an IE-CL checkpoint: model_type='vit'" in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--image_column", "picture"],
            r"--image_column 'picture' is not a column of the dataset; available columns: \['image', 'label'\]",
        ),
        (["--split", "validation"], r"--split 'validation' is not a split of the dataset; available splits: "),
        (["--embedding_column", "label"], r"--embedding_column 'label' is already a column of the dataset"),
    ],
)
def test_bad_dataset_flags_are_named(recipe, checkpoint, tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        run(recipe, "--model_name_or_path", checkpoint, "--output_dir", tmp_path / "out", *flags)
    assert not (tmp_path / "out").exists()


def test_a_dataset_without_an_image_column_says_which_flag(recipe, checkpoint, tmp_path):
    text = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a", "b"]})})
    text.save_to_disk(tmp_path / "data" / "text")
    with pytest.raises(ValueError, match=r"No image column found .* Pass --image_column NAME"):
        run(recipe, "--model_name_or_path", checkpoint, "--dataset_name", tmp_path / "data" / "text")


def test_an_existing_output_is_kept_unless_overwritten(recipe, checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["--model_name_or_path", checkpoint, "--max_samples", 5, "--output_dir", out]
    with pytest.raises(ValueError, match="--output_dir .* is not empty; pass --overwrite_output_dir to replace it"):
        run(recipe, *args)
    assert (out / "keep.txt").read_text() == "mine"
    assert run(recipe, *args, "--overwrite_output_dir") == 0
    assert not (out / "keep.txt").exists() and len(datasets.load_from_disk(str(out))) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old folder left


def test_arguments_defaults_and_checks(tmp_path):
    args = parse_embed_args(["--model_name_or_path", str(tmp_path)])
    assert args.split == "train" and args.per_device_eval_batch_size == 256 and args.embedding_column == "embedding"
    assert args.output_dir == f"{tmp_path}-embeddings-embedded-digits-train"
    args = parse_embed_args(["--model_name_or_path", "you/iecl", "--dataset_name", "uoft-cs/cifar10", "--split", "v"])
    assert args.output_dir == os.path.join("outputs", "you--iecl-embeddings-cifar10-v")
    with pytest.raises(ValueError, match="--model_name_or_path is required"):
        parse_embed_args([])
    with pytest.raises(ValueError, match="--push_to_hub needs --hub_model_id"):
        parse_embed_args(["--model_name_or_path", "x", "--push_to_hub"])
    with pytest.raises(ValueError, match="--per_device_eval_batch_size must be >= 1"):
        parse_embed_args(["--model_name_or_path", "x", "--per_device_eval_batch_size", "0"])
