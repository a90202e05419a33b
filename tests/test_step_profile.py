"""benchmarks/step_profile.py reads the phases of the real training step back from a profile: the labels of
`PretrainingStep` and `IECLForPreTraining.forward`, each backward op counted to the forward label that made it."""

import sys
from pathlib import Path

import pytest
import torch
from helpers import reset_accelerate_state

from iecl_hf import BASELINE_OVERRIDES, IECLConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from recipe_step import recipe_step, take_step  # noqa: E402
from step_profile import backward_times, label_times, profile_steps  # noqa: E402

TINY = {"backbone": "resnet18", "backbone_kwargs": {"channels": [8, 16, 32, 64]}, "stem": "cifar_stride2"}
CPU = torch.device("cpu")


@pytest.fixture
def profile_of():
    """The profile of `steps` ordinary steps of the recipe's step on `config`'s model, after one untimed step."""

    def profile(config, steps=1):
        torch.manual_seed(0)
        train_step = recipe_step(IECLConfig(**TINY, image_size=32, **config), batch_size=4, device=CPU)
        views = torch.rand(2, 4, 3, 32, 32)
        batch = {"pixel_values": views[0], "pixel_values_2": views[1], "num_skipped": torch.tensor(0)}
        take_step(train_step, batch)
        return profile_steps(lambda: take_step(train_step, batch), steps, CPU)

    yield profile
    reset_accelerate_state()


def test_the_ie_cl_step_is_read_back_part_by_part(profile_of):
    events = profile_of({})
    forward, backward = label_times(events, "iecl/", CPU), backward_times(events, "iecl/", CPU)
    parts = {"iecl/saib", "iecl/backbone", "iecl/base_loss", "iecl/entropy", "iecl/kl", "iecl/spectral"}
    assert parts <= set(forward) and parts <= set(backward)
    assert all(forward[p] > 0 and backward[p] > 0 for p in parts)
    # The labels nest in the step's phases. Which part takes longest is a timing, measured by
    # benchmarks/step_overhead.py --breakdown, not asserted here: on a loaded machine it varies from run to run.
    phases = label_times(events, "step/", CPU)
    assert {"step/views", "step/forward", "step/backward", "step/optimizer"} <= set(phases)
    assert sum(forward[p] for p in parts) <= phases["step/forward"]
    assert sum(backward[p] for p in parts) <= phases["step/backward"]


def test_the_baseline_step_has_no_monitors_outside_logging_steps(profile_of):
    forward = label_times(profile_of(BASELINE_OVERRIDES), "iecl/", CPU)
    assert {"iecl/backbone", "iecl/base_loss"} <= set(forward)
    assert not {"iecl/entropy", "iecl/kl", "iecl/spectral", "iecl/monitors"} & set(forward)


def test_the_logdet_term_is_a_part_of_its_own_on_every_step(profile_of):
    """`lambda_saib_logdet` > 0: the term runs on ordinary steps under its own label (forward and backward), so
    benchmarks/step_overhead.py --overrides prices it; off, it does not run."""
    events = profile_of({"lambda_saib_logdet": 0.1})
    forward, backward = label_times(events, "iecl/", CPU), backward_times(events, "iecl/", CPU)
    assert forward.get("iecl/saib_logdet", 0) > 0 and backward.get("iecl/saib_logdet", 0) > 0
    assert "iecl/saib_logdet" not in label_times(profile_of({}), "iecl/", CPU)
