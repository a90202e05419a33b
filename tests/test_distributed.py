"""Two CPU processes (gloo) must compute what one process holding the whole batch computes (method.md, 1 and 6).

Each rank holds half of the batch. Compared with one process: the loss, the base loss and every entropy term (the
same value on each rank), and the gradients of all parameters after averaging across ranks (as DDP does).
BatchNorm in train mode normalizes with per-process statistics, which no gathering can make equal, so the model
runs in eval mode (running statistics; the forward still routes gradients). The generator's noise is replayed:
each rank gets its rows of the single process's noise.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import iecl_hf.view_generator_iecl as view_generator_module
from iecl_hf import IECLConfig, IECLForPreTraining

WORLD_SIZE, BATCH, SIZE = 2, 8, 16
COMPARED = (
    "loss", "base_loss", "generator_loss", "preservation_loss", "entropy_gain_input", "entropy_gain_representation",
    "entropy_input_reference", "entropy_input_generated", "entropy_representation_reference",
    "entropy_representation_generated",
)
CASES = {
    "no_generator": dict(use_view_generator=False),
    "generator": dict(generator_stance="cooperative"),
    "adversarial_logdet_projection": dict(
        generator_stance="adversarial", entropy_estimator="logdet", representation_level="projection"
    ),
    "uniformity": dict(entropy_estimator="uniformity"),
    "byol": dict(framework="byol"),
    # The generator's own gain is negative here (relu inactive); this case checks the extra reference pass.
    "untransformed_reference": dict(entropy_reference="untransformed"),
}


class NoiseReplay:
    """Stands in for `torch` inside view_generator_iecl: the k-th `randn_like` call gets rows `rows` of a
    whole-batch noise tensor drawn from seed k, so each rank sees its slice of the single process's noise."""

    def __init__(self, rows):
        self.rows, self.calls = rows, 0

    def randn_like(self, tensor):
        whole_batch = torch.randn((BATCH, *tensor.shape[1:]), generator=torch.Generator().manual_seed(1000 + self.calls))
        self.calls += 1
        noise = whole_batch[self.rows]
        assert noise.shape == tensor.shape, (noise.shape, tensor.shape)
        return noise.to(tensor)

    def __getattr__(self, name):
        return getattr(torch, name)


def build_case(name):
    config = IECLConfig(
        backbone_kwargs={"channels": [16, 32, 64, 128]}, stem="cifar_stride2", image_size=SIZE,
        projection_hidden_dim=64, projection_dim=32, generator_width=8, lambda_gen=3.0, lambda_pres=2.0,
        **CASES[name],
    )
    torch.manual_seed(0)
    model = IECLForPreTraining(config)
    with torch.no_grad():
        # Away from the identity generator and the zero-init BNs, and with non-trivial running statistics.
        if model.view_generator is not None:
            torch.nn.init.normal_(model.view_generator.to_delta.weight, std=0.05)
        for module_name, module in model.named_modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.weight.normal_(1.0, 0.2)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.rand(BATCH, 3, SIZE, SIZE, generator=generator)
    pixel_values_2 = torch.rand(BATCH, 3, SIZE, SIZE, generator=generator)
    # View 1 in two clusters (low pixel entropy), view 2 spread out: a positive input gain, which switches on the
    # preservation regularizer (relu) so its gradient is part of the comparison.
    pixel_values = 0.8 * pixel_values[torch.arange(BATCH) % 2] + 0.2 * pixel_values
    return model, pixel_values, pixel_values_2


def run_step(model, pixel_values, pixel_values_2, rows):
    """One forward + `loss.backward()` on `rows` of the batch; returns the outputs and the gradients."""
    model.eval()
    model.zero_grad(set_to_none=True)
    replay = NoiseReplay(rows)
    original = view_generator_module.torch
    view_generator_module.torch = replay
    try:
        output = model(pixel_values[rows], pixel_values_2[rows])
        output.loss.backward()
    finally:
        view_generator_module.torch = original
    assert (replay.calls > 0) == (model.view_generator is not None)
    values = {key: output[key].detach().clone() for key in COMPARED}
    values["perturbation_l1"] = output.perturbation_l1.detach().clone()
    values["noise_draws"] = torch.tensor(float(replay.calls))
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return values, grads


def worker(rank, port, results_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        local = slice(rank * BATCH // WORLD_SIZE, (rank + 1) * BATCH // WORLD_SIZE)
        results = {}
        for name in CASES:
            model, pixel_values, pixel_values_2 = build_case(name)
            values, grads = run_step(model, pixel_values, pixel_values_2, local)
            for grad in grads.values():  # DDP's gradient averaging
                dist.all_reduce(grad)
                grad /= WORLD_SIZE
            dist.all_reduce(values["perturbation_l1"])  # a local mean: average it over the equal-sized shards
            values["perturbation_l1"] /= WORLD_SIZE
            results[name] = (values, grads)
        torch.save(results, os.path.join(results_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    results_dir = tmp_path_factory.mktemp("ddp")
    # fork: the workers inherit the imported modules (spawn would re-import torch and transformers in each).
    mp.start_processes(worker, args=(free_port(), str(results_dir)), nprocs=WORLD_SIZE, join=True, start_method="fork")
    return [torch.load(results_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_equal_one_process(case, two_process_results):
    model, pixel_values, pixel_values_2 = build_case(case)
    single_values, single_grads = run_step(model, pixel_values, pixel_values_2, slice(0, BATCH))
    if case != "untransformed_reference":
        assert single_values["preservation_loss"] > 0  # the regularizer's gradient is part of the comparison
    if model.view_generator is not None:
        assert single_values["perturbation_l1"] > 0

    for rank, results in enumerate(two_process_results):
        values, grads = results[case]
        for key, value in single_values.items():
            torch.testing.assert_close(values[key], value, atol=1e-5, rtol=1e-5, msg=lambda m: f"rank {rank}, {key}: {m}")
        assert grads.keys() == single_grads.keys()
        assert len(grads) == len([p for p in model.parameters() if p.requires_grad])  # generator included
        for name, grad in grads.items():
            expected = single_grads[name]
            scale = expected.abs().max().item()
            torch.testing.assert_close(
                grad, expected, atol=1e-5 * max(scale, 1e-3), rtol=1e-4, msg=lambda m: f"rank {rank}, grad of {name}: {m}"
            )


def test_the_split_batch_would_differ_without_gathering():
    # Guard against a vacuous comparison: one rank's half-batch alone gives a different loss and entropies.
    model, pixel_values, pixel_values_2 = build_case("generator")
    full, _ = run_step(model, pixel_values, pixel_values_2, slice(0, BATCH))
    half, _ = run_step(model, pixel_values, pixel_values_2, slice(0, BATCH // 2))
    for key in ("base_loss", "entropy_input_generated", "entropy_representation_generated"):
        assert (full[key] - half[key]).abs() > 1e-3, key
