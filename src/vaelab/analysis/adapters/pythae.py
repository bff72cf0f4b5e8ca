"""A trained pythae (benchmark_VAE) VAE-family model, as the analyses see it; pythae is an optional extra, and
nothing here imports it: the adapter reads the model's own attributes."""
from __future__ import annotations

from vaelab.analysis.adapters.plain import TorchModelAdapter
from vaelab.errors import RunError


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
                                decoder_output="mean" if gaussian else "probs", gaussian_std=1.0)
    adapter.add_module("pythae_model", model)
    return adapter
