"""Two CPU processes (gloo) must compute what one process holding the whole batch computes (method.md, 6).

Each rank holds half of the batch. Compared with one process: the loss, the base loss and every term (the same
value on each rank), and the gradients of all parameters after averaging across ranks (as DDP does).
BatchNorm in train mode normalizes with per-process statistics, which no gathering can make equal, so the model
runs in eval mode (running statistics; the forward still builds the whole objective). SAIB is deterministic, so
nothing needs replaying. `saib_logdet` is a per-rank monitor (training mode only) and is not compared.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from iecl_hf import BASELINE_OVERRIDES, IECLConfig, IECLForPreTraining

WORLD_SIZE, BATCH, SIZE = 2, 8, 16
COMPARED = ("loss", "base_loss", "entropy_query", "entropy_anchor", "kl_loss", "spectral_penalty", "spectral_norm_max")
CASES = {
    "baseline": BASELINE_OVERRIDES,
    "defaults": {},
    "gaussian_full_kl": dict(entropy_estimator="gaussian", kl_covariance="full"),
    "moco": dict(framework="moco", moco_queue_size=32),
    "byol": dict(framework="byol"),
}


def build_case(name):
    # Weights that are not the defaults: a swapped or missing weight shows.
    weights = dict(lambda_entropy=0.7, beta_kl=0.3, spectral_norm_weight=2.0)
    config = IECLConfig(
        backbone_kwargs={"channels": [16, 32, 64, 128]},
        stem="cifar_stride2",
        image_size=SIZE,
        saib_dim=8,
        projection_hidden_dim=64,
        projection_dim=32,
        **{**weights, **CASES[name]},
    )
    torch.manual_seed(0)
    model = IECLForPreTraining(config)
    with torch.no_grad():
        # Away from the identity SAIB and the zero-init BNs, and with non-trivial running statistics.
        if model.view_generator is not None:
            torch.nn.init.normal_(model.view_generator.restore.weight, std=0.05)
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.weight.normal_(1.0, 0.2)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
        # Eval mode runs no power iteration: converge the vectors first, so the penalty is active (sigma > 1).
        if model.spectral_penalty is not None:
            for _ in range(20):
                model.spectral_penalty(model.iecl.backbone, update=True)
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.rand(BATCH, 3, SIZE, SIZE, generator=generator)
    pixel_values_2 = torch.rand(BATCH, 3, SIZE, SIZE, generator=generator)
    return model, pixel_values, pixel_values_2


def run_step(model, pixel_values, pixel_values_2, rows):
    """One forward + `loss.backward()` on `rows` of the batch; returns the outputs and the gradients."""
    model.eval()
    model.zero_grad(set_to_none=True)
    output = model(pixel_values[rows], pixel_values_2[rows])
    output.loss.backward()
    values = {key: getattr(output, key).detach().clone() for key in COMPARED if getattr(output, key) is not None}
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
    if case != "baseline":
        assert model.view_generator is not None and model.spectral_penalty is not None
        assert single_values["spectral_penalty"] > 0  # the penalty's gradient is part of the comparison

    for rank, results in enumerate(two_process_results):
        values, grads = results[case]
        assert values.keys() == single_values.keys()
        for key, value in single_values.items():
            torch.testing.assert_close(
                values[key], value, atol=1e-5, rtol=1e-5, msg=lambda m: f"rank {rank}, {key}: {m}"
            )
        assert grads.keys() == single_grads.keys()
        assert len(grads) == len([p for p in model.parameters() if p.requires_grad])  # SAIB included
        for name, grad in grads.items():
            expected = single_grads[name]
            scale = expected.abs().max().item()
            torch.testing.assert_close(
                grad,
                expected,
                atol=1e-5 * max(scale, 1e-3),
                rtol=1e-4,
                msg=lambda m: f"rank {rank}, grad of {name}: {m}",
            )


def test_the_split_batch_would_differ_without_gathering():
    # Guard against a vacuous comparison: one rank's half-batch alone gives a different loss and entropies.
    model, pixel_values, pixel_values_2 = build_case("defaults")
    full, _ = run_step(model, pixel_values, pixel_values_2, slice(0, BATCH))
    half, _ = run_step(model, pixel_values, pixel_values_2, slice(0, BATCH // 2))
    for key in ("base_loss", "entropy_query", "kl_loss"):
        assert (full[key] - half[key]).abs() > 1e-3, key
