"""Measuring a trained model: `vaelab analyze`, `vaelab diagnose`, and `vaelab info` (a run's summary with the
headline numbers of its saved analyses, or where a study stands)."""
from __future__ import annotations

import functools
import inspect
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from vaelab.analysis import ANALYSES, Subject
from vaelab.analysis import analyze as run_all
from vaelab.analysis import diagnose as run_diagnosis
from vaelab.analysis.adapters import TorchOptions
from vaelab.analysis.framework.registry import declaration, parse_names, split_params, type_name
from vaelab.analysis.framework.runner import _jsonable, saved_results
from vaelab.cli.base import app, err, fail, json_option
from vaelab.cli.run_options import Device
from vaelab.cli.subjects import (clamp_output_option, data_option, decoder_output_option, device_option,
                                 diffusers_option, gaussian_std_option, input_range_option, likelihood_option,
                                 model_option, open_subject, out_option, parse_range, pythae_option)
from vaelab.report import write_diagnosis_page
from vaelab.runs import Run
from vaelab.studies.progress import standing_lines, study_standing


@dataclass(frozen=True)
class Measured:
    """The model a command measures, as its flags name it: a run directory, or one model vaelab did not train
    (--model, --diffusers or --pythae, on --data) with the adapter's options; and where to run it."""
    run: Optional[Path]
    model: Optional[str]
    diffusers: Optional[Path]
    pythae: Optional[Path]
    data: Optional[str]
    input_range: str
    likelihood: Optional[str]
    decoder_output: Optional[str]
    gaussian_std: float
    clamp_output: bool
    out: Optional[Path]
    device: Device  # type: ignore[valid-type]

    def named(self) -> bool:
        """Whether a run directory or a model was given at all."""
        return any(v is not None for v in (self.run, self.model, self.diffusers, self.pythae))

    def open(self, epoch: Optional[int] = None, snapshot: Optional[int] = None) -> Subject:
        """The subject: the run (at a checkpoint or snapshot epoch, default its newest) or the model on its data."""
        options = TorchOptions(parse_range(self.input_range), self.likelihood, self.decoder_output, self.gaussian_std,
                               self.clamp_output)
        return open_subject(self.run, self.model, self.diffusers, self.pythae, self.data, options, self.out,
                            self.device, epoch, snapshot)


# Measured's fields as command-line parameters (type, typer declaration), in the order --help lists them
MEASURED_FLAGS: dict[str, tuple[Any, Any]] = {
    "run": (Optional[Path], typer.Argument(None, help="The run directory (or give a model with --model, --diffusers "
                                                      "or --pythae, and --data).")),
    "model": (Optional[str], model_option()), "diffusers": (Optional[Path], diffusers_option()),
    "pythae": (Optional[Path], pythae_option()), "data": (Optional[str], data_option()),
    "input_range": (str, input_range_option()), "likelihood": (Optional[str], likelihood_option()),
    "decoder_output": (Optional[str], decoder_output_option()), "gaussian_std": (float, gaussian_std_option()),
    "clamp_output": (bool, clamp_output_option()), "out": (Optional[Path], out_option()),
    "device": (Device, device_option()),
}


def measuring(command: Callable[..., None]) -> Callable[..., None]:
    """``command(measured: Measured, OWN...)`` as the typer command ``command(RUN, --model, ..., --device, OWN...)``:
    the flags of MEASURED_FLAGS are declared once, for every command that measures a model."""
    own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]
    params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
              for name, (kind, default) in MEASURED_FLAGS.items()]
    params += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

    @functools.wraps(command)
    def with_flags(**given: Any) -> None:
        return command(Measured(**{name: given.pop(name) for name in MEASURED_FLAGS}), **given)

    with_flags.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    with_flags.__annotations__ = {p.name: p.annotation for p in params}
    return with_flags


def _parse_settings(items: Optional[list[str]]) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            fail(f"--set {item!r} is not of the form KEY=VALUE (e.g. --set samples=5000 or "
                 "--set likelihood.samples=5000)")
        out[key.strip()] = value.strip()
    return out


def features_option():
    return typer.Option(None, "--features", help="Feature space of sample quality and memorisation: classifier, "
                        "contrastive, MODULE:FUNCTION, inception:PATH or dinov2:PATH (default: the evaluation "
                        "classifier when the data has labels, the contrastive network when not).")


def _list_analyses() -> None:
    for a in ANALYSES.values():
        fields = a.params_model().model_fields
        params = ", ".join(f"{k}: {type_name(f.annotation)} = {f.default}" for k, f in fields.items())
        columns = ", ".join(h.column for h in a.headline)
        typer.echo(f"{a.name:<14} {a.summary}\n{'':<14} params: {params}"
                   + (f"\n{'':<14} headline: {columns}" if columns else ""))


