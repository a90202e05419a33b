"""iecl_hf.data: decoding anything an image column holds, column detection, local loading, skipping and counting."""

import datasets
import pytest
import torch
from helpers import (
    awkward_images,
    block_network,
    corrupt_images,
    encode,
    random_rgb,
    write_image_folder,
    write_parquet_dataset,
)
from PIL import Image

from iecl_hf.data import (
    BatchedSimCLRAugmentation,
    SimCLRAugmentation,
    TwoViewCollator,
    decode_image,
    detect_columns,
    load_image_dataset,
    make_eval_dataset,
    make_two_view_dataset,
    make_uint8_dataset,
)
from iecl_hf.training.logs import JsonlLogger, TrainingState

SIZES = {"odd_sized": (17, 45), "one_pixel": (1, 1), "very_large": (3000, 2000)}


@pytest.mark.parametrize("name", sorted(awkward_images()))
def test_awkward_images_decode_to_rgb(name):
    image = decode_image({"bytes": awkward_images()[name], "path": None})
    assert image is not None and image.mode == "RGB"
    assert image.size == SIZES.get(name, (32, 32))


@pytest.mark.parametrize("name", sorted(corrupt_images()))
def test_corrupt_images_decode_to_none(name):
    assert decode_image({"bytes": corrupt_images()[name], "path": None}) is None


def test_decode_accepts_pil_bytes_paths_and_composites_transparency_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (0, 0, 255, 255))  # one opaque blue pixel
    data = encode(rgba, "PNG")
    (tmp_path / "x.png").write_bytes(data)
    for value in (rgba, data, str(tmp_path / "x.png"), {"bytes": None, "path": str(tmp_path / "x.png")}):
        image = decode_image(value)
        assert image.mode == "RGB"
        assert image.getpixel((1, 1)) == (255, 255, 255) and image.getpixel((0, 0)) == (0, 0, 255)
    assert decode_image(str(tmp_path / "missing.png")) is None
    assert decode_image({"bytes": None, "path": None}) is None


def test_collator_skips_and_counts_undecodable_examples():
    good = {"pixel_values": torch.zeros(3, 4, 4), "pixel_values_2": torch.ones(3, 4, 4)}
    batch = TwoViewCollator()([{"example": good}, {"example": None}, {"example": good}, {"example": None}])
    assert batch["pixel_values"].shape == (2, 3, 4, 4) and int(batch["num_skipped"]) == 2
    empty = TwoViewCollator()([{"example": None}] * 3)
    assert set(empty) == {"num_skipped"} and int(empty["num_skipped"]) == 3


def mixed_dataset():
    images = list(corrupt_images().values()) + list(awkward_images().values())
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    return datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in images], "label": [i % 2 for i in range(len(images))]},
        features=features,
    ), len(corrupt_images())


def test_training_datasets_decode_lazily_and_mark_bad_images():
    dataset, corrupt = mixed_dataset()
    columns = detect_columns(dataset.features)
    for data, key, shape in (
        (make_uint8_dataset(dataset, columns, 32), "images", (3, 32, 32)),
        (make_two_view_dataset(dataset, columns, SimCLRAugmentation(32)), "pixel_values_2", (3, 32, 32)),
        (make_eval_dataset(dataset, columns, 96), "pixel_values", (3, 96, 96)),
    ):
        examples = [data[i]["example"] for i in range(len(data))]
        assert sum(e is None for e in examples) == corrupt
        for example in (e for e in examples if e is not None):
            assert example[key].shape == shape
            assert example["labels"].dtype == torch.int64
        batch = TwoViewCollator()([data[i] for i in range(len(data))])
        assert int(batch["num_skipped"]) == corrupt and len(batch[key]) == len(data) - corrupt


@pytest.mark.parametrize("size", [32, 96])
def test_augmentations_keep_size_and_range(size):
    image = random_rgb((size + 7, size + 3))
    view = SimCLRAugmentation(size)(image)
    assert view.shape == (3, size, size) and view.dtype == torch.float32 and 0 <= view.min() and view.max() <= 1
    batch = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8)
    views = BatchedSimCLRAugmentation(size)(batch)
    assert views.shape == (4, 3, size, size) and 0 <= views.min() and views.max() <= 1


# ------------------------------------------------------------------------------------------------ columns


def features(**columns):
    return datasets.Features(columns)


def test_columns_are_detected():
    cifar10 = features(img=datasets.Image(), label=datasets.ClassLabel(names=["a", "b"]))
    cifar100 = features(
        img=datasets.Image(),
        fine_label=datasets.ClassLabel(names=["a"]),
        coarse_label=datasets.ClassLabel(names=["b"]),
    )
    columns = detect_columns(cifar10)
    assert (columns.image, columns.label, columns.label_names) == ("img", "label", ["a", "b"])
    assert detect_columns(cifar100).label == "fine_label"
    assert detect_columns(cifar100, label_column="coarse_label").label == "coarse_label"
    named = detect_columns(features(jpg=datasets.Value("binary"), cls=datasets.Value("int64")))
    assert (named.image, named.label, named.label_names) == ("jpg", "cls", None)
    assert detect_columns(features(image=datasets.Image())).label is None


