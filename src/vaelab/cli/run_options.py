"""`vaelab train`'s flags and the run config fields they set, checked against the schema (vaelab.config).

Each flag is one row of RUN_FLAGS: the field it sets and a few words of help. The choices and the default that its
help shows are read from the field when the CLI loads (the Literal annotation, the pydantic default), so a new prior or
objective appears in `vaelab train --help` by itself and a changed default cannot go stale there. A field has either a
flag or an entry in YAML_ONLY that says why it has none (`vaelab train --help` lists those too);
tests/test_cli_schema.py fails for a field with neither.
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Any

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from vaelab.cli.base import fail
from vaelab.config import RunConfig
from vaelab.data import DATASETS


@dataclass(frozen=True)
class RunFlag:
    field: str  # the dotted config field it sets, e.g. 'model.prior'
    text: str = ""  # what it is (a field with choices: words after the list of choices, e.g. ' binarization')
    default_note: str = ""  # after the default, e.g. ' = off'
    names: tuple[str, ...] = ()  # the flag's names where they are not just --PARAM, e.g. ('--samples', '-k')


# flag (the train command's parameter) -> what it sets; applied in this order (an --arch before the sizes it implies)
RUN_FLAGS: dict[str, RunFlag] = {
    "name": RunFlag("name", "Run name: the folder under --out"),
    "dataset": RunFlag("data.name", " or one added with `vaelab data add`"),
    "pixels": RunFlag("data.pixels", " binarization"),
    "train_size": RunFlag("data.train_size", "Use only the first N training images"),
    "arch": RunFlag("model.arch", "MLP as the documents write it: INPUT-HIDDEN-...-LATENT, e.g. 784-256-32-8-2"),
    "network": RunFlag("model.network"),
    "hidden": RunFlag("model.hidden", "MLP hidden widths, comma-separated"),
    "latent_dim": RunFlag("model.latent_dim", "Latent size for mlp/conv"),
    "conv_channels": RunFlag("model.conv_channels", "Channels of the stride-2 conv layers"),
    "latent_channels": RunFlag("model.latent_channels", "conv-spatial: latent channels C of C x H x W"),
    "activation": RunFlag("model.activation"),
    "posterior": RunFlag("model.posterior"),
    "prior": RunFlag("model.prior"),
    "prior_components": RunFlag("model.prior_components", "vamp/mog: number of components K"),
    "likelihood": RunFlag("model.likelihood"),
    "objective": RunFlag("objective.name"),
    "samples": RunFlag("objective.samples", "K latent samples per input", names=("--samples", "-k")),
    "alpha": RunFlag("objective.alpha", "renyi: alpha of the VR bound (1 = ELBO, 0 = IWAE)"),
    "beta": RunFlag("objective.beta", "elbo: KL weight"),
    "warmup": RunFlag("objective.warmup_epochs", "elbo: KL warm-up epochs"),
    "penalty": RunFlag("objective.penalty", "deterministic: quadratic penalty weight"),
    "epochs": RunFlag("train.epochs", "Epochs"),
    "batch_size": RunFlag("train.batch_size", "Batch size"),
    "lr": RunFlag("train.lr", "Adam learning rate"),
    "seed": RunFlag("train.seed", "Seed for initialisation, batches and noise"),
    "device": RunFlag("train.device"),
    "snapshot_every": RunFlag("train.snapshot_every", "Keep weights every N epochs for analyses over training",
                              default_note=" = off"),
    "precision": RunFlag("train.precision"),
    "compile": RunFlag("train.compile", names=("--compile",)),
}

# a few words on some choices, shown after them (a choice with none is shown bare)
CHOICE_NOTES: dict[str, dict[str, str]] = {
    "model.prior": {"standard": "N(0, I)", "vamp": "VampPrior", "mog": "learned mixture of Gaussians"},
    "train.device": {"auto": "cuda when present"},
    "train.precision": {"auto": "whichever of fp32 and bf16 a probe of this machine finds faster and accurate",
                        "bf16": "matrix products of training steps in bf16 autocast"},
    "train.compile": {"auto": "compile the step when enough training is left and it measures faster",
                      "on": "torch.compile of the step's objective and backward"},
}

# the fields with no flag, and why: they are set in the YAML config that `vaelab train CONFIG` reads
YAML_ONLY: dict[str, str] = {
    "data.binarize_seed": "the fixed binarization's own seed; --seed is the one to vary",
    "data.test_size": "evaluation on fewer test images, for quick looks rather than results",
    "model.latent_size": "conv-spatial: a check of the latent height that the decoder computes anyway",
    "model.gaussian_std": "gaussian likelihood: a fixed std instead of one learned per pixel",
    "train.eval_batch_size": "memory only; the numbers do not depend on it",
    "train.trace_every": "posterior traces for the training-dynamics figures that studies ask for",
    "train.trace_per_class": "posterior traces (see train.trace_every)",
    "train.trace_epochs": "posterior traces (see train.trace_every)",
}
YAML_ONLY_HELP = f"Set only in a YAML config: {', '.join(YAML_ONLY)}."


def field(dotted: str) -> FieldInfo:
    """The schema's field at a dotted path, e.g. 'model.prior'."""
    model: type[BaseModel] = RunConfig
    *sections, name = dotted.split(".")
    for section in sections:
        model = model.model_fields[section].annotation  # type: ignore[assignment]
    return model.model_fields[name]


