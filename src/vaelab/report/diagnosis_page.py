"""The diagnosis as a page to look at: OUT/analysis/diagnosis.html, beside the diagnosis' JSON
(analysis/diagnosis.json), written atomically and self-contained (images embedded as data URIs, no script, no
external request; it opens from file:// offline).

It shows, in order: the verdict; the table of numbers it cites; a grid of decoded samples per sampler (the prior,
N(mu(x), s^2 I), q(z), the two interventions and the three fixes, then the two floors: reconstructions and real
training images), each with its FD; the aggregate posterior's spectrum against the prior's; the memorisation figure;
the thresholds, the saved fixes and every figure of the analyses the diagnosis ran. The grids are the images the
quality analysis decoded and measured (analysis/quality.npz: the first 64 of the n whose FD it reports), so a grid
and its FD are the same samples and nothing is refitted; without a quality result (the analysis did not run or did
not apply) they are the samples analysis' images, shown without FD.

A saved result is read only when it is this diagnosis': it ran with the diagnosis' settings and seed, and the numbers
it shares with the diagnosis' table are the table's (an analysis that did not apply leaves an older file unread). An
analysis that did not apply is named on the page where its section would be.
"""
from __future__ import annotations

import base64
import datetime as dt
import io
import json
import math
from pathlib import Path
from typing import Any, Callable

import jinja2
import numpy as np
from matplotlib.ticker import MaxNLocator
from PIL import Image

import vaelab
from vaelab.analysis import diagnose as run_diagnosis
from vaelab.analysis import from_run
from vaelab.analysis.diagnose import SETTINGS, STEPS
from vaelab.analysis.framework.common import AnalysisResult
from vaelab.analysis.framework.registry import declaration
from vaelab.analysis.memorisation import TITLES as MEMORISATION_TITLES
from vaelab.analysis.samplers.catalogue import CATALOGUE, SAMPLERS
from vaelab.errors import ConfigError
from vaelab.fileio import atomic_write_text
from vaelab.models.priors import prior_label, prior_of
from vaelab.plotting import pyplot, save_figure, tile_images

PAGE = "diagnosis.html"
GRID_IMAGES, GRID_COLUMNS, GRID_MIN_WIDTH = 64, 8, 256  # images per grid, per row; grids upscaled to this many pixels
FLOORS = {"reconstruction": ("reconstructions", "the model's reconstructions of test images (a floor for samples)"),
          "real-train": ("real training images", "real training images against the test images (the floor)")}
CITED = ("posterior", "prior-gap", "quality", "memorisation")  # analyses whose numbers the table holds when they ran
STEP_TITLES = {"posterior": "posterior statistics", "prior-gap": "prior gap", "likelihood": "likelihood",
               "quality": "sample quality", "memorisation": "memorisation", "samples": "samples",
               "typical-set": "typical set"}


def page_path(out_dir: str | Path) -> Path:
    """Where the diagnosis page of an output folder (a run directory or --out) goes: OUT/analysis/diagnosis.html."""
    return Path(out_dir) / "analysis" / PAGE


def diagnose(subject, *, quick: bool = False, seed: int = 0, progress: Callable[[str], None] | None = None,
             **options) -> AnalysisResult:
    """vaelab.analysis.diagnose (saved as analysis/diagnosis.json), then the page analysis/diagnosis.html when the
    subject has an output folder. ``subject``: a Subject or a run directory; ``options``: the diagnosis' other
    parameters (vaelab.analysis.diagnose)."""
    if isinstance(subject, (str, Path)):
        subject = from_run(subject)
    result = run_diagnosis(subject, quick=quick, seed=seed, progress=progress, **options)
    if subject.out_dir is not None:
        path = write_diagnosis_page(subject, result)
        if progress:
            progress(f"wrote the diagnosis page {path}")
    return result


