"""Training runs: `vaelab train` and `vaelab resume`."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import typer

from vaelab import trainer
from vaelab.cli.base import app, fail, progress_option
from vaelab.cli.run_options import YAML_ONLY_HELP, Device, run_option, run_updates
from vaelab.config import RunConfig, override
from vaelab.errors import RunInterrupted, TrainingDiverged
from vaelab.runs import Run


@app.command(epilog=YAML_ONLY_HELP)
def train(
    config: Optional[Path] = typer.Argument(None, help="A YAML config; flags below override its values."),
    dataset: Optional[str] = run_option("dataset"),
    pixels: Optional[str] = run_option("pixels"),
    train_size: Optional[int] = run_option("train_size"),
    arch: Optional[str] = run_option("arch"),
    network: Optional[str] = run_option("network"),
    hidden: Optional[str] = run_option("hidden"),
    latent_dim: Optional[int] = run_option("latent_dim"),
    conv_channels: Optional[str] = run_option("conv_channels"),
    latent_channels: Optional[int] = run_option("latent_channels"),
    activation: Optional[str] = run_option("activation"),
    posterior: Optional[str] = run_option("posterior"),
    prior: Optional[str] = run_option("prior"),
    prior_components: Optional[int] = run_option("prior_components"),
    likelihood: Optional[str] = run_option("likelihood"),
    objective: Optional[str] = run_option("objective"),
    samples: Optional[int] = run_option("samples"),
    alpha: Optional[float] = run_option("alpha"),
    beta: Optional[float] = run_option("beta"),
    warmup: Optional[int] = run_option("warmup"),
    penalty: Optional[float] = run_option("penalty"),
    epochs: Optional[int] = run_option("epochs"),
    batch_size: Optional[int] = run_option("batch_size"),
    lr: Optional[float] = run_option("lr"),
    seed: Optional[int] = run_option("seed"),
    device: Optional[Device] = run_option("device"),  # type: ignore[valid-type]
    snapshot_every: Optional[int] = run_option("snapshot_every"),
    precision: Optional[str] = run_option("precision"),
    compile: Optional[str] = run_option("compile"),
    name: Optional[str] = run_option("name"),
    out: Path = typer.Option(Path("runs"), help="Output directory holding run folders."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its newest valid checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing run of this name and start again."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config as YAML and exit."),
    progress: Optional[bool] = progress_option(),
):
    """Train a VAE from a YAML config and/or flags; writes OUT/NAME/ (config, metrics, checkpoints)."""
    given = dict(locals())  # the flags as parsed; run_updates keeps the ones that set a config field
    base = RunConfig.load(config) if config else RunConfig()
    cfg = override(base, run_updates(given))
    if print_config:
        typer.echo(cfg.to_yaml(), nl=False)
        return
    _run_training(lambda: trainer.train(cfg, out, resume=resume, overwrite=overwrite, progress=progress))


def _run_training(start: Callable[[], Run]) -> None:
    try:
        run = start()
    except (TrainingDiverged, RunInterrupted) as exc:
        fail(str(exc), code=exc.exit_code)
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
               progress: Optional[bool] = progress_option("Progress bar.")):
    """Continue an interrupted run from its newest valid checkpoint."""
    _run_training(lambda: trainer.resume(run, epochs=epochs, progress=progress))
