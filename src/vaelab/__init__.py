"""vaelab: train variational autoencoders and measure their latent space.

    import vaelab
    config = vaelab.RunConfig.model_validate({"data": {"name": "digits"}, "model": {"arch": "64-128-8"}})
    run = vaelab.train(config, out="runs")
    model = run.load_model()
"""
from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# Tensors of 2 MB and more on transparent huge pages, where the kernel grants them on request (THP "madvise" or
# "always"): fresh memory then costs a page fault per 2 MB instead of per 4 KB. PyTorch reads this once, at its
# first tensor allocation, so it takes effect when vaelab is imported before any tensor is made (the CLI and study
# workers are); set THP_MEM_ALLOC_ENABLE=0 to opt out. Document 000's 8x8x1024 model, 3 epochs of 1,280 images:
# 48.6 million page faults -> 0.9 million, eager step 214.9 -> 148.3 ms (benchmarks/huge_pages.py).
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

_LAZY = {
    "RunConfig": "vaelab.config", "build_config": "vaelab.config",
    "train": "vaelab.trainer", "resume": "vaelab.trainer",
    "Run": "vaelab.runs", "load_run": "vaelab.runs",
    "VAE": "vaelab.models", "build_model": "vaelab.models",
    "load_dataset": "vaelab.data", "fetch_dataset": "vaelab.data", "Dataset": "vaelab.data",
    "Objective": "vaelab.objectives",
    "VaelabError": "vaelab.errors",
}


def __getattr__(name: str):
    """Import heavy modules (torch) only when first used, so `vaelab --help` starts fast."""
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name])
        return getattr(module, name)
    raise AttributeError(f"module 'vaelab' has no attribute {name!r}")


__all__ = list(_LAZY)
