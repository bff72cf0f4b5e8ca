"""Models: encoders/decoders, posterior families, likelihoods, and the VAE that joins them."""
from vaelab.models.likelihoods import Bernoulli, ContinuousBernoulli, Gaussian, build_likelihood
from vaelab.models.posteriors import GaussianPosterior, PosteriorHead, kl_std_normal_per_dim
from vaelab.models.build import build_model, count_parameters
from vaelab.models.vae import VAE, LatentModel

__all__ = ["VAE", "Bernoulli", "ContinuousBernoulli", "Gaussian", "GaussianPosterior", "LatentModel",
           "PosteriorHead", "build_likelihood", "build_model", "count_parameters", "kl_std_normal_per_dim"]
