"""`vaelab report DIR`: one self-contained HTML page for a study (figures embedded as data URIs, no network),
opening with the scorecard of the document's claims (vaelab.studies.scorecard), then findings that cite the numbers,
a sortable results table, each document's figures, the animations, the diagnosis verdicts and the config of every
run."""
from __future__ import annotations

import base64
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import jinja2

import vaelab
from vaelab.analysis.framework.registry import column, report_columns
from vaelab.analysis.samplers.catalogue import CATALOGUE
from vaelab.fileio import atomic_write_text
from vaelab.report.catalogue import draw
from vaelab.studies.fixes import fd_column
from vaelab.studies.scorecard import scorecard
from vaelab.studies.view import StudyView, mean_sd_by, open_study

PRIOR, GAIN = CATALOGUE["prior"], CATALOGUE["ex-post-gmm"]  # the findings name the fix's largest gain over the prior


def report_metrics(spec) -> list[tuple[str, str, str | None]]:
    """(column, words, better) of the numbers the findings cite: the test loss, then every headline number the
    analyses declare for the report, named with the parameters this study ran them with."""
    return [("test_loss", "test loss (nats)", "low")] + [
        (column(a, col, spec.analyses.get(a)), column(a, label, spec.analyses.get(a)), better)
        for a, col, better, label in report_columns()]


def _fmt(v: Any) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def _data_uri(path: str) -> str:
    mime = "image/gif" if path.endswith(".gif") else "image/png"
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode()


