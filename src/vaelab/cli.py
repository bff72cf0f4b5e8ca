"""The `vaelab` command. Thin: parses, calls the library, prints. Heavy imports happen inside commands."""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Train variational autoencoders and measure what their latent space is doing.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Datasets: list, fetch (with checksums), info.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def printable(message: str) -> str:
    """``message`` on one line: control characters (newlines, NEL, NUL, ... from user input) shown escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(message))


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {printable(message)}", err=True)
    raise typer.Exit(code)


def _err(msg: str) -> None:
    typer.echo(msg, err=True)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


# --- data ------------------------------------------------------------------------------------------
@data_app.command("list")
def data_list(root: Optional[Path] = typer.Option(None, help="Data directory (default $VAELAB_DATA or ~/.cache/vaelab).")):
    """Show every registered dataset with its size and whether it is present."""
    from vaelab.data import DATASETS, data_root, is_present

    typer.echo(f"{'name':<15}{'image':<9}{'train':>7}{'test':>7}  {'present':<8} description")
    for spec in DATASETS.values():
        present = "embedded" if spec.embedded else ("yes" if is_present(spec.name, root) else "no")
        shape = "x".join(map(str, spec.image_shape[1:]))
        typer.echo(f"{spec.name:<15}{shape:<9}{spec.n_train:>7}{spec.n_test:>7}  {present:<8} {spec.description}")
    typer.echo(f"data directory: {data_root(root)}")


@data_app.command("fetch")
def data_fetch(name: str = typer.Argument(..., help="digits, mnist or fashion-mnist."),
               root: Optional[Path] = typer.Option(None, help="Data directory (default $VAELAB_DATA or ~/.cache/vaelab)."),
               force: bool = typer.Option(False, "--force", help="Delete and fetch again even if the files verify."),
               offline: bool = typer.Option(False, "--offline", help="Skip the internet mirrors; use offline sources only.")):
    """Download or copy a dataset's files, verify each by checksum, and put them in place atomically."""
    from vaelab.data import fetch_dataset

    fetch_dataset(name, root, force=force, offline=offline or None, log=_err)


@data_app.command("info")
def data_info(name: str = typer.Argument(..., help="digits, mnist or fashion-mnist."),
              root: Optional[Path] = typer.Option(None, help="Data directory.")):
    """Show a dataset's files, checksums, sources and presence."""
    from vaelab.data import data_root, dataset_spec, is_present
    from vaelab.data.sources import sources_for

    spec = dataset_spec(name)
    typer.echo(f"{spec.name}: {spec.description}")
    typer.echo(f"  images {'x'.join(map(str, spec.image_shape))}, train {spec.n_train}, test {spec.n_test}, classes {spec.n_classes}")
    if spec.embedded:
        typer.echo("  embedded in scikit-learn: always present")
        return
    folder = data_root(root) / spec.name
    typer.echo(f"  folder {folder} ({'present' if is_present(name, root) else 'missing: run `vaelab data fetch ' + name + '`'})")
    for f in spec.files.values():
        typer.echo(f"  {f.name}  sha256(content) {f.raw_sha256}")
    typer.echo("  sources, in order: " + "; ".join(label for label, _ in sources_for(spec, offline=False)))


