"""Pixel modes: continuous values in [0, 1], dynamic binarization, fixed binarization."""
from __future__ import annotations

import numpy as np
import torch

from vaelab.streams import fill_streams, stream_seeds

PIXEL_MODES = ("continuous", "dynamic", "fixed")
STREAM_ROWS = 4096  # images per random stream of bernoulli_bits (fixed, so the draw is the same on any thread count)


def bernoulli_bits(p: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One Bernoulli(p) draw per element of p (N, ...), as a bool tensor: [u < p] with u ~ U[0, 1) in p's dtype,
    so p = 0 never fires and p = 1 always does.

    On a CPU, u comes from numpy's SFC64 generators (one stream per STREAM_ROWS images, seeded by one draw from
    ``generator``), filled on torch's thread count: torch.rand's Mersenne twister is serial and took 65 of the 70 ms
    of a 25,600-image MNIST epoch's draw (benchmarks/README.md). Elsewhere (CUDA) torch.rand."""
    if p.device.type != "cpu":
        return torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p
    x = p.detach().contiguous().numpy()
    bits = np.empty(x.shape, dtype=bool)
    starts = range(0, len(x), STREAM_ROWS)
    streams = stream_seeds(generator, len(starts))

    def fill(k: int) -> None:
        rows = slice(starts[k], starts[k] + STREAM_ROWS)
        u = np.random.Generator(np.random.SFC64(streams[k])).random(x[rows].shape, dtype=x.dtype)
        np.less(u, x[rows], out=bits[rows])

    fill_streams(len(starts), fill)  # numpy fills and compares without the GIL
    return torch.from_numpy(bits)


class PixelSampler:
    """Turns grey images into what the model sees.

    - continuous: the grey values themselves.
    - dynamic: a fresh Bernoulli(x) draw of the training set every epoch (from the run's generator).
    - fixed: one Bernoulli(x) draw seeded by ``seed``, the same every epoch.
    The test set is continuous in continuous mode and a fixed seeded draw in both binary modes, so test
    numbers are comparable across epochs.
    """

    def __init__(self, mode: str, x_train: torch.Tensor, x_test: torch.Tensor, seed: int = 0):
        if mode not in PIXEL_MODES:
            raise ValueError(f"pixel mode {mode!r} is not one of {PIXEL_MODES}")
        self.mode = mode
        self.x_train = x_train
        g = torch.Generator(device=x_train.device).manual_seed(seed)
        if mode == "continuous":
            self.train_fixed, self.test = x_train, x_test
        else:
            self.train_fixed = torch.bernoulli(x_train, generator=g) if mode == "fixed" else None
            self.test = torch.bernoulli(x_test, generator=g)

    @property
    def binary(self) -> bool:
        """True when every image this sampler hands out is exactly 0/1 (the binarizing modes)."""
        return self.mode != "continuous"

    def train_epoch(self, generator: torch.Generator) -> torch.Tensor:
        """(N, C, H, W) training images for one epoch: in dynamic mode a bool tensor (a quarter of the memory
        traffic; :meth:`batch` turns a batch of it into x_train's dtype), else x_train's dtype."""
        if self.mode == "dynamic":  # Bernoulli(x) as [u < x]: 3x faster than torch.bernoulli on a CPU
            return bernoulli_bits(self.x_train, generator)
        return self.train_fixed

    def batch(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Rows ``index`` of an epoch's images (from :meth:`train_epoch`) in x_train's dtype."""
        return self.batches([images], [index])[0]

    def batches(self, epochs: list[torch.Tensor], indices: list[torch.Tensor]) -> torch.Tensor:
        """Rows indices[k] of run k's epoch images, stacked: (M, B, C, H, W) in x_train's dtype. The rows are
        gathered in the epoch's dtype (bool for binarized pixels) straight into one tensor, then converted once."""
        first = epochs[0]
        out = torch.empty((len(epochs), len(indices[0]), *first.shape[1:]), dtype=first.dtype, device=first.device)
        for k, (images, index) in enumerate(zip(epochs, indices)):
            torch.index_select(images, 0, index, out=out[k])
        return out.to(self.x_train.dtype)
