"""Large random draws on a CPU, cut into fixed streams that torch's threads fill side by side.

A CPU torch.Generator is one serial Mersenne twister, so a draw of millions of numbers runs on one core whatever
torch's thread count: in the importance-sampled likelihood of a 65,536-unit latent at two threads, torch.randn was
45% of the time (benchmarks/README.md). Here a large draw is cut into streams of a fixed size; each stream gets its
own generator, seeded by one draw from the caller's, and the streams are filled concurrently (numpy and torch
release the GIL while they fill). The cut depends only on the draw's size, never on the thread count, so the same
generator state gives the same numbers on any machine and any number of threads.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

NORMAL_STREAM = 1 << 20  # normals per stream; draws under two streams' worth are torch.randn's own


def stream_seeds(generator: torch.Generator, count: int) -> list[np.random.SeedSequence]:
    """``count`` independent seed sequences from one draw of ``generator`` (which it advances)."""
    seed = int(torch.randint(0, 2**63 - 1, (), generator=generator))
    return np.random.SeedSequence(seed).spawn(count)


def fill_streams(count: int, fill: Callable[[int], None]) -> None:
    """Call ``fill(k)`` for every stream k, on up to torch's thread count of threads."""
    threads = min(torch.get_num_threads(), count)
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fill, range(count)))
    else:
        for k in range(count):
            fill(k)


def standard_normal(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, 1) noise of ``shape``. On a CPU, a draw of at least two streams (2 x NORMAL_STREAM numbers) is filled
    stream by stream, concurrently; smaller draws, draws without a generator and other devices are torch.randn's."""
    n = math.prod(shape)
    if generator is None or torch.device(device).type != "cpu" or n < 2 * NORMAL_STREAM:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    out = torch.empty(n, dtype=dtype)
    starts = range(0, n, NORMAL_STREAM)
    seeds = stream_seeds(generator, len(starts))

    def fill(k: int) -> None:
        g = torch.Generator().manual_seed(int(seeds[k].generate_state(1, np.uint64)[0]))
        out[starts[k]:starts[k] + NORMAL_STREAM].normal_(generator=g)

    fill_streams(len(starts), fill)
    return out.view(shape)
