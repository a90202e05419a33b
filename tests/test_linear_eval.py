"""recipes/linear_eval.py end to end on the embedded digits, and the pieces it is made of.

A tiny IE-CL checkpoint (quarter-width ResNet-18, 32 px) and small subsets keep every run to seconds. Runs that
only read the features reuse the first run's cache (the cache key does not depend on the output folder).
"""

import contextlib
import importlib.util
import io
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from iecl_hf import IECLConfig, IECLForImageClassification, IECLForPreTraining, IECLModel, build_image_processor
from iecl_hf.data import eval_transform, load_image_dataset
from iecl_hf.evaluation import knn_accuracy
from iecl_hf.evaluation.eval_card import TABLE_END, TABLE_START, update_model_card
from iecl_hf.evaluation.linear_probe import (
    LinearProbe,
    ProcessorTransform,
    encoder_fingerprint,
    feature_batches,
    feature_statistics,
    fit_linear_probe,
    prepare_eval_splits,
)
from iecl_hf.evaluation.metrics import METRIC_SOURCE, TopKAccuracy, top_k_accuracy

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "linear_eval.py"
DIGITS = [str(d) for d in range(10)]
SMALL_RUN = ["--max_train_samples", "400", "--max_test_samples", "150", "--num_epochs", "30", "--embedding_2d", "pca"]


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("linear_eval_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(recipe, *argv):
    """(exit code, stdout) of `main(argv)` in this process."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = recipe.main([str(a) for a in argv])
    return code, stdout.getvalue()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    config = IECLConfig(backbone_kwargs={"channels": [16, 32, 64, 128]}, stem="cifar_stride2", image_size=32)
    torch.manual_seed(1234)  # not the recipe's seed: --random_init must give other weights
    IECLForPreTraining(config).save_pretrained(path)
    build_image_processor(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def evaluation(recipe, checkpoint, tmp_path_factory):
    """One full run: (output folder, eval_results.json, stdout)."""
    out = tmp_path_factory.mktemp("eval") / "out"
    code, stdout = run(recipe, "--model_name_or_path", checkpoint, "--output_dir", out, *SMALL_RUN)
    assert code == 0
    return out, json.loads((out / "eval_results.json").read_text()), stdout


def copy_cache(evaluation, out):
    shutil.copytree(evaluation[0] / "features_cache", out / "features_cache")
    return out


def cached(out, split):
    (path,) = (out / "features_cache").glob(f"{split}-*.pt")
    return torch.load(path, weights_only=True)


def test_writes_all_outputs(evaluation):
    out, results, stdout = evaluation
    for name in (
        "eval_results.json",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "modeling_iecl.py",
        "configuration_iecl.py",
        "README.md",
        "features_2d.png",
    ):
        assert (out / name).is_file(), name
    with Image.open(out / "features_2d.png") as picture:
        assert picture.format == "PNG" and picture.width > 300
    assert sorted(p.name.split("-")[0] for p in (out / "features_cache").glob("*.pt")) == ["test", "train"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "iecl" and config["architectures"] == ["IECLForImageClassification"]
    assert config["id2label"] == {str(i): d for i, d in enumerate(DIGITS)}
    assert "Linear probe on scikit-learn digits (embedded) [test, 150 images]: top-1" in stdout


def test_results_are_consistent_with_the_cached_features(evaluation, checkpoint):
    out, results, stdout = evaluation
    figures = results["figures"]
    assert set(figures) == {"linear_top1", "linear_top5", "knn_k20_top1", "knn_k200_top1"}
    assert all(0 <= value <= 1 for value in figures.values())
    assert figures["linear_top5"] >= figures["linear_top1"] > 0.1  # above chance even for an untrained encoder
    dataset = results["dataset"]
    assert (dataset["num_train"], dataset["num_test"], dataset["num_classes"]) == (400, 150, 10)
    assert dataset["label_names"] == DIGITS and dataset["test_split"] == "test"
    assert results["seed"] == 0 and results["checkpoint"] == str(checkpoint) and results["random_init"] is False
    assert results["encoder_fingerprint"] == encoder_fingerprint(
        IECLModel.from_pretrained(checkpoint)
    )  # the checkpoint's weights
    assert results["protocol"]["linear_probe"] == {
        "loss": "cross-entropy",
        "optimizer": "sgd",
        "learning_rate": 0.1,
        "weight_decay": 0.0,
        "schedule": "cosine",
        "epochs": 30,
        "batch_size": 256,
        "standardize": True,
        "augment": False,
    }
    assert results["metrics_source"] == METRIC_SOURCE  # offline too: the metric is a class, not a Hub script
    train, test = cached(out, "train"), cached(out, "test")
    assert train["features"].shape == (400, 128) and test["features"].shape == (150, 128)
    for k in (20, 200):
        expected = knn_accuracy(
            train["features"], train["labels"], test["features"], test["labels"], num_classes=10, k=k
        )
        assert figures[f"knn_k{k}_top1"] == pytest.approx(expected)


def test_saved_classifier_reproduces_features_and_reported_top1(evaluation, checkpoint):
    """The folded head on raw features gives the reported top-1, and the saved model + processor recompute the
    cached features from the images (same preprocessing, same encoder weights)."""
    out, results, _ = evaluation
    classifier = IECLForImageClassification.from_pretrained(out).eval()
    test = cached(out, "test")
    with torch.no_grad():
        predictions = classifier.classifier(test["features"]).argmax(1)
    assert (predictions == test["labels"]).float().mean().item() == pytest.approx(results["figures"]["linear_top1"])

    splits = prepare_eval_splits(load_image_dataset(None), max_train_samples=400, max_test_samples=150)
    images = [splits.test[i]["image"] for i in range(8)]
    saved_processor = AutoImageProcessor.from_pretrained(out)
    assert saved_processor.to_dict() == AutoImageProcessor.from_pretrained(checkpoint).to_dict()
    transform = ProcessorTransform(saved_processor)
    pixel_values = torch.stack([transform(image) for image in images])
    with torch.no_grad():
        features = classifier.iecl(pixel_values).pooler_output
        logits = classifier(pixel_values).logits
    torch.testing.assert_close(features, test["features"][:8], rtol=1e-4, atol=1e-4)
    assert torch.equal(logits.argmax(1), predictions[:8])


def test_processor_preprocessing_agrees_with_eval_transform():
    """The saved image processor (used for the features) and the package's eval transform + config normalization
    give the same pixels at the training resolution."""
    config = IECLConfig(backbone_kwargs={"channels": [16, 32, 64, 128]}, stem="cifar_stride2", image_size=32)
    processor = build_image_processor(config)
    mean, std = torch.tensor(config.image_mean).view(3, 1, 1), torch.tensor(config.image_std).view(3, 1, 1)
    images = list(load_image_dataset(None)["test"].select(range(5))["image"])
    # Also images that need a resize and a crop (the online kNN of pretraining uses eval_transform on any dataset);
    # sizes whose resized side is a whole number (rounding of other sizes may shift the crop by one pixel).
    rng = np.random.RandomState(0)
    images += [
        Image.fromarray((rng.rand(h, w, 3) * 255).astype(np.uint8)) for h, w in ((80, 100), (64, 200), (96, 48))
    ]
    for image in images:
        torch.testing.assert_close(
            ProcessorTransform(processor)(image), (eval_transform(32)(image) - mean) / std, rtol=0, atol=1e-5
        )


def test_pipeline_labels_an_image_with_a_class_name(evaluation):
    from transformers import pipeline

    out, _, _ = evaluation
    classifier = pipeline("image-classification", model=str(out), trust_remote_code=True)
    image = load_image_dataset(None)["test"][0]["image"]
    predictions = classifier(image, top_k=10)
    assert sorted(p["label"] for p in predictions) == DIGITS  # class names from the dataset's ClassLabel
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-4)
    model = IECLForImageClassification.from_pretrained(out).eval()
    with torch.no_grad():
        logits = model(ProcessorTransform(classifier.image_processor)(image)[None]).logits
    assert predictions[0]["label"] == model.config.id2label[logits.argmax(1).item()]


def test_pipeline_works_from_the_saved_code_without_the_package(evaluation, tmp_path):
    """A fresh process that does not import iecl_hf loads OUT through its saved code (trust_remote_code=True)."""
    out, _, _ = evaluation
    image_path = tmp_path / "digit.png"
    load_image_dataset(None)["test"][0]["image"].save(image_path)
    script = (
        "import sys\n"
        "from transformers import pipeline\n"
        f"classifier = pipeline('image-classification', model={str(out)!r}, trust_remote_code=True)\n"
        "assert 'iecl_hf' not in sys.modules and 'transformers_modules' in type(classifier.model).__module__\n"
        f"print('LABEL', classifier({str(image_path)!r})[0]['label'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("LABEL ")[1].strip() in DIGITS


def test_folded_head_equals_head_on_standardized_features():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(300, 12, generator=generator) * torch.linspace(0.1, 20, 12) + torch.linspace(-5, 5, 12)
    labels = (features[:, 0] / 0.1 + features[:, 5] > 0).long() + 2 * (
        features[:, 11] > features[:, 11].median()
    ).long()
    mean, std = feature_statistics(features)
    probe = LinearProbe(12, 4, mean, std)
    fit_linear_probe(probe, feature_batches(features, labels, 64), epochs=20, steps_per_epoch=5)
    folded = probe.folded()
    with torch.no_grad():
        standardized_logits = probe.linear((features - mean) / std)
        torch.testing.assert_close(folded(features), standardized_logits, rtol=1e-4, atol=1e-4)
        assert torch.equal(folded(features).argmax(1), standardized_logits.argmax(1))
        assert (standardized_logits.argmax(1) == labels).float().mean() > 0.8  # the probe did learn


def test_top_k_accuracy_is_the_fraction_of_references_among_the_k_best_scores():
    generator = torch.Generator().manual_seed(0)
    scores, references = torch.randn(97, 10, generator=generator), torch.randint(0, 10, (97,), generator=generator)
    figures = top_k_accuracy(scores, references, (1, 3, 5))
    for k in (1, 3, 5):
        expected = (scores.topk(k, 1).indices == references[:, None]).any(1).float().mean().item()
        assert figures[f"top{k}"] == pytest.approx(expected)
    assert figures["top1"] < figures["top3"] < figures["top5"]
    with pytest.raises(ValueError, match="number of classes"):
        top_k_accuracy(scores, references, (11,))
    with pytest.raises(ValueError, match="empty"):
        TopKAccuracy(keep_in_memory=True).compute(predictions=[], references=[])


def test_top_k_accuracy_accumulates_batches_through_evaluate():
    """`add_batch` over several batches (evaluate's accumulation, as across processes) gives the one-shot figure."""
    ranked, references = [[0, 1], [2, 0], [1, 2], [1, 0]], [0, 0, 2, 0]
    metric = TopKAccuracy(keep_in_memory=True)
    metric.add_batch(predictions=ranked[:3], references=references[:3])
    metric.add_batch(predictions=ranked[3:], references=references[3:])
    assert metric.compute(top_k=(1, 2)) == {"top1": 0.25, "top2": 1.0}


def test_random_init_floor(recipe, evaluation, checkpoint, tmp_path):
    code, stdout = run(
        recipe,
        "--model_name_or_path",
        checkpoint,
        "--random_init",
        "--output_dir",
        tmp_path / "floor",
        "--max_train_samples",
        "200",
        "--max_test_samples",
        "100",
        "--num_epochs",
        "10",
        "--embedding_2d",
        "pca",
    )
    results = json.loads((tmp_path / "floor" / "eval_results.json").read_text())
    assert code == 0 and results["random_init"] is True and "(random-init floor)" in stdout
    assert results["encoder_fingerprint"] != evaluation[1]["encoder_fingerprint"]  # not the checkpoint's weights
    assert "random-init floor" in (tmp_path / "floor" / "README.md").read_text()


def test_augment_mode_trains_on_crops_through_the_frozen_encoder(
    recipe, evaluation, checkpoint, tmp_path, monkeypatch
):
    import iecl_hf.evaluation.linear_eval as linear_eval

    # Every probe batch: is it encoded now (not read from the feature cache), and is the encoder in eval mode?
    encoded = []
    original = linear_eval.encoded_batches

    def recording(encoder, dataloader):
        batches = original(encoder, dataloader)

        def epoch_batches(epoch):
            for features, labels in batches(epoch):
                encoded.append((encoder.training, len(labels)))
                yield features, labels

        return epoch_batches

    monkeypatch.setattr(linear_eval, "encoded_batches", recording)
    out = copy_cache(evaluation, tmp_path / "out")
    code, _ = run(
        recipe, "--model_name_or_path", checkpoint, "--output_dir", out, *SMALL_RUN, "--augment", "--num_epochs", "1"
    )
    results = json.loads((out / "eval_results.json").read_text())
    assert (
        code == 0
        and results["protocol"]["linear_probe"]["augment"] is True
        and results["protocol"]["linear_probe"]["epochs"] == 1
    )
    assert encoded and not any(training for training, _ in encoded)  # crops through the encoder, in eval mode
    assert sum(n for _, n in encoded) == 400  # one epoch over the --max_train_samples of SMALL_RUN
    assert results["figures"]["knn_k20_top1"] == evaluation[1]["figures"]["knn_k20_top1"]  # kNN: the cached features
    classifier = IECLForImageClassification.from_pretrained(out).eval()
    saved = classifier.iecl.state_dict()
    for name, tensor in IECLModel.from_pretrained(checkpoint).state_dict().items():  # the encoder stayed frozen
        torch.testing.assert_close(saved[name], tensor, rtol=0, atol=0, msg=name)
    test = cached(out, "test")
    with torch.no_grad():
        accuracy = (classifier.classifier(test["features"]).argmax(1) == test["labels"]).float().mean().item()
    assert accuracy == pytest.approx(results["figures"]["linear_top1"])
    assert "Linear probe (augmented) top-1" in (out / "README.md").read_text()


def test_missing_test_split_holds_out_a_stratified_fraction(recipe, checkpoint, tmp_path):
    train_only = load_image_dataset(None)["train"].select(range(300))
    datasets.DatasetDict({"train": train_only}).save_to_disk(tmp_path / "train_only")
    code, stdout = run(
        recipe,
        "--model_name_or_path",
        checkpoint,
        "--dataset_name",
        tmp_path / "train_only",
        "--output_dir",
        tmp_path / "out",
        "--num_epochs",
        "5",
        "--embedding_2d",
        "pca",
        "--knn_k",
        "5",
    )
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert code == 0
    assert (
        "notice: No 'test' split (splits: ['train']): holding out 20% of 'train' (stratified by label, seed 0)"
        in stdout
    )
    assert results["dataset"]["test_split"] == "train (held-out 20%)"
    assert (results["dataset"]["num_train"], results["dataset"]["num_test"]) == (240, 60)
    splits = prepare_eval_splits(datasets.load_from_disk(str(tmp_path / "train_only")))
    train_counts, test_counts = (np.bincount(split["label"], minlength=10) for split in (splits.train, splits.test))
    np.testing.assert_allclose(test_counts / 60, (train_counts + test_counts) / 300, atol=0.02)  # stratified


def test_validation_hold_out_is_fixed_stratified_and_leaves_the_test_split_alone():
    """--validation_size scores a hold-out of train that depends on --split_seed only, never on the run's seed, and
    the probe trains on the rest."""
    digits = load_image_dataset(None)  # 1,797 images, train and test
    train_ids = list(range(len(digits["train"])))
    digits = datasets.DatasetDict({"train": digits["train"].add_column("row", train_ids), "test": digits["test"]})
    first = prepare_eval_splits(digits, validation_size=200, seed=0, split_seed=0)
    again = prepare_eval_splits(digits, validation_size=200, seed=7, split_seed=0)
    other = prepare_eval_splits(digits, validation_size=200, seed=0, split_seed=1)
    assert first.test["row"] == again.test["row"] and first.train["row"] == again.train["row"]
    assert first.test["row"] != other.test["row"]
    assert len(first.test) == 200 and len(first.train) == len(digits["train"]) - 200
    assert not set(first.test["row"]) & set(first.train["row"])  # the probe never sees a scored image
    assert first.test_split.startswith("validation (200 images held out of 'train'")
    counts = np.bincount(first.test["label"], minlength=10)
    assert counts.min() >= 19 and counts.max() <= 21  # stratified: 20 per class
    with pytest.raises(ValueError, match="validation_size"):
        prepare_eval_splits(digits, validation_size=len(digits["train"]))


def test_string_labels_are_encoded_as_class_names():
    """A label column of strings (a CSV or parquet dataset) is detected and encoded over both splits; a float column
    is still refused by name."""
    images = load_image_dataset(None)["train"].select(range(12))
    names = ["dog", "cat", "bird"]
    with_strings = images.remove_columns("label").add_column("label", [names[i % 3] for i in range(12)])
    splits = prepare_eval_splits(datasets.DatasetDict({"train": with_strings, "test": with_strings.select(range(6))}))
    assert splits.label_names == ["bird", "cat", "dog"]
    assert [splits.label_names[i] for i in splits.train["label"]] == with_strings["label"]
    assert isinstance(splits.train.features["label"], datasets.ClassLabel)
    floats = images.remove_columns("label").add_column("score", [0.5] * 12)
    with pytest.raises(ValueError, match=r"`label_column` 'score' holds .*float.*not labels"):
        prepare_eval_splits(floats, label_column="score")


def test_not_an_iecl_checkpoint_is_a_clear_cli_error(tmp_path, monkeypatch, capsys):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path / "vit"
    )
    monkeypatch.setattr(
        sys,
        "argv",
        [str(RECIPE), "--model_name_or_path", str(tmp_path / "vit"), "--output_dir", str(tmp_path / "out")],
    )
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(RECIPE), run_name="__main__")
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert (
        "linear_eval.py: error: --model_name_or_path" in stderr
        and "is not an IE-CL checkpoint: model_type='vit'" in stderr
    )


