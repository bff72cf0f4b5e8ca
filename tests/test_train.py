"""Training: the run directory, exact resume after SIGKILL, NaN stops, corrupt checkpoints, locks, the CLI."""
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
from safetensors.torch import load_file

import vaelab
from conftest import tiny_config
from vaelab.errors import RunError, TrainingDiverged
from vaelab.runs import CheckpointStore, Run, RunLock


def test_run_directory_contents_and_learning(tmp_path):
    cfg = tiny_config(model={"arch": "64-64-8"}, train={"epochs": 6, "snapshot_every": 2, "lr": 3e-3})
    run = vaelab.train(cfg, out=tmp_path, progress=False, log=lambda m: None)
    assert run.status["state"] == "finished"
    assert {p.name for p in run.path.iterdir()} >= {"config.yaml", "metrics.jsonl", "checkpoints", "snapshots", "status.json"}
    assert vaelab.RunConfig.load(run.path / "config.yaml") == cfg
    rows = run.metrics
    assert [r["epoch"] for r in rows] == list(range(1, 7))
    for key in ("train_loss", "test_loss", "test_recon", "test_kl", "kl_per_dim", "seconds"):
        assert key in rows[-1]
    assert rows[-1]["test_loss"] < rows[0]["test_loss"]
    # the loss is exactly -(recon - KL) for the ELBO with beta 1
    assert math.isclose(rows[-1]["test_loss"], -(rows[-1]["test_recon"] - rows[-1]["test_kl"]), rel_tol=1e-6)
    kl = rows[-1]["kl_per_dim"]
    assert kl["dims"] == 8 and len(kl["values"]) == 8 and math.isclose(sum(kl["values"]), kl["total"], rel_tol=1e-4)
    assert run.checkpoints.epochs() == [6, 5]  # latest and previous are kept
    assert run.snapshots() == [2, 4, 6]
    model = run.load_model()
    snap = run.load_model(snapshot=6)
    for a, b in zip(model.state_dict().values(), snap.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("objective, model", [
    ({"name": "iwae", "samples": 4}, {}),
    ({"name": "renyi", "alpha": 0.5, "samples": 3}, {"posterior": "isotropic"}),
    ({"name": "vr-max", "samples": 3}, {}),
    ({"name": "deterministic", "penalty": 0.5}, {"posterior": "deterministic"}),
    ({"name": "elbo", "beta": 4.0, "warmup_epochs": 1}, {"likelihood": "continuous-bernoulli"}),
])
def test_each_objective_trains(tmp_path, objective, model):
    cfg = tiny_config(objective=objective, model=model, data={"pixels": "continuous"})
    run = vaelab.train(cfg, out=tmp_path, progress=False, log=lambda m: None)
    assert all(math.isfinite(r["test_loss"]) for r in run.metrics)


def test_conv_spatial_trains_on_digits(tmp_path):
    cfg = tiny_config(model={"network": "conv-spatial", "conv_channels": [8], "latent_channels": 2})
    run = vaelab.train(cfg, out=tmp_path, progress=False, log=lambda m: None)
    assert run.metrics[-1]["kl_per_dim"]["dims"] == 2 * 4 * 4


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def cli(*args):
    return [sys.executable, "-m", "vaelab", *args]


def test_sigkill_mid_run_then_resume_gives_identical_weights(tmp_path):
    common = ["--arch", "64-64-8", "--epochs", "40", "--batch-size", "32", "--seed", "5", "--no-progress"]
    subprocess.run(cli("train", *common, "--out", str(tmp_path / "a"), "--name", "r"), check=True, capture_output=True)
    proc = subprocess.Popen(cli("train", *common, "--out", str(tmp_path / "b"), "--name", "r"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = CheckpointStore(tmp_path / "b" / "r" / "checkpoints")
    deadline = time.time() + 120
    while time.time() < deadline and not (store.epochs() and store.epochs()[0] >= 3):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = store.epochs()[0]
    assert 3 <= killed_at < 40, "the process must be killed mid-run"
    assert Run(tmp_path / "b" / "r").status["state"] == "running"  # it died without a chance to say otherwise
    res = subprocess.run(cli("resume", str(tmp_path / "b" / "r"), "--no-progress"), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"resuming {tmp_path / 'b' / 'r'} from epoch {killed_at}" in res.stderr
    a = load_file(tmp_path / "a" / "r" / "checkpoints" / "epoch-000040" / "weights.safetensors")
    b = load_file(tmp_path / "b" / "r" / "checkpoints" / "epoch-000040" / "weights.safetensors")
    assert same_weights(a, b)
    ma, mb = Run(tmp_path / "a" / "r").metrics, Run(tmp_path / "b" / "r").metrics
    assert [r["test_loss"] for r in ma] == [r["test_loss"] for r in mb]


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config(train={"epochs": 5, "batch_size": 500})  # 3 steps per epoch
    monkeypatch.setenv("VAELAB_FAULT_NAN_STEP", "8")
    with pytest.raises(TrainingDiverged, match="epoch 3, step 8"):
        vaelab.train(cfg, out=tmp_path, progress=False, log=lambda m: None)
    run = Run(tmp_path / "tiny")
    assert run.status["state"] == "failed" and "step 8" in run.status["reason"]
    assert run.checkpoints.epochs() == [2, 1]
    assert all(torch.isfinite(p).all() for p in run.load_model().parameters())
    monkeypatch.delenv("VAELAB_FAULT_NAN_STEP")
    proc = subprocess.run(cli("info", str(run.path)), capture_output=True, text=True)
    assert "[failed]" in proc.stdout and "step 8" in proc.stdout


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path):
    cfg = tiny_config(train={"epochs": 3})
    run = vaelab.train(cfg, out=tmp_path, progress=False, log=lambda m: None)
    weights = run.path / "checkpoints" / "epoch-000003" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = run.checkpoints.load()
    assert loaded[2] == 2
    assert any("epoch-000003" in str(w.message) and "checksum" in str(w.message) for w in caught)
    (run.path / "checkpoints" / "epoch-000002" / "state.pt").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run.checkpoints.load() is None
        with pytest.raises(RunError, match="no valid checkpoint"):
            run.load_model()


def test_existing_run_needs_resume_or_overwrite_and_resume_rejects_changes(tmp_path):
    cfg = tiny_config(train={"epochs": 2})
    vaelab.train(cfg, out=tmp_path, progress=False, log=lambda m: None)
    with pytest.raises(RunError, match="already exists"):
        vaelab.train(cfg, out=tmp_path, progress=False, log=lambda m: None)
    changed = tiny_config(train={"epochs": 2, "lr": 0.1})
    with pytest.raises(RunError, match="train.lr"):
        vaelab.train(changed, out=tmp_path, resume=True, progress=False, log=lambda m: None)
    with pytest.raises(RunError, match="2 are already done"):
        vaelab.resume(tmp_path / "tiny", epochs=1, progress=False, log=lambda m: None)
    more = vaelab.resume(tmp_path / "tiny", epochs=4, progress=False, log=lambda m: None)
    assert [r["epoch"] for r in more.metrics] == [1, 2, 3, 4]
    fresh = vaelab.train(cfg, out=tmp_path, overwrite=True, progress=False, log=lambda m: None)
    assert [r["epoch"] for r in fresh.metrics] == [1, 2]


def test_a_locked_run_is_refused(tmp_path):
    cfg = tiny_config()
    with RunLock(tmp_path / cfg.name):
        code = ("import vaelab, sys; from conftest import tiny_config\n"
                "try:\n    vaelab.train(tiny_config(), out=sys.argv[1], progress=False)\n"
                "except vaelab.VaelabError as e:\n    print(e); sys.exit(2)\n")
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                              cwd=os.path.dirname(__file__))
    assert proc.returncode == 2 and "in use by process" in proc.stdout


def test_a_run_lock_waits_out_a_readers_brief_look_and_the_reader_sees_the_trainer(tmp_path):
    """`vaelab info` asks who holds a run's lock by taking a shared lock for a moment: a trainer starting then waits
    it out instead of refusing, and the reader names the trainer while it holds the lock."""
    import fcntl
    import threading

    from vaelab.runs import lock_holder

    (tmp_path / ".lock").write_text("")
    reader = open(tmp_path / ".lock")
    fcntl.flock(reader, fcntl.LOCK_SH)  # a reader mid-look
    threading.Timer(0.1, reader.close).start()  # ... done 0.1 s later
    with RunLock(tmp_path):
        assert lock_holder(tmp_path) == f"process {os.getpid()}"
    assert lock_holder(tmp_path) is None and lock_holder(tmp_path / "nowhere") is None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_mark_the_run_interrupted_and_say_how_to_resume(tmp_path, sig):
    proc = subprocess.Popen(cli("train", "--arch", "64-64-8", "--epochs", "100000", "--out", str(tmp_path), "--name", "i",
                                "--no-progress"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = CheckpointStore(tmp_path / "i" / "checkpoints")
    deadline = time.time() + 120
    while time.time() < deadline and not store.epochs():
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and f"vaelab resume {tmp_path / 'i'}" in err and "Traceback" not in err
    run = Run(tmp_path / "i")
    assert run.status["state"] == "interrupted" and run.checkpoints.load() is not None


def test_cli_train_info_and_json(tmp_path):
    proc = subprocess.run(cli("train", "--arch", "64-32-4", "--epochs", "2", "--out", str(tmp_path), "--name", "c"),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"run: {tmp_path / 'c'}" in proc.stdout and "active latent dimensions" in proc.stdout
    info = subprocess.run(cli("info", str(tmp_path / "c"), "--json"), capture_output=True, text=True)
    summary = json.loads(info.stdout)
    assert summary["epochs_done"] == 2 and summary["status"]["state"] == "finished"


def test_fused_adam_matches_plain_adam():
    """The trainer's fast path (fused Adam) against the plain per-parameter Adam on the same batches."""
    from vaelab.models import build_model
    from vaelab.objectives import Objective
    from vaelab.trainer import make_optimizer

    cfg = tiny_config()
    torch.manual_seed(0)
    a = build_model(cfg)
    b = build_model(cfg)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = make_optimizer(a, 1e-2), torch.optim.Adam(b.parameters(), lr=1e-2)
    assert opt_a.defaults.get("fused")
    obj = Objective(cfg.objective)
    x = torch.rand(64, 1, 8, 8).round()
    for step in range(5):
        for model, opt in ((a, opt_a), (b, opt_b)):
            loss = obj(model, x, torch.Generator().manual_seed(step)).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6, rtol=1e-5)


def test_trace_of_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    import numpy as np

    from vaelab.trainer import resume, train

    cfg = tiny_config(train={"epochs": 4, "batch_size": 128, "lr": 3e-3, "trace_every": 3, "trace_per_class": 2})
    whole = train(cfg, tmp_path / "a", progress=False, log=lambda m: None)
    half = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})
    train(half, tmp_path / "b", progress=False, log=lambda m: None)
    resumed = resume(tmp_path / "b" / cfg.name, epochs=4, progress=False, log=lambda m: None)
    a, b = np.load(whole.path / "trace.npz"), np.load(resumed.path / "trace.npz")
    assert a["mu"].shape[1] == 20 and sorted(set(a["labels"].tolist())) == list(range(10))  # 2 per class
    assert a["step"][0] == 0 and (np.diff(a["step"]) == 3).all()
    for key in ("step", "epoch", "mu", "logvar", "labels"):
        assert np.array_equal(a[key], b[key]), key


class _StopAfter:
    """A stand-in for the SIGINT flag that turns on after it has been looked at ``n`` times (once per step)."""

    def __init__(self, n):
        self.n = n

    def __bool__(self):
        self.n -= 1
        return self.n < 0


# 12 steps per epoch; the flag is read once per step and once at each epoch end
@pytest.mark.parametrize("stop_after, where", [(5, (0, 6)), (14, (1, 2))])
def test_stop_mid_epoch_checkpoints_and_resumes_bit_identical(tmp_path, stop_after, where):
    from vaelab.session import prepare_run_dir as _prepare_run_dir
    from vaelab.trainer import SingleStep, fit, train

    cfg = tiny_config(model={"arch": "64-32-4"}, train={"epochs": 3, "batch_size": 128, "lr": 3e-3, "trace_every": 4})
    whole = train(cfg, tmp_path / "a", progress=False, log=lambda m: None)
    run_dir = tmp_path / "b" / cfg.name
    _prepare_run_dir(cfg, run_dir, resume=False, overwrite=False)
    with pytest.raises(KeyboardInterrupt):
        fit([cfg], [run_dir], None, False, lambda m: None, _StopAfter(stop_after), SingleStep)
    _, state, epoch = CheckpointStore(run_dir / "checkpoints").load()
    assert (epoch, state["partial"]["step_in_epoch"]) == where
    resumed = train(cfg, tmp_path / "b", resume=True, progress=False, log=lambda m: None)
    for (k, a), (_, b) in zip(whole.load_model().state_dict().items(), resumed.load_model().state_dict().items()):
        assert torch.equal(a, b), k
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "train_examples_per_s", "precision_probe")} for r in rows]  # noqa: E731
    assert strip(whole.metrics) == strip(resumed.metrics)
    import numpy as np

    ta, tb = np.load(whole.path / "trace.npz"), np.load(resumed.path / "trace.npz")
    assert np.array_equal(ta["mu"], tb["mu"]) and np.array_equal(ta["step"], tb["step"])


