"""vaelab: train variational autoencoders and measure their latent space.

    import vaelab
    config = vaelab.RunConfig.model_validate({"data": {"name": "digits"}, "model": {"arch": "64-128-8"}})
    run = vaelab.train(config, out="runs")
    model = run.load_model()
"""
from __future__ import annotations

import importlib

from vaelab import allocator as _allocator

__version__ = "0.1.0"

# Big tensors on huge pages, and freed memory kept for reuse where asked (vaelab.allocator): this takes effect when
# vaelab is imported before torch makes its first tensor, as the CLI and study workers do.
_allocator.configure()

_LAZY = {
    "RunConfig": "vaelab.config", "build_config": "vaelab.config",
    "train": "vaelab.trainer", "resume": "vaelab.trainer",
    "Run": "vaelab.runs", "load_run": "vaelab.runs",
    "VAE": "vaelab.models", "build_model": "vaelab.models",
    "load_dataset": "vaelab.data", "fetch_dataset": "vaelab.data", "Dataset": "vaelab.data",
    "Objective": "vaelab.objectives",
    "VaelabError": "vaelab.errors",
    "fit_sampler": "vaelab.analysis.samplers", "FittedSampler": "vaelab.analysis.samplers",
    "diagnose": "vaelab.report",  # the diagnosis and its page, analysis/diagnosis.html (vaelab.analysis's: no page)
}


def __getattr__(name: str):
    """Import heavy modules (torch) only when first used, so `vaelab --help` starts fast."""
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return getattr(module, name)
    raise AttributeError(f"module 'vaelab' has no attribute {name!r}")


__all__ = list(_LAZY)
