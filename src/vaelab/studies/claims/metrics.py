"""The metric language of claims: what a rule's ``metric``, ``than``, ``se`` and the keys of its ``where`` may name
(checked by :func:`check_metric` when the study is read, before any run), the metrics derived from the runs'
analyses (:data:`METRICS`), the model-free references (:data:`REFERENCES`) and the filters of runs (``where``).

- ``test_loss``: a results.csv column (a training number, a grid key, or a column an analysis declares);
- ``posterior:pca_above_{threshold:g}``: an analysis's headline column, named with the parameters the study ran
  that analysis with (``pca_above_0.01``);
- ``quality/fd.neighbourhood``: a path into each run's saved analysis JSON;
- ``collapsed_units``: a metric derived from the analyses (:data:`METRICS`);
- ``log_likelihood - vr_bound``, ``a / b``: the difference or ratio of two metrics (spaces around the operator).
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Optional, Protocol

import numpy as np
from scipy import integrate
from scipy.stats import chi2, norm

from vaelab.analysis.framework.registry import ANALYSES, DIAGNOSIS, declaration
from vaelab.errors import ConfigError
from vaelab.studies.results import TRAINING_COLUMNS, StudyResults

OPERATORS = (" - ", " / ")
GRID_KEY = re.compile(r"[a-z_]+(\.[a-z_]+)+")  # model.latent_dim, objective.alpha
GROUPING = ("variant", "seed")  # row keys every study has besides its grid keys


class Runs(Protocol):
    """What a derived metric reads (a :class:`vaelab.studies.claims.reader.Reader`): the study's results and each
    run's saved analyses."""

    results: StudyResults

    def analysis(self, row: dict, name: str) -> Optional[dict]: ...


Derived = Callable[[Runs, dict], Optional[float]]  # (runs, row) -> a number, or None where the run lacks it


# --- derived metrics: each reads a run's saved analyses ---------------------------------------------------------
def _latent_dim(runs: Runs, row: dict) -> Optional[float]:
    """The latent dimensions (of the posterior or typical-set analysis, else the grid's)."""
    for analysis in ("posterior", "typical-set"):
        d = (runs.analysis(row, analysis) or {}).get("latent_dim")
        if d:
            return d
    return row.get("model.latent_dim")


def _collapsed(runs: Runs, row: dict) -> Optional[float]:
    """Collapsed latent variables: latent dimensions less active units (Var_x[mu_d] above the threshold)."""
    p = runs.analysis(row, "posterior") or {}
    return p["latent_dim"] - p["active_units"] if "active_units" in p else None


def _share(count: Derived) -> Derived:
    """``count`` over the latent dimensions."""
    def read(runs: Runs, row: dict) -> Optional[float]:
        k, d = count(runs, row), _latent_dim(runs, row)
        return k / d if k is not None and d else None
    return read


def _prior_like(runs: Runs, row: dict) -> Optional[float]:
    """Units with mu ~ 0 and sigma ~ 1 for every input (the posterior analysis's prior_like_units)."""
    return (runs.analysis(row, "posterior") or {}).get("prior_like_units")


UNIFORMITY_CELLS = {1: 20, 2: 10, 3: 5}  # cells per axis of the prior-quantile grid, by latent dimension


def _uniformity(runs: Runs, row: dict) -> Optional[float]:
    """How evenly the test codes fill the prior: the entropy of their histogram over a grid of equal prior mass
    (Phi(mu) in [0, 1]^d cut into k^d cells), over its maximum log(k^d). 1 when they fill it as N(0, I) samples do,
    near 0 when they bunch up. Latents of 1 to 3 dimensions only (None beyond: k^d cells outgrow any test set)."""
    arrays = runs.results.arrays(row, "posterior")
    if not arrays or "mu_test" not in arrays or arrays["mu_test"].shape[1] not in UNIFORMITY_CELLS:
        return None
    mu = arrays["mu_test"]
    k = UNIFORMITY_CELLS[mu.shape[1]]
    cells = np.clip((norm.cdf(mu) * k).astype(int), 0, k - 1)
    _, counts = np.unique(cells, axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / (mu.shape[1] * math.log(k)))


def _geodesic_rise(runs: Runs, row: dict) -> Optional[float]:
    """sigma midway along the Fisher-Rao geodesic over its larger end, in the axis where it rises most, averaged over
    the interpolated pairs (> 1: the variance rises between the ends)."""
    pairs = (runs.analysis(row, "interpolation") or {}).get("pairs") or []
    ratios = [p["geodesic_sigma_peak_ratio"] for p in pairs if "geodesic_sigma_peak_ratio" in p]
    return sum(ratios) / len(ratios) if ratios else None