@app.command()
@measuring
def analyze(measured: Measured,
            only: Optional[str] = typer.Option(None, "--only", help="Comma-separated analyses (default: all); see "
                                               "--list."),
            settings: Optional[list[str]] = typer.Option(None, "--set", help="KEY=VALUE parameter, e.g. samples=5000 "
                                                         "or likelihood.samples=5000 (repeatable)."),
            epoch: Optional[int] = typer.Option(None, help="Analyse this checkpoint epoch instead of the newest."),
            snapshot: Optional[int] = typer.Option(None, help="Analyse this snapshot epoch instead of the newest "
                                                   "checkpoint."),
            features: Optional[str] = features_option(),
            list_: bool = typer.Option(False, "--list", help="List the analyses and their parameters, then exit."),
            as_json: bool = json_option("the results")):
    """Measure a trained model's latent space with each analysis (--list shows them).

    Writes RUN/analysis/NAME.json and RUN/figures/NAME-*.png|svg (for a --model/--diffusers/--pythae model, in
    --out DIR)."""
    if list_:
        _list_analyses()
        return
    if not measured.named():
        fail("give a run directory, e.g. `vaelab analyze runs/my-run`, a model (--model FILE.py:FACTORY, "
             "--diffusers DIR or --pythae DIR, with --data NAME), or --list to see the analyses")
    names = parse_names(only)
    per = _parse_settings(settings)
    if features:
        per["features"] = features
    split_params(names, per)  # reject bad --set before loading anything
    subject = measured.open(epoch, snapshot)
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
@measuring
def diagnose(measured: Measured,
             quick: bool = typer.Option(False, "--quick", help="Fewer samples (about 4x faster, noisier numbers)."),
             seed: int = typer.Option(0, help="Seed of every sampler."),
             features: Optional[str] = features_option(),
             as_json: bool = json_option("the diagnosis")):
    """Why does this model generate badly (or well)? A table of measurements and a verdict.

    Measures latent usage, the prior/posterior gap, over-fitting and sample quality per sampler; writes
    RUN/analysis/diagnosis.json, a page to look at (RUN/analysis/diagnosis.html) and figures (for a
    --model/--diffusers/--pythae model, in --out DIR)."""
    subject = measured.open()
    result = run_diagnosis(subject, quick=quick, seed=seed, features=features, progress=err)
    page = write_diagnosis_page(subject, result)
    if as_json:
        err(f"wrote the diagnosis page {page}")
        typer.echo(json.dumps(_jsonable(result.to_json()), indent=2))
        return
    table = result.data["table"]
    typer.echo(f"diagnosis of {measured.run or subject.name}  ({subject.out_dir / 'analysis' / 'diagnosis.json'})")
    width = max(len(k) for k in table)
    for key, value in table.items():
        shown = "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
        typer.echo(f"  {key:<{width}}  {shown}")
    typer.echo("")
    latent = subject.source.get("latent")  # which latent the numbers are about (a diffusers VAE's scaled one)
    for sentence in [*result.data["verdict"], *([latent] if latent else [])]:
        typer.echo(textwrap.fill(sentence, width=100, initial_indent="  ", subsequent_indent="    "))
    typer.echo(f"\n  page: {page}")


@app.command()
def info(run: Path = typer.Argument(..., help="A run directory, or a study folder (where the study stands)."),
         as_json: bool = json_option("the summary")):
    """Summarise a run (status, config, last metrics, checkpoints, analyses), or where a study stands.

    Given a study folder: its runs' states and epochs, the runs training now, its compute so far and the training
    left at the runs' own pace, while it runs or after it stopped."""
    if (run / "study.yaml").is_file():
        standing = study_standing(run)
        typer.echo(json.dumps(standing.to_json(), indent=2) if as_json else "\n".join(standing_lines(standing)))
        return
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
    latent = c.model.latent_dim if c.model.network != "conv-spatial" else f"C={c.model.latent_channels}"
    prior = "N(0, I) prior" if c.model.prior == "standard" else f"{c.model.prior} prior (K={c.model.prior_components})"
    typer.echo(f"  data {c.data.name} ({c.data.pixels})   model {arch}, latent {latent}, "
               f"{c.model.posterior} posterior, {c.model.likelihood} likelihood, {prior}")
    obj = c.objective
    extra = f", alpha {obj.alpha}" if obj.alpha is not None else ""
    typer.echo(f"  objective {obj.name} (K={obj.samples}{extra})   epochs {s['epochs_done']}/{s['epochs_planned']}, "
               f"{s['seconds']:.1f}s")
    last = s["last"]
    if last:
        typer.echo(f"  test loss {last['test_loss']:.3f}  train loss {last['train_loss']:.3f}  "
                   f"test reconstruction {-last['test_recon']:.3f}  test KL {last['test_kl']:.3f}")
    kl = s.get("kl_per_dim")
    if kl:
        typer.echo(f"  active dimensions (KL > {kl['threshold']}): {kl['active']}/{kl['dims']}; KL per dim "
                   f"min {kl['min']:.3g} median {kl['median']:.3g} max {kl['max']:.3g}")
    snapshots = f"; snapshots {s['snapshots']}" if s["snapshots"] else ""
    typer.echo(f"  checkpoints at epochs {s['checkpoints']}{snapshots}")
    for decl, result, params in saved_results(r.path):
        lines = decl.summary_lines(result, params) or ["(no headline numbers)"]
        typer.echo(f"  {decl.name}: " + "\n    ".join(lines))
