"""Every way vaelab draws latents for generation, declared once: its name (what configs, study YAMLs, results
columns such as ``fd_ex-post-gmm`` and the CLI use), what it draws, a short title for figures, the phrase the report
writes it with, and its kind.

- prior:             z ~ p(z), the model's prior (N(0, I) unless it was trained with another)
- neighbourhood:     z ~ N(mu(x), s^2 I) around the code of a random training image (document 000: s = 1)
- posterior:         z ~ q(z) = (1/N) sum_n N(mu(x_n), diag sigma^2(x_n)), the aggregate posterior
- q-informative:     the informative coordinates V^T z from q(z), the complement from the prior (an intervention)
- q-complement:      the informative coordinates from the prior, the complement from q(z) (the other intervention);
                     with the prior and the posterior these are the four combinations that tell which part of the
                     mismatch costs sample quality: the few directions the decoder reads, or the "bubble" it ignores
- ex-post-gaussian:  a full-covariance Gaussian fitted to q(z)'s informative coordinates after training
- ex-post-gmm:       a Gaussian mixture fitted there (Ghosh et al. 2020, on the informative coordinates)
- two-stage:         a second VAE fitted there and sampled through (Dai & Wipf 2019)
                     (the three fixes draw the complement from a diagonal Gaussian fitted to q(z)'s complement)

A new sampler is one entry here and one branch in :meth:`vaelab.analysis.samplers.source.LatentSource.latents`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Sampler:
    name: str
    description: str  # what it draws, in a sentence's words ("an ex-post Gaussian mixture on ...")
    title: str  # a figure panel's title
    phrase: str  # how the report names it in a sentence ("the ex-post GMM")
    kind: Literal["model", "reference", "intervention", "fix"]


CATALOGUE: dict[str, Sampler] = {s.name: s for s in (
    Sampler("prior", "the model's prior", "prior", "the prior", "model"),
    Sampler("neighbourhood", "N(mu(x), s^2 I) around training codes", "N(mu(x), s^2 I)",
            "N(mu(x), s^2 I)", "reference"),
    Sampler("posterior", "the aggregate posterior q(z)", "aggregate posterior q(z)", "q(z) itself", "reference"),
    Sampler("q-informative", "informative coordinates from q(z), complement from the prior",
            "q(z) informative + prior rest", "q(z)'s informative coordinates with the prior's rest", "intervention"),
    Sampler("q-complement", "informative coordinates from the prior, complement from q(z)",
            "prior informative + q(z) rest", "the prior's informative coordinates with q(z)'s rest", "intervention"),
    Sampler("ex-post-gaussian", "an ex-post full-covariance Gaussian on the informative coordinates",
            "ex-post Gaussian", "the ex-post Gaussian", "fix"),
    Sampler("ex-post-gmm", "an ex-post Gaussian mixture on the informative coordinates (Ghosh et al. 2020)",
            "ex-post Gaussian mixture", "the ex-post GMM", "fix"),
    Sampler("two-stage", "a two-stage VAE on the informative coordinates (Dai & Wipf 2019)",
            "two-stage VAE", "the two-stage VAE", "fix"),
)}

SAMPLERS = tuple(CATALOGUE)  # the order of every table and figure
INTERVENTIONS = tuple(n for n, s in CATALOGUE.items() if s.kind == "intervention")  # one part from q(z), one from p(z)
FIXES = tuple(n for n, s in CATALOGUE.items() if s.kind == "fix")  # fitted after training, on the informative coordinates
DESCRIPTIONS = {n: s.description for n, s in CATALOGUE.items()}
TITLES = {n: s.title for n, s in CATALOGUE.items()}