def leaf_fields(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every field a run config sets, dotted: 'name', 'data.name', ..., 'train.trace_epochs'."""
    out: list[str] = []
    for name, f in model.model_fields.items():
        if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
            out += leaf_fields(f.annotation, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def choices(dotted: str) -> tuple[str, ...]:
    """The values a field accepts when it is a Literal, read from its annotation at run time; () for other fields."""
    if dotted == "data.name":  # the built-in datasets (a str checked against the registry, which users add to)
        return tuple(DATASETS)
    annotation = _unwrap_optional(field(dotted).annotation)
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()


def is_list(dotted: str) -> bool:
    return typing.get_origin(_unwrap_optional(field(dotted).annotation)) is list


def shown(value: Any) -> str:
    """A default as the help shows it: 256,256 for a list, 0.001 for a float, 'run' for a name."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)


def flag_help(flag: str) -> str:
    """'a | b (default) | c (a note).' for a field with choices; 'TEXT (default D).' for others."""
    spec = RUN_FLAGS[flag]
    default = field(spec.field).get_default(call_default_factory=True)
    names = choices(spec.field)
    if not names:
        return f"{spec.text}." if default is None else f"{spec.text} (default {shown(default)}{spec.default_note})."
    notes = CHOICE_NOTES.get(spec.field, {})
    shown_choices = []
    for name in names:
        said = ": ".join(([] if name != default else ["default"]) + ([notes[name]] if name in notes else []))
        shown_choices.append(f"{name} ({said})" if said else name)
    return " | ".join(shown_choices) + f"{spec.text}."


Device = Enum("Device", {name: name for name in choices("train.device")}, type=str)  # type: ignore[misc]


def run_option(flag: str) -> Any:
    """The typer option of ``flag`` (unset by default: the config's value stands)."""
    return typer.Option(None, *RUN_FLAGS[flag].names, help=flag_help(flag))


def _widths(text: str, flag: str) -> list[int]:
    try:
        return [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        fail(f"--{flag.replace('_', '-')} {text!r} is not a comma-separated list of integers, e.g. 256,256")


def run_updates(given: dict[str, Any]) -> dict[str, Any]:
    """The dotted config updates of the flags given (``{'train.epochs': 5}``); flags left unset are left out."""
    updates = {}
    for flag, spec in RUN_FLAGS.items():
        value = given.get(flag)
        if value is None:
            continue
        updates[spec.field] = value.value if isinstance(value, Enum) else _widths(value, flag) \
            if is_list(spec.field) else value
    return updates