# --- train -----------------------------------------------------------------------------------------
@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="A YAML config; flags below override its values."),
    dataset: Optional[str] = typer.Option(None, help="digits (default), mnist or fashion-mnist."),
    pixels: Optional[str] = typer.Option(None, help="continuous | dynamic (default) | fixed binarization."),
    train_size: Optional[int] = typer.Option(None, help="Use only the first N training images."),
    arch: Optional[str] = typer.Option(None, help="MLP as the documents write it: INPUT-HIDDEN-...-LATENT, e.g. 784-256-32-8-2."),
    network: Optional[str] = typer.Option(None, help="mlp (default) | conv | conv-spatial."),
    hidden: Optional[str] = typer.Option(None, help="MLP hidden widths, comma-separated (default 256,256)."),
    latent_dim: Optional[int] = typer.Option(None, help="Latent size for mlp/conv (default 16)."),
    conv_channels: Optional[str] = typer.Option(None, help="Channels of the stride-2 conv layers (default 32,64)."),
    latent_channels: Optional[int] = typer.Option(None, help="conv-spatial: latent channels C of C x H x W (default 16)."),
    activation: Optional[str] = typer.Option(None, help="relu (default) | tanh | elu | leaky_relu | softplus | gelu | silu | sigmoid."),
    posterior: Optional[str] = typer.Option(None, help="diagonal (default) | isotropic | deterministic."),
    prior: Optional[str] = typer.Option(None, help="standard (default: N(0, I)) | vamp (VampPrior) | mog (learned mixture of Gaussians)."),
    prior_components: Optional[int] = typer.Option(None, help="vamp/mog: number of components K (default 500)."),
    likelihood: Optional[str] = typer.Option(None, help="bernoulli (default) | gaussian | continuous-bernoulli."),
    objective: Optional[str] = typer.Option(None, help="elbo (default) | iwae | renyi | vr-max | deterministic."),
    samples: Optional[int] = typer.Option(None, "--samples", "-k", help="K latent samples per input (default 1)."),
    alpha: Optional[float] = typer.Option(None, help="renyi: alpha of the VR bound (1 = ELBO, 0 = IWAE)."),
    beta: Optional[float] = typer.Option(None, help="elbo: KL weight (default 1)."),
    warmup: Optional[int] = typer.Option(None, help="elbo: KL warm-up epochs (default 0)."),
    penalty: Optional[float] = typer.Option(None, help="deterministic: quadratic penalty weight (default 1)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (default 20)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default 128)."),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate (default 1e-3)."),
    seed: Optional[int] = typer.Option(None, help="Seed for initialisation, batches and noise (default 0)."),
    device: Optional[Device] = typer.Option(None, help="auto (default: cuda when present) | cpu | cuda."),
    snapshot_every: Optional[int] = typer.Option(None, help="Keep weights every N epochs for analyses over training (default 0 = off)."),
    precision: Optional[str] = typer.Option(None, help="auto (default: whichever of fp32 and bf16 a probe of this machine finds faster and accurate), fp32, or bf16 (matrix products of training steps in bf16 autocast)."),
    compile: Optional[str] = typer.Option(None, "--compile", help="auto (default: compile the step when enough training is left and it measures faster), on, or off (torch.compile of the step's objective and backward)."),
    name: Optional[str] = typer.Option(None, help="Run name: the folder under --out (default 'run')."),
    out: Path = typer.Option(Path("runs"), help="Output directory holding run folders."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its newest valid checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing run of this name and start again."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config as YAML and exit."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on a terminal)."),
):
    """Train a VAE from a YAML config and/or flags; writes OUT/NAME/ (config, metrics, checkpoints)."""
    from vaelab.config import RunConfig, override

    base = RunConfig.load(config) if config else RunConfig()

    def widths(text: Optional[str], flag: str):
        if text is None:
            return None
        try:
            return [int(w) for w in text.split(",") if w.strip()]
        except ValueError:
            _fail(f"--{flag} {text!r} is not a comma-separated list of integers, e.g. 256,256")

    updates = {
        "name": name, "data.name": dataset, "data.pixels": pixels, "data.train_size": train_size,
        "model.arch": arch, "model.network": network, "model.hidden": widths(hidden, "hidden"),
        "model.latent_dim": latent_dim, "model.conv_channels": widths(conv_channels, "conv-channels"),
        "model.latent_channels": latent_channels, "model.activation": activation, "model.posterior": posterior,
        "model.prior": prior, "model.prior_components": prior_components,
        "model.likelihood": likelihood, "objective.name": objective, "objective.samples": samples,
        "objective.alpha": alpha, "objective.beta": beta, "objective.warmup_epochs": warmup,
        "objective.penalty": penalty, "train.epochs": epochs, "train.batch_size": batch_size, "train.lr": lr,
        "train.seed": seed, "train.device": device.value if device else None, "train.snapshot_every": snapshot_every,
        "train.precision": precision, "train.compile": compile,
    }
    cfg = override(base, {k: v for k, v in updates.items() if v is not None})
    if print_config:
        typer.echo(cfg.to_yaml(), nl=False)
        return
    _run_training(lambda: __import__("vaelab.trainer", fromlist=["train"]).train(
        cfg, out, resume=resume, overwrite=overwrite, progress=progress))


