"""Drawing from a fitted fix: `vaelab sample`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vaelab.analysis.samplers import SAVEABLE
from vaelab.analysis.samplers.fitted import (default_sampler, open_fix, write_grid, write_npz)
from vaelab.cli.base import app, err, fail


@app.command()
def sample(path: Path = typer.Argument(..., help="A run directory, a diagnosis output folder, or a saved fix's folder."),
           sampler: Optional[str] = typer.Option(None, "--sampler", help=f"One of {', '.join(SAVEABLE)} (default: "
                                                 "the diagnosis' best fix, else ex-post-gmm)."),
           n: int = typer.Option(64, "-n", min=1, help="How many samples."),
           out: Optional[Path] = typer.Option(None, "--out", help="Write the decoded images as one PNG grid."),
           npz: Optional[Path] = typer.Option(None, "--npz", help="Write latents (and images, when decoded) to .npz."),
           seed: int = typer.Option(0, help="Seed of the draws (the same seed, the same latents).")):
    """Sample from a fitted fix without refitting it: the one `vaelab diagnose` saved in RUN/fixes/, or,
    when a run has none, fit it now (said on stderr) and save it there. Decodes with the run's model."""
    name = sampler or default_sampler(path)
    if name not in SAVEABLE:
        fail(f"--sampler {name!r} is not a fitted sampler; choose one of {', '.join(SAVEABLE)}")
    if not path.exists():
        fail(f"{path} does not exist; give a run directory, a diagnosis output folder or a saved fix's folder")
    if out is None and npz is None:
        fail("nothing to write: give --out grid.png, --npz samples.npz, or both")
    fitted = open_fix(path, name, log=err)
    if out is not None and fitted.model is None:
        fail(f"{path} has no model to decode with (not a run directory); give --npz for the latents only")
    z = fitted.sample(n, seed)
    images = fitted.images(n, seed) if fitted.model is not None else None
    if out is not None:
        write_grid(images, out)
        typer.echo(f"{out}: {n} images from {name}")
    if npz is not None:
        write_npz(npz, z, images, fitted, seed)
        typer.echo(f"{npz}: latents {tuple(z.shape)}" + ("" if images is None else f", images {tuple(images.shape)}"))
