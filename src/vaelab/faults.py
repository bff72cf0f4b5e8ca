"""Fault-injection hooks for the test suite, read from the environment (all off unless set).

VAELAB_FAULT_NAN_STEP=N   the training loss becomes NaN at global step N (1-based)
"""
from __future__ import annotations

import os


def nan_step() -> int | None:
    value = os.environ.get("VAELAB_FAULT_NAN_STEP")
    return int(value) if value else None
