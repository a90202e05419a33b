"""A pretraining model loaded from an encoder-only checkpoint is initialized like a fresh one."""

import pytest
import torch

from iecl_hf import IECLConfig, IECLForPreTraining, IECLModel

TINY = dict(
    backbone_kwargs={"channels": [16, 32, 64, 128]},
    stem="cifar_stride2",
    image_size=32,
    moco_queue_size=32,
    projection_hidden_dim=64,
    projection_dim=32,
    predictor_hidden_dim=48,
    saib_dim=8,
)


@pytest.mark.parametrize("framework", ["simclr", "moco", "byol"])
def test_pretraining_model_from_an_encoder_checkpoint(framework, tmp_path):
    config = IECLConfig(**TINY, framework=framework)
    torch.manual_seed(0)
    encoder = IECLModel(config)
    with torch.no_grad():  # a trained encoder is not a fresh one: the momentum branch must copy these weights
        for parameter in encoder.parameters():
            parameter.add_(0.01)
    encoder.save_pretrained(tmp_path)

    model = IECLForPreTraining.from_pretrained(tmp_path)
    fresh = IECLForPreTraining(config)
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all() and tensor.abs().max() < 1e3, name
    for name, tensor in encoder.backbone.state_dict().items():
        torch.testing.assert_close(model.iecl.backbone.state_dict()[name], tensor, msg=name)
    if framework != "simclr":
        for (name, momentum), online in zip(
            model.head.momentum_backbone.state_dict().items(), model.iecl.backbone.state_dict().values()
        ):
            torch.testing.assert_close(momentum, online, msg=f"momentum {name}")
        for momentum, online in zip(model.head.momentum_projector.parameters(), model.head.projector.parameters()):
            torch.testing.assert_close(momentum, online)
    # The modules the checkpoint lacks have the statistics of a fresh model's.
    loaded, reference = dict(model.named_modules()), dict(fresh.named_modules())
    for name, module in reference.items():
        if isinstance(module, torch.nn.Linear) and not name.startswith(("iecl.", "head.momentum_")):
            ratio = loaded[name].weight.std() / module.weight.std()
            assert 0.8 < ratio < 1.25, (name, ratio.item())
        if isinstance(module, torch.nn.BatchNorm1d) and not name.startswith("head.momentum_"):
            torch.testing.assert_close(loaded[name].weight, module.weight)
            torch.testing.assert_close(loaded[name].running_var, module.running_var)
    torch.testing.assert_close(
        model.view_generator.restore.weight, torch.zeros_like(model.view_generator.restore.weight)
    )
    if framework == "moco":
        torch.testing.assert_close(model.head.queue.norm(dim=1), torch.ones(32))
    output = model(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
    assert torch.isfinite(output.loss)
