"""A trained pythae (benchmark_VAE) VAE-family model, as the analyses see it; pythae is an optional extra: the
adapter reads the model's own attributes, and only :func:`load_pythae` (a saved folder) imports pythae."""
from __future__ import annotations

from pathlib import Path

import torch

from vaelab.analysis.adapters.plain import TorchModelAdapter, first_line
from vaelab.errors import RunError

ACCEPTED_FOLDER = "a folder written by a pythae model's save() (model_config.json and model.pt)"


def from_pythae(model) -> TorchModelAdapter:
    """A pythae VAE (or any model with ``encoder(x).embedding/.log_covariance`` and ``decoder(z)['reconstruction']``)
    as a LatentModel. pythae's Bernoulli decoders output probabilities; its 'mse' models are unit-variance Gaussians."""
    cfg = model.model_config
    image_shape = tuple(cfg.input_dim)
    if len(image_shape) == 1:
        raise RunError(f"pythae model input_dim {image_shape} is flat; vaelab needs images (C, H, W)")
    gaussian = getattr(cfg, "reconstruction_loss", "bce") == "mse"

    def encoder(x):
        out = model.encoder(x)
        return out.embedding, out.log_covariance

    def decoder(z):
        return model.decoder(z)["reconstruction"]

    adapter = TorchModelAdapter(encoder, decoder, cfg.latent_dim, image_shape,
                                likelihood="gaussian" if gaussian else "bernoulli",
                                decoder_output="mean" if gaussian else "probs", gaussian_std=1.0,
                                source={"adapter": f"pythae {type(model).__name__}"})
    adapter.add_module("pythae_model", model)
    return adapter


def load_pythae(folder: str | Path, device: str | torch.device = "cpu"):
    """A pythae model from the folder its ``save()`` wrote (``final_model/`` of a training run), in eval mode."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"--pythae {folder}: no such folder; expected {ACCEPTED_FOLDER}")
    if not (folder / "model_config.json").exists() and (folder / "final_model" / "model_config.json").exists():
        folder = folder / "final_model"
    if not (folder / "model_config.json").exists():
        raise RunError(f"{folder} has no model_config.json; expected {ACCEPTED_FOLDER}")
    try:
        from pythae.models import AutoModel
    except ImportError:
        raise RunError("pythae is not installed; install it with `pip install 'vaelab[pythae]'`") from None
    try:
        model = AutoModel.load_from_folder(str(folder))
    except Exception as exc:  # pythae's own errors (unknown model name, missing weights) are of many kinds
        raise RunError(f"{folder}: pythae could not load it ({type(exc).__name__}: {first_line(exc)}); "
                       f"expected {ACCEPTED_FOLDER}") from None
    return model.to(device).eval()