def test_dataset_without_labels_is_a_clear_error(recipe, checkpoint, tmp_path):
    images = load_image_dataset(None)["train"].select(range(20)).remove_columns("label")
    datasets.DatasetDict({"train": images}).save_to_disk(tmp_path / "unlabelled")
    with pytest.raises(ValueError, match=r"no label column .* available columns: \['image'\]"):
        run(
            recipe,
            "--model_name_or_path",
            checkpoint,
            "--dataset_name",
            tmp_path / "unlabelled",
            "--output_dir",
            tmp_path / "out",
        )


def test_unknown_label_column_lists_the_columns(recipe, checkpoint, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"--label_column 'digit' is not a column of the dataset; available columns: \['image', 'label'\]",
    ):
        run(recipe, "--model_name_or_path", checkpoint, "--label_column", "digit", "--output_dir", tmp_path / "out")


def test_push_to_hub_uploads_the_release_without_the_cache(recipe, evaluation, checkpoint, tmp_path, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    calls = {}
    monkeypatch.setattr(
        HfApi,
        "create_repo",
        lambda self, repo_id, **kwargs: (
            calls.setdefault("create_repo", (repo_id, kwargs)) and f"https://hf.co/{repo_id}"
        ),
    )
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kwargs: calls.setdefault("upload_folder", kwargs))
    out = copy_cache(evaluation, tmp_path / "out")
    local_checkpoint = tmp_path / "ckpt"  # without a README.md: --update_model_card creates one
    shutil.copytree(checkpoint, local_checkpoint)
    code, stdout = run(
        recipe,
        "--model_name_or_path",
        local_checkpoint,
        "--output_dir",
        out,
        *SMALL_RUN,
        "--update_model_card",
        "--push_to_hub",
        "--hub_model_id",
        "me/iecl-digits-linear",
        "--hub_private_repo",
    )
    assert code == 0
    repo_id, kwargs = calls["create_repo"]
    assert repo_id == "me/iecl-digits-linear" and kwargs["private"] is True and kwargs["exist_ok"] is True
    upload = calls["upload_folder"]
    assert upload["repo_id"] == "me/iecl-digits-linear" and Path(upload["folder_path"]) == out
    files = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()]
    uploaded = set(filter_repo_objects(files, ignore_patterns=upload["ignore_patterns"]))
    assert any(f.startswith("features_cache/") for f in files)
    assert not any(f.startswith("features_cache/") for f in uploaded)
    assert {
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "README.md",
        "eval_results.json",
        "features_2d.png",
    } <= uploaded
    assert "path/to/this/folder" not in (out / "README.md").read_text()
    assert 'pipeline("image-classification", model="me/iecl-digits-linear"' in (out / "README.md").read_text()
    checkpoint_card = (local_checkpoint / "README.md").read_text()
    assert (
        "model-index" in checkpoint_card
        and "## Linear evaluation" in checkpoint_card
        and "Linear probe top-1" in checkpoint_card
    )


