"""Samplers: ways to draw latents for generation (declared in :mod:`.catalogue`), drawn from a model's training
codes by :class:`LatentSource`; the ex-post fixes are fitted there without retraining."""
from vaelab.analysis.samplers.catalogue import CATALOGUE, DESCRIPTIONS, FIXES, INTERVENTIONS, SAMPLERS, TITLES, Sampler
from vaelab.analysis.samplers.source import (
                                             GRID_POINTS,
                                             ComplementGaussian,
                                             ExPostGMM,
                                             LatentSource,
                                             latent_source,
                                             quantile_grid,
                                             sampler_latents,
                                             training_codes,
)

__all__ = ["CATALOGUE", "ComplementGaussian", "DESCRIPTIONS", "ExPostGMM", "FIXES", "GRID_POINTS", "INTERVENTIONS",
           "LatentSource", "SAMPLERS", "Sampler", "TITLES", "latent_source", "quantile_grid", "sampler_latents",
           "training_codes"]
