"""Random streams of their own for the modules IE-CL adds (SAIB, the power-iteration vectors, MoCo's queue).

They draw their initial values without moving the global stream, so a baseline and an IE-CL run with the same seed
share the encoder's initial weights, the data order and every augmentation draw (the paired comparisons of
`benchmarks/quality.py`).
"""

import contextlib

import torch


@contextlib.contextmanager
def own_random_stream(offset: int):
    """Inside: the CPU generator seeded with `torch.initial_seed() + offset`; after: the global stream as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch.initial_seed() + offset)
        yield