def _run_training(start) -> None:
    from vaelab.errors import RunInterrupted, TrainingDiverged

    try:
        run = start()
    except (TrainingDiverged, RunInterrupted) as exc:
        _fail(str(exc), code=exc.exit_code)
    summary = run.summary()
    last = summary["last"]
    typer.echo(f"run: {run.path}")
    typer.echo(f"  {summary['epochs_done']} epochs in {summary['seconds']:.1f}s; test loss {last.get('test_loss', float('nan')):.3f} nats"
               f" (reconstruction {-last.get('test_recon', float('nan')):.3f}, KL {last.get('test_kl', float('nan')):.3f})")
    kl = summary.get("kl_per_dim")
    if kl:
        typer.echo(f"  active latent dimensions (KL > {kl['threshold']} nats): {kl['active']} of {kl['dims']}")


@app.command("resume")
def resume_cmd(run: Path = typer.Argument(..., help="The run directory, e.g. runs/my-run."),
               epochs: Optional[int] = typer.Option(None, help="Train to this many epochs in total (default: as configured)."),
               progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar.")):
    """Continue an interrupted run from its newest valid checkpoint."""
    from vaelab.trainer import resume

    _run_training(lambda: resume(run, epochs=epochs, progress=progress))


@app.command()
def info(run: Path = typer.Argument(..., help="The run directory."),
         as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON.")):
    """Summarise a run: status, config, last metrics, active dimensions, checkpoints."""
    from vaelab.runs import Run

    r = Run(run)
    s = r.summary()
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    c = r.config
    st = s["status"]
    typer.echo(f"run {r.path}  [{st.get('state')}]" + (f"  reason: {st['reason']}" if st.get("reason") else ""))
    arch = c.model.arch or (f"{c.model.network} hidden {c.model.hidden}" if c.model.network == "mlp" else
                            f"{c.model.network} channels {c.model.conv_channels}")
    typer.echo(f"  data {c.data.name} ({c.data.pixels})   model {arch}, latent {c.model.latent_dim if c.model.network != 'conv-spatial' else 'C=' + str(c.model.latent_channels)}, "
               f"{c.model.posterior} posterior, {c.model.likelihood} likelihood, "
               + ("N(0, I) prior" if c.model.prior == "standard" else f"{c.model.prior} prior (K={c.model.prior_components})"))
    obj = c.objective
    extra = f", alpha {obj.alpha}" if obj.alpha is not None else ""
    typer.echo(f"  objective {obj.name} (K={obj.samples}{extra})   epochs {s['epochs_done']}/{s['epochs_planned']}, {s['seconds']:.1f}s")
    last = s["last"]
    if last:
        typer.echo(f"  test loss {last['test_loss']:.3f}  train loss {last['train_loss']:.3f}  "
                   f"test reconstruction {-last['test_recon']:.3f}  test KL {last['test_kl']:.3f}")
    kl = s.get("kl_per_dim")
    if kl:
        typer.echo(f"  active dimensions (KL > {kl['threshold']}): {kl['active']}/{kl['dims']}; KL per dim min {kl['min']:.3g} "
                   f"median {kl['median']:.3g} max {kl['max']:.3g}")
    typer.echo(f"  checkpoints at epochs {s['checkpoints']}" + (f"; snapshots {s['snapshots']}" if s["snapshots"] else ""))
    from vaelab.analysis.framework.runner import saved_results

    for decl, result, params in saved_results(r.path):
        typer.echo(f"  {decl.name}: " + "\n    ".join(decl.summary_lines(result, params) or ["(no headline numbers)"]))


# --- analysis --------------------------------------------------------------------------------------
def _parse_settings(items: Optional[list[str]]) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            _fail(f"--set {item!r} is not of the form KEY=VALUE (e.g. --set samples=5000 or --set likelihood.samples=5000)")
        out[key.strip()] = value.strip()
    return out


def _open_subject(run: Path, device: Device, epoch: Optional[int], snapshot: Optional[int]):
    from vaelab.analysis import from_run
    from vaelab.trainer import resolve_device

    subject = from_run(run, device=str(resolve_device(device.value)), epoch=epoch, snapshot=snapshot)
    src = subject.source
    where = f"snapshot {src['snapshot']}" if "snapshot" in src else f"checkpoint of epoch {src.get('checkpoint_epoch')}"
    note = "" if src.get("run_state") == "finished" else f" (run is {src.get('run_state')}; using its last complete checkpoint)"
    _err(f"analysing {run} at its {where}{note}")
    return subject


@app.command()
def analyze(run: Optional[Path] = typer.Argument(None, help="The run directory."),
            only: Optional[str] = typer.Option(None, "--only", help="Comma-separated analyses (default: all); see --list."),
            settings: Optional[list[str]] = typer.Option(None, "--set", help="KEY=VALUE parameter, e.g. samples=5000 or likelihood.samples=5000 (repeatable)."),
            device: Device = typer.Option(Device.cpu, help="Where to run the model."),
            epoch: Optional[int] = typer.Option(None, help="Analyse this checkpoint epoch instead of the newest."),
            snapshot: Optional[int] = typer.Option(None, help="Analyse this snapshot epoch instead of the newest checkpoint."),
            list_: bool = typer.Option(False, "--list", help="List the analyses and their parameters, then exit."),
            as_json: bool = typer.Option(False, "--json", help="Print the results as JSON.")):
    """Measure a trained model's latent space; writes RUN/analysis/NAME.json and RUN/figures/NAME-*.png|svg."""
    from vaelab.analysis.framework.registry import ANALYSES, declaration, parse_names, split_params, type_name
    from vaelab.analysis.framework.runner import _jsonable, analyze as run_all

    if list_:
        for a in ANALYSES.values():
            fields = a.params_model().model_fields
            params = ", ".join(f"{k}: {type_name(f.annotation)} = {f.default}" for k, f in fields.items())
            columns = ", ".join(h.column for h in a.headline)
            typer.echo(f"{a.name:<14} {a.summary}\n{'':<14} params: {params}"
                       + (f"\n{'':<14} headline: {columns}" if columns else ""))
        return
    if run is None:
        _fail("give a run directory, e.g. `vaelab analyze runs/my-run`, or --list to see the analyses")
    names = parse_names(only)
    per = _parse_settings(settings)
    split_params(names, per)  # reject bad --set before loading anything
    subject = _open_subject(run, device, epoch, snapshot)
    results = run_all(subject, names, per, progress=_err)
    if as_json:
        typer.echo(json.dumps({k: _jsonable(v.to_json()) if v else None for k, v in results.items()}, indent=2))
        return
    for name, r in results.items():
        typer.echo(f"{name}: " + ("skipped (does not apply to this model)" if r is None else
                                  f"{run / 'analysis' / (name + '.json')}, {len(r.figures) // 2} figures"))
        if r is not None:
            for line in declaration(name).summary_lines(r.data, r.requested):
                typer.echo(f"    {line}")


@app.command()
def diagnose(run: Path = typer.Argument(..., help="The run directory."),
             quick: bool = typer.Option(False, "--quick", help="Fewer samples (about 4x faster, noisier numbers)."),
             device: Device = typer.Option(Device.cpu, help="Where to run the model."),
             seed: int = typer.Option(0, help="Seed of every sampler."),
             as_json: bool = typer.Option(False, "--json", help="Print the diagnosis as JSON.")):
    """Why does this model generate badly (or well)? Measures latent usage, the prior/posterior gap, over-fitting and
    sample quality per sampler; prints a table and a verdict; writes RUN/analysis/diagnosis.json and figures."""
    from vaelab.analysis import diagnose as run_diagnosis
    from vaelab.analysis.framework.runner import _jsonable

    subject = _open_subject(run, device, None, None)
    result = run_diagnosis(subject, quick=quick, seed=seed, progress=_err)
    if as_json:
        typer.echo(json.dumps(_jsonable(result.to_json()), indent=2))
        return
    table = result.data["table"]
    typer.echo(f"diagnosis of {run}  ({run / 'analysis' / 'diagnosis.json'})")
    width = max(len(k) for k in table)
    for key, value in table.items():
        shown = "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
        typer.echo(f"  {key:<{width}}  {shown}")
    typer.echo("")
    import textwrap

    for sentence in result.data["verdict"]:
        typer.echo(textwrap.fill(sentence, width=100, initial_indent="  ", subsequent_indent="    "))


# --- studies and reports ---------------------------------------------------------------------------
class Executor(str, Enum):
    local = "local"
    ray = "ray"


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
          progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bar (default: on a terminal)."),
          ):
    """Run a study: a grid of runs and the analyses that compare them, ending in OUT/NAME/report.html.
    Re-running skips finished runs and resumes interrupted ones."""
    from vaelab.studies.spec import builtin_studies, load_study

    if list_:
        for key, path in builtin_studies().items():
            spec = load_study(path)
            scales = ", ".join(["full", *spec.scales])
            typer.echo(f"{key:<12} {spec.title}  (document {spec.document or '-'}; scales: {scales})")
        return
    if name is None:
        _fail("give a study name or file, e.g. `vaelab study latent-dim --scale small`; --list shows the built-in ones")
    spec = load_study(name).scaled(scale)
    runs = spec.expand()
    if print_runs:
        for r in runs:
            typer.echo(f"{r.name}  epochs {r.config.train.epochs}  {r.coordinates()}")
        return
    from vaelab.errors import RunInterrupted
    from vaelab.studies.pools import make_executor
    from vaelab.studies.orchestrator import require_datasets, run_study, study_dir
    from vaelab.studies.results import read_results
    from vaelab.studies.tracking import parse_tracking

    require_datasets(spec.name, {r.config.data.name for r in runs})  # before anything is started or printed

    ex = make_executor(executor.value, workers=workers, address=address, cpus_per_run=spec.cpus_per_run,
                       gpus_per_run=spec.gpus_per_run)
    tracking = parse_tracking(track, track_uri, study_dir(out, spec))
    _err(f"study {spec.name} ({scale}): {len(runs)} runs on the {ex.name} executor -> {study_dir(out, spec)}")
    try:
        folder = run_study(spec, out, executor=ex, progress=progress, tracking=tracking, retry_failed=retry_failed,
                           vectorize=vectorize, log=_err)
    except (KeyboardInterrupt, RunInterrupted):  # running trainings checkpointed at a step boundary
        _fail(f"interrupted; finished runs are kept and running ones checkpointed; run the same command again to "
              f"continue ({study_dir(out, spec)})", code=130)
    typer.echo(f"results: {folder / 'results.csv'}")
    typer.echo(f"report: {folder / 'report.html'}")
    failed = [r["run"] for r in read_results(folder) if r.get("status") != "finished"]
    if failed:  # the report is written and says why; the exit status says it to scripts
        _fail(f"{len(failed)} of {len(runs)} runs did not finish ({', '.join(failed[:5])}{', ...' if len(failed) > 5 else ''}); "
              "the report lists why; --retry-failed trains them again", code=1)


@app.command()
def report(folder: Path = typer.Argument(..., help="A study folder (OUT/NAME).")):
    """Write (or rewrite) FOLDER/report.html from the study's runs and analyses."""
    from vaelab.report.html import write_report

    typer.echo(f"report: {write_report(folder)}")


@app.command("reproduction")
def reproduction_cmd(folder: Path = typer.Argument(..., help="A finished study folder (OUT/NAME)."),
                     to: Path = typer.Option(Path("docs/reproductions"), "--to",
                                             help="The folder of reproductions (a page per study, and an index).")):
    """Keep a finished study as a reproduction: TO/<document>-<study>/README.md with its scorecard, findings and
    figures (PNG), and how it was made (commands, machine, wall time, peak memory, vaelab version); rewrites
    TO/README.md, the index."""
    from vaelab.report.reproduction import write_reproduction

    typer.echo(f"reproduction: {write_reproduction(folder, to)}")


@app.command("scorecard")
def scorecard_cmd(folder: Path = typer.Argument(..., help="A study folder (OUT/NAME)."),
                  as_json: bool = typer.Option(False, "--json", help="Print the outcomes as JSON.")):
    """Check the document's claims against a study's runs: per claim the document's figure or number, vaelab's
    measurement with its 95% interval over seeds, and the outcome (held, did not hold, or inconclusive and why)."""
    import shutil

    from vaelab.studies.claims import open_study, render_text, scorecard

    view = open_study(folder)
    outcomes = scorecard(folder, view)
    if as_json:
        typer.echo(json.dumps([o.to_json() for o in outcomes], indent=2))
        return
    typer.echo(render_text(outcomes, view, width=shutil.get_terminal_size((110, 24)).columns))


def _given_value(param) -> str:
    """' (got VALUE)' for the option ``param`` as it appears on the command line, or ''."""
    for opt in getattr(param, "opts", None) or []:
        for i, arg in enumerate(sys.argv):
            if arg == opt and i + 1 < len(sys.argv):
                return f" (got {sys.argv[i + 1]!r})"
            if arg.startswith(opt + "="):
                return f" (got {arg.split('=', 1)[1]!r})"
    return ""


OUT_OF_MEMORY = ("error: out of memory; analyses hold at most VAELAB_CODE_MEMORY_GB (default 1.0) GB of codes at once: "
                 "set it lower, or ask for fewer points or samples (`--quick`, `--set samples=...`)")


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2, never a traceback."""
    import warnings

    from typer import Abort

    try:  # typer >= 0.22 carries its own copy of click
        from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
    except ImportError:  # pragma: no cover - older typer on the real click
        from click.exceptions import ClickException, UsageError
        NoArgsIsHelpError = ()

    from vaelab.errors import VaelabError

    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"  # one line each
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `vaelab` or `vaelab data` alone: the help text
        typer.echo(exc.ctx.get_help())
        sys.exit(0)
    except UsageError as exc:  # a bad flag or argument value: click's message, on one line, with the value given
        where = exc.ctx.command_path if exc.ctx else "vaelab"
        message = " ".join(exc.format_message().replace("Value error, ", "").split())
        given = _given_value(getattr(exc, "param", None))
        typer.echo(printable(f"error: {message}{given} (see `{where} --help`)"), err=True)
        sys.exit(2)
    except ClickException as exc:
        typer.echo(printable(f"error: {' '.join(exc.format_message().split())}"), err=True)
        sys.exit(exc.exit_code)
    except Abort:
        typer.echo("error: aborted", err=True)
        sys.exit(130)
    except VaelabError as exc:
        typer.echo(f"error: {printable(exc)}", err=True)
        sys.exit(exc.exit_code)
    except MemoryError:
        typer.echo(OUT_OF_MEMORY, err=True)
        sys.exit(2)
    except RuntimeError as exc:  # PyTorch's allocator reports as RuntimeError
        if "allocate" not in str(exc) and "out of memory" not in str(exc):
            raise
        typer.echo(OUT_OF_MEMORY, err=True)
        sys.exit(2)
    except OSError as exc:  # a file system refusal that no vaelab layer named more precisely
        where = f"{exc.filename}: " if exc.filename else ""
        typer.echo(printable(f"error: {where}{exc.strerror or exc}"), err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
