"""Samplers: ways to draw latents for generation (declared in :mod:`.catalogue`), drawn from a model's training
codes by :class:`LatentSource`; the ex-post fixes are fitted there without retraining, and :func:`fit_sampler`
fits one into a :class:`FittedSampler` that samples, decodes, saves and loads (:mod:`.fitted`)."""
from vaelab.analysis.samplers.catalogue import CATALOGUE, DESCRIPTIONS, FIXES, INTERVENTIONS, SAMPLERS, TITLES, Sampler
from vaelab.analysis.samplers.fitted import SAVEABLE, FittedSampler, fit_sampler, fix_folder, save_fixes
from vaelab.analysis.samplers.source import (GRID_POINTS, ComplementGaussian, ExPostGMM, LatentSource, latent_source,
                                             quantile_grid, sampler_latents, training_codes)

__all__ = ["CATALOGUE", "ComplementGaussian", "DESCRIPTIONS", "ExPostGMM", "FIXES", "FittedSampler", "GRID_POINTS",
           "INTERVENTIONS", "LatentSource", "SAMPLERS", "SAVEABLE", "Sampler", "TITLES", "fit_sampler", "fix_folder",
           "latent_source", "quantile_grid", "sampler_latents", "save_fixes", "training_codes"]
