import os

import pytest
import torch

os.environ.setdefault("VAELAB_OFFLINE", "1")  # tests never wait on internet mirrors


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_config(**sections):
    """A small digits config; ``sections`` override whole sections, e.g. model={'arch': '64-32-4'}."""
    from vaelab.config import build_config

    base = {"name": "tiny", "model": {"arch": "64-32-4"}, "train": {"epochs": 2, "batch_size": 128, "lr": 3e-3}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    if "model" in sections and "arch" not in sections["model"] and "arch" in base["model"] and \
            any(k in sections["model"] for k in ("network", "hidden", "latent_dim")):
        base["model"].pop("arch")
    return build_config(base)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """The uninterrupted digits run that every fault scenario of tests/faults must reproduce bit for bit."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "faults"))
    from faultkit import train

    out = tmp_path_factory.mktemp("reference")
    train(out, check=True)
    return out / "r"
