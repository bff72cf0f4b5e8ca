"""vaelab.numerics against torch's own element-wise checks."""
import math

import pytest
import torch

from vaelab.numerics import all_finite, value_range


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_all_finite_agrees_with_isfinite_wherever_a_bad_value_sits(dtype):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(37, 129, generator=g).to(dtype)
    assert all_finite(base) and value_range(base) == (float(base.min()), float(base.max()))
    for bad in (math.nan, math.inf, -math.inf):
        for flat in (0, 1234, base.numel() - 1):
            x = base.clone()
            x.view(-1)[flat] = bad
            assert all_finite(x) is bool(torch.isfinite(x).all()) is False
    assert all_finite(torch.empty(0, 5, dtype=dtype)) and value_range(torch.empty(0)) == (0.0, 0.0)
    big = torch.full((3,), torch.finfo(dtype).max, dtype=dtype)  # the largest finite values are finite
    assert all_finite(big) and all_finite(-big)


def test_a_tensor_that_needs_grad_is_checked_without_touching_its_graph():
    x = torch.randn(4, 3, requires_grad=True)
    assert all_finite(x * 2) and x.grad is None
