"""Measuring a trained model: `vaelab analyze` and `vaelab diagnose`."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Optional

import typer

from vaelab.analysis import ANALYSES
from vaelab.analysis import analyze as run_all
from vaelab.analysis import diagnose as run_diagnosis
from vaelab.analysis.adapters import TorchOptions
from vaelab.analysis.framework.registry import declaration, parse_names, split_params, type_name
from vaelab.analysis.framework.runner import _jsonable
from vaelab.cli.base import app, err, fail, json_option
from vaelab.cli.run_options import Device
from vaelab.cli.subjects import (clamp_output_option, data_option, decoder_output_option, device_option,
                                 diffusers_option, gaussian_std_option, input_range_option, likelihood_option,
                                 model_option, open_subject, out_option, parse_range, pythae_option)


def _parse_settings(items: Optional[list[str]]) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            fail(f"--set {item!r} is not of the form KEY=VALUE (e.g. --set samples=5000 or --set likelihood.samples=5000)")
        out[key.strip()] = value.strip()
    return out


def _list_analyses() -> None:
    for a in ANALYSES.values():
        fields = a.params_model().model_fields
        params = ", ".join(f"{k}: {type_name(f.annotation)} = {f.default}" for k, f in fields.items())
        columns = ", ".join(h.column for h in a.headline)
        typer.echo(f"{a.name:<14} {a.summary}\n{'':<14} params: {params}"
                   + (f"\n{'':<14} headline: {columns}" if columns else ""))


@app.command()
def analyze(run: Optional[Path] = typer.Argument(None, help="The run directory (or give a model with --model, "
                                                           "--diffusers or --pythae, and --data)."),
            model: Optional[str] = model_option(), diffusers: Optional[Path] = diffusers_option(),
            pythae: Optional[Path] = pythae_option(), data: Optional[str] = data_option(),
            input_range: str = input_range_option(), likelihood: Optional[str] = likelihood_option(),
            decoder_output: Optional[str] = decoder_output_option(), gaussian_std: float = gaussian_std_option(),
            clamp_output: bool = clamp_output_option(), out: Optional[Path] = out_option(),
            only: Optional[str] = typer.Option(None, "--only", help="Comma-separated analyses (default: all); see --list."),
            settings: Optional[list[str]] = typer.Option(None, "--set", help="KEY=VALUE parameter, e.g. samples=5000 or likelihood.samples=5000 (repeatable)."),
            device: Device = device_option(),  # type: ignore[valid-type]
            epoch: Optional[int] = typer.Option(None, help="Analyse this checkpoint epoch instead of the newest."),
            snapshot: Optional[int] = typer.Option(None, help="Analyse this snapshot epoch instead of the newest checkpoint."),
            list_: bool = typer.Option(False, "--list", help="List the analyses and their parameters, then exit."),
            as_json: bool = json_option("the results")):
    """Measure a trained model's latent space; writes RUN/analysis/NAME.json and RUN/figures/NAME-*.png|svg (for a
    --model/--diffusers/--pythae model, in --out DIR)."""
    if list_:
        _list_analyses()
        return
    if run is None and model is None and diffusers is None and pythae is None:
        fail("give a run directory, e.g. `vaelab analyze runs/my-run`, a model (--model FILE.py:FACTORY, "
             "--diffusers DIR or --pythae DIR, with --data NAME), or --list to see the analyses")
    names = parse_names(only)
    per = _parse_settings(settings)
    split_params(names, per)  # reject bad --set before loading anything
    options = TorchOptions(parse_range(input_range), likelihood, decoder_output, gaussian_std, clamp_output)
    subject = open_subject(run, model, diffusers, pythae, data, options, out, device, epoch, snapshot)
    results = run_all(subject, names, per, progress=err)
    if as_json:
        typer.echo(json.dumps({k: _jsonable(v.to_json()) if v else None for k, v in results.items()}, indent=2))
        return
    for name, r in results.items():
        typer.echo(f"{name}: " + ("skipped (does not apply to this model)" if r is None else
                                  f"{subject.out_dir / 'analysis' / (name + '.json')}, {len(r.figures) // 2} figures"))
        if r is not None:
            for line in declaration(name).summary_lines(r.data, r.requested):
                typer.echo(f"    {line}")


@app.command()
def diagnose(run: Optional[Path] = typer.Argument(None, help="The run directory (or give a model with --model, "
                                                            "--diffusers or --pythae, and --data)."),
             model: Optional[str] = model_option(), diffusers: Optional[Path] = diffusers_option(),
             pythae: Optional[Path] = pythae_option(), data: Optional[str] = data_option(),
             input_range: str = input_range_option(), likelihood: Optional[str] = likelihood_option(),
             decoder_output: Optional[str] = decoder_output_option(), gaussian_std: float = gaussian_std_option(),
             clamp_output: bool = clamp_output_option(), out: Optional[Path] = out_option(),
             quick: bool = typer.Option(False, "--quick", help="Fewer samples (about 4x faster, noisier numbers)."),
             device: Device = device_option(),  # type: ignore[valid-type]
             seed: int = typer.Option(0, help="Seed of every sampler."),
             as_json: bool = json_option("the diagnosis")):
    """Why does this model generate badly (or well)? Measures latent usage, the prior/posterior gap, over-fitting and
    sample quality per sampler; prints a table and a verdict; writes RUN/analysis/diagnosis.json and figures (for a
    --model/--diffusers/--pythae model, in --out DIR)."""
    options = TorchOptions(parse_range(input_range), likelihood, decoder_output, gaussian_std, clamp_output)
    subject = open_subject(run, model, diffusers, pythae, data, options, out, device)
    result = run_diagnosis(subject, quick=quick, seed=seed, progress=err)
    if as_json:
        typer.echo(json.dumps(_jsonable(result.to_json()), indent=2))
        return
    table = result.data["table"]
    typer.echo(f"diagnosis of {run or subject.name}  ({subject.out_dir / 'analysis' / 'diagnosis.json'})")
    width = max(len(k) for k in table)
    for key, value in table.items():
        shown = "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
        typer.echo(f"  {key:<{width}}  {shown}")
    typer.echo("")
    latent = subject.source.get("latent")  # which latent the numbers are about (a diffusers VAE's scaled one)
    for sentence in [*result.data["verdict"], *([latent] if latent else [])]:
        typer.echo(textwrap.fill(sentence, width=100, initial_indent="  ", subsequent_indent="    "))
