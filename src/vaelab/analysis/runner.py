"""The analysis registry and the runner that saves each result as analysis/NAME.json (+ .npz arrays) and its figures
as figures/NAME-*.png|svg in the subject's folder, atomically."""
from __future__ import annotations

import inspect
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vaelab.errors import ConfigError


@dataclass(frozen=True)
class Analysis:
    name: str
    module: str  # vaelab.analysis.<module> holds the function and its `plot`
    function: str
    summary: str

    def load(self) -> tuple[Callable, Callable]:
        import importlib

        mod = importlib.import_module(f"vaelab.analysis.{self.module}")
        return getattr(mod, self.function), mod.plot

    def parameters(self) -> dict[str, Any]:
        """Keyword parameters and their defaults."""
        fn, _ = self.load()
        return {p.name: p.default for p in inspect.signature(fn).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "log"}


ANALYSES: dict[str, Analysis] = {a.name: a for a in (
    Analysis("posterior", "posterior", "posterior_statistics",
             "per-dimension mu/sigma^2/KL, active units, I(x; z), PCA spectrum of the means"),
    Analysis("typical-set", "typical", "typical_set",
             "typical-set gap of posterior samples, latent norms vs sqrt(n), Theorem 3 by Monte Carlo"),
    Analysis("prior-gap", "prior_gap", "aggregate_posterior_gap",
             "aggregate posterior vs prior: shape, tests in the informative subspace, shell test, KL bound"),
    Analysis("samples", "samplers", "samples",
             "decoded samples: prior, q(z), interventions, ex-post Gaussian/GMM, two-stage, quantile grids"),
    Analysis("likelihood", "likelihood", "likelihood",
             "importance-sampled log p(x) with SE, VR bound, train/test reconstruction gap"),
    Analysis("quality", "quality", "sample_quality",
             "FD, KID, precision/recall, density/coverage per sampler (prior, q(z), interventions, fixes)"),
    Analysis("memorisation", "memorisation", "memorisation",
             "data-copying test and authenticity of samples and reconstructions (classifier features)"),
    Analysis("probes", "probes", "linear_probes",
             "logistic-regression probes on mu, [mu, sigma^2], z, over training snapshots"),
    Analysis("interpolation", "interpolate", "interpolation",
             "five-row interpolations incl. Fisher-Rao geodesics, with lengths"),
)}
DIAGNOSIS = Analysis("diagnosis", "diagnose", "diagnose", "document 000's question answered for this model")


def parse_names(text: str | None) -> list[str]:
    """'posterior,likelihood' -> validated names (all when None/empty)."""
    if not text:
        return list(ANALYSES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in ANALYSES:
            raise ConfigError(f"unknown analysis {n!r}; choose from {', '.join(ANALYSES)}")
    return names


def coerce(value: str, default: Any, key: str) -> Any:
    """A --set string as the type of the parameter's default."""
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float) or default is None:
            if default is None and not _is_number(value):
                return value
            return float(value)
    except ValueError:
        raise ConfigError(f"--set {key}={value!r}: expected {type(default).__name__}") from None
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def split_params(names: list[str], settings: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Route key=value settings to the analyses that take them; an unknown key is an error naming the accepted."""
    per: dict[str, dict[str, Any]] = {n: {} for n in names}
    accepted = {n: ANALYSES[n].parameters() for n in names}
    for key, value in settings.items():
        analysis, dot, param = key.partition(".")
        targets = [analysis] if dot and analysis in accepted else [n for n in names if key in accepted[n]]
        param = param if dot and analysis in accepted else key
        targets = [n for n in targets if param in accepted[n]]
        if not targets:
            options = sorted({p for n in names for p in accepted[n]})
            raise ConfigError(f"--set {key}: no selected analysis takes {param!r}; accepted: {', '.join(options)}")
        for n in targets:
            per[n][param] = coerce(value, accepted[n][param], key) if isinstance(value, str) else value
    return per


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, (np.floating, np.integer)):
        return _jsonable(obj.item())
    return obj


def run_analysis(subject, name: str, **params):
    """Run one analysis on ``subject``; when the subject has a folder, save JSON, arrays and figures there."""
    from vaelab.fileio import atomic_write_bytes, atomic_write_json

    fn, plot = (DIAGNOSIS if name == DIAGNOSIS.name else ANALYSES[name]).load()
    result = fn(subject, **params)
    result.name = name
    result.source = dict(subject.source)
    result.requested = {k: v for k, v in params.items() if not callable(v)}  # (progress callbacks are not data)
    if subject.out_dir is not None:
        out = Path(subject.out_dir)
        from vaelab.fileio import remove_stale_temporaries
        from vaelab.report.figures import save_figure

        for sub in ("analysis", "figures"):
            remove_stale_temporaries(out / sub)  # left by an analysis that was killed

        stem_prefix = name
        result.figures = []

        def save(fig, stem: str) -> None:
            result.figures.extend(save_figure(fig, out / "figures", f"{stem_prefix}-{stem}"))

        plot(result, save)
        if result.arrays:
            buf = io.BytesIO()
            np.savez_compressed(buf, **result.arrays)
            atomic_write_bytes(out / "analysis" / f"{name}.npz", buf.getvalue())
        atomic_write_json(out / "analysis" / f"{name}.json", _jsonable(result.to_json()))
    return result


def analyze(subject, only: list[str] | str | None = None, settings: dict[str, Any] | None = None,
            progress: Callable[[str], None] | None = None) -> dict:
    """Run the named analyses (all by default) and return {name: AnalysisResult, or None where one does not apply
    to this model, e.g. geodesics of a deterministic encoder}."""
    names = parse_names(only) if not isinstance(only, list) else parse_names(",".join(only))
    per = split_params(names, settings or {})
    from vaelab.errors import NotApplicable

    results = {}
    for i, name in enumerate(names, 1):
        if progress:
            progress(f"[{i}/{len(names)}] {name}: {ANALYSES[name].summary}")
        try:
            results[name] = run_analysis(subject, name, **per[name])
        except NotApplicable as exc:
            if len(names) == 1:
                raise
            if progress:
                progress(f"      skipped: {exc}")
            results[name] = None
    return results
