"""vaelab asks PyTorch for transparent huge pages (THP_MEM_ALLOC_ENABLE=1 at import) unless the user said otherwise."""
import subprocess
import sys
from pathlib import Path

import pytest

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
    import os

    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if env_value is not None:
        env["THP_MEM_ALLOC_ENABLE"] = env_value
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
