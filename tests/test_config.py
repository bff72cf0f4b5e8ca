"""Configuration: YAML round trip, one-line errors for bad values (fuzzed), and the CLI's exit status 2."""
import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaelab.config import RunConfig, build_config, override
from vaelab.errors import ConfigError


def test_yaml_round_trip_and_defaults():
    cfg = build_config({"model": {"arch": "64-32-8-2"}, "objective": {"name": "renyi", "alpha": 0.5, "samples": 5}})
    again = RunConfig.from_yaml(cfg.to_yaml())
    assert again == cfg and again.model.hidden == [32, 8] and again.model.latent_dim == 2


@pytest.mark.parametrize("data, message", [
    ({"model": {"latent_dim": -3}}, "model.latent_dim"),
    ({"model": {"latent_dim": "ten"}}, "model.latent_dim"),
    ({"objective": {"name": "iwae", "alpha": 0.5}}, "alpha is only used by objective 'renyi'"),
    ({"objective": {"name": "renyi"}}, "needs alpha"),
    ({"objective": {"name": "renyi", "alpha": float("inf")}}, "alpha must be finite"),
    ({"modle": {}}, "did you mean 'model'"),
    ({"train": {"epoch": 3}}, "did you mean 'epochs'"),
    ({"model": {"arch": "784-256-2"}}, "digits images have 64 pixels"),
    ({"model": {"network": "conv-spatial", "latent_size": 3}}, "does not fit the decoder"),
    ({"model": {"network": "conv", "conv_channels": [8, 8, 8, 8, 8]}}, "below 1x1"),
    ({"model": {"latent_dim": 10**9}}, "parameters"),
    ({"data": {"name": "mnsit"}}, "did you mean 'mnist'"),
    ({"name": "../../etc"}, "run name"),
    ({"name": "a/b"}, "run name"),
    ({"model": {"posterior": "deterministic"}}, "do not go together"),
    ({"train": {"lr": 0}}, "train.lr"),
    ({"model": {"likelihood": "poisson"}}, "model.likelihood"),
])
def test_bad_values_give_one_line_errors(data, message):
    with pytest.raises(ConfigError) as info:
        build_config(data)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_malformed_yaml_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="malformed YAML at line 3"):
        RunConfig.from_yaml("model:\n  hidden: [1, 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        RunConfig.from_yaml("- 1\n- 2\n")


def test_override_replaces_dotted_keys_and_arch_wins():
    cfg = override(RunConfig(), {"model.arch": "64-100-3", "train.epochs": 4})
    assert cfg.model.hidden == [100] and cfg.model.latent_dim == 3 and cfg.train.epochs == 4
    cfg2 = override(cfg, {"model.latent_dim": 7})
    assert cfg2.model.latent_dim == 7 and cfg2.model.arch is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8)
section_keys = {"data": ["name", "pixels", "train_size", "binarize_seed"],
                "model": ["network", "arch", "hidden", "latent_dim", "posterior", "likelihood", "conv_channels",
                          "latent_channels", "latent_size", "gaussian_std", "activation"],
                "objective": ["name", "samples", "alpha", "beta", "penalty", "warmup_epochs"],
                "train": ["epochs", "batch_size", "lr", "seed", "device", "snapshot_every"]}
configs = st.fixed_dictionaries({}, optional={
    section: st.dictionaries(st.sampled_from(keys + ["bogus"]), json_values, max_size=4)
    for section, keys in section_keys.items()} | {"name": json_values})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_fuzzed_configs_either_validate_or_raise_config_error(data):
    try:
        cfg = build_config(data)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert RunConfig.from_yaml(cfg.to_yaml()) == cfg


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_fuzzed_yaml_text_never_escapes_as_another_exception(text):
    try:
        RunConfig.from_yaml(text)
    except ConfigError:
        pass


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "vaelab", *args], capture_output=True, text=True, **kw)


@pytest.mark.parametrize("args", [
    ["train", "--latent-dim", "-1"],
    ["train", "--arch", "784-256-2"],
    ["train", "--objective", "iwae", "--alpha", "0.5"],
    ["train", "--dataset", "cifar"],
    ["train", "--hidden", "12,x"],
    ["train", "--name", "../escape"],
    ["train", "does-not-exist.yaml"],
    ["info", "no/such/run"],
    ["data", "fetch", "imagenet"],
])
def test_cli_bad_input_exits_2_with_one_line(args, tmp_path):
    proc = run_cli(*args, "--out", str(tmp_path)) if args[0] == "train" else run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


def test_cli_yaml_config_with_flag_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"arch": "64-20-3"}, "train": {"epochs": 9}}))
    proc = run_cli("train", str(path), "--epochs", "2", "--print-config")
    assert proc.returncode == 0, proc.stderr
    cfg = RunConfig.from_yaml(proc.stdout)
    assert cfg.train.epochs == 2 and cfg.model.hidden == [20]


def test_help_lists_every_command_and_option_defaults():
    out = run_cli("--help").stdout
    for cmd in ("train", "resume", "info", "data"):
        assert cmd in out
    train_help = run_cli("train", "--help").stdout
    for opt in ("--arch", "--latent-dim", "--posterior", "--likelihood", "--objective", "--epochs", "--batch-size",
                "--lr", "--seed", "--out", "--name", "--resume", "--device"):
        assert opt in train_help