def findings(view: StudyView) -> list[str]:
    """Sentences that cite the study's numbers: those the figures computed (``view.findings``, drawn first), then per
    metric its mean over seeds at each grid value (and variant), then the study's Theorem 3 check."""
    rows, spec = view.finished(), view.spec
    metrics = report_metrics(spec)
    out = []
    key = view.grid_key()
    failed = [r for r in view.rows if r.get("status") != "finished"]
    out.append(f"{len(view.rows)} runs, {len(rows)} finished" + (f", {len(failed)} failed (listed below)." if failed else "."))
    out += view.findings  # sentences the figures computed (e.g. which fix wins where)
    if key and rows:
        keys = list(spec.grid)
        x_key = keys[-1]  # the last grid key runs along each sentence; the others (and variants) split them
        short = x_key.rsplit(".", 1)[-1]
        groups = sorted({(r.get("variant"), *(r.get(k) for k in keys[:-1])) for r in rows},
                        key=lambda g: [(0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in g])
        for col, words, _ in metrics:
            for group in groups:
                sub = [r for r in rows if (r.get("variant"), *(r.get(k) for k in keys[:-1])) == group]
                xs, mean, sd = mean_sd_by(sub, x_key, col)
                if not xs:
                    continue
                tag = ", ".join([str(group[0])] * bool(group[0]) + [f"{k.rsplit('.', 1)[-1]} = {v}" for k, v in zip(keys[:-1], group[1:])])
                pairs = ", ".join(f"{_fmt(m)}{' +- ' + _fmt(s) if s else ''} at {short} = {x}" for x, m, s in zip(xs, mean, sd))
                out.append(f"{words[0].upper() + words[1:]}{' (' + tag + ')' if tag else ''}: {pairs}.")
        for group in groups:
            sub = [r for r in rows if (r.get("variant"), *(r.get(k) for k in keys[:-1])) == group]
            _, prior, _ = mean_sd_by(sub, x_key, fd_column(PRIOR.name))
            xs, fix, _ = mean_sd_by(sub, x_key, fd_column(GAIN.name))
            if prior and fix and len(prior) == len(fix):
                best = max(range(len(xs)), key=lambda i: prior[i] - fix[i])
                if fix[best] < prior[best]:
                    out.append(f"Largest gain from {GAIN.phrase}: at {short} = {xs[best]}, "
                               f"FD {_fmt(fix[best])} against {_fmt(prior[best])} from {PRIOR.phrase} "
                               f"({100 * (1 - fix[best] / prior[best]):.0f}% lower).")
                else:
                    out.append(f"{GAIN.phrase[0].upper()}{GAIN.phrase[1:]} did not lower the FD of prior samples "
                               f"at any {short}.")
    elif rows and spec.variants:  # a study of variants only: one value per variant, mean over seeds
        for col, words, _ in metrics:
            xs, mean, sd = mean_sd_by(rows, "variant", col)
            if xs:
                order = [v.label for v in spec.variants]
                triples = sorted(zip(xs, mean, sd), key=lambda t: order.index(t[0]) if t[0] in order else len(order))
                pairs = ", ".join(f"{_fmt(m)}{' +- ' + _fmt(s) if s else ''} ({x})" for x, m, s in triples)
                out.append(f"{words[0].upper() + words[1:]}: {pairs}.")
    elif rows:
        for col, words, _ in metrics:
            vals = [r[col] for r in rows if isinstance(r.get(col), (int, float))]
            if vals:
                out.append(f"{words[0].upper() + words[1:]}: " + ", ".join(f"{_fmt(r[col])} ({r['run']})" for r in rows if isinstance(r.get(col), (int, float))) + ".")
    for row in view.theorem or []:
        if row["n"] == max(r["n"] for r in view.theorem):
            out.append(f"Theorem 3 at n = {row['n']}, sigma = {row['sigma']}: P(|f_n(Z1) - f_n(Z2)| < delta) = "
                       f"{row['p_within_delta']:.3f}; per-dimension log-density spread {row['per_dim_diff_sd']:.4f} "
                       f"(exact {row['per_dim_diff_sd_exact']:.4f}).")
    return out


def write_report(folder: str | Path) -> Path:
    """Draw the study's figures from its runs and write folder/report.html atomically; return its path."""
    folder = Path(folder)
    view = open_study(folder)
    spec, rows = view.spec, view.rows
    figures = draw(view)
    claims = [o.to_json() for o in scorecard(folder, view)]
    sections = []
    stills = [f for f in figures if f.kind == "image"]
    anims = [f for f in figures if f.kind == "animation"]
    doc = f"Document {spec.document}: " if spec.document else ""
    for sec_id, title, figs in (("figures", f"{doc}{spec.title or spec.name}", stills), ("animations", "Animations", anims)):
        if figs:
            sections.append({"id": sec_id, "title": title, "figures": [
                {"id": f.id, "title": f.title, "caption": f.caption, "data_uri": _data_uri(f.png)} for f in figs]})
    columns = []
    for r in rows:
        for k in r:
            if k not in columns and k not in ("trained_now", "wall_seconds", "reason"):
                columns.append(k)
    verdicts, configs = [], []
    for r in rows:
        run_dir = folder / "runs" / r["run"]
        diag = run_dir / "analysis" / "diagnosis.json"
        if diag.exists():
            try:
                verdicts.append({"run": r["run"], "lines": json.loads(diag.read_text())["result"]["verdict"]})
            except (OSError, ValueError, KeyError):
                pass
        cfg = run_dir / "config.yaml"
        if cfg.exists():
            configs.append({"run": r["run"], "yaml": cfg.read_text()})
    env = jinja2.Environment(loader=jinja2.PackageLoader("vaelab.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    html = env.get_template("report.html.j2").render(
        title=spec.title or spec.name, name=spec.name, scale=spec.scale, scale_description=spec.scale_description, document=spec.document, description=spec.description,
        n_runs=len(rows), n_finished=len(view.finished()), n_failed=sum(r.get("status") != "finished" for r in rows),
        generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"), version=getattr(vaelab, "__version__", "0.1.0"),
        claims=claims, findings=findings(view), failures=[r for r in rows if r.get("status") != "finished"],
        rows=rows, columns=columns, fmt=_fmt, sections=sections, verdicts=verdicts, configs=configs,
        notes=[n for n in view.notes if not n.startswith("theorem3: ")],
        spec_yaml=(folder / "study.yaml").read_text())
    path = folder / "report.html"
    atomic_write_text(path, html)
    return path
