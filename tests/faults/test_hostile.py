"""8. Hostile input, fuzzed with hypothesis: run configs and study YAML files with wrong types, absurd sizes,
malformed YAML, unknown keys, and names that point outside the output directory. The command line answers every one
with exit 0 (valid) or exit 2 and one line that starts with 'error:' -- never a traceback."""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaelab.cli import main

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOAK = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def cli(*args) -> tuple[int, str, str]:
    """vaelab's entry point in this process (fast enough to fuzz); an escaping exception fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "argv", ["vaelab", *map(str, args)]), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
    return code, out.getvalue(), err.getvalue()


def assert_clean(code: int, err: str) -> None:
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err


scalars = (st.none() | st.booleans() | st.integers(-10**15, 10**15) | st.sampled_from([10**9, 2**31, 2**63, -1, 0])
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=16)
           | st.sampled_from(["../x", "/etc", "a/b", "..", "~", "\x00", "1e9", "NaN", "yes", "784-256-2"]))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                      max_leaves=6)
RUN_KEYS = {"data": ["name", "pixels", "train_size", "test_size", "binarize_seed", "nme"],
            "model": ["network", "arch", "hidden", "latent_dim", "posterior", "likelihood", "conv_channels",
                      "latent_channels", "latent_size", "gaussian_std", "activation", "latent_dims"],
            "objective": ["name", "samples", "alpha", "beta", "penalty", "warmup_epochs", "sample"],
            "train": ["epochs", "batch_size", "lr", "seed", "device", "snapshot_every", "precision", "trace_every", "epoch"]}
run_configs = st.fixed_dictionaries({}, optional={
    **{section: st.dictionaries(st.sampled_from(keys), values, max_size=4) | values for section, keys in RUN_KEYS.items()},
    "name": values, "extra": values})

STUDY_BASE = {"name": "s", "base": {"data": {"name": "digits"}, "model": {"arch": "64-32-4"}, "train": {"epochs": 1}},
              "grid": {"model.latent_dim": [2, 3]}, "seeds": [0]}
study_edits = st.dictionaries(
    st.sampled_from(["name", "base", "grid", "seeds", "variants", "analyses", "figures", "scales", "title", "grd",
                     "cpus_per_run", "no_runs"]), values, max_size=3)
grid_edits = st.dictionaries(st.sampled_from(["model.latent_dim", "train.epochs", "model.bogus", "train.lr", "name",
                                              "data.name", "model.hidden"]), st.lists(values, max_size=4), max_size=2)


def _write(text: str) -> Path:
    fh = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    fh.write(text)
    fh.close()
    return Path(fh.name)


def _check_run_config(data) -> None:
    path = _write(yaml.safe_dump(data))
    try:
        code, out, err = cli("train", path, "--print-config")
        assert_clean(code, err)
        if code == 0:
            assert yaml.safe_load(out)["model"]
    finally:
        path.unlink()


def _check_study(edits, grid) -> None:
    spec = {**STUDY_BASE, **edits}
    if grid:
        spec["grid"] = grid
    path = _write(yaml.safe_dump(spec))
    try:
        code, out, err = cli("study", path, "--print-runs", "--out", tempfile.gettempdir())
        assert_clean(code, err)
    finally:
        path.unlink()


@FUZZ
@given(run_configs)
def test_fuzzed_run_configs_exit_0_or_2_with_one_line(data):
    _check_run_config(data)


@FUZZ
@given(study_edits, grid_edits)
def test_fuzzed_study_files_exit_0_or_2_with_one_line(edits, grid):
    _check_study(edits, grid)


@FUZZ
@given(st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin-1")))
def test_malformed_yaml_is_one_line(text):
    path = _write(text)
    try:
        for args in (("train", path, "--print-config"), ("study", path, "--print-runs")):
            code, _, err = cli(*args)
            assert_clean(code, err)
    finally:
        path.unlink()


@FUZZ
@given(st.sampled_from(["--latent-dim", "--epochs", "--batch-size", "--lr", "--name", "--dataset", "--arch", "--hidden",
                        "--samples", "--alpha", "--precision", "--objective", "--posterior", "--seed"]), st.text(max_size=12))
def test_fuzzed_flags_exit_0_or_2_with_one_line(flag, value):
    code, _, err = cli("train", f"{flag}={value}", "--print-config")
    assert_clean(code, err)


@pytest.mark.parametrize("section,key,value,expected", [
    ("model", "latnet_dim", 2, "did you mean 'latent_dim'"),
    ("train", "epoch", 2, "did you mean 'epochs'"),
    ("objective", "alpah", 0.5, "did you mean 'alpha'"),
])
def test_unknown_keys_suggest_the_closest(section, key, value, expected):
    path = _write(yaml.safe_dump({section: {key: value}}))
    code, _, err = cli("train", path, "--print-config")
    assert code == 2 and expected in err
    path.unlink()


def test_unknown_study_key_suggests_the_closest(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**STUDY_BASE, "seed": [0]}))
    code, _, err = cli("study", path, "--print-runs")
    assert code == 2 and "did you mean 'seeds'" in err


@pytest.mark.parametrize("args", [
    ["train", "--name", "../outside"], ["train", "--name", "/etc/passwd"], ["train", "--name", "a/b"],
    ["train", "--name", ".."], ["train", "--name", ".hidden"],
])
def test_names_that_leave_the_output_directory_are_refused(args, tmp_path):
    code, _, err = cli(*args, "--out", tmp_path)
    assert code == 2 and "names a folder inside the output directory" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spec,message", [
    ({**STUDY_BASE, "name": "../../etc"}, "it names a folder"),
    ({**STUDY_BASE, "variants": [{"label": "..", "set": {}}]}, "variants.0.label"),
    ({**STUDY_BASE, "variants": [{"label": "../../x", "set": {}}]}, "variants.0.label"),
    ({**STUDY_BASE, "variants": [{"label": "a..b", "set": {}}]}, "not contain '..'"),
])
def test_study_names_that_leave_the_output_directory_are_refused(spec, message, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, _, err = cli("study", path, "--out", tmp_path / "out")
    assert code == 2 and message in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.yaml"))


def _peak_rss_mb_of(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    """Run vaelab in a fresh parent so RUSAGE_CHILDREN measures this one child only."""
    code = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(p.returncode); print(p.stderr, end='')")
    out = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "vaelab", *args], capture_output=True,
                         text=True, timeout=120)
    rss_kb, rc, stderr = out.stdout.split("\n", 2)
    return int(rss_kb) / 1024, subprocess.CompletedProcess(args, int(rc), "", stderr)


@pytest.mark.parametrize("args,what", [
    (["--latent-dim", "1000000000"], "latent of 10^9 units"),
    (["--hidden", "100000000,100000000"], "two hidden layers of 10^8"),
    (["--arch", "64-1000000-1000000-1000000-2"], "an MLP of 10^6-wide layers"),
])
def test_absurd_sizes_are_refused_before_any_memory_is_allocated(args, what, tmp_path):
    peak_mb, proc = _peak_rss_mb_of(["train", *args, "--out", str(tmp_path)])
    assert proc.returncode == 2, proc.stderr
    line = [line for line in proc.stderr.splitlines() if line.startswith("error:")][0]
    assert "parameters" in line and "GiB" in line and "the limit is" in line
    assert peak_mb < 600, f"{what}: {peak_mb:.0f} MB resident before refusing"  # PyTorch imported, nothing allocated
    assert list(tmp_path.iterdir()) == []


def test_a_study_of_absurdly_many_runs_is_refused_before_expansion(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**STUDY_BASE, "grid": {"model.latent_dim": list(range(1, 1001)),
                                                           "train.lr": [1e-3] * 1000}}))
    code, _, err = cli("study", path, "--print-runs")
    assert code == 2 and "would have 1000000 runs" in err and "the limit is 10000" in err


@pytest.mark.soak
@SOAK
@given(run_configs)
def test_soak_fuzzed_run_configs(data):
    _check_run_config(data)


@pytest.mark.soak
@SOAK
@given(study_edits, grid_edits)
def test_soak_fuzzed_study_files(edits, grid):
    _check_study(edits, grid)
