"""Where a measured model comes from, for `vaelab analyze` and `vaelab diagnose`: a run directory, or a model vaelab did
not train (--model FILE.py:FACTORY | --diffusers DIR | --pythae DIR, measured on --data NAME), and the options
both commands share."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vaelab.analysis import Subject, from_model, from_run
from vaelab.analysis.adapters import DECODER_OUTPUTS, DEFAULT_GAUSSIAN_STD, ModelSource, TorchOptions
from vaelab.analysis.adapters.sources import absolute_where
from vaelab.cli.base import err, fail
from vaelab.cli.run_options import Device
from vaelab.models.likelihoods import LIKELIHOODS
from vaelab.trainer import resolve_device


def device_option() -> Device:  # type: ignore[valid-type]
    return typer.Option(Device("cpu"), help="Where to run the model.")


def open_run_subject(run: Path, device: Device, epoch: Optional[int], snapshot: Optional[int]) -> Subject:  # type: ignore[valid-type]
    subject = from_run(run, device=str(resolve_device(device.value)), epoch=epoch, snapshot=snapshot)
    src = subject.source
    where = f"snapshot {src['snapshot']}" if "snapshot" in src else f"checkpoint of epoch {src.get('checkpoint_epoch')}"
    note = "" if src.get("run_state") == "finished" else f" (run is {src.get('run_state')}; using its last complete checkpoint)"
    err(f"analysing {run} at its {where}{note}")
    return subject


# --- a model vaelab did not train: --model FILE.py:FACTORY | --diffusers DIR | --pythae DIR, with --data NAME ---
MODEL_HELP = ("A plain PyTorch model: FILE.py:FACTORY, where FACTORY() returns a module with encode(x) and decode(z) "
              "methods or a pair (encoder, decoder); the encoder may return mu, (mu, logvar), a torch Normal or "
              "Independent(Normal), or an object with .mean and .logvar/.std; latents of any shape.")


PROBE_IMAGES = 64  # training images in the one encode/decode that checks a model before any analysis runs


def model_option() -> Optional[str]:
    return typer.Option(None, "--model", metavar="FILE.py:FACTORY", help=MODEL_HELP)


def diffusers_option() -> Optional[Path]:
    return typer.Option(None, "--diffusers", metavar="DIR", help="A diffusers AutoencoderKL save_pretrained folder "
                        "(analysed over the scaled latent the diffusion model sees; needs the diffusers extra).")


def pythae_option() -> Optional[Path]:
    return typer.Option(None, "--pythae", metavar="DIR", help="A pythae model folder (model_config.json + model.pt).")


def data_option() -> Optional[str]:
    return typer.Option(None, "--data", metavar="NAME", help="The dataset a --model/--diffusers/--pythae model is "
                        "measured on (any name `vaelab data list` shows).")


def input_range_option(default: Optional[str] = "0,1") -> Optional[str]:
    return typer.Option(default, "--input-range", metavar="LOW,HIGH", help="--model: the pixel range the model "
                        "was trained on, e.g. -1,1; vaelab maps its [0, 1] images there and the decoder's means back.")


def likelihood_option() -> Optional[str]:
    return typer.Option(None, "--likelihood", help=f"--model: {' | '.join(LIKELIHOODS)} (default: bernoulli for "
                        "--input-range 0,1, gaussian otherwise).")


def decoder_output_option() -> Optional[str]:
    return typer.Option(None, "--decoder-output", help=f"--model: what decode(z) returns, {' | '.join(DECODER_OUTPUTS)}"
                        " (default: logits for a Bernoulli likelihood, mean for a Gaussian one).")


def gaussian_std_option(default: Optional[float] = DEFAULT_GAUSSIAN_STD) -> Optional[float]:
    return typer.Option(default, "--gaussian-std", help="--model/--diffusers: the Gaussian likelihood's "
                        "pixel noise std, in [0, 1] pixel units.")


def clamp_output_option(default: Optional[bool] = False) -> Optional[bool]:
    return typer.Option(default, "--clamp-output/--no-clamp-output", help="--model: clip decoded means to "
                        "--input-range (as a sampling pipeline does) instead of refusing means outside it.")


def out_option() -> Optional[Path]:
    return typer.Option(None, "--out", metavar="DIR", help="Where results of a --model/--diffusers/--pythae model "
                        "go (default: ./NAME-analysis, NAME from the model).")


def parse_range(text: str) -> tuple[float, float]:
    lo, comma, hi = text.partition(",")
    try:
        value = (float(lo), float(hi)) if comma else None
    except ValueError:
        value = None
    if value is None or not value[0] < value[1]:
        fail(f"--input-range {text!r} is not LOW,HIGH with LOW < HIGH; expected e.g. 0,1 or -1,1")
    return value


def check_options(options: TorchOptions) -> None:
    """One line for a --likelihood or --decoder-output that is not one of the accepted names."""
    if options.likelihood is not None and options.likelihood not in LIKELIHOODS:
        fail(f"--likelihood {options.likelihood!r} is not one of {', '.join(LIKELIHOODS)}")
    if options.decoder_output is not None and options.decoder_output not in DECODER_OUTPUTS:
        fail(f"--decoder-output {options.decoder_output!r} is not one of {', '.join(DECODER_OUTPUTS)}")


def _open_model_subject(sources: dict[str, Optional[object]], data: Optional[str], options: TorchOptions,
                        out: Optional[Path], device: Device) -> Subject:  # type: ignore[valid-type]
    """The subject of --model / --diffusers / --pythae (exactly one given) on the dataset --data; how the model was
    opened is kept in OUT/model-source.json, so `vaelab sample OUT` opens it again."""
    (kind, where), = sources.items()
    check_options(options)
    if data is None:
        fail(f"--{kind} needs --data NAME, the dataset to measure the model on (see `vaelab data list`)")
    source = ModelSource(kind, absolute_where(kind, str(where)), data, options)
    model, name, dataset = source.open(resolve_device(device.value), PROBE_IMAGES)
    out_dir = out if out is not None else Path(f"{name}-analysis")
    err(f"analysing {kind} {where} (latent {tuple(model.latent_shape)}) on {data}; results in {out_dir}")
    source.save(out_dir)
    return from_model(model, dataset, name=name, out_dir=out_dir)


def open_subject(run: Optional[Path], model: Optional[str], diffusers: Optional[Path], pythae: Optional[Path],
             data: Optional[str], options: TorchOptions, out: Optional[Path], device: Device,  # type: ignore[valid-type]
             epoch: Optional[int] = None, snapshot: Optional[int] = None) -> Subject:
    """A run directory, or one model named by --model / --diffusers / --pythae."""
    sources = {k: v for k, v in (("model", model), ("diffusers", diffusers), ("pythae", pythae)) if v is not None}
    if run is not None and sources:
        fail(f"give a run directory or --{next(iter(sources))}, not both")
    if len(sources) > 1:
        fail(f"give one model, not {' and '.join('--' + k for k in sources)}")
    if run is None and not sources:
        fail("give a run directory (e.g. runs/my-run), or a model with --data NAME: --model FILE.py:FACTORY, "
             "--diffusers DIR or --pythae DIR")
    if run is not None:
        if data is not None or out is not None:
            fail("--data and --out go with --model/--diffusers/--pythae; a run directory keeps its own data and results")
        return open_run_subject(run, device, epoch, snapshot)
    return _open_model_subject(sources, data, options, out, device)
