"""Fixtures of the fault-injection suite; the helpers are in faultkit.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from faultkit import train


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> Path:
    """The uninterrupted run every fault scenario must reproduce bit for bit."""
    out = tmp_path_factory.mktemp("reference")
    train(out, check=True)
    return out / "r"