METRICS: dict[str, Derived] = {
    "latent_dim": _latent_dim, "collapsed_units": _collapsed, "collapsed_share": _share(_collapsed),
    "prior_like_share": _share(_prior_like), "code_uniformity": _uniformity, "geodesic_sigma_rise": _geodesic_rise}


# --- model-free references ----------------------------------------------------------------------------------
def expected_typical_gap(n: int) -> float:
    """The typical-set gap of document 002's Fig. 3 (analysis ``typical-set``, percent) that any model gives at n
    latent dimensions: -1/n log q(z|x) - h_bar = (chi^2_n / n - 1) / 2 for every Gaussian posterior, so the gap is
    100 E|exp(-(chi^2_n / n - 1) / 2) - 1|, whatever was trained."""
    spread = 12 * math.sqrt(2 * n)
    lo, hi = max(0.0, n - spread), n + spread
    value, _ = integrate.quad(lambda x: abs(math.exp(-(x / n - 1) / 2) - 1) * chi2.pdf(x, n), lo, hi,
                              points=[n], limit=200)
    return 100 * value


def _typical_gap_reference(runs: Runs, row: dict) -> Optional[float]:
    d = _latent_dim(runs, row)
    return expected_typical_gap(int(d)) if d else None


REFERENCES: dict[str, Derived] = {"typical-gap": _typical_gap_reference}


# --- checking what a rule names -------------------------------------------------------------------------------
def check_metric(text: str) -> str:
    """``text`` if it names a metric (module docstring); else a ValueError that says what a metric can be."""
    for op in OPERATORS:
        if op in text:
            left, right = text.split(op, 1)
            check_metric(left.strip())
            check_metric(right.strip())
            return text
    analysis, sep, rest = text.partition(":") if ":" in text else text.partition("/")
    if sep:
        try:
            decl = declaration(analysis)
        except ConfigError as exc:
            raise ValueError(f"metric {text!r}: {exc}") from None
        if sep == ":" and rest not in {h.column for h in decl.headline}:
            raise ValueError(f"metric {text!r}: {decl.name} declares no column {rest!r}; its columns: "
                             f"{', '.join(h.column for h in decl.headline) or 'none'}")
        if not rest:
            raise ValueError(f"metric {text!r}: give a path into the {decl.name} analysis's result")
        return text
    known = {c for c, _, _ in TRAINING_COLUMNS} | set(METRICS) | set(GROUPING)
    # a declared column: its {key} or {parameter} parts match any text
    declared = [re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(h.column)) for a in (*ANALYSES.values(), DIAGNOSIS)
                for h in a.headline]
    if text in known or GRID_KEY.fullmatch(text) or any(re.fullmatch(pattern, text) for pattern in declared):
        return text
    raise ValueError(f"unknown metric {text!r}: give a results column (e.g. test_loss, fd_prior), "
                     f"ANALYSIS:COLUMN, ANALYSIS/PATH or one of {', '.join(METRICS)}")


def check_where(where: dict, field: str = "where") -> dict:
    """Filters of runs: each key a metric, each value a value, a list of values or {min, max, prefix}."""
    for key, want in where.items():
        check_metric(key)
        if isinstance(want, dict) and (not want or set(want) - {"min", "max", "prefix"}):
            raise ValueError(f"{field}.{key}: a mapping takes min, max and prefix (got {sorted(want)})")
    return where


# --- values and filters -----------------------------------------------------------------------------------------
def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def match(got: Any, want: Any) -> bool:
    """Whether a value passes a filter: a value, a list of values, or {min, max, prefix}."""
    if isinstance(want, list):
        return any(match(got, w) for w in want)
    if isinstance(want, dict):
        if "prefix" in want and not str(got).startswith(str(want["prefix"])):
            return False
        if "min" in want or "max" in want:
            return is_number(got) and want.get("min", -math.inf) <= got <= want.get("max", math.inf)
        return True
    if is_number(got) and is_number(want):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    return str(got) == str(want)


def sort_values(values) -> list:
    """Grid values in order: numbers first, by value, then the rest by their text."""
    return sorted(values, key=lambda v: (not is_number(v), v if is_number(v) else str(v)))


def short(key: str) -> str:
    """A grid key's last part ('model.latent_dim' -> 'latent_dim')."""
    return key.rsplit(".", 1)[-1]


def where_text(where: dict) -> str:
    """Filters in words: 'latent_dim 200', 'variant starts with spatial-'."""
    def one(v):
        if isinstance(v, list):
            return " or ".join(map(str, v))
        if isinstance(v, dict):
            return ", ".join(f"{'starts with' if k == 'prefix' else 'at least' if k == 'min' else 'at most'} {x}"
                             for k, x in v.items())
        return str(v)
    return ", ".join(f"{short(k)} {one(v)}" for k, v in where.items())
