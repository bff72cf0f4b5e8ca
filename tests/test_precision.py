"""train.precision auto: the choice follows the measured rates and the accuracy check, and the probe is cached."""
import math

import pytest
import torch

from vaelab import precision
from vaelab.precision import choose_precision, linear_shapes, probe_rates

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def model():
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 64))


def test_linear_shapes_are_the_models_own():
    assert linear_shapes(model(), 16) == [(16, 32, 64), (16, 64, 32)]


@pytest.mark.parametrize("fp32, bf16, want", [(300.0, 150.0, "fp32"), (300.0, 330.0, "fp32"), (300.0, 1200.0, "bf16")])
def test_the_faster_precision_is_chosen_only_by_a_clear_margin(monkeypatch, fp32, bf16, want):
    monkeypatch.setattr(precision, "probe_rates", lambda shapes, use_cache=True: (fp32, bf16, False))
    choice = choose_precision(model(), 16, torch.device("cpu"))
    assert choice.precision == want and choice.fp32_gflops == fp32 and choice.bf16_gflops == bf16
    assert f"{bf16 / fp32:.2f}x" in choice.reason


def test_bf16_is_refused_when_it_changes_the_loss(monkeypatch):
    monkeypatch.setattr(precision, "probe_rates", lambda shapes, use_cache=True: (300.0, 1200.0, False))
    net, x = model(), torch.rand(16, 64)

    def honest():  # the model's own loss: bf16 products change it by well under a percent
        return (net(x) - x).pow(2).sum()

    ok = choose_precision(net, 16, torch.device("cpu"), honest)
    assert ok.precision == "bf16" and ok.relative_error < precision.MAX_RELATIVE_ERROR

    def fragile():  # a loss that bf16 changes by 10%
        return torch.tensor(1.1 if torch.is_autocast_enabled('cpu') else 1.0)

    bad = choose_precision(net, 16, torch.device("cpu"), fragile)
    assert bad.precision == "fp32" and bad.relative_error == pytest.approx(0.1) and "changes the loss by 10.0%" in bad.reason


def test_the_probe_measures_both_rates_and_caches_them(monkeypatch, tmp_path):
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    shapes = [(32, 64, 64)]
    fp32, bf16, cached = probe_rates(shapes)
    assert not cached and all(math.isfinite(r) and r > 0 for r in (fp32, bf16))
    assert probe_rates(shapes) == (fp32, bf16, True)  # from <data root>/precision.json
    assert (tmp_path / "precision.json").exists()
    assert probe_rates([(32, 64, 128)])[2] is False  # other shapes are probed anew


def test_auto_trains_in_the_probed_precision_records_it_and_keeps_it_on_resume(monkeypatch, tmp_path):
    import vaelab
    from conftest import tiny_config

    rates = {"fp32": 300.0, "bf16": 1200.0}
    monkeypatch.setattr(precision, "probe_rates", lambda shapes, use_cache=True: (rates["fp32"], rates["bf16"], False))
    lines = []
    cfg = tiny_config(train={"epochs": 1, "precision": "auto"})
    run = vaelab.train(cfg, out=tmp_path, progress=False, log=lines.append)
    first = run.metrics[0]
    assert first["precision"] == "bf16" and first["precision_probe"]["bf16_gflops"] == 1200.0
    assert any(line.startswith("precision auto: bf16") for line in lines)
    rates["bf16"] = 100.0  # the machine now says fp32 ...
    resumed = vaelab.resume(run.path, epochs=2, progress=False, log=lines.append)
    assert [m["precision"] for m in resumed.metrics] == ["bf16", "bf16"]  # ... but a run keeps what it started in
    assert "precision_probe" not in resumed.metrics[1]
    fresh = vaelab.train(cfg.model_copy(update={"name": "fresh"}), out=tmp_path, progress=False, log=lines.append)
    assert fresh.metrics[0]["precision"] == "fp32"


def test_a_study_run_records_the_probe_that_chose_its_precision(tmp_path):
    """A study resolves auto before its runs start (so the run's config says bf16); the probe's numbers it passes
    along go into the run's first metrics row, as when the trainer probes itself, and not again on resume."""
    import vaelab
    from conftest import tiny_config

    probe = {"precision": "bf16", "fp32_gflops": 300.0, "bf16_gflops": 1200.0, "reason": "r", "cached": True,
             "relative_error": 0.001}
    run = vaelab.train(tiny_config(train={"epochs": 1, "precision": "bf16"}), out=tmp_path, progress=False,
                       log=lambda m: None, precision_probe=probe)
    assert run.metrics[0]["precision"] == "bf16" and run.metrics[0]["precision_probe"] == probe
    resumed = vaelab.resume(run.path, epochs=2, progress=False, log=lambda m: None, precision_probe=probe)
    assert "precision_probe" not in resumed.metrics[1]


