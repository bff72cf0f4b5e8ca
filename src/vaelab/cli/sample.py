"""Drawing from a fitted fix: `vaelab sample`."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from vaelab.analysis.adapters import SOURCE_FILE, ModelSource, TorchOptions
from vaelab.analysis.adapters.sources import absolute_where
from vaelab.analysis.samplers import SAVEABLE
from vaelab.analysis.samplers.fitted import default_sampler, open_fix, remembered_source, write_grid, write_npz
from vaelab.cli.base import app, err, fail
from vaelab.cli.run_options import Device
from vaelab.cli.subjects import (check_options, clamp_output_option, data_option, decoder_output_option,
                                 device_option, diffusers_option, gaussian_std_option, input_range_option,
                                 likelihood_option, model_option, parse_range, pythae_option)
from vaelab.trainer import resolve_device


def override(path: Path, given: dict[str, object], data: Optional[str],
             options: dict[str, object]) -> Optional[ModelSource]:
    """The model named on the command line (--model/--diffusers/--pythae, --data and the adapter options), each
    given value replacing the one PATH's model-source.json remembers; None when nothing was given."""
    if len(given) > 1:
        fail(f"give one model, not {' and '.join('--' + k for k in given)}")
    options = {k: v for k, v in options.items() if v is not None}
    if not given and data is None and not options:
        return None
    if (path / "config.yaml").is_file():
        named = [f"--{k.replace('_', '-')}" for k in [*given, *(["data"] if data else []), *options]]
        fail(f"{path} is a vaelab run, which decodes with its own model; {' and '.join(named)} "
             f"{'goes' if len(named) == 1 else 'go'} with the output folder of a "
             "--model/--diffusers/--pythae diagnosis or a saved fix")
    remembered = remembered_source(path)
    if not given and remembered is None:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in [*(["data"] if data else []), *options])
        fail(f"{flags} change how a remembered model is opened, but {path} remembers none; give the model with "
             "--model FILE.py:FACTORY, --diffusers DIR or --pythae DIR")
    if given:
        (kind, where), = given.items()
        if remembered is None and data is None:
            fail(f"--{kind} needs --data NAME, the dataset the model was measured on (see `vaelab data list`)")
        base = remembered if remembered is not None and remembered.kind == kind else None
        source = ModelSource(kind, absolute_where(kind, str(where)), data or remembered.data,
                             base.options if base is not None else TorchOptions())
    else:
        source = replace(remembered, data=data or remembered.data, origin=None)
    source = replace(source, options=replace(source.options, **options))
    check_options(source.options)
    return source


@app.command()
def sample(path: Path = typer.Argument(..., help="A run directory, a diagnosis output folder, or a saved fix's folder."),
           sampler: Optional[str] = typer.Option(None, "--sampler", help=f"One of {', '.join(SAVEABLE)} (default: "
                                                 "the diagnosis' best fix, else ex-post-gmm)."),
           n: int = typer.Option(64, "-n", min=1, help="How many samples."),
           out: Optional[Path] = typer.Option(None, "--out", help="Write the decoded images as one PNG grid."),
           npz: Optional[Path] = typer.Option(None, "--npz", help="Write latents (and images, when decoded) to .npz."),
           seed: int = typer.Option(0, help="Seed of the draws (the same seed, the same latents)."),
           model: Optional[str] = model_option(), diffusers: Optional[Path] = diffusers_option(),
           pythae: Optional[Path] = pythae_option(), data: Optional[str] = data_option(),
           input_range: Optional[str] = input_range_option(None), likelihood: Optional[str] = likelihood_option(),
           decoder_output: Optional[str] = decoder_output_option(),
           gaussian_std: Optional[float] = gaussian_std_option(None),
           clamp_output: Optional[bool] = clamp_output_option(None),
           device: Device = device_option()):  # type: ignore[valid-type]
    """Sample from a fitted fix without refitting it.

    The fix is the one `vaelab diagnose` saved in RUN/fixes/ (or OUT/fixes/), or, when there is none, fit it now (said on stderr) and save it there. Decodes with the run's model, or with the
    model a --model/--diffusers/--pythae diagnosis opened (OUT/model-source.json remembers how; the same options
    here open another)."""
    name = sampler or default_sampler(path)
    if name not in SAVEABLE:
        fail(f"--sampler {name!r} is not a fitted sampler; choose one of {', '.join(SAVEABLE)}")
    if not path.exists():
        fail(f"{path} does not exist; give a run directory, a diagnosis output folder or a saved fix's folder")
    if out is None and npz is None:
        fail("nothing to write: give --out grid.png, --npz samples.npz, or both")
    given = {k: v for k, v in (("model", model), ("diffusers", diffusers), ("pythae", pythae)) if v is not None}
    options = {"input_range": None if input_range is None else parse_range(input_range), "likelihood": likelihood,
               "decoder_output": decoder_output, "gaussian_std": gaussian_std, "clamp_output": clamp_output}
    source = override(path, given, data, options)
    fitted = open_fix(path, name, log=err, source=source, device=resolve_device(device.value))
    if out is not None and fitted.model is None:
        fail(f"{path} has no model to decode with (not a run directory, and no {SOURCE_FILE}); give the model "
             "with --model FILE.py:FACTORY, --diffusers DIR or --pythae DIR and --data NAME, or --npz for the "
             "latents only")
    z = fitted.sample(n, seed)
    images = fitted.images(n, seed) if fitted.model is not None else None
    if out is not None:
        write_grid(images, out)
        typer.echo(f"{out}: {n} images from {name}")
    if npz is not None:
        write_npz(npz, z, images, fitted, seed)
        typer.echo(f"{npz}: latents {tuple(z.shape)}" + ("" if images is None else f", images {tuple(images.shape)}"))
