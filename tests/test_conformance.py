"""transformers conventions the encoder and classifier follow: hidden states, problem_type, the card's snippet."""

import pytest
import torch
import torch.nn.functional as F

from iecl_hf import IECLConfig, IECLForImageClassification, IECLModel
from iecl_hf.hub.model_card import render_pretraining_card

TINY = dict(backbone_kwargs={"channels": [16, 32, 64, 128]}, stem="cifar_stride2", image_size=32)


def test_output_hidden_states_gives_the_stem_and_every_stage():
    torch.manual_seed(0)
    model = IECLModel(IECLConfig(**TINY)).eval()
    images = torch.rand(2, 3, 32, 32)
    plain = model(images)
    assert plain.hidden_states is None
    output = model(images, output_hidden_states=True)
    assert len(output.hidden_states) == 5  # stem + 4 stages of the ResNet
    assert [h.shape[1] for h in output.hidden_states[1:]] == [16, 32, 64, 128]
    torch.testing.assert_close(output.hidden_states[-1], output.last_hidden_state)
    torch.testing.assert_close(output.pooler_output, plain.pooler_output)
    # The config's default is honoured too (as in transformers models).
    model.config.output_hidden_states = True
    assert len(model(images).hidden_states) == 5
    assert len(model(images, return_dict=False)) == 3


@pytest.mark.parametrize(
    "problem_type, labels, reference",
    [
        ("single_label_classification", torch.tensor([0, 2]), lambda logits, y: F.cross_entropy(logits, y)),
        (
            "multi_label_classification",
            torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
            lambda logits, y: F.binary_cross_entropy_with_logits(logits, y),
        ),
        (None, torch.tensor([1, 1]), lambda logits, y: F.cross_entropy(logits, y)),  # inferred from integer labels
    ],
)
def test_classifier_loss_follows_problem_type(problem_type, labels, reference):
    torch.manual_seed(0)
    model = IECLForImageClassification(IECLConfig(**TINY, num_labels=3, problem_type=problem_type)).eval()
    output = model(torch.rand(2, 3, 32, 32), labels=labels)
    torch.testing.assert_close(output.loss, reference(output.logits, labels))


def test_regression_with_one_label():
    torch.manual_seed(0)
    model = IECLForImageClassification(IECLConfig(**TINY, num_labels=1)).eval()
    labels = torch.tensor([0.5, -1.0])
    output = model(torch.rand(2, 3, 32, 32), labels=labels)
    torch.testing.assert_close(output.loss, F.mse_loss(output.logits.squeeze(-1), labels))


def test_card_snippet_pools_and_links_nowhere_unchecked():
    card = render_pretraining_card(
        IECLConfig(**TINY),
        repo_id="you/iecl",
        dataset_name="uoft-cs/cifar10",
        num_train_images=10,
        steps=1,
        epochs=1,
        global_batch_size=8,
        optimizer="sgd",
        learning_rate=0.1,
        weight_decay=0.0,
        lr_scheduler_type="cosine",
        final_figures={"loss": 1.0},
    )
    text = str(card)
    assert 'pipeline("image-feature-extraction", model="you/iecl", trust_remote_code=True, pool=True)' in text
    assert "github.com" not in text


def test_the_installed_card_templates_are_the_repository_files():
    # The design asks for model_card_template.md at the repository root: the package's copy is that file.
    import importlib.resources
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    installed = importlib.resources.files("iecl_hf.hub").joinpath("model_card_template.md").read_text()
    with open(os.path.join(root, "model_card_template.md")) as handle:
        assert installed == handle.read()
    eval_template = importlib.resources.files("iecl_hf.evaluation").joinpath("eval_card_template.md").read_text()
    assert "{{ table }}" in eval_template and "image-classification" in eval_template