# --- reading the diagnosis' saved results ---------------------------------------------------------------------
def _saved(out: Path, name: str, result: AnalysisResult) -> dict | None:
    """analysis/NAME.json when this diagnosis wrote it (else None), with its arrays under "arrays"."""
    try:
        saved = json.loads((out / "analysis" / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    mode = "quick" if result.params.get("quick") else "full"
    requested = dict(saved.get("requested") or {})
    if requested.pop("features", result.params.get("features")) != result.params.get("features") or \
            requested != {"seed": result.params.get("seed", 0), **SETTINGS[mode].get(name, {})}:
        return None
    table = result.data["table"]
    params = {**saved["requested"], **(saved.get("params") or {})}
    numbers = declaration(name).numbers(saved.get("result") or {}, params)
    shared = {k: v for k, v in numbers.items() if k in table}
    if any(table[k] != v for k, v in shared.items()) or (name in CITED and numbers and not shared):
        return None
    try:
        with np.load(out / "analysis" / f"{name}.npz") as npz:
            saved["arrays"] = {k: npz[k] for k in npz.files}
    except OSError:
        saved["arrays"] = {}
    return saved


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _figure_uri(path: Path) -> str | None:
    try:
        return _png_uri(path.read_bytes())
    except OSError:
        return None


def grid_uri(images: np.ndarray) -> str:
    """Up to 64 images (N, C, H, W) in [0, 1] as one PNG mosaic, 8 a row, upscaled by whole pixels (a data URI).
    Grey images are drawn black ink on white, as vaelab's figures draw them; colour images as they are."""
    images = np.clip(np.asarray(images[:GRID_IMAGES], dtype=np.float32), 0, 1)
    mosaic = tile_images(images, ncol=min(GRID_COLUMNS, len(images)))
    if images.shape[1] == 1:
        mosaic = 1.0 - mosaic
    picture = Image.fromarray(np.round(mosaic * 255).astype(np.uint8))
    scale = max(1, math.ceil(GRID_MIN_WIDTH / picture.width))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return _png_uri(buf.getvalue())


def _title(name: str, prior: str, scale: float | None) -> str:
    if name == "prior":
        return prior_label(prior)
    if name == "neighbourhood" and scale is not None:
        return f"N(mu(x), {scale:g}^2 I)"
    return CATALOGUE[name].title if name in CATALOGUE else FLOORS[name][0]


def sampler_grids(quality: dict | None, samples: dict | None, prior: str, best: str | None) -> list[dict]:
    """One card per sampler (then the floors): title, what it draws, its grid and, from the quality analysis, FD,
    KID and precision/recall of the samples shown."""
    source = quality if quality is not None else samples
    if source is None:
        return []
    arrays, rows = source["arrays"], (quality or {}).get("result", {}).get("samplers", {})
    scale = source["params"].get("neighbourhood_scale")
    cards = []
    for name in (*SAMPLERS, *(FLOORS if quality is not None else ())):
        if f"images_{name}" not in arrays:
            continue
        kind = CATALOGUE[name].kind if name in CATALOGUE else "floor"
        images = arrays[f"images_{name}"]
        cards.append({"name": name, "title": _title(name, prior, scale), "kind": kind, "best": name == best,
                      "description": CATALOGUE[name].description if name in CATALOGUE else FLOORS[name][1],
                      "image": grid_uri(images), "shown": min(GRID_IMAGES, len(images)), "metrics": rows.get(name)})
    return cards


def spectrum_figure(out: Path, posterior: dict, gap: dict | None, prior: str) -> str:
    """The aggregate posterior's variance per direction against the prior's (1 in every direction): the
    informative directions' eigenvalues of q(z)'s covariance and the complement's mean variance per direction
    (prior-gap), beside the eigenvalues of Cov_x[mu(x)] (posterior). Saved as figures/diagnosis-spectrum.png|svg;
    returns the PNG as a data URI."""
    plt = pyplot()
    p = posterior["result"]
    d, codes = p["latent_dim"], np.asarray(p["pca"]["eigenvalues"], dtype=float)
    standard = prior == "N(0, I)"
    fig, ax = plt.subplots(figsize=(8, 3.8))
    wide = d > 40  # many directions: a log axis; few: each direction one step wide
    span = (1, d) if wide else (0.5, d + 0.5)
    if gap is not None:
        g = gap["result"]
        agg = g["informative"]["aggregate_variance"]
        k = len(agg)
        if k:
            ax.plot(np.arange(1, k + 1), agg, "o-", color="#4C72B0", ms=4,
                    label=f"aggregate posterior q(z): its {k} informative directions")
        comp = g["complement"]
        if comp["dims"] > 0:
            ratio = comp["variance_per_direction"] / (comp.get("prior_variance_per_direction") or 1.0)
            ax.hlines(ratio, k + 1 if wide else k + 0.5, span[1], color="#4C72B0", lw=3, alpha=0.55,
                      label=f"q(z) in the other {comp['dims']} directions: {ratio:.3g} per direction (mean)")
    else:
        ax.plot(np.arange(1, len(codes) + 1), codes, "o-", color="#4C72B0", ms=4,
                label="eigenvalues of Cov_x[mu(x)] (q(z)'s covariance for a deterministic encoder)")
    if standard and gap is not None and codes.size:
        ax.plot(np.arange(1, len(codes) + 1), np.clip(codes, 1e-12, None), ".", color="#7B7B7B", ms=5,
                label="eigenvalues of Cov_x[mu(x)] (the codes' means)")
    ax.hlines(1.0, *span, color="#C44E52", ls="--", lw=1.5,
              label=f"{prior_label(prior)}: 1 in every direction" + ("" if standard else " (variances in its units)"))
    ax.axhline(p["pca"]["threshold"], color="#999999", ls=":", lw=1,
               label=f"informative threshold {p['pca']['threshold']:g}")
    ax.set_yscale("log")
    if wide:
        ax.set_xscale("log")
    else:
        ax.set_xlim(*span)
    ax.set_xlabel(f"direction (sorted by variance; {d} in all)")
    ax.set_ylabel("variance")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, loc="best")
    paths = save_figure(fig, out / "figures", "diagnosis-spectrum")
    return _figure_uri(Path(paths[0]))


def _figures(saved: dict | None) -> list[dict]:
    """The PNG figures an analysis saved, as data URIs."""
    out = []
    for path in (saved or {}).get("figures", []):
        if path.endswith(".png") and (uri := _figure_uri(Path(path))):
            out.append({"name": Path(path).stem, "uri": uri})
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def write_diagnosis_page(subject, result: AnalysisResult) -> Path:
    """Write OUT/analysis/diagnosis.html for a diagnosis of ``subject`` (its output folder holds the analyses'
    saved results) atomically; return its path."""
    if subject.out_dir is None:
        raise ConfigError("the diagnosis page needs an output folder; give the subject one "
                          "(vaelab.analysis.from_model(..., out_dir=DIR) or a run directory)")
    out = Path(subject.out_dir)
    saved = {name: _saved(out, name, result) for name in STEPS}
    data = result.data
    prior = prior_of(subject.model).describe()
    post, gap, qual, mem = (saved[k] for k in ("posterior", "prior-gap", "quality", "memorisation"))
    labels = {col: label for step in STEPS if saved[step] for h in declaration(step).headline
              for col, label, _ in h.values(saved[step]["result"], {**declaration(step).parameters(),
                                                                    **saved[step]["params"]})}
    verdict = list(data["verdict"])
    conclusion = verdict.pop() if verdict and verdict[-1].startswith("Conclusion:") else None
    findings = [("Informative directions differ from the prior", data.get("informative_mismatch")),
                ("Soap bubble (the complement's shell differs)", data.get("shell_mismatch")),
                ("Over-fitting", data.get("overfitting_supported")),
                ("Which part costs sample quality", data.get("mismatch_costs")),
                ("Best fix", data.get("best_fix") or "none beats the prior by 20%")]
    mem_rows = None
    if mem is not None:
        m = mem["result"]
        mem_rows = [{"name": k, "title": MEMORISATION_TITLES.get(k, k), **r} for k, r in m["sets"].items()]
    env = jinja2.Environment(loader=jinja2.PackageLoader("vaelab.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    html = env.get_template("diagnosis.html.j2").render(
        name=subject.name, source={k: v for k, v in subject.source.items() if v is not None}, params=result.params,
        generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"), version=vaelab.__version__,
        conclusion=conclusion, verdict=verdict, findings=findings, latent=subject.source.get("latent"),
        table=[(k, labels.get(k, ""), _fmt(v)) for k, v in data["table"].items()],
        grids=sampler_grids(qual, saved["samples"], prior, data.get("best_fix")),
        measured=qual is not None, quality=qual, spectrum=spectrum_figure(out, post, gap, prior) if post else None,
        gap=gap, memorisation=mem, mem_rows=mem_rows, mem_figure=next(iter(_figures(mem)), None),
        best=data.get("best_fix"), fixes=data.get("fixes") or {}, thresholds=result.params.get("thresholds", {}),
        missing=[s for s in STEPS if saved[s] is None], step_titles=STEP_TITLES,
        figures=[(STEP_TITLES[s], figs) for s in STEPS if (figs := _figures(saved[s]))], fmt=_fmt)
    path = page_path(out)
    atomic_write_text(path, html)
    return path
