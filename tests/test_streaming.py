"""--streaming (ImageNet scale): each process reads its own disjoint part, and the recipe trains on it."""

import torch
from datasets.distributed import split_dataset_by_node
from helpers import TINY_ARGS, read_json, run_pretrain_in_process
from torch.utils.data import DataLoader

from iecl_hf.data import TwoViewCollator, detect_columns, load_image_dataset, make_uint8_dataset


def rank_images(rank, world_size):
    split = load_image_dataset(None, streaming=True)["train"]
    data = make_uint8_dataset(split, detect_columns(split.features), 32)
    data = split_dataset_by_node(data, rank, world_size)
    batches = list(DataLoader(data, batch_size=64, collate_fn=TwoViewCollator()))
    return torch.cat([b["images"] for b in batches])


def test_streamed_shards_are_disjoint_and_cover_the_split():
    whole = rank_images(0, 1)
    parts = [rank_images(rank, 2) for rank in range(2)]
    assert len(parts[0]) + len(parts[1]) == len(whole) == 1437
    flat = lambda images: {bytes(image.numpy().tobytes()) for image in images}  # noqa: E731
    assert not flat(parts[0]) & flat(parts[1])
    assert flat(parts[0]) | flat(parts[1]) == flat(whole)


def test_the_recipe_trains_on_a_streamed_dataset(tmp_path, monkeypatch):
    import datasets

    import iecl_hf.training.pretraining as pretraining

    loaded = []  # what the training loader reads: a streamed (iterable) split, not a decoded array
    original = pretraining.training_loader

    def recording(dataset, *args, **kwargs):
        loaded.append(dataset)
        return original(dataset, *args, **kwargs)

    monkeypatch.setattr(pretraining, "training_loader", recording)
    out = tmp_path / "out"
    assert run_pretrain_in_process([*TINY_ARGS, "--streaming", "--max_train_steps", 3, "--output_dir", out]) == 0
    assert len(loaded) == 1 and isinstance(loaded[0], datasets.IterableDataset)
    results = read_json(out / "train_results.json")
    assert results["step"] == 3 and results["images_seen"] == 3 * 8
    assert (out / "model.safetensors").exists() and (out / "views.png").exists()
