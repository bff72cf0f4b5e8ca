"""Models: encoders/decoders, posterior families, likelihoods, priors, and the VAE that joins them."""
from vaelab.models.build import build_model, count_parameters
from vaelab.models.likelihoods import Bernoulli, ContinuousBernoulli, Gaussian, build_likelihood
from vaelab.models.posteriors import GaussianPosterior, PosteriorHead, kl_std_normal_per_dim
from vaelab.models.priors import MixturePrior, Prior, StandardNormal, VampPrior, build_prior, prior_of
from vaelab.models.vae import VAE, LatentModel

__all__ = ["VAE", "Bernoulli", "ContinuousBernoulli", "Gaussian", "GaussianPosterior", "LatentModel",
           "MixturePrior", "PosteriorHead", "Prior", "StandardNormal", "VampPrior", "build_likelihood", "build_model",
           "build_prior", "count_parameters", "kl_std_normal_per_dim", "prior_of"]
