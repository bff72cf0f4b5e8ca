"""Studies end to end at their smallest scale on digits: runs, skip/resume, results table, report content, Ray."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from vaelab.errors import ConfigError
from vaelab.studies.orchestrator import TimeLeft
from vaelab.studies.pools import LocalExecutor
from vaelab.report import run_study
from vaelab.studies.results import read_results
from vaelab.studies.spec import builtin_studies, load_study
from vaelab.studies.tasks import RunTask


@pytest.fixture(autouse=True)
def _data_root(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path_factory.getbasetemp() / "data"))


def _report_sections(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', html)


def _figure_ids(html: str) -> list[str]:
    return re.findall(r'<div class="figure" id="fig-([^"]+)"', html)


EXPECTED_FIGURES = {
    "latent-dim": {"latent-2d", "typical-gap", "samples-grid", "reconstructions-grid", "headline", "gap-vs-dim"},
    "renyi": {"pca-spectra", "components-vs-alpha", "bounds-vs-alpha", "probes-over-epochs", "interpolation-0",
              "interpolation-geodesic-curves"},
    "bubble": {"unit-statistics", "samplers-by-run", "gap-by-run"},
    "theory": {"theorem3"},
    "fixes": {"fixes", "fixes-tradeoffs"},
    "sampling": {"trajectories", "latent-frames", "vae-vs-ae", "views-3d-256-32-8-3-vae", "grids-4d", "samples-high-dim",
                 "loss-spread", "collapse"},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_FIGURES))
def test_builtin_study_at_tiny_scale(name, tmp_path):
    spec = load_study(name).scaled("tiny")
    folder = run_study(spec, tmp_path, executor=LocalExecutor(workers=2), progress=False, log=lambda m: None)
    rows = read_results(folder)
    planned = spec.expand()
    assert [r["run"] for r in rows] == [p.name for p in planned]
    assert all(r["status"] == "finished" for r in rows), rows
    with open(folder / "results.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(planned) and all(t["status"] == "finished" for t in table)
    html = (folder / "report.html").read_text()
    assert set(_figure_ids(html)) == EXPECTED_FIGURES[name], _figure_ids(html)
    assert html.count("data:image/png;base64,") + html.count("data:image/gif;base64,") == len(EXPECTED_FIGURES[name])
    assert "http://" not in html and "https://" not in html  # self-contained
    assert "findings" in _report_sections(html)
    if planned:
        assert {"results", "configs"} <= set(_report_sections(html))
        assert html.count('<tr class="') == len(planned)  # one table row per run
        for p in planned:
            assert p.name in html
    if name == "sampling":
        assert "animations" in _report_sections(html) and html.count("data:image/gif;base64,") == 2
    if name == "bubble":
        assert "diagnosis" in _report_sections(html) and html.count('<div class="verdict">') == len(planned)
    if name == "fixes":  # the figures' sentences on which fix wins where reach the findings
        assert "lowest FD" in html and "highest log-likelihood" in html
        assert "FD (classifier features; lower is better)" in html and "in classifier features, mean" in html


def test_fixes_winner_needs_a_lead_beyond_the_seeds_spread():
    from vaelab.studies.fixes import Stat, decide, fd_sentence, fd_stats, split_label

    def runs(variant, seeds=3, status="finished", **means_sd):  # values m - s, m, m + s: mean m, sd s exactly
        return [{"run": f"{variant}-s{i}", "status": status, "variant": variant, "seed": i,
                 **{f"fd_{k.replace('_', '-')}": m + (i - 1) * sd for k, (m, sd) in means_sd.items()}}
                for i in range(seeds)]

    rows = (runs("standard-800", prior=(590, 5), ex_post_gaussian=(375, 8), ex_post_gmm=(283, 5),
                 two_stage=(337, 9), posterior=(275, 2))
            + runs("vamp-800", prior=(400, 20)) + runs("warmup-800", prior=(580, 10))
            + runs("standard-800", status="failed", prior=(1.0, 0))  # a failed run never counts
            + runs("standard-200", prior=(500, 10), ex_post_gmm=(300, 10), two_stage=(305, 10))
            + runs("other-thing", prior=(1.0, 0)))  # not FIX-SETTING: ignored
    stats = fd_stats(rows, "800")
    assert {k: (round(v.mean, 6), round(v.sd, 6), v.n) for k, v in stats.items()} == {
        "standard": (590, 5, 3), "vamp": (400, 20, 3), "warmup": (580, 10, 3), "ex-post-gaussian": (375, 8, 3),
        "ex-post-gmm": (283, 5, 3), "two-stage": (337, 9, 3)}
    win = decide(stats)
    assert (win.kind, win.best, win.runner_up, win.tied) == ("winner", "ex-post-gmm", "two-stage", ("ex-post-gmm",))
    assert "posterior" not in stats  # q(z) is the floor, not a fix: it never wins
    text = fd_sentence("at latent 800", stats, Stat((273.0, 275.0, 277.0)))
    assert text.startswith("At latent 800 the ex-post GMM gives the lowest FD (283 +- 5 over 3 seeds), 52% below the "
                           "standard prior (590 +- 5); the runner-up, the two-stage VAE (337 +- 9)"), text
    assert text.endswith("q(z) itself reaches 275 +- 2.")
    # 300 +- 10 against 305 +- 10: five apart, within 10 + 10: a tie, and the sentence says so
    tie = decide(fd_stats(rows, "200"))
    assert (tie.kind, tie.tied) == ("tie", ("ex-post-gmm", "two-stage"))
    assert "the lowest FD is a tie between the ex-post GMM (300 +- 10) and the two-stage VAE (305 +- 10)" in \
        fd_sentence("at latent 200", fd_stats(rows, "200"), None)
    # the rule's edge: a lead of exactly sd + sd ties, a little more wins; higher-is-better metrics flip it
    assert decide({"a": Stat((-1.0, 0.0, 1.0)), "b": Stat((1.0, 2.0, 3.0))}).kind == "tie"
    assert decide({"a": Stat((-1.0, 0.0, 1.0)), "b": Stat((1.1, 2.1, 3.1))}).kind == "winner"
    assert decide({"a": Stat((-1.0, 0.0, 1.0)), "b": Stat((1.1, 2.1, 3.1))}, "high").best == "b"
    # one seed has no spread: the lowest is named, no winner declared
    one = decide({"a": Stat((1.0,)), "b": Stat((5.0,))})
    assert (one.kind, one.best) == ("one-seed", "a")
    assert decide({}) is None and split_label("vamp-800") == ("vamp", "800") and split_label("vae-2") is None


def test_rerun_skips_finished_runs_and_resumes_interrupted(tmp_path):
    spec = load_study("latent-dim").scaled("tiny").model_copy(update={"analyses": {"posterior": {}}})
    folder = run_study(spec, tmp_path, executor=LocalExecutor(workers=1), progress=False, log=lambda m: None)
    first = read_results(folder)
    # interrupt one run: drop its newest checkpoint and mark it interrupted, as a crash would leave it
    victim = folder / "runs" / first[0]["run"]
    newest = sorted((victim / "checkpoints").glob("epoch-*"))[-1]
    shutil.rmtree(newest)
    (victim / "status.json").write_text(json.dumps({"state": "interrupted", "epoch": 2}))
    from vaelab.studies.one_run import execute_run

    # the log's time to go weighs the epochs each run has left: the run finished before says nothing about the pace
    time_left = TimeLeft([RunTask(p.name, p.config.model_dump(mode="json"), str(folder / "runs"))
                          for p in spec.expand()])
    other = next(p.name for p in spec.expand() if p.name != victim.name)
    assert time_left.left == {victim.name: 1, other: 0}
    assert time_left.after(other) == "" and time_left.after(victim.name) == ", about 0.0 min to go"

    rows = []
    for p in spec.expand():
        rows.append(execute_run({"name": p.name, "config": p.config.model_dump(mode="json"),
                                 "runs_dir": str(folder / "runs"), "analyses": spec.analyses}))
    assert [r["trained_now"] for r in rows] == [True, False]  # resumed the interrupted one, skipped the other
    again = {r["run"]: r for r in rows}
    for r in first:  # the same numbers: the resumed run ended bit-identical
        assert again[r["run"]]["test_loss"] == r["test_loss"]


def test_a_failing_run_is_reported_and_the_study_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_FAULT_NAN_STEP", "3")
    spec = load_study("latent-dim").scaled("tiny").model_copy(update={"analyses": {}})
    folder = run_study(spec, tmp_path, executor=LocalExecutor(workers=1), progress=False, log=lambda m: None)
    rows = read_results(folder)
    assert all(r["status"] == "failed" and "loss became nan at epoch 1, step 3" in r["reason"] for r in rows)
    html = (folder / "report.html").read_text()
    assert "loss became nan at epoch 1, step 3" in html and "2 failed" in html


@pytest.mark.xdist_group("ray")  # one local Ray at a time (the crash test kills a Ray worker by its name)
def test_ray_executor_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray")
    from vaelab.studies.pools import RayExecutor

    spec = load_study("latent-dim").scaled("tiny").model_copy(update={"analyses": {"posterior": {}}})
    folder = run_study(spec, tmp_path, executor=RayExecutor(cores=2), progress=False, log=lambda m: None)
    rows = read_results(folder)
    assert [r["status"] for r in rows] == ["finished", "finished"]
    local = run_study(spec, tmp_path / "local", executor=LocalExecutor(workers=1), progress=False, log=lambda m: None)
    assert [r["test_loss"] for r in read_results(local)] == [r["test_loss"] for r in rows]  # same seeds, same numbers


def test_tracking_to_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vaelab.studies.tracking import parse_tracking

    spec = load_study("latent-dim").scaled("tiny").model_copy(update={"analyses": {}, "grid": {"model.latent_dim": [2]}})
    tracking = parse_tracking("tensorboard", None, tmp_path / spec.name)
    folder = run_study(spec, tmp_path, executor=LocalExecutor(workers=1), progress=False, tracking=tracking,
                       report=False, log=lambda m: None)
    logdir = folder / "tensorboard" / spec.expand()[0].name
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    events = acc.Scalars("test_loss")
    metrics = [json.loads(line) for line in (folder / "runs" / spec.expand()[0].name / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in events] == [m["epoch"] for m in metrics]
    assert [round(e.value, 4) for e in events] == [round(m["test_loss"], 4) for m in metrics]


def test_tracking_to_mlflow_sqlite(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from vaelab.studies.tracking import parse_tracking

    spec = load_study("latent-dim").scaled("tiny").model_copy(update={"analyses": {}, "grid": {"model.latent_dim": [2]}})
    tracking = parse_tracking("mlflow", None, tmp_path / spec.name)
    assert tracking["uri"].startswith("sqlite:///")
    folder = run_study(spec, tmp_path, executor=LocalExecutor(workers=1), progress=False, tracking=tracking,
                       report=False, log=lambda m: None)
    client = mlflow.MlflowClient(tracking["uri"])
    runs = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id])
    assert [r.info.run_name for r in runs] == [spec.expand()[0].name]
    history = client.get_metric_history(runs[0].info.run_id, "test_loss")
    metrics = [json.loads(line) for line in (folder / "runs" / spec.expand()[0].name / "metrics.jsonl").read_text().splitlines()]
    assert [h.value for h in sorted(history, key=lambda h: h.step)] == [m["test_loss"] for m in metrics]
    assert runs[0].data.params["model.latent_dim"] == "2"


def test_user_study_file_and_bad_specs(tmp_path):
    spec_file = tmp_path / "mine.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "mine", "base": {"data": {"name": "digits"}, "model": {"hidden": [32]},
                                                                  "train": {"epochs": 1}},
                                         "grid": {"model.latent_dim": [2, 3]}, "seeds": [0, 1]}))
    spec = load_study(spec_file)
    assert [r.name for r in spec.expand()] == ["mine-z2-s0", "mine-z2-s1", "mine-z3-s0", "mine-z3-s1"]
    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("name: x\ngrdi: {}\n", "unknown key 'grdi'; did you mean 'grid'?"),
        ("name: x\nbase: {model: {latent_dim: -3}}\n", "model.latent_dim"),
        ("name: ../evil\n", "must be 1-64 letters"),
        ("name: x\ngrid: {model.latent_dim: []}\n", "has no values"),
        ("name: [unclosed\n", "malformed YAML at line 2"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_study(bad).expand()
    with pytest.raises(ConfigError, match="has no scale 'huge'"):
        load_study("latent-dim").scaled("huge")
    out = subprocess.run([sys.executable, "-m", "vaelab", "study", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1


def test_every_builtin_study_expands_at_every_scale():
    for name in builtin_studies():
        spec = load_study(name)
        for scale in ["full", *spec.scales]:
            runs = spec.scaled(scale).expand()
            assert len({r.name for r in runs}) == len(runs)


@pytest.mark.slow
def test_two_studies_on_one_output_directory_train_each_run_once(tmp_path):
    spec_file = tmp_path / "shared.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "shared", "base": {"data": {"name": "digits"}, "model": {"hidden": [64]},
                                                                    "train": {"epochs": 6, "batch_size": 32}},
                                         "grid": {"model.latent_dim": [2, 3]}, "analyses": {"posterior": {}}}))
    cmd = [sys.executable, "-m", "vaelab", "study", str(spec_file), "--out", str(tmp_path / "out"), "--workers", "1",
           "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    folder = tmp_path / "out" / "shared"
    for run in ("shared-z2-s0", "shared-z3-s0"):
        metrics = (folder / "runs" / run / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(m)["epoch"] for m in metrics] == [1, 2, 3, 4, 5, 6]  # one clean history, never two
        assert json.loads((folder / "runs" / run / "status.json").read_text())["state"] == "finished"
    rows = read_results(folder)
    assert [r["status"] for r in rows] == ["finished", "finished"]


def test_where_a_study_stands_while_it_is_stopped_part_way(tmp_path):
    """`vaelab info STUDY`: finished, interrupted, in training (its lock held) and not started runs; the training left
    is each run's own median epoch time times its epochs left, and a run not started takes its other seed's pace."""
    from vaelab.runs import Run, RunLock
    from vaelab.studies.progress import study_standing

    spec_file = tmp_path / "stand.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "stand", "base": {"data": {"name": "digits"}, "model": {"hidden": [32]},
                                                                   "train": {"epochs": 3, "batch_size": 128}},
                                         "grid": {"model.latent_dim": [2, 4]}, "seeds": [0, 1], "analyses": {}}))
    spec = load_study(spec_file)
    folder = run_study(spec, tmp_path / "out", executor=LocalExecutor(workers=1), progress=False, report=False,
                       log=lambda m: None)
    names = [p.name for p in spec.expand()]  # z2-s0, z2-s1, z4-s0, z4-s1
    runs = folder / "runs"
    interrupted, training, gone = runs / names[0], runs / names[2], runs / names[3]
    shutil.rmtree(sorted((interrupted / "checkpoints").glob("epoch-*"))[-1])  # as a crash leaves it: 2 of 3 epochs
    (interrupted / "status.json").write_text(json.dumps({"state": "interrupted", "epoch": 2}))
    (training / "status.json").write_text(json.dumps({"state": "running", "epoch": 3}))
    shutil.rmtree(sorted((training / "checkpoints").glob("epoch-*"))[-1])
    shutil.rmtree(gone)
    with RunLock(training):
        standing = study_standing(folder)
        out = subprocess.run([sys.executable, "-m", "vaelab", "info", str(folder)], capture_output=True, text=True)
    assert [r.state for r in standing.runs] == ["interrupted", "finished", "training", "not started"]
    assert [r.epochs_done for r in standing.runs] == [2, 3, 2, 0]
    own = [sorted(m["seconds"] for m in Run(runs / n).metrics)[1] for n in names[:3]]  # the median of 3 epochs
    # 1 epoch at its own pace, 1 at its own, 3 at its seed's
    assert standing.left_seconds == pytest.approx(own[0] * 1 + own[2] * 1 + own[2] * 3, rel=1e-9)
    assert standing.no_pace == []
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "4 runs" in text and "1 finished, 1 training, 1 interrupted, 1 not started" in text
    assert "epochs trained 7 of 12" in text and "training: latent_dim = 4 at epoch 2/3" in text
    assert "interrupted: latent_dim = 2 at epoch 2/3" in text and "of training left" in text
    assert json.loads(subprocess.run([sys.executable, "-m", "vaelab", "info", str(folder), "--json"],
                                     capture_output=True, text=True).stdout)["counts"]["interrupted"] == 2  # unlocked
    (runs / names[1] / "metrics.jsonl").write_text("{not json\n")  # a damaged file: that run, not the command
    out = subprocess.run([sys.executable, "-m", "vaelab", "info", str(folder)], capture_output=True, text=True)
    assert out.returncode == 0 and "1 unreadable" in out.stdout, out.stderr
    checks = tmp_path / "theory"  # a study of checks only
    checks.mkdir()
    (checks / "study.yaml").write_text(yaml.safe_dump(load_study("theory").model_dump(mode="json")))
    out = subprocess.run([sys.executable, "-m", "vaelab", "info", str(checks)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("no runs (a study of checks only)"), out.stderr


def test_seeds_of_a_study_are_vectorised_and_match_separate_runs(tmp_path):
    spec_file = tmp_path / "seeds.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "seeds", "base": {"data": {"name": "digits"}, "model": {"hidden": [64]},
                                                                   "train": {"epochs": 3, "batch_size": 64,
                                                                             "precision": "fp32"}},
                                         "grid": {"model.latent_dim": [2, 4]}, "seeds": [0, 1, 2]}))
    spec = load_study(spec_file)
    vec = read_results(run_study(spec, tmp_path / "v", executor=LocalExecutor(workers=2), progress=False, report=False,
                                 log=lambda m: None))
    sep = read_results(run_study(spec, tmp_path / "s", executor=LocalExecutor(workers=2), progress=False, report=False,
                                 vectorize=False, log=lambda m: None))
    assert [r["run"] for r in vec] == [r["run"] for r in sep] and all(r["status"] == "finished" for r in vec)
    assert all(r.get("vectorised") == 3 for r in vec) and not any(r.get("vectorised") for r in sep)
    for a, b in zip(vec, sep):
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-5)


def test_a_study_whose_dataset_is_missing_is_refused_before_any_run(tmp_path):
    spec = tmp_path / "fm.yaml"
    spec.write_text("name: fm\nbase:\n  data: {name: fashion-mnist}\n  model: {hidden: [8], latent_dim: 2}\n"
                    "grid:\n  model.latent_dim: [2, 3]\n")
    env = {**os.environ, "VAELAB_DATA": str(tmp_path / "empty-data"), "VAELAB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "vaelab", "study", str(spec), "--out", str(tmp_path / "out"),
                          "--no-progress"], capture_output=True, text=True, env=env)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == ("error: study fm needs fashion-mnist, which is not present; run "
                                  "`vaelab data fetch fashion-mnist` first")
    assert not (tmp_path / "out" / "fm").exists()  # no folder, no run started


def test_probes_reuse_the_final_probes_for_the_identical_last_snapshot(tmp_path, monkeypatch):
    """The last snapshot holds the final checkpoint's weights: its probes are the final ones, not measured again; the
    numbers are those a fresh probe of that snapshot gives. An earlier snapshot (other weights) is probed."""
    from conftest import tiny_config
    from vaelab.analysis import from_run
    from vaelab.analysis import probes
    from vaelab.trainer import train

    cfg = tiny_config(train={"epochs": 4, "batch_size": 128, "lr": 3e-3, "snapshot_every": 2, "precision": "fp32"})
    run = train(cfg, tmp_path, progress=False, log=lambda m: None)
    subject = from_run(run.path)
    calls, original = [], probes.probes_at
    monkeypatch.setattr(probes, "probes_at", lambda *a, **k: calls.append(1) or original(*a, **k))
    result = probes.linear_probes(subject, train_points=300, test_points=200)
    assert [e["epoch"] for e in result.data["over_training"]] == [2, 4]
    assert len(calls) == 2  # the final model and snapshot 2; snapshot 4 is the final model
    idx = {}
    for split, n in (("train", 300), ("test", 200)):
        x = getattr(subject.data, f"x_{split}")
        idx[split] = probes.subsample(x.shape[0], probes.points_within_budget(subject.latent_dim, n, arrays=4), 0)
    for epoch in (2, 4):
        fresh = original(run.load_model(snapshot=epoch), subject.data, idx["train"], idx["test"], 0)
        assert result.data["over_training"][epoch // 2 - 1] == {"epoch": epoch, **fresh}
    assert not probes._same_weights(run.load_model(snapshot=2), subject.model)


def test_fixes_fd_table_gives_every_fix_a_t_interval_over_its_seeds():
    from vaelab.studies.fixes import Stat, fd_table_sentence

    # values m - s, m, m + s: mean m, sd s; the 95% t interval is m +- t(0.975, 2) s / sqrt(3), t = 4.3027
    stats = {"standard": Stat((585.0, 590.0, 595.0)), "ex-post-gmm": Stat((278.0, 283.0, 288.0)),
             "vamp": Stat((402.0,))}
    text = fd_table_sentence("at latent 800", stats, Stat((273.0, 275.0, 277.0)))
    # half-widths 4.3027 x 5 / sqrt(3) = 12.42 and 4.3027 x 2 / sqrt(3) = 4.97, shown to two digits of the width
    assert text == ("FD at latent 800, mean and 95% interval over 1 to 3 seeds: the ex-post GMM 283 [271, 295]; the "
                    "VampPrior 402 (one seed); the standard prior 590 [578, 602]; q(z) itself 275.0 [270.0, 280.0]."), text
    assert fd_table_sentence("at latent 800", {}, None) is None
    # three seeds that scatter widely: t gives 20 +- 24.8, and the interval stops at 0, as FD does
    assert "the standard prior 20 [0, 45]" in fd_table_sentence("at latent 2", {"standard": Stat((10.0, 20.0, 30.0))},
                                                                 None)


def test_study_captions_name_the_feature_space_their_runs_measured_fd_in(tmp_path):
    import json

    from vaelab.studies.view import StudyView

    def quality(run, kind):
        folder = tmp_path / "runs" / run / "analysis"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "quality.json").write_text(json.dumps({"result": {"feature_kind": kind}}))

    rows = [{"run": "a", "status": "finished"}, {"run": "b", "status": "finished"}, {"run": "c", "status": "failed"}]
    view = StudyView(tmp_path, spec=None, rows=rows)
    assert view.features() == "classifier features"  # nothing measured yet: the default space
    quality("a", "contrastive"), quality("b", "contrastive"), quality("c", "classifier")
    assert view.features() == "contrastive features"  # a failed run's leftovers do not count
    quality("b", "classifier")
    assert view.features() == "classifier features or contrastive features"