def test_bf16_autocast_matches_fp32_and_keeps_losses_in_fp32(tmp_path):
    """The bf16 fast path: same batch and noise give the same loss within bf16 rounding; the posterior and decoder
    outputs the losses are computed from stay float32; training on it learns as well as fp32."""
    from vaelab.models import build_model
    from vaelab.objectives import Objective

    cfg = tiny_config(model={"arch": "64-64-8"})
    torch.manual_seed(0)
    model = build_model(cfg)
    obj = Objective(cfg.objective)
    x = torch.rand(256, 1, 8, 8).round()
    plain = obj(model, x, torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = obj(model, x, torch.Generator().manual_seed(1))
        assert model.decode(fast.posterior.mu).dtype == torch.float32
    assert fast.posterior.mu.dtype == torch.float32 and fast.bound.dtype == torch.float32
    assert abs(float(fast.loss - plain.loss)) < 0.01 * abs(float(plain.loss))
    runs = {}
    for precision in ("fp32", "bf16"):
        c = tiny_config(model={"arch": "64-64-8"}, train={"epochs": 15, "batch_size": 64, "lr": 3e-3, "precision": precision})
        runs[precision] = vaelab.train(c, out=tmp_path / precision, progress=False, log=lambda m: None).metrics[-1]["test_loss"]
    assert abs(runs["bf16"] - runs["fp32"]) < 0.5, runs  # nats per image, after 15 epochs
