"""`vaelab reproduction DIR`: a finished study kept as a small markdown page with PNG figures, for a folder of
reproductions (docs/reproductions/ in this repository): the document's claims scored, what would decide the claims
left open (the seeds and their cost at the study's pace), the headline figures, the findings, and how it was made
(the commands, the machine, the wall time, the peak memory, every vaelab version that ran it, from the study's
provenance.json; the compute summed over the runs' own records). Everything on the page is read from the study
folder; nothing is typed by hand.

    TO/<document>-<study>/README.md          the page
    TO/<document>-<study>/reproduction.json  its summary (what the index reads)
    TO/<document>-<study>/*.png, *.gif       the study's figures (animations up to 1 MB)
    TO/README.md                             the index of every reproduction in TO
"""
from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path
from typing import Any

from vaelab.errors import RunError
from vaelab.fileio import atomic_write_text, make_dirs
from vaelab.report.catalogue import draw
from vaelab.report.html import findings
from vaelab.studies import provenance
from vaelab.studies.provenance import duration
from vaelab.studies.claims import counts_text, outcome_counts
from vaelab.studies.scorecard import scorecard
from vaelab.studies.view import open_study

INDEX_TITLE = "# Reproductions"
MAX_ANIMATION_BYTES = 1 << 20  # animations (GIF) larger than this stay in the study's report only


def _cell(text: Any) -> str:
    """Text for one markdown table cell (pipes escaped, one line)."""
    return " ".join(str(text or "").split()).replace("|", "\\|")


def _coverage(made: dict, runs: int) -> str:
    """A warning when the recorded invocations trained fewer runs than the study has (the others were trained by an
    invocation that ended before it could record its time, e.g. killed), else ''."""
    trained = made.get("runs_trained")
    if trained is None or trained >= runs:
        return ""
    return (f" (the recorded invocations trained {trained} of the {runs} runs; the others were trained by an "
            "invocation that recorded no time, so the study took longer than this)")


def scorecard_markdown(outcomes: list) -> list[str]:
    """The scorecard as a markdown table: outcome, claim, the document's figure, vaelab's measurement, why and what
    vaelab adds."""
    if not outcomes:
        return ["This study declares no claims."]
    lines = ["| outcome | claim | document | vaelab's measurement (95% interval) | why; what vaelab adds |",
             "|---|---|---|---|---|"]
    for o in outcomes:
        notes = "; ".join(t for t in (o.why, f"*vaelab adds:* {o.explains}" if o.explains else "") if t)
        lines.append(f"| **{o.outcome}** | {_cell(o.claim)} | {_cell(o.document)} | {_cell(o.measurement)} | "
                     f"{_cell(notes)} |")
    return lines


def deciding_markdown(outcomes: list, seeds: int, runs: int, compute: float, cpu: str | None) -> list[str]:
    """What would decide the inconclusive claims that more seeds would decide: per claim, the seeds per setting, the
    runs they add and their cost at this study's pace (``compute``: its worker-seconds of training and analyses,
    scaled by the runs added); [] when no claim names a number of seeds."""
    open_claims = [o for o in outcomes if o.seeds_to_decide]
    if not open_claims or seeds < 1:
        return []
    lines = ["", "### What would decide the open claims", ""]
    for o in open_claims:
        extra = o.seeds_to_decide / seeds - 1
        on = f" ({cpu})" if cpu else ""
        cost = (f", about {duration(extra * compute)} of worker time at this study's pace on this machine{on}"
                if compute > 0 else "")
        lines.append(f"- *{_cell(o.claim)}*: about {o.seeds_to_decide} seeds per setting instead of {seeds}, at the "
                     f"estimate and spread measured: the study with {o.seeds_to_decide - seeds} more seeds is "
                     f"{round(runs * extra)} more runs{cost}.")
    if len(open_claims) > 1:
        lines.append("- The largest of these decides every claim above at once (the runs are shared).")
    return lines


