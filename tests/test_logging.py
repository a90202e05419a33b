"""The recipes' console output: `--log_level` on every recipe, info to stdout and warnings to
stderr through accelerate's logger, and progress bars on linear evaluation hidden at warning and above."""

import logging

import pytest
import torch
from helpers import REPO, load_script, reset_accelerate_state, single_thread

from iecl_hf import IECLConfig, IECLForPreTraining, build_image_processor
from iecl_hf.cli.embed import parse_embed_args
from iecl_hf.cli.linear_eval import parse_linear_eval_args
from iecl_hf.cli.pretrain import parse_pretrain_args as parse_args
from iecl_hf.console import progress_bars_enabled, setup_logging
from iecl_hf.evaluation.linear_probe import LinearProbe, feature_batches, fit_linear_probe


@pytest.fixture
def restore_logging():
    """setup_logging changes process-wide state: the iecl_hf logger, transformers' and datasets' verbosity and
    progress bars. Put them back after the test."""
    import datasets
    from transformers.utils import logging as transformers_logging

    logger = logging.getLogger("iecl_hf")
    saved = (logger.level, list(logger.handlers), logger.propagate, transformers_logging.get_verbosity())
    saved_datasets = datasets.utils.logging.get_verbosity(), datasets.is_progress_bar_enabled()
    yield
    logger.setLevel(saved[0])
    logger.handlers[:] = saved[1]
    logger.propagate = saved[2]
    transformers_logging.set_verbosity(saved[3])
    transformers_logging.enable_progress_bar()
    datasets.utils.logging.set_verbosity(saved_datasets[0])
    if saved_datasets[1]:
        datasets.enable_progress_bars()
    reset_accelerate_state()


def test_info_goes_to_stdout_and_warnings_to_stderr(restore_logging, capsys):
    from accelerate import PartialState
    from accelerate.logging import get_logger

    PartialState()
    logger = get_logger("iecl_hf.tests")
    setup_logging("info")
    setup_logging("info")  # set again, not added twice
    logger.debug("a debug line")
    logger.info("an info line")
    logger.warning("a warning line", main_process_only=False)
    captured = capsys.readouterr()
    assert captured.out == "an info line\n"  # one process: no [RANK 0] prefix
    assert captured.err == "WARNING: a warning line\n"
    assert progress_bars_enabled()


def test_warning_level_hides_info_and_progress_bars_and_debug_shows_the_libraries(restore_logging, capsys):
    from accelerate import PartialState
    from accelerate.logging import get_logger
    from transformers.utils import logging as transformers_logging

    PartialState()
    logger = get_logger("iecl_hf.tests")
    setup_logging("warning")
    logger.info("an info line")
    logger.warning("a warning line")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "WARNING: a warning line\n"
    assert not progress_bars_enabled()
    assert transformers_logging.get_verbosity() == logging.WARNING
    setup_logging("debug")
    logger.debug("a debug line")
    assert capsys.readouterr().out == "a debug line\n"
    assert progress_bars_enabled() and transformers_logging.get_verbosity() == logging.INFO
    with pytest.raises(ValueError, match="`log_level` 'loud' is not supported"):
        setup_logging("loud")


def test_every_recipe_takes_log_level(tmp_path, capsys):
    from iecl_hf.cli.export_timm import parse_export_args

    _, train_args, _ = parse_args(["--log_level", "warning"])
    assert train_args.log_level == "warning" and parse_args([])[1].log_level == "info"
    checkpoint = ["--model_name_or_path", str(tmp_path / "ckpt")]
    assert parse_linear_eval_args([*checkpoint, "--log_level", "debug"]).log_level == "debug"
    assert parse_embed_args([*checkpoint, "--log_level", "error"]).log_level == "error"
    export = parse_export_args([*checkpoint, "--output_dir", str(tmp_path / "timm"), "--log_level", "warning"])
    assert export.log_level == "warning"
    with pytest.raises(SystemExit):
        parse_args(["--log_level", "loud"])
    assert "--log_level/--log-level: invalid choice: 'loud'" in capsys.readouterr().err


def test_probe_progress_bar_only_when_asked(capsys):
    features, labels = torch.randn(40, 8), torch.arange(40) % 4
    for progress in (True, False):
        probe = LinearProbe(8, 4)
        history = fit_linear_probe(probe, feature_batches(features, labels, 16), 3, 3, progress=progress)
        assert len(history) == 3
        err = capsys.readouterr().err
        assert ("linear probe" in err and "3/3" in err) is progress


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    config = IECLConfig(backbone_kwargs={"channels": [8, 16, 32, 64]}, stem="cifar_stride2", image_size=16)
    torch.manual_seed(0)
    IECLForPreTraining(config).save_pretrained(path)
    build_image_processor(config).save_pretrained(path)
    return path


@pytest.mark.parametrize("log_level", ["info", "warning"])
def test_linear_eval_output_at_each_level(checkpoint, tmp_path, capsys, restore_logging, log_level):
    recipe = load_script(REPO / "recipes" / "linear_eval.py", "iecl_test_logging_linear_eval_recipe")
    argv = ["--model_name_or_path", checkpoint, "--output_dir", tmp_path / "out", "--log_level", log_level]
    argv += ["--max_train_samples", 60, "--max_test_samples", 30, "--num_epochs", 2, "--embedding_2d", "pca"]
    with single_thread():
        assert recipe.main([str(a) for a in argv]) == 0
    captured = capsys.readouterr()
    if log_level == "info":
        assert "Linear probe on scikit-learn digits (embedded)" in captured.out
        assert "features train" in captured.err and "features test" in captured.err  # the extraction's bars
        assert "linear probe" in captured.err and "2/2" in captured.err  # the probe's epochs
    else:
        assert captured.out == ""
        assert "features train" not in captured.err and "linear probe" not in captured.err
