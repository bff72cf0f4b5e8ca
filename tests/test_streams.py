"""Large normal draws in parallel streams (vaelab.streams): the same numbers on any thread count, the N(0, 1) law,
independent streams, and small draws left to torch.randn."""
import numpy as np
import pytest
import torch
from scipy import stats

from vaelab.streams import NORMAL_STREAM, standard_normal

LARGE = (3, 100, 8000)  # 2.4 million numbers: three streams, the last one partial


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_the_draw_does_not_depend_on_the_thread_count(threads):
    draws = []
    for n in (1, 2, 3):
        threads(n)
        draws.append(standard_normal(LARGE, torch.Generator().manual_seed(7)))
    assert draws[0].shape == LARGE and draws[0].dtype == torch.float32
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0], draws[2])


def test_small_draws_are_torch_randn_and_large_ones_advance_the_generator():
    small = (2, NORMAL_STREAM - 1)
    assert torch.equal(standard_normal(small, torch.Generator().manual_seed(3)),
                       torch.randn(small, generator=torch.Generator().manual_seed(3)))
    g = torch.Generator().manual_seed(3)
    assert not torch.equal(standard_normal(LARGE, g), standard_normal(LARGE, g))


def test_large_draws_follow_the_standard_normal_law_in_every_stream():
    z = standard_normal(LARGE, torch.Generator().manual_seed(11)).flatten().double().numpy()
    n = z.size
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    streams = [z[a:a + NORMAL_STREAM] for a in range(0, n, NORMAL_STREAM)]
    assert len(streams) == 3
    for s in streams:  # each stream's own law (a stream that repeated the generator's state would still pass this)
        assert stats.kstest(s[:200_000], "norm").pvalue > 1e-4
    # streams are not copies or shifts of one another: their correlation is that of independent draws
    m = min(len(s) for s in streams)
    for a in range(3):
        for b in range(a + 1, 3):
            r = np.corrcoef(streams[a][:m], streams[b][:m])[0, 1]
            assert abs(r) < 5 / np.sqrt(m)
            assert not np.array_equal(streams[a][:1000], streams[b][:1000])


def test_the_kolmogorov_smirnov_check_above_has_power():
    """The check that passes the streams fails a law 3% too wide (so passing says something)."""
    wide = 1.03 * standard_normal(LARGE, torch.Generator().manual_seed(11)).flatten().double().numpy()
    assert stats.kstest(wide[:200_000], "norm").pvalue < 1e-4