def write_reproduction(folder: str | Path, to: str | Path = "docs/reproductions") -> Path:
    """Write the reproduction page of the study in ``folder`` under ``to`` (atomically, replacing an older page of
    the same study) and rewrite ``to``'s index; return the page's path."""
    folder, to = Path(folder), Path(to)
    view = open_study(folder)
    spec = view.spec
    if not view.rows and not spec.no_runs:
        raise RunError(f"{folder} has no finished runs (no results.csv); run the study to the end first")
    drawn = draw(view)
    figures = [f for f in drawn if f.kind == "image" or Path(f.png).stat().st_size <= MAX_ANIMATION_BYTES]
    left_out = [f for f in drawn if f not in figures]
    outcomes = scorecard(folder, view)
    made = provenance.summary(folder)
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{spec.document}-{spec.name}" if spec.document else spec.name).strip("-")
    page_dir = to / slug
    tmp = to / f".{slug}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    make_dirs(tmp)
    for f in figures:
        shutil.copyfile(f.png, tmp / Path(f.png).name)

    machine = made.get("machine") or {}
    compute = view.compute_seconds()
    failed = [r["run"] for r in view.rows if r.get("status") != "finished"]
    counts = outcome_counts(outcomes)
    summary = {"study": spec.name, "document": spec.document, "title": spec.title, "scale": spec.scale,
               "runs": len(view.rows), "finished": len(view.finished()), "claims": counts,
               "seconds": made.get("seconds"), "compute_seconds": compute, "peak_rss_gb": made.get("peak_rss_gb"),
               "machine": machine, "vaelab": made.get("vaelab"), "commands": made.get("commands"),
               "started": made.get("started"), "page": f"{slug}/README.md"}
    several = len(re.findall(r"\d+", spec.document or "")) > 1  # "002 and 000"
    doc = f"Document{'s' * several} {spec.document}: " if spec.document else ""
    scale = spec.scale or "full"
    lines = [f"# {doc}{spec.title or spec.name}", "",
             f"Study `{spec.name}` at scale **{scale}**" + (f" ({spec.scale_description})" if spec.scale_description
                                                             else " (the document's own setting)") + ".", "",
             " ".join((spec.description or "").split()), "",
             "## How it was made", ""]
    commands = made.get("commands") or ["(not recorded: the study ran before vaelab kept provenance.json)"]
    lines += [f"- Command: `{c}`" for c in commands]
    lines += [f"- Page: `vaelab reproduction {folder} --to {to}`",
              f"- Machine: {machine.get('cpu', 'not recorded')}" + (f", {machine['cores']} cores" if machine.get("cores")
                                                                   else "") + (f", GPU {machine['gpu']}" if machine.get("gpu")
                                                                               else ", no GPU"),
              f"- Wall time: {duration(made.get('seconds'))}" + (f" over {made['invocations']} invocations"
                                                                  if (made.get("invocations") or 0) > 1 else "")
              + (f"; peak memory {made['peak_rss_gb']:.1f} GB (largest process)" if made.get("peak_rss_gb") else "")
              + _coverage(made, len(view.rows)),
              (f"- Compute: {duration(compute['training'])} of training and {duration(compute['analyses'])} of "
               "analyses, summed over the runs' own records (worker time: runs trained side by side each count)"),
              f"- vaelab {made.get('vaelab') or 'version not recorded'}; started {made.get('started') or '?'}; page "
              f"written {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
              f"- Runs: {len(view.rows)}, finished {len(view.finished())}" + (f"; failed: {', '.join(failed)}" if failed
                                                                              else ""),
              "", "## Scorecard", "",
              counts_text(counts) + ".", ""]
    lines += scorecard_markdown(outcomes)
    lines += deciding_markdown(outcomes, len(spec.seeds), len(view.rows), sum(compute.values()),
                               machine.get("cpu"))
    lines += ["", "## Findings", ""] + [f"- {_cell(s)}" for s in findings(view)]
    if figures:
        lines += ["", "## Figures", ""]
        for f in figures:
            lines += [f"### {f.title}", "", f"![{_cell(f.title)}]({Path(f.png).name})", "", " ".join(f.caption.split()),
                      ""]
    if left_out:
        lines += ["Animations left out here for their size (over 1 MB; they are in the study's report.html): "
                  + "; ".join(f"{f.title} ({Path(f.png).stat().st_size / 2**20:.1f} MB)" for f in left_out) + ".", ""]
    if view.notes:
        lines += ["", "## Notes", ""] + [f"- {_cell(n)}" for n in view.notes]
    atomic_write_text(tmp / "README.md", "\n".join(lines).rstrip() + "\n")
    atomic_write_text(tmp / "reproduction.json", json.dumps(summary, indent=2) + "\n")
    old = to / f".{slug}.old"
    shutil.rmtree(old, ignore_errors=True)
    if page_dir.exists():
        page_dir.rename(old)
    tmp.rename(page_dir)
    shutil.rmtree(old, ignore_errors=True)
    write_index(to)
    return page_dir / "README.md"


def write_index(to: str | Path) -> Path:
    """TO/README.md: one row per reproduction in TO (read from each reproduction.json), by document."""
    to = Path(to)
    rows = []
    for path in sorted(to.glob("*/reproduction.json")):
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    rows.sort(key=lambda r: (str(r.get("document") or "~"), r.get("study", "")))
    lines = [INDEX_TITLE, "",
             "Each document's study run at its own setting (or the largest this machine allows), with its claims "
             "scored. Every page is written by `vaelab reproduction STUDY_FOLDER --to docs/reproductions` from a "
             "finished study; none is edited by hand.", "",
             "| document | study | scale | held | did not hold | inconclusive | runs | wall time | machine | vaelab |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r.get("claims", {})
        lines.append(f"| {_cell(r.get('document') or '-')} | [{_cell(r.get('title') or r['study'])}]({r['page']}) | "
                     f"{_cell(r.get('scale') or 'full')} | {c.get('held', 0)} | {c.get('did not hold', 0)} | "
                     f"{c.get('inconclusive', 0)} | {r.get('finished')}/{r.get('runs')} | {duration(r.get('seconds'))} | "
                     f"{_cell((r.get('machine') or {}).get('cpu', '?'))} | {_cell(r.get('vaelab') or '?')} |")
    path = to / "README.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