def test_push_failure_exits_non_zero_after_writing_everything(
    recipe, evaluation, checkpoint, tmp_path, monkeypatch, capsys
):
    from huggingface_hub import HfApi

    def offline(self, *args, **kwargs):
        raise ConnectionError("Hub unreachable")

    monkeypatch.setattr(HfApi, "create_repo", offline)
    out = copy_cache(evaluation, tmp_path / "out")
    code, _ = run(
        recipe,
        "--model_name_or_path",
        checkpoint,
        "--output_dir",
        out,
        *SMALL_RUN,
        "--push_to_hub",
        "--hub_model_id",
        "me/x",
    )
    assert code == 1
    assert "Hub unreachable" in capsys.readouterr().err
    for name in ("eval_results.json", "model.safetensors", "README.md", "features_2d.png"):
        assert (out / name).is_file()


def test_update_model_card_keeps_content_and_does_not_duplicate(evaluation, tmp_path):
    _, results, _ = evaluation
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "README.md").write_text(
        "---\nlicense: apache-2.0\ntags:\n- iecl\n---\n\n# My encoder\n\nPretrained on digits.\n\n"
        "## Citation\n\n@article{x}\n"
    )
    update_model_card(str(folder), results)
    card = update_model_card(str(folder), results)  # twice: replaced, not duplicated
    text = (folder / "README.md").read_text()
    assert "Pretrained on digits." in text and "license: apache-2.0" in text and "- iecl" in text
    assert text.count(TABLE_START) == 1 and text.count(TABLE_END) == 1
    assert text.index(TABLE_END) < text.index("## Citation")
    assert len(card.data.eval_results) == 4
    top1 = next(r for r in card.data.eval_results if r.metric_name == "Linear probe top-1")
    assert (
        top1.metric_value == pytest.approx(results["figures"]["linear_top1"], abs=1e-4)
        and top1.dataset_split == "test"
    )
    assert f"{100 * results['figures']['linear_top1']:.2f} %" in text
    # Another dataset adds a row and keeps the first results.
    other = json.loads(json.dumps(results))
    other["dataset"].update(type="cifar10-small", pretty_name="cifar10-small")
    card = update_model_card(str(folder), other)
    assert (
        len(card.data.eval_results) == 8 and (folder / "README.md").read_text().count("| cifar10-small | test |") == 1
    )


