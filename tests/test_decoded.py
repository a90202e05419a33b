"""The decode-once data path (a memory-mapped uint8 array) gives the batches of the per-example path."""

import pytest
import torch
from helpers import (
    TINY_ARGS,
    awkward_images,
    corrupt_images,
    encode,
    random_rgb,
    read_jsonl,
    run_pretrain_in_process,
    write_parquet_dataset,
)

from iecl_hf.data import TwoViewCollator, detect_columns, load_image_dataset, make_uint8_dataset
from iecl_hf.data.decoded import DecodedImages, passthrough


@pytest.fixture
def split(tmp_path):
    images = [encode(random_rgb(seed=i), "PNG") for i in range(6)] + list(awkward_images().values())
    images += list(corrupt_images().values())
    return load_image_dataset(str(write_parquet_dataset(tmp_path / "data", images, labels=list(range(len(images))))))[
        "train"
    ]


@pytest.mark.parametrize("image_size", [32, 96])
def test_the_same_batches_as_the_per_example_path(split, tmp_path, image_size):
    columns = detect_columns(split.features)
    decoded = DecodedImages(split, columns, image_size, str(tmp_path / "cache"))
    per_example = make_uint8_dataset(split, columns, image_size)
    for indices in ([0, 1, 2], [15, 3, 19, 7], list(range(len(split)))[::-1]):
        ours = passthrough(decoded.__getitems__(indices))
        reference = TwoViewCollator()([per_example[i] for i in indices])
        torch.testing.assert_close(ours["images"], reference["images"], rtol=0, atol=0)
        torch.testing.assert_close(ours["image_sizes"], reference["image_sizes"], rtol=0, atol=0)
        assert int(ours["num_skipped"]) == int(reference["num_skipped"])
    everything = decoded.__getitems__(list(range(len(split))))
    assert int(everything["num_skipped"]) == len(corrupt_images())
    heights, widths = everything["image_sizes"].unbind(dim=1)
    assert (heights != widths).any() and int(torch.maximum(heights, widths).min()) == decoded.load_size  # letterboxed


def test_the_array_is_decoded_once_per_split(split, tmp_path, monkeypatch):
    columns = detect_columns(split.features)
    first = DecodedImages(split, columns, 32, str(tmp_path / "cache"))
    import iecl_hf.data.decoded as decoded_module

    monkeypatch.setattr(decoded_module, "decode_image", lambda value: (_ for _ in ()).throw(AssertionError("decoded")))
    again = DecodedImages(split, columns, 32, str(tmp_path / "cache"))  # read back, nothing decoded
    torch.testing.assert_close(again.__getitems__([0, 4])["images"], first.__getitems__([0, 4])["images"])
    with pytest.raises(AssertionError, match="decoded"):  # another subset is another array
        DecodedImages(split.select(range(4)), columns, 32, str(tmp_path / "cache"))


def test_the_recipe_trains_the_same_with_either_data_path(tmp_path, monkeypatch):
    """Same seed: the decoded array and the per-example path (forced by a zero size limit) log the same losses."""
    import iecl_hf.data.training_data as training_data

    data = write_parquet_dataset(tmp_path / "rgb", [encode(random_rgb(seed=i), "PNG") for i in range(32)])
    args = [
        *TINY_ARGS,
        "--dataset_name",
        data,
        "--max_train_steps",
        4,
        "--knn_every_epochs",
        0,
        "--cache_dir",
        tmp_path / "c",
    ]
    assert run_pretrain_in_process([*args, "--output_dir", tmp_path / "decoded"]) == 0
    assert list((tmp_path / "c" / "iecl_hf_decoded").glob("*.npy"))
    monkeypatch.setattr(training_data, "DECODE_ONCE_MAX_BYTES", 0)
    assert run_pretrain_in_process([*args, "--output_dir", tmp_path / "per-example"]) == 0
    losses = [[r["loss"] for r in read_jsonl(tmp_path / out / "logs" / "train_log.jsonl") if "loss" in r]
              for out in ("decoded", "per-example")]  # fmt: skip
    assert losses[0] == losses[1] and len(losses[0]) == 4
