"""The runner that saves each result as analysis/NAME.json (+ .npz arrays) and its figures
as figures/NAME-*.png|svg in the subject's folder, atomically."""
from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from vaelab.allocator import release_freed_memory
from vaelab.analysis.framework.common import blas_threads
from vaelab.analysis.framework.registry import ANALYSES, DIAGNOSIS, Analysis, declaration, parse_names, split_params
from vaelab.errors import NotApplicable
from vaelab.fileio import atomic_write_bytes, atomic_write_json, remove_stale_temporaries
from vaelab.plotting import save_figure


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
    decl = declaration(name)
    name, params = decl.name, decl.validate(params)
    fn, plot = decl.load()
    t0 = time.perf_counter()
    with blas_threads():
        result = fn(subject, **params)
    result.seconds = {"compute": round(time.perf_counter() - t0, 2)}
    result.name = name
    result.source = dict(subject.source)
    result.requested = {k: v for k, v in params.items() if not callable(v)}  # (progress callbacks are not data)
    if subject.out_dir is not None:
        out = Path(subject.out_dir)

        for sub in ("analysis", "figures"):
            remove_stale_temporaries(out / sub)  # left by an analysis that was killed

        stem_prefix = name
        result.figures = []

        def save(fig, stem: str) -> None:
            result.figures.extend(save_figure(fig, out / "figures", f"{stem_prefix}-{stem}"))

        t0 = time.perf_counter()
        plot(result, save)
        result.seconds["figures"] = round(time.perf_counter() - t0, 2)
        if result.arrays:
            buf = io.BytesIO()
            np.savez_compressed(buf, **result.arrays)
            atomic_write_bytes(out / "analysis" / f"{name}.npz", buf.getvalue())
        atomic_write_json(out / "analysis" / f"{name}.json", _jsonable(result.to_json()))
    release_freed_memory()  # each analysis has its own working set; the next need not sit on top of this one's
    return result


def analyze(subject, only: list[str] | str | None = None, settings: dict[str, Any] | None = None,
            progress: Callable[[str], None] | None = None) -> dict:
    """Run the named analyses (all by default) and return {name: AnalysisResult, or None where one does not apply
    to this model, e.g. geodesics of a deterministic encoder}."""
    names = parse_names(only) if not isinstance(only, list) else parse_names(",".join(only))
    per = split_params(names, settings or {})

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


def saved_results(run_dir: str | Path) -> Iterator[tuple[Analysis, dict, dict]]:
    """(declaration, result, parameters it ran with) of each analysis saved in a run folder, in declaration order."""
    for decl in (*ANALYSES.values(), DIAGNOSIS):
        try:
            saved = json.loads((Path(run_dir) / "analysis" / f"{decl.name}.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(saved.get("result"), dict):
            yield decl, saved["result"], {**(saved.get("requested") or {}), **(saved.get("params") or {})}