def test_a_study_decides_auto_once_per_model_before_its_runs_start(monkeypatch):
    from conftest import tiny_config

    calls = []

    def probe(shapes, use_cache=True):
        calls.append(shapes)
        return 300.0, 1200.0, False

    monkeypatch.setattr(precision, "probe_rates", probe)
    configs = [tiny_config(train={"precision": "auto", "seed": s}) for s in range(3)]
    configs.append(tiny_config(model={"arch": "64-16-2"}, train={"precision": "auto"}))
    configs.append(tiny_config(train={"precision": "fp32"}))
    out, probes = precision.resolve_auto(configs)
    assert [c.train.precision for c in out] == ["bf16", "bf16", "bf16", "bf16", "fp32"]
    assert [p and p["bf16_gflops"] for p in probes] == [1200.0] * 4 + [None]  # what the runs record
    assert len(calls) == 2  # one probe per distinct model (seeds share it); explicit precisions are left alone
    assert [c.train.seed for c in out] == [0, 1, 2, 0, 0]


def test_a_model_with_convolutions_is_probed_on_its_own_training_step(monkeypatch, tmp_path):
    """Convolutions have their own bf16 kernels, so a conv model's probe times its step (forward and backward), with
    FLOPs from torch's counter; the model's gradients are left cleared and the result is cached like the GEMM probe."""
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 8 * 8, 2))
    x = torch.randn(16, 1, 8, 8)
    loss_of = lambda: net(x).square().mean()  # noqa: E731
    fp32, bf16 = precision.step_rates(net, loss_of, seconds=0.01)
    assert fp32 > 0 and bf16 > 0 and all(p.grad is None for p in net.parameters())
    # the choice reads the step's rates, not the linear layers' products
    monkeypatch.setattr(precision, "gemm_rates", lambda shapes, seconds=0: pytest.fail("GEMM probe used for a conv model"))
    monkeypatch.setattr(precision, "step_rates", lambda model, loss, seconds=0: (100.0, 300.0))
    choice = choose_precision(net, 16, torch.device("cpu"), loss_of)
    assert choice.precision == "bf16" and "training steps run at 3.00x" in choice.reason and not choice.cached
    assert choose_precision(net, 16, torch.device("cpu"), loss_of).cached  # keyed by the parameter shapes and batch
    assert choose_precision(net, 16, torch.device("cpu")).precision == "fp32"  # no step to time: fp32


def fake_timer(seconds: float, calls: list):
    def call():
        calls.append(seconds)
        return seconds
    return call


def test_the_probe_stops_after_one_round_when_bf16_is_far_slower():
    # a CPU without bf16 arithmetic: bf16 40x slower (measured: 45x on document 000's conv decoder, AVX2 only)
    calls32, calls16 = [], []
    t32, t16 = precision.alternating_medians(fake_timer(0.01, calls32), fake_timer(0.4, calls16), 0.15, rounds=5)
    assert (t32, t16) == (0.01, 0.4)
    assert len(calls32) == len(calls16) == 2  # the warm-up and one timed round: no further bf16 calls


@pytest.mark.parametrize("slower", [1.0, 1.9])
def test_the_probe_keeps_measuring_when_bf16_is_not_clearly_slower(slower):
    calls32, calls16 = [], []
    precision.alternating_medians(fake_timer(0.001, calls32), fake_timer(0.001 * slower, calls16), 0.0, rounds=5)
    assert len(calls32) == len(calls16) == 6  # warm-up + 5 rounds


def test_a_conv_step_probe_on_a_slow_bf16_ends_early(monkeypatch):
    """step_rates through alternating_medians: a bf16 step made 0.2 s slower (about 100x) is called twice (warm-up,
    one round)."""
    import time as _time
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 1))
    x = torch.rand(8, 1, 8, 8)
    bf16_calls = []

    def loss_of():
        if torch.is_autocast_enabled("cpu"):
            bf16_calls.append(1)
            _time.sleep(0.2)
        return net(x).sum()

    fp32, bf16 = precision.step_rates(net, loss_of, seconds=0.15)
    assert bf16 < fp32 / precision.GIVE_UP_SLOWER and len(bf16_calls) == 2
