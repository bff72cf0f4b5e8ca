"""How vaelab sets this process's memory allocators, once, at import (before torch makes its first tensor).

A training step allocates and frees the same activations every step; what the allocators do with freed memory
decides whether the next step gets it back warm or page-faults it in afresh (the kernel zeroes every 4 KB page).

- PyTorch's tensors of 2 MB and more go on transparent huge pages where the kernel grants them on request (THP
  "madvise" or "always"): fresh memory then costs a fault per 2 MB instead of per 4 KB. Document 000's 8x8x1024
  model, 3 epochs of 1,280 images: 48.6 million page faults -> 0.9 million, step 214.9 -> 148.3 ms.
  ``THP_MEM_ALLOC_ENABLE=0`` opts out (PyTorch reads it at its first allocation).
- On request (``VAELAB_KEEP_FREED_MEMORY=1``), glibc keeps what is freed (``mallopt``): allocations under
  MMAP_THRESHOLD come from the heap, and up to TRIM_THRESHOLD of free memory at the heap's top stays with the
  process. By default glibc gives the top of its heap back to the kernel whenever more than twice its adaptive mmap
  threshold is free, and maps allocations of 32 MiB and more afresh each time: three short epochs of document
  000's 8x8x1024 model page-fault 1.2 million times. Kept, that model's step ran 1.2-1.3x faster, for 20-55% more
  peak resident memory (its 34 MB latent tensors fragment the heap), hence not the default; document 002's MLP
  gains nothing measurable. What is kept goes back to the kernel between phases (:func:`release_freed_memory`: the
  trainer after each epoch's steps and after its evaluation, the analysis runner after each analysis). glibc's own
  ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` (read by glibc at start) take precedence. Other C
  libraries are left alone.
"""
from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 256 << 20  # bytes; where glibc refuses it, nothing is changed
TRIM_THRESHOLD = 1 << 30  # bytes of free heap top kept
_kept: list = []  # glibc's malloc_trim, once keep_freed_memory() has told glibc to keep freed memory


def glibc() -> ctypes.CDLL | None:
    """This process's C library where it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only  # noqa: B018
    except (OSError, AttributeError, TypeError):  # musl, macOS, Windows
        return None
    return libc


def keep_freed_memory() -> bool:
    """Tell glibc to keep freed memory for reuse where VAELAB_KEEP_FREED_MEMORY=1 (see above); True if it now does."""
    if os.environ.get("VAELAB_KEEP_FREED_MEMORY", "0") != "1":
        return False
    if any(v in os.environ for v in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")):
        return False
    libc = glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Setting either parameter ends glibc's adaptive mmap threshold, so both are set.
    if not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        return False
    if not mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
        return False
    _kept[:] = [libc.malloc_trim]
    return True


def release_freed_memory() -> None:
    """Give what glibc keeps back to the kernel (``malloc_trim``), between phases whose working sets differ (an
    epoch's training and its evaluation): the process's peak is then the larger phase's, not the two together."""
    for malloc_trim in _kept:
        malloc_trim(0)


def configure() -> None:
    """Both settings above; called by ``import vaelab``."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    keep_freed_memory()
