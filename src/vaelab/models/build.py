"""The model a run's config describes: networks, posterior head, likelihood and prior put together."""
from __future__ import annotations

import math

import torch

from vaelab.data.registry import dataset_spec
from vaelab.models.likelihoods import build_likelihood
from vaelab.models.networks import ConvDecoder, ConvEncoderBody, MLPDecoder, MLPEncoderBody
from vaelab.models.posteriors import PosteriorHead
from vaelab.models.priors import build_prior
from vaelab.models.vae import VAE


def build_model(config) -> VAE:
    """The VAE a :class:`vaelab.config.RunConfig` describes."""
    spec = dataset_spec(config.data.name)
    m = config.model
    image_shape = spec.image_shape
    if m.network == "mlp":
        encoder = MLPEncoderBody(spec.n_pixels, m.hidden, m.activation)
        head = PosteriorHead(m.posterior, encoder.n_features, m.latent_dim)
        decoder = MLPDecoder(m.latent_dim, m.hidden, spec.n_pixels, image_shape, m.activation)
        latent_shape: tuple[int, ...] = (m.latent_dim,)
    elif m.network == "conv":
        encoder = ConvEncoderBody(image_shape, m.conv_channels, m.activation, spatial=False)
        head = PosteriorHead(m.posterior, encoder.n_features, m.latent_dim)
        decoder = ConvDecoder(image_shape, m.conv_channels, m.activation, m.latent_dim, None)
        latent_shape = (m.latent_dim,)
    else:
        encoder = ConvEncoderBody(image_shape, m.conv_channels, m.activation, spatial=True)
        s = encoder.map_size
        latent_shape = (m.latent_channels, s, s)
        head = PosteriorHead(m.posterior, encoder.n_features, math.prod(latent_shape), m.latent_channels)
        decoder = ConvDecoder(image_shape, m.conv_channels, m.activation, math.prod(latent_shape), m.latent_channels)
    likelihood = build_likelihood(m.likelihood, image_shape, m.gaussian_std)
    # built last: its initial draws come after the networks', which stay as a standard-prior run's
    prior = build_prior(m.prior, math.prod(latent_shape), image_shape, m.prior_components)
    return VAE(encoder, head, decoder, likelihood, image_shape, latent_shape, prior)


def count_parameters(config) -> int:
    """Parameters of the model ``config`` describes, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        model = build_model(config)
    return sum(p.numel() for p in model.parameters())