def test_config_file_supplies_defaults_and_flags_win(recipe, tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text(
        "model_name_or_path: some/ckpt\nnum_epochs: 7\noptimizer: adamw\nknn_k: [5, 50]\nstandardize: false\n"
    )
    args = recipe.parse_args(["--config_file", str(config), "--num_epochs", "3"])
    assert (args.model_name_or_path, args.num_epochs, args.optimizer, args.knn_k, args.standardize) == (
        "some/ckpt",
        3,
        "adamw",
        [5, 50],
        False,
    )
    assert args.learning_rate == 1e-2 and args.output_dir == os.path.join("outputs", "some--ckpt-linear-eval")
    json_config = tmp_path / "eval.json"
    json_config.write_text(json.dumps({"model_name_or_path": "x", "not_an_argument": 1}))
    with pytest.raises(ValueError, match="unknown arguments \\['not_an_argument'\\]"):
        recipe.parse_args(["--config_file", str(json_config)])
    with pytest.raises(ValueError, match="--model_name_or_path is required"):
        recipe.parse_args([])


def test_config_file_values_are_typed_like_flags(recipe, tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text("model_name_or_path: some/ckpt\nknn_k: [10, 50]\n")
    assert recipe.parse_args(["--config_file", str(config), "--knn_k", "7"]).knn_k == [7]  # a flag replaces the list
    config.write_text("model_name_or_path: some/ckpt\nnum_epochs: many\n")
    with pytest.raises(SystemExit) as exit_info:  # argparse names the bad value, as for a flag
        recipe.parse_args(["--config_file", str(config)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --num_epochs" in err and "invalid int value: 'many'" in err
