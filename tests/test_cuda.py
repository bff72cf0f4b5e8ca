"""On a CUDA device: training, exact resume, vectorised seeds, every analysis and diagnose, and a study whose two
workers share the one GPU (benchmarks/gpu_check.sh runs these on a GPU machine).

Marked ``cuda`` and skipped where ``torch.cuda.is_available()`` is false. ``VAELAB_TEST_DEVICE=cpu`` runs the same
tests on the CPU instead (a dry run of the GPU check on a machine without one): ``VAELAB_TEST_DEVICE=cpu pytest -m
cuda tests/test_cuda.py``."""
import json
import math
import os

import pytest
import torch
from conftest import tiny_config

from vaelab.analysis import analyze, from_run
from vaelab.analysis.diagnose import diagnose
from vaelab.ensemble import train_ensemble
from vaelab.report import run_study
from vaelab.studies.pools import LocalExecutor
from vaelab.studies.spec import load_study
from vaelab.trainer import resume, train

DEVICE = os.environ.get("VAELAB_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="needs a CUDA device (torch.cuda.is_available() is false; "
                              "VAELAB_TEST_DEVICE=cpu runs these tests on the CPU)"),
]
STRIP = ("seconds", "train_examples_per_s", "vectorised", "precision_probe", "compile_probe")


def on_device(**sections):
    """A tiny digits config that trains on the device under test."""
    train_section = {"epochs": 2, "batch_size": 64, "lr": 3e-3, "precision": "fp32", **sections.pop("train", {}),
                     "device": DEVICE}
    return tiny_config(train=train_section, **sections)


def quiet(msg):
    pass


def numbers(run) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in STRIP} for row in run.metrics]


def test_a_run_trains_on_the_device_and_learns(tmp_path):
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = train(on_device(train={"epochs": 3}), tmp_path, progress=False, log=quiet)
    rows = run.metrics
    assert len(rows) == 3 and all(math.isfinite(r["test_loss"]) for r in rows)
    assert rows[-1]["test_loss"] < rows[0]["test_loss"]
    assert run.status["state"] == "finished"
    if DEVICE == "cuda":
        assert torch.cuda.max_memory_allocated() > 0  # the steps ran on the GPU
    model = run.load_model()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one_on_the_same_device(tmp_path):
    cfg = on_device(train={"epochs": 3})
    straight = train(cfg, tmp_path / "a", progress=False, log=quiet)
    first = train(cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})}), tmp_path / "b",
                  progress=False, log=quiet)
    resumed = resume(first.path, epochs=3, progress=False, log=quiet)
    assert numbers(resumed) == numbers(straight)
    wa, wb = straight.load_model().state_dict(), resumed.load_model().state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_vectorised_seeds_follow_their_separate_runs_on_the_device(tmp_path):
    """To float32 rounding of batched against single products (as in tests/test_ensemble.py)."""
    cfgs = [on_device(train={"seed": s}).model_copy(update={"name": f"m{s}"}) for s in range(3)]
    together = train_ensemble(cfgs, tmp_path / "v", progress=False, log=quiet)
    assert all(row.get("vectorised") == 3 for run in together for row in run.metrics)
    for cfg, member in zip(cfgs, together):
        alone = train(cfg, tmp_path / "s", progress=False, log=quiet)
        for a, b in zip(numbers(alone), numbers(member), strict=True):
            assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-4)
        wa, wb = alone.load_model().state_dict(), member.load_model().state_dict()
        for k in wa:
            assert float((wa[k] - wb[k]).norm()) <= 1e-3 * float(wa[k].norm()) + 1e-6, k


@pytest.mark.timeout(1800)  # minutes on a busy 2-core CPU in a dry run
def test_every_analysis_and_the_diagnosis_on_the_device(tmp_path):
    run = train(on_device(train={"epochs": 4, "snapshot_every": 2}), tmp_path, progress=False, log=quiet)
    subject = from_run(run.path, device=DEVICE)
    assert next(subject.model.parameters()).device.type == DEVICE
    results = analyze(subject, settings={"likelihood.samples": "50", "n": "100", "quality.n": "100"})
    assert set(results) == {"posterior", "typical-set", "prior-gap", "samples", "likelihood", "quality", "memorisation",
                            "probes", "interpolation"}
    for name in results:
        saved = json.loads((run.path / "analysis" / f"{name}.json").read_text())
        assert saved["analysis"] == name and saved["source"]["checkpoint_epoch"] == 4
    lik = results["likelihood"].data
    assert math.isfinite(lik["log_likelihood"]) and lik["vr_bound"] <= lik["log_likelihood"] + 3 * lik[
        "log_likelihood_se_images"]
    verdict = diagnose(subject, quick=True)
    assert verdict.name == "diagnosis" and verdict.data


def test_a_study_whose_two_workers_share_the_device(tmp_path):
    spec = load_study("latent-dim").scaled("tiny")
    base = {**spec.base, "train": {**spec.base.get("train", {}), "device": DEVICE}}
    spec = spec.model_copy(update={"base": base})
    planned = spec.expand()
    assert len(planned) >= 2 and all(r.config.train.device == DEVICE for r in planned)
    folder = run_study(spec, tmp_path, executor=LocalExecutor(workers=2), progress=False, log=quiet, report=False)
    rows = (folder / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + len(planned)
    for r in planned:
        status = json.loads((folder / "runs" / r.name / "status.json").read_text())
        assert status["state"] == "finished", status
