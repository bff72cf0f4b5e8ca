"""Studies and what is made of them: `vaelab study`, `report`, `reproduction` and `scorecard`."""
from __future__ import annotations

import json
import shutil
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from vaelab.cli.base import app, err, fail, json_option, progress_option
from vaelab.errors import RunInterrupted
from vaelab.report import run_study, write_report, write_reproduction
from vaelab.studies.claims import render_text
from vaelab.studies.orchestrator import require_datasets, study_dir
from vaelab.studies.pools import make_executor
from vaelab.studies.results import read_results
from vaelab.studies.scorecard import scorecard
from vaelab.studies.spec import StudySpec, builtin_studies, load_study
from vaelab.studies.tracking import parse_tracking
from vaelab.studies.view import open_study


class Executor(str, Enum):
    local = "local"
    ray = "ray"


def _list_studies() -> None:
    for key, path in builtin_studies().items():
        spec = load_study(path)
        scales = ", ".join(["full", *spec.scales])
        typer.echo(f"{key:<12} {spec.title}  (document {spec.document or '-'}; scales: {scales})")


def _fail_unfinished(folder: Path, planned: int) -> None:
    """Exit status 1 when a run did not finish: the report is written and says why; the status says it to scripts."""
    failed = [r["run"] for r in read_results(folder) if r.get("status") != "finished"]
    if failed:
        fail(f"{len(failed)} of {planned} runs did not finish ({', '.join(failed[:5])}{', ...' if len(failed) > 5 else ''}); "
             "the report lists why; --retry-failed trains them again", code=1)


@app.command()
def study(name: Optional[str] = typer.Argument(None, help="A built-in study (see --list) or a study YAML file."),
          scale: str = typer.Option("full", help="full (the document's own setting) or a smaller scale the study defines, e.g. small, tiny."),
          out: Path = typer.Option(Path("studies"), help="Output directory; the study goes to OUT/NAME/."),
          executor: Executor = typer.Option(Executor.local, help="local (parallel processes) or ray."),
          workers: Optional[int] = typer.Option(None, help="Local executor: runs at once (default: one per core)."),
          address: Optional[str] = typer.Option(None, help="Ray: the address of an existing cluster (default: start a local Ray)."),
          track: Optional[str] = typer.Option(None, help="Send each run's metrics to 'tensorboard' or 'mlflow'."),
          track_uri: Optional[str] = typer.Option(None, help="TensorBoard log dir or MLflow tracking URI (default: inside the study folder)."),
          retry_failed: bool = typer.Option(False, "--retry-failed", help="Train runs that failed before again."),
          vectorize: bool = typer.Option(True, "--vectorize/--no-vectorize", help="Train runs that differ only in seed together as one vectorised model (default on)."),
          list_: bool = typer.Option(False, "--list", help="List the built-in studies and their scales, then exit."),
          print_runs: bool = typer.Option(False, "--print-runs", help="Print the runs the study would train, then exit."),
          progress: Optional[bool] = progress_option(),
          ):
    """Run a study: a grid of runs and the analyses that compare them, ending in OUT/NAME/report.html.

    Re-running skips finished runs and resumes interrupted ones."""
    if list_:
        _list_studies()
        return
    if name is None:
        fail("give a study name or file, e.g. `vaelab study latent-dim --scale small`; --list shows the built-in ones")
    spec: StudySpec = load_study(name).scaled(scale)
    runs = spec.expand()
    if print_runs:
        for r in runs:
            typer.echo(f"{r.name}  epochs {r.config.train.epochs}  {r.coordinates()}")
        return
    require_datasets(spec.name, {r.config.data.name for r in runs})  # before anything is started or printed
    ex = make_executor(executor.value, workers=workers, address=address, cpus_per_run=spec.cpus_per_run,
                       gpus_per_run=spec.gpus_per_run)
    tracking = parse_tracking(track, track_uri, study_dir(out, spec))
    err(f"study {spec.name} ({scale}): {len(runs)} runs on the {ex.name} executor -> {study_dir(out, spec)}")
    try:
        folder = run_study(spec, out, executor=ex, progress=progress, tracking=tracking, retry_failed=retry_failed,
                           vectorize=vectorize, log=err)
    except (KeyboardInterrupt, RunInterrupted):  # running trainings checkpointed at a step boundary
        fail(f"interrupted; finished runs are kept and running ones checkpointed; run the same command again to "
             f"continue ({study_dir(out, spec)})", code=130)
    typer.echo(f"results: {folder / 'results.csv'}")
    typer.echo(f"report: {folder / 'report.html'}")
    _fail_unfinished(folder, len(runs))


@app.command()
def report(folder: Path = typer.Argument(..., help="A study folder (OUT/NAME).")):
    """Write (or rewrite) FOLDER/report.html from the study's runs and analyses."""
    typer.echo(f"report: {write_report(folder)}")


@app.command("reproduction")
def reproduction_cmd(folder: Path = typer.Argument(..., help="A finished study folder (OUT/NAME)."),
                     to: Path = typer.Option(Path("docs/reproductions"), "--to",
                                             help="The folder of reproductions (a page per study, and an index).")):
    """Keep a finished study as a reproduction: a page with its scorecard, findings and figures.

    Writes TO/<document>-<study>/README.md with the scorecard, findings and figures (PNG), and how the study was made
    (commands, machine, wall time, peak memory, vaelab version); rewrites TO/README.md, the index."""
    typer.echo(f"reproduction: {write_reproduction(folder, to)}")


@app.command("scorecard")
def scorecard_cmd(folder: Path = typer.Argument(..., help="A study folder (OUT/NAME)."),
                  as_json: bool = json_option("the outcomes")):
    """Check the document's claims against a study's runs: held, did not hold, or inconclusive.

    Per claim: the document's figure or number, vaelab's measurement with its 95% interval over seeds, and the
    outcome (held, did not hold, or inconclusive and why)."""
    view = open_study(folder)
    outcomes = scorecard(folder, view)
    if as_json:
        typer.echo(json.dumps([o.to_json() for o in outcomes], indent=2))
        return
    typer.echo(render_text(outcomes, view, width=shutil.get_terminal_size((110, 24)).columns))
