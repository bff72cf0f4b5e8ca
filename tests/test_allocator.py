"""The allocator settings vaelab makes at import (vaelab.allocator), unless the user said otherwise: transparent huge
pages for PyTorch's big tensors (THP_MEM_ALLOC_ENABLE=1), and, on request, glibc keeping freed memory for reuse."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vaelab.allocator import glibc

NEEDS_GLIBC = pytest.mark.skipif(glibc() is None, reason="glibc's mallopt")
ALLOCATOR_VARIABLES = ("THP_MEM_ALLOC_ENABLE", "VAELAB_KEEP_FREED_MEMORY", "MALLOC_TRIM_THRESHOLD_",
                       "MALLOC_MMAP_THRESHOLD_")


def _child_env(**variables: str) -> dict[str, str]:
    """This process's environment without the allocator variables, then ``variables`` set."""
    return {**{k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARIABLES}, **variables}

PROBE = """
import os, sys
if sys.argv[1] == "vaelab":
    import vaelab
import torch
t = torch.ones(64 << 18)  # 64 MB
huge_kb = sum(int(line.split()[1]) for line in open("/proc/self/smaps") if line.startswith("AnonHugePages"))
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), huge_kb)
"""


def _thp_mode() -> str | None:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return None
    return text[text.index("[") + 1:text.index("]")]


def _probe(first: str, env_value: str | None) -> tuple[str, int]:
    env = _child_env() if env_value is None else _child_env(THP_MEM_ALLOC_ENABLE=env_value)
    out = subprocess.run([sys.executable, "-c", PROBE, first], env=env, capture_output=True, text=True, check=True)
    flag, huge_kb = out.stdout.split()
    return flag, int(huge_kb)


def test_import_sets_the_flag_and_respects_the_users_choice():
    assert _probe("vaelab", None)[0] == "1"
    assert _probe("vaelab", "0")[0] == "0"


@pytest.mark.skipif(_thp_mode() != "madvise", reason="needs the kernel's THP mode 'madvise' to tell the settings apart")
def test_large_tensors_land_on_huge_pages_only_when_enabled():
    assert _probe("vaelab", None)[1] >= 32 * 1024  # most of the 64 MB tensor on 2 MB pages
    assert _probe("vaelab", "0")[1] < 4 * 1024
    assert _probe("torch", None)[1] < 4 * 1024  # PyTorch's own default, without vaelab


# What a Bernoulli decoder's step allocates at its end: 800 KB logits, then the log-likelihood's temporaries, freed.
# Counts the minor page faults (fresh 4 KB pages) per repetition after a warm-up.
CHURN = """
import resource, sys
if sys.argv[1] == "vaelab":
    import vaelab
    print(vaelab.allocator.keep_freed_memory() if sys.argv[2] == "again" else "", end=" ")
import torch
import torch.nn.functional as F
x = (torch.rand(256, 784) < 0.3).float()
w = torch.randn(256, 784)
def churn():
    logits = torch.addmm(torch.zeros(784), torch.ones(256, 256), w)
    return F.logsigmoid(logits * (2 * x - 1)).sum()
for _ in range(5):
    churn()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    churn()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 40)
"""


def _churn(first: str, env_extra: dict[str, str], again: bool = False) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", CHURN, first, "again" if again else "-"], env=_child_env(**env_extra),
                         capture_output=True, text=True, check=True)
    *flag, faults = out.stdout.split()
    return (flag[0] if flag else ""), float(faults)


@NEEDS_GLIBC
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    kept = _churn("vaelab", {"VAELAB_KEEP_FREED_MEMORY": "1"})[1]
    # glibc told to give every free byte back (its own variables, which vaelab leaves alone): the probe sees it
    returned = _churn("vaelab", {"MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_MMAP_THRESHOLD_": "65536"})[1]
    assert kept < 20  # a few pages of Python objects at most
    assert returned > 400  # the logits and the log-likelihood's temporaries, about 2.4 MB, faulted in every time


@NEEDS_GLIBC
def test_kept_only_on_request_and_glibcs_own_variables_take_precedence():
    assert _churn("vaelab", {}, again=True)[0] == "False"  # not by default: it costs peak memory
    assert _churn("vaelab", {"VAELAB_KEEP_FREED_MEMORY": "1"}, again=True)[0] == "True"
    assert _churn("vaelab", {"VAELAB_KEEP_FREED_MEMORY": "1", "MALLOC_TRIM_THRESHOLD_": "1000000"},
                  again=True)[0] == "False"


RELEASE = """
import os
os.environ["VAELAB_KEEP_FREED_MEMORY"] = "1"
import vaelab
import torch
from vaelab.allocator import release_freed_memory
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
base = rss()
t = [torch.ones(7 << 20) for _ in range(3)]  # 3 x 28 MB, each under the mmap threshold: from the heap
del t
kept = rss()
release_freed_memory()
print(base, kept, rss())
"""


@NEEDS_GLIBC
def test_kept_memory_goes_back_to_the_kernel_between_phases():
    base, kept, released = map(int, subprocess.run([sys.executable, "-c", RELEASE], env=_child_env(),
                                                   capture_output=True, text=True, check=True).stdout.split())
    assert kept - base >= 75  # freed, and kept by glibc for the next step
    assert released - base < 20  # given back by release_freed_memory()