def test_wrong_columns_list_what_exists():
    cifar10 = features(img=datasets.Image(), label=datasets.ClassLabel(names=["a", "b"]))
    with pytest.raises(ValueError, match=r"`image_column` 'image' .*available columns: \['img', 'label'\]"):
        detect_columns(cifar10, image_column="image")
    with pytest.raises(ValueError, match=r"`label_column` 'fine_label' .*available columns: \['img', 'label'\]"):
        detect_columns(cifar10, label_column="fine_label")
    with pytest.raises(ValueError, match=r"No image column found .*available columns: \['text'\]"):
        detect_columns(features(text=datasets.Value("string")))
    with pytest.raises(ValueError, match="no label column .*available columns: \\['image'\\]"):
        detect_columns(features(image=datasets.Image()), require_label=True)


def test_string_labels_are_an_error_when_asked_for_and_ignored_when_detected():
    captions = features(image=datasets.Image(), label=datasets.Value("string"))
    with pytest.raises(ValueError, match="`label_column` 'label' holds .* not integer class ids"):
        detect_columns(captions, label_column="label")
    assert detect_columns(captions).label is None  # detected by name only: not class ids, so no kNN on it


# ------------------------------------------------------------------------------------------------ loading


def test_local_image_folder_parquet_and_saved_dataset_load_offline(tmp_path):
    folder = write_image_folder(tmp_path / "folder", count=3, classes=["cat", "dog"])
    loaded = load_image_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    columns = detect_columns(loaded["train"].features)
    assert len(loaded["train"]) == 6 and columns.label_names == ["cat", "dog"]

    parquet = write_parquet_dataset(
        tmp_path / "parquet", [encode(random_rgb(seed=i), "PNG") for i in range(5)], labels=[0, 1, 0, 1, 0]
    )
    for path in (parquet, parquet / "data" / "train.parquet"):
        loaded = load_image_dataset(str(path), cache_dir=str(tmp_path / "cache"))
        assert len(loaded["train"]) == 5 and detect_columns(loaded["train"].features).label == "label"

    loaded["train"].cast_column("image", datasets.Image()).train_test_split(test_size=2, seed=0).save_to_disk(
        str(tmp_path / "saved")
    )
    loaded = load_image_dataset(str(tmp_path / "saved"))
    assert {name: len(split) for name, split in loaded.items()} == {"train": 3, "test": 2}


def test_embedded_default_needs_no_network():
    loaded = load_image_dataset(None, image_size=16)
    assert set(loaded) == {"train", "test"} and len(loaded["train"]) + len(loaded["test"]) == 1797
    image = loaded["train"][0]["image"]
    assert image.mode == "RGB" and image.size == (16, 16)


def test_unreadable_local_data_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"cannot read a \.txt file"):
        load_image_dataset(str(tmp_path / "notes.txt"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "train.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(ValueError, match="Could not read the local dataset .*broken"):
        load_image_dataset(str(tmp_path / "broken"), cache_dir=str(tmp_path / "cache"))


def test_unknown_hub_id_offline_says_how_to_pass_local_data(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    attempts = block_network(monkeypatch)
    with pytest.raises(ValueError, match="pass local data instead.*`dataset_name` path/to/folder") as error:
        load_image_dataset("nobody-here/no-such-dataset")
    assert attempts == []  # refused by offline mode, not by a failed connection
    assert "offline" in str(error.value).lower()


# ------------------------------------------------------------------------------------------------ run state


def test_training_state_round_trip_and_log_truncation_on_resume(tmp_path):
    state = TrainingState()
    state.step, state.epoch, state.images_seen, state.skipped_images = 7, 1, 56, 3
    state.history = [{"step": 7, "loss": 1.5}]
    restored = TrainingState()
    restored.load_state_dict(state.state_dict())
    assert vars(restored) == vars(state)

    logger = JsonlLogger(str(tmp_path / "logs" / "log.jsonl"))
    for record in (
        {"step": 3, "epoch": 0},
        {"step": 4, "epoch": 0},
        {"step": 4, "epoch": 1, "knn_top1": 0.5},
        {"step": 5, "epoch": 1},
    ):
        logger.log(record)
    with open(logger.path, "a") as handle:
        handle.write('{"step": 6, "ep')  # cut short by a kill
    logger.truncate_after(4, 0)
    with open(logger.path) as handle:
        assert handle.read() == '{"step": 3, "epoch": 0}\n{"step": 4, "epoch": 0}\n'
    JsonlLogger(str(tmp_path / "off.jsonl"), enabled=False).truncate_after(1, 0)  # other processes: no file
    assert not (tmp_path / "off.jsonl").exists()
