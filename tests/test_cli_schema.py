"""`vaelab train`'s flags against the run config's schema (vaelab.config): a config field cannot be forgotten in the
CLI or its help. Every field has a flag or an entry in YAML_ONLY saying why not; each flag's help lists exactly its
field's choices and shows its field's default; each flag sets the field it names."""
from __future__ import annotations

import typing
from enum import Enum

import pytest
import typer
import yaml
from typer.testing import CliRunner

from vaelab.cli import app
from vaelab.cli.train import train
from vaelab.cli.run_options import CHOICE_NOTES, RUN_FLAGS, YAML_ONLY, field, shown
from vaelab.config import RunConfig
from vaelab.data import DATASETS

TRAIN = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
PARAMS = {p.name: p for p in TRAIN.params}
HINTS = typing.get_type_hints(train)
COMMAND_ONLY = {"config", "out", "resume", "overwrite", "print_config", "progress"}  # what to do, not what to train


def schema_fields() -> set[str]:
    """The fields of a run config, read from a default one: 'name', 'data.name', ..., 'train.trace_epochs'."""
    dump = RunConfig().model_dump()
    return {f"{section}.{key}" if isinstance(value, dict) else section
            for section, value in dump.items() for key in (value if isinstance(value, dict) else [None])}


def unwrapped(annotation):
    """X for Optional[X]."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if typing.get_origin(annotation) is typing.Union and len(args) == 1 else annotation


def literal_choices(dotted: str) -> tuple:
    """A field's choices straight from its annotation (Optional unwrapped); () when it is not a Literal."""
    annotation = unwrapped(field(dotted).annotation)
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()


def test_every_config_field_has_a_flag_or_a_reason_to_have_none():
    flagged = [spec.field for spec in RUN_FLAGS.values()]
    assert len(flagged) == len(set(flagged)), "two flags set the same field"
    missing = schema_fields() - set(flagged) - set(YAML_ONLY)
    assert not missing, f"config fields with neither a `vaelab train` flag (cli/run_options.py RUN_FLAGS) nor an " \
                        f"entry in YAML_ONLY: {sorted(missing)}"
    assert not (set(flagged) | set(YAML_ONLY)) - schema_fields(), "a flag or exemption names no config field"
    assert not set(flagged) & set(YAML_ONLY), "a field with a flag is also listed as YAML-only"
    assert all(reason.strip() for reason in YAML_ONLY.values())


def test_the_train_command_takes_exactly_the_declared_flags():
    assert set(PARAMS) - COMMAND_ONLY == set(RUN_FLAGS)


def test_the_yaml_only_fields_are_named_in_train_help():
    out = " ".join(CliRunner().invoke(app, ["train", "--help"]).stdout.split())
    assert all(name in out for name in YAML_ONLY)


@pytest.mark.parametrize("flag", list(RUN_FLAGS))
def test_each_flags_type_is_its_fields_type(flag):
    dotted = RUN_FLAGS[flag].field
    given = unwrapped(HINTS[flag])
    if isinstance(given, type) and issubclass(given, Enum):  # typer checks these choices itself (--device)
        assert tuple(m.value for m in given) == literal_choices(dotted)
        return
    base = unwrapped(field(dotted).annotation)
    assert given is {int: int, float: float}.get(base, str)  # lists and names are parsed from text


@pytest.mark.parametrize("flag", [f for f, spec in RUN_FLAGS.items()
                                  if literal_choices(spec.field) or spec.field == "data.name"])
def test_each_flags_help_lists_exactly_its_fields_choices(flag):
    dotted = RUN_FLAGS[flag].field
    expected = tuple(DATASETS) if dotted == "data.name" else literal_choices(dotted)
    help_text = PARAMS[flag].help
    items = help_text.removesuffix(".").split(" | ")
    assert tuple(item.split(" ")[0] for item in items) == expected, help_text
    default = field(dotted).get_default()
    assert [item.split(" ")[0] for item in items if item.startswith(f"{item.split(' ')[0]} (default")] == [default]


def test_choice_notes_name_real_choices():
    for dotted, notes in CHOICE_NOTES.items():
        assert set(notes) <= set(literal_choices(dotted)), dotted


@pytest.mark.parametrize("flag", [f for f, spec in RUN_FLAGS.items()
                                  if not literal_choices(spec.field) and spec.field != "data.name"])
def test_each_flags_help_shows_its_fields_default(flag):
    default = field(RUN_FLAGS[flag].field).get_default(call_default_factory=True)
    help_text = PARAMS[flag].help
    assert (f"(default {shown(default)}" in help_text) == (default is not None), help_text
    assert "(default" not in help_text or default is not None


def test_defaults_are_shown_as_the_config_holds_them():
    config = RunConfig()
    assert f"(default {config.train.epochs})" in PARAMS["epochs"].help
    assert "(default 256,256)" in PARAMS["hidden"].help and "(default 'run')" in PARAMS["name"].help


# a value each flag can take on its own (with the flags it needs), and what the config then holds
SETTINGS = {
    "name": (["r1"], "r1"), "dataset": (["mnist"], "mnist"), "pixels": (["fixed"], "fixed"),
    "train_size": (["100"], 100), "arch": (["64-32-4"], "64-32-4"), "network": (["conv"], "conv"),
    "hidden": (["32,16"], [32, 16]), "latent_dim": (["3"], 3), "conv_channels": (["8,16"], [8, 16]),
    "latent_channels": (["4"], 4), "activation": (["tanh"], "tanh"), "posterior": (["isotropic"], "isotropic"),
    "prior": (["mog"], "mog"), "prior_components": (["7", "--prior", "mog"], 7),
    "likelihood": (["gaussian"], "gaussian"), "objective": (["iwae"], "iwae"), "samples": (["3"], 3),
    "alpha": (["0.5", "--objective", "renyi"], 0.5), "beta": (["0.5"], 0.5), "warmup": (["2"], 2),
    "penalty": (["2", "--objective", "deterministic", "--posterior", "deterministic"], 2.0),
    "epochs": (["3"], 3), "batch_size": (["32"], 32), "lr": (["0.01"], 0.01), "seed": (["5"], 5),
    "device": (["cpu"], "cpu"), "snapshot_every": (["2"], 2), "precision": (["fp32"], "fp32"),
    "compile": (["off"], "off"),
}


@pytest.mark.parametrize("flag", list(RUN_FLAGS))
def test_each_flag_sets_the_field_it_names(flag):
    assert flag in SETTINGS, f"give --{flag} a value in SETTINGS"
    (value, *needs), expected = SETTINGS[flag]
    out = CliRunner().invoke(app, ["train", PARAMS[flag].opts[0], value, *needs, "--print-config"])
    assert out.exit_code == 0, out.output
    section, _, key = RUN_FLAGS[flag].field.rpartition(".")
    loaded = yaml.safe_load(out.stdout)
    assert (loaded[section] if section else loaded)[key] == expected
