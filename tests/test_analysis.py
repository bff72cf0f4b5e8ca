"""Each analysis on tiny models with known answers: a decoder that ignores some latent dimensions, a posterior equal
to the prior, exact Gaussian densities, a linear-Gaussian VAE with exact log p(x), and a trained digits run."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_config
from vaelab.analysis import analyze, from_model, from_run, run_analysis
from vaelab.analysis.adapters import TorchModelAdapter
from vaelab.analysis.likelihood import importance_sampled_log_likelihood, vr_bound
from vaelab.analysis.posterior import mixture_log_density, mutual_information, pca_spectrum
from vaelab.analysis.samplers import quantile_grid
from vaelab.analysis.typical import theorem3_check, typical_gap
from vaelab.data import load_dataset
from vaelab.errors import ConfigError, NotApplicable, RunError
from vaelab.models import build_model
from vaelab.objectives import elbo


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def _data_root(tmp_path_factory, monkeypatch):
    # the evaluation classifier is cached under the data root; keep tests away from the user's cache
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path_factory.getbasetemp() / "data"))


def prior_model(latent=4, image_shape=(1, 8, 8)):
    """q(z|x) = N(0, I) for every x: the posterior equals the prior exactly."""
    decoder = torch.nn.Linear(latent, math.prod(image_shape))
    return TorchModelAdapter(lambda x: (torch.zeros(x.shape[0], latent), torch.zeros(x.shape[0], latent)),
                             decoder, latent, image_shape)


# --- posterior statistics ---------------------------------------------------------------------------
def test_decoder_that_ignores_dimensions_leaves_exactly_those_units_inactive(digits):
    torch.manual_seed(0)
    ignored = [1, 4]
    model = build_model(tiny_config(model={"arch": "64-64-6"}, data={"pixels": "continuous"}))
    first = model.decoder.net[0]
    with torch.no_grad():
        first.weight[:, ignored] = 0.0
    first.weight.register_hook(lambda g: g.index_fill(1, torch.tensor(ignored), 0.0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = digits.x_train
    for step in range(1500):
        idx = torch.randint(0, x.shape[0], (128,))
        loss = elbo(model, x[idx]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    r = run_analysis(from_model(model, digits), "posterior")
    inactive = [d for d, active in enumerate(r["active_mask"]) if not active]
    assert inactive == ignored, (r["var_mu"], r["kl_per_dim"])
    assert all(r["kl_per_dim"][d] < 0.01 for d in ignored)
    assert all(r["kl_per_dim"][d] > 0.05 for d in range(6) if d not in ignored)


def test_prior_equal_posterior_has_zero_kl_zero_information_and_no_holes(digits):
    subject = from_model(prior_model(), digits)
    post = run_analysis(subject, "posterior")
    assert post["kl_total"] == 0.0 and post["active_units"] == 0
    assert abs(post["mutual_information"]["mi_nats"]) < 1e-6  # log q(z|x) = log q(z) exactly (float32 codes)
    gap = run_analysis(subject, "prior-gap", samples=4000)
    mixture = gap["finite_mixture"]
    assert abs(mixture["kl"]) < 1e-6  # a mixture of identical N(0, I) is N(0, I): log q = log p exactly
    # no holes: prior samples fall below q's own 1% density quantile 1% of the time (within 4 standard errors)
    n = gap["points"]["tested"]
    assert abs(mixture["holes"] - 0.01) < 4 * math.sqrt(0.01 * 0.99 / n)
    # nothing varies with x: no informative direction; the whole latent is the complement, and it is the prior's
    assert gap["informative"]["dims"] == 0 and gap["classifier_auc"] is None
    shell = gap["tests"]["shell"]
    assert shell["ci_low"] <= 1.0 <= shell["ci_high"] and shell["dims"] == 4
    assert gap["gaussian_kl"]["total_ci"][0] == 0.0 and gap["kl_aggregate_prior"] < 0.01
    assert not gap["informative_mismatch"] and not gap["shell_mismatch"]


def test_mixture_log_density_matches_a_direct_sum():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(50, 3, generator=g), torch.randn(50, 3, generator=g) * 0.3
    z = torch.randn(20, 3, generator=g) * 2
    direct = torch.distributions.Normal(mu[None], torch.exp(0.5 * logvar)[None]).log_prob(z[:, None]).sum(-1)
    expected = torch.logsumexp(direct.double(), 1) - math.log(50)
    assert torch.allclose(mixture_log_density(z, mu, logvar, chunk=7), expected, atol=1e-5)


def test_mutual_information_of_a_gaussian_channel():
    """x ~ N(0, I_2), z = x + N(0, s^2 I): I(x; z) = 2 * 1/2 log(1 + 1/s^2) nats."""
    g = torch.Generator().manual_seed(123)  # not the estimator's seed 0, whose noise would equal mu
    s = 0.5
    mu = torch.randn(6000, 2, generator=g)
    logvar = torch.full_like(mu, math.log(s ** 2))
    mi = mutual_information(mu, logvar, samples=2)
    assert mi["mi_nats"] == pytest.approx(math.log(1 + 1 / s ** 2), abs=0.06)


def test_pca_spectrum_recovers_axis_aligned_variances():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(20000, 4, generator=g) * torch.tensor([2.0, 0.5, 0.05, 0.01])
    r = pca_spectrum(mu)
    assert np.allclose(r["eigenvalues"], [4.0, 0.25, 0.0025, 0.0001], rtol=0.05)
    assert r["above_threshold"] == 2
    assert r["mean_axis_alignment_informative"] > 0.99  # eigenvectors lie on the axes
    rotated = mu @ torch.linalg.qr(torch.randn(4, 4, generator=g))[0]
    assert pca_spectrum(rotated)["axis_alignment"][0] < 0.99


# --- typical set ----------------------------------------------------------------------------------
def test_typical_gap_concentrates_like_the_chi_square_law():
    g = torch.Generator().manual_seed(0)
    n = 400
    mu = torch.randn(5000, n, generator=g)
    logvar = torch.randn(5000, n, generator=g) * 0.2
    gaps = typical_gap(mu, logvar, g, prefixes=[4, 40, 400])
    # -1/m log q - h_bar = (chi^2_m - m) / (2m): mean 0, sd 1/sqrt(2m) per image, so E|.| = sqrt(2/pi) / sqrt(2m)
    for m, row in gaps.items():
        assert row["abs_gap_nats_per_dim"] == pytest.approx(math.sqrt(2 / math.pi) / math.sqrt(2 * m), rel=0.06)
        assert row["log_density_ratio_sd"] == pytest.approx(math.sqrt(m / 2), rel=0.06)
    assert gaps[4]["percent_gap_mean"] > gaps[40]["percent_gap_mean"] > gaps[400]["percent_gap_mean"]


def test_theorem3_holds_for_positive_entropy_and_fails_below():
    rows = theorem3_check(dims=(1, 10, 100, 1000), sigmas=(1.0, 0.1), pairs=4000)
    by = {(r["sigma"], r["n"]): r for r in rows}
    assert by[(1.0, 100)]["p_within_delta"] == 1.0 and by[(1.0, 1000)]["p_within_delta"] == 1.0
    assert by[(0.1, 1000)]["p_within_delta"] == 0.0  # h < 0: densities blow up instead of meeting
    for r in rows:  # the per-dimension log-density difference has sd exactly 1/sqrt(n)
        assert r["per_dim_diff_sd"] == pytest.approx(r["per_dim_diff_sd_exact"], rel=0.05)


# --- likelihood -----------------------------------------------------------------------------------
def test_importance_sampling_matches_exact_marginal_likelihood():
    from test_objectives import linear_gaussian_vae

    torch.set_default_dtype(torch.float64)
    try:
        model, x, exact = linear_gaussian_vae(exact_encoder=False)
        with torch.no_grad():  # a poor but honest proposal: IS must still converge to log p(x), with a calibrated SE
            model.head.logvar.bias.fill_(0.5)
        g = torch.Generator().manual_seed(0)
        lp, se = importance_sampled_log_likelihood(model, x, samples=20000, batch_images=2, generator=g)
        assert torch.all((lp - exact).abs() < 5 * se + 1e-3), (lp, exact, se)
        # Jensen: with few samples the estimate is biased low on average (200 repeats per image)
        small, _ = importance_sampled_log_likelihood(model, x.repeat(200, 1, 1, 1), samples=10, generator=g)
        assert torch.all(small.view(200, -1).mean(0) < exact)
        iwae10 = vr_bound(model, x.repeat(200, 1, 1, 1), samples=10, alpha=0.0, generator=g).view(200, -1).mean(0)
        elbo10 = vr_bound(model, x.repeat(200, 1, 1, 1), samples=10, alpha=1.0, generator=g).view(200, -1).mean(0)
        assert torch.all(elbo10 < iwae10) and torch.all(iwae10 < exact)
    finally:
        torch.set_default_dtype(torch.float32)


def test_importance_sampling_is_exact_with_the_exact_posterior():
    from test_objectives import linear_gaussian_vae

    torch.set_default_dtype(torch.float64)
    try:
        model, x, exact = linear_gaussian_vae(exact_encoder=True)
        lp, se = importance_sampled_log_likelihood(model, x, samples=50)
        assert torch.allclose(lp, exact, atol=1e-8) and float(se.max()) < 1e-6  # every weight equals p(x)
    finally:
        torch.set_default_dtype(torch.float32)


# --- samplers -------------------------------------------------------------------------------------
def test_quantile_grids_follow_document_003():
    assert quantile_grid(2).shape == (100, 2)
    g3 = quantile_grid(3)
    assert g3.shape == (125, 3)  # 5 slices of 25
    assert torch.allclose(g3[:25, 0], g3[0, 0].expand(25))  # a slice holds the first coordinate fixed
    assert quantile_grid(4).shape == (81, 4)  # 3^4
    assert torch.allclose(quantile_grid(3).mean(0), torch.zeros(3), atol=1e-6)  # symmetric quantiles
    with pytest.raises(ConfigError, match="2, 3 or 4"):
        quantile_grid(5)


# --- adapters -------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoder, message", [
    (lambda x: (torch.full((x.shape[0], 3), float("nan")), torch.zeros(x.shape[0], 3)), "encode \\(mu\\) returned .* non-finite"),
    (lambda x: (torch.zeros(x.shape[0], 5), torch.zeros(x.shape[0], 5)), r"encode \(mu\) returned shape \(2, 5\); expected \(2, 3\)"),
    (lambda x: torch.zeros(x.shape[0], 3, dtype=torch.int64), "encode returned dtype torch.int64"),
])
def test_adapter_names_the_bad_call(encoder, message):
    model = TorchModelAdapter(encoder, torch.nn.Linear(3, 64), 3, (1, 8, 8))
    with pytest.raises(RunError, match=message):
        model.encode(torch.zeros(2, 1, 8, 8))


def test_adapter_checks_the_decoder():
    model = TorchModelAdapter(lambda x: x.flatten(1)[:, :3], lambda z: torch.zeros(z.shape[0], 10), 3, (1, 8, 8))
    with pytest.raises(RunError, match=r"decode returned shape \(4, 10\); expected \(4, 1, 8, 8\)"):
        model.decode(torch.zeros(4, 3))


def test_adapter_decodes_to_float32_under_autocast():
    """The likelihood may decode in bf16 autocast: an adapted decoder's output (here probabilities, turned into logits
    by the adapter) comes back in float32, as vaelab's own decoders' does."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.Sigmoid())
    model = TorchModelAdapter(lambda x: (x.flatten(1)[:, :3], x.flatten(1)[:, 3:6]), net, 3, (1, 8, 8),
                              decoder_output="probs")
    z = torch.randn(5, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.decode(z)
    assert out.dtype == torch.float32 and out.shape == (5, 1, 8, 8)
    assert torch.allclose(out, model.decode(z), atol=0.1)  # bf16 probabilities, float32 logits


def test_pythae_model_through_the_adapter(digits):
    pythae = pytest.importorskip("pythae")
    from pythae.models import VAE, VAEConfig

    from vaelab.analysis.adapters import from_pythae

    torch.manual_seed(0)
    pm = VAE(VAEConfig(input_dim=(1, 8, 8), latent_dim=3, reconstruction_loss="bce"))
    model = from_pythae(pm).eval()
    x = digits.x_test[:16]
    q = model.encode(x)
    out = pm.encoder(x)
    assert torch.equal(q.mu, out.embedding) and torch.equal(q.logvar, out.log_covariance)
    probs = pm.decoder(q.mu)["reconstruction"]
    assert torch.allclose(model.likelihood.mean(model.decode(q.mu)), probs.clamp(1e-6, 1 - 1e-6), atol=1e-6)
    # our estimator on the adapted model agrees with pythae's own get_nll (same S, independent noise)
    lp, se = importance_sampled_log_likelihood(model, x, samples=400)
    theirs = pm.get_nll(x, n_samples=400, batch_size=100)
    assert abs(float(lp.mean()) - theirs) < 5 * float(se.pow(2).sum().sqrt() / len(se)) * math.sqrt(2) + 0.02
    assert pythae.models.VAE is VAE


# --- a trained run, end to end ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from vaelab.trainer import train

    cfg = tiny_config(model={"arch": "64-64-64-4"}, train={"epochs": 6, "batch_size": 64, "lr": 3e-3, "snapshot_every": 2})
    return train(cfg, tmp_path_factory.mktemp("runs"), progress=False, log=lambda m: None)


def test_likelihood_decodes_in_bf16_only_where_it_is_faster_and_keeps_the_estimate(trained_run, monkeypatch):
    """precision=auto checks bf16 against float32 on its own noise: the estimate itself is the same draw either way,
    bf16 is used only when it is faster and keeps the mean, and the check is recorded."""
    from vaelab.analysis import likelihood as lik

    subject = from_run(trained_run.path)
    params = {"samples": 200, "n_images": 300, "recon_images": 100}
    monkeypatch.setattr(lik, "CHECK_MIN_WORK", 0)
    fp32 = lik.likelihood(subject, precision="fp32", **params).data
    bf16 = lik.likelihood(subject, precision="bf16", **params).data
    assert fp32["precision"] == "fp32" and bf16["precision"] == "bf16"
    # bf16 decoding moves the mean estimate by well under its sampling error here
    assert abs(bf16["log_likelihood"] - fp32["log_likelihood"]) < 0.05 + 2 * fp32["log_likelihood_se_sampling"]

    monkeypatch.setattr(lik, "BF16_MIN_SPEEDUP", 0.0)  # any speed will do: accuracy decides
    monkeypatch.setattr(lik, "GIVE_UP_SLOWER", math.inf)  # (on a CPU without bf16 arithmetic too)
    chose = lik.likelihood(subject, precision="auto", **params).data
    check = chose["precision_check"]
    assert chose["precision"] == "bf16" and check["bias_bound_nats"] <= lik.BF16_MAX_BIAS
    assert chose["log_likelihood"] == bf16["log_likelihood"]  # the check did not touch the estimate's noise
    assert check["images"] == lik.CHECK_IMAGES and check["fp32_seconds"] > 0 and check["bf16_seconds"] > 0

    monkeypatch.setattr(lik, "BF16_MIN_SPEEDUP", 1e9)  # never fast enough
    slow = lik.likelihood(subject, precision="auto", **params).data
    assert slow["precision"] == "fp32" and "faster here" in slow["precision_check"]["reason"]
    assert slow["log_likelihood"] == fp32["log_likelihood"]

    monkeypatch.setattr(lik, "BF16_MIN_SPEEDUP", 0.0)
    monkeypatch.setattr(lik, "CHECK_MIN_WORK", 10**12)  # too small an estimate to repay the check
    small = lik.likelihood(subject, precision="auto", **params).data
    assert small["precision"] == "fp32" and "precision_check" not in small
    with pytest.raises(ConfigError, match="precision 'fp16' is not one of auto, fp32, bf16"):
        lik.likelihood(subject, precision="fp16", **params)


def test_likelihood_with_replicates_reports_their_mean_and_the_se_from_their_spread(trained_run):
    """replicates = R: R independent estimates (their means in the result), log p(x) their mean, the sampling SE
    sd / sqrt(R) of those means; R = 1 stays the single estimate with the delta-method SE."""
    from vaelab.analysis import likelihood as lik

    subject = from_run(trained_run.path)
    params = {"samples": 50, "n_images": 60, "recon_images": 50, "precision": "fp32"}
    one = lik.likelihood(subject, **params).data
    three = lik.likelihood(subject, replicates=3, **params).data
    means = three["log_likelihood_replicates"]
    assert one["se_sampling_method"] == "delta" and "log_likelihood_replicates" not in one
    assert three["se_sampling_method"] == "replicates (3)" and len(means) == 3 and len(set(means)) == 3
    assert three["log_likelihood"] == pytest.approx(sum(means) / 3)
    assert three["log_likelihood_se_sampling"] == pytest.approx(float(np.std(means, ddof=1)) / math.sqrt(3))
    assert means[0] == pytest.approx(one["log_likelihood"])  # the first replicate is the single estimate's draw
    assert three["vr_bound"] == one["vr_bound"] and three["test"] == one["test"]  # the later draws are R's alone
    assert three["se_sampling_reliable"] is True  # measured, whatever the tails
    if not three["se_sampling_reliable_delta"]:  # the reading says where the SE comes from
        assert "spread of 3 independent estimates" in three["se_reading"]
    with pytest.raises(ConfigError, match="replicates 0 is outside 1..100"):
        lik.likelihood(subject, replicates=0, **params)


def test_the_bf16_check_refuses_a_decoder_that_bf16_rounding_breaks(trained_run, monkeypatch):
    """Power: logits that are large sums of large terms (the last layer scaled up 300x) lose whole nats to bf16's
    8-bit mantissa; the check sees the shift and keeps float32."""
    from vaelab.analysis import likelihood as lik

    subject = from_run(trained_run.path)
    model = subject.model
    with torch.no_grad():
        last = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.mul_(300.0)
    monkeypatch.setattr(lik, "BF16_MIN_SPEEDUP", 0.0)
    monkeypatch.setattr(lik, "GIVE_UP_SLOWER", math.inf)
    x = subject.data.x_test[:lik.CHECK_IMAGES].round()
    precision, check = lik.choose_precision(model, x, 200, seed=1)
    assert precision == "fp32" and check["bias_bound_nats"] > 10 * lik.BF16_MAX_BIAS, check
    assert "moves the mean" in check["reason"]


def test_the_bf16_check_ends_after_a_first_pass_where_bf16_is_far_slower(trained_run, monkeypatch):
    """A CPU without bf16 arithmetic (AVX2 only: 45x slower on document 000's conv decoder): the check stops after
    one small timed pass in each precision instead of decoding 48 x 128 latents in bf16, and keeps float32."""
    import time as _time

    from vaelab.analysis import likelihood as lik

    subject = from_run(trained_run.path)
    model, decode, bf16_latents = subject.model, subject.model.decode, []

    def slow_in_bf16(z):
        if torch.is_autocast_enabled("cpu"):
            bf16_latents.append(z.shape[0] * z.shape[1])
            _time.sleep(0.3)
        return decode(z)

    monkeypatch.setattr(model, "decode", slow_in_bf16)
    precision, check = lik.choose_precision(model, subject.data.x_test[:lik.CHECK_IMAGES], 200, seed=1)
    assert precision == "fp32" and "slower on a first pass" in check["reason"], check
    assert check["bf16_seconds"] > lik.GIVE_UP_SLOWER * check["fp32_seconds"]
    assert sum(bf16_latents) == 2 * 4 * 8  # the warm-up and the timed first pass, 4 images x 8 samples each


def test_every_analysis_on_a_trained_run(trained_run):
    subject = from_run(trained_run.path)
    assert subject.source["checkpoint_epoch"] == 6 and subject.source["run_state"] == "finished"
    results = analyze(subject, settings={"likelihood.samples": "100", "n": "200", "quality.n": "200"})
    assert set(results) == {"posterior", "typical-set", "prior-gap", "samples", "likelihood", "quality", "memorisation",
                            "probes", "interpolation"}
    for name, r in results.items():
        saved = json.loads((trained_run.path / "analysis" / f"{name}.json").read_text())
        assert saved["analysis"] == name and saved["source"]["checkpoint_epoch"] == 6
        assert saved["params"] == json.loads(json.dumps(r.params))
        assert r.figures and all((trained_run.path / "figures").joinpath(p.split("/")[-1]).exists() for p in r.figures)
        assert {p.rsplit(".", 1)[1] for p in r.figures} == {"png", "svg"}
    lik = results["likelihood"].data
    assert lik["vr_bound"] <= lik["log_likelihood"] + 3 * lik["log_likelihood_se_images"]
    assert results["likelihood"].params["samples"] == 100
    probes = results["probes"].data
    assert [e["epoch"] for e in probes["over_training"]] == [2, 4, 6]
    assert probes["final"]["mu"] > 3 * probes["chance"]
    samples = results["samples"].arrays
    assert samples["images_grid"].shape == (81, 1, 8, 8) and samples["images_prior"].shape == (200, 1, 8, 8)
    inter = results["interpolation"]
    pair = inter.arrays["pair0"]
    assert pair.shape == (5, 10, 1, 8, 8)
    i, j = inter.data["pairs"][0]["test_indices"]
    assert np.allclose(pair[0, 0], subject.data.x_test[i].numpy()) and np.allclose(pair[0, -1], subject.data.x_test[j].numpy())
    for p in inter.data["pairs"]:
        assert p["fisher_rao_distance"] <= p["straight_line_fisher_length"] + 1e-9
    quality = results["quality"].data
    assert quality["classifier"]["test_accuracy"] > 0.9
    assert quality["fd"]["real-train"] < quality["fd"]["prior"]


def test_deterministic_model_skips_what_does_not_apply(trained_run, digits):
    model = TorchModelAdapter(lambda x: x.flatten(1)[:, :3], torch.nn.Linear(3, 64), 3, (1, 8, 8))
    subject = from_model(model, digits)
    results = analyze(subject, only="posterior,typical-set,interpolation")
    assert results["typical-set"] is None and results["interpolation"] is None
    assert results["posterior"]["kl_total"] is None
    with pytest.raises(NotApplicable):
        run_analysis(subject, "typical-set")


def test_diagnose_without_a_likelihood_reads_overfitting_from_copying_alone(digits, tmp_path, monkeypatch):
    """When the likelihood analysis does not apply (no ELBO for this model), the verdict says so and still answers."""
    from vaelab.analysis import diagnose as diagnosis_module

    def no_likelihood(subject, name, **kw):
        if name == "likelihood":
            raise NotApplicable("no ELBO for this model")
        return run_analysis(subject, name, **kw)

    monkeypatch.setattr(sys.modules["vaelab.analysis.diagnose"], "run_analysis", no_likelihood)
    torch.manual_seed(0)
    model = TorchModelAdapter(lambda x: x.flatten(1)[:, :3], torch.nn.Linear(3, 64), 3, (1, 8, 8))
    result = diagnosis_module(from_model(model, digits, out_dir=tmp_path), quick=True)
    text = " ".join(result.data["verdict"])
    assert "No ELBO" in text and "Data-copying test" in text and "Conclusion:" in text
    assert "train_neg_elbo" not in result.data["table"] and "fd_prior" in result.data["table"]


def test_analysis_of_a_run_still_training_uses_its_last_checkpoint(trained_run):
    from vaelab.runs import write_status

    write_status(trained_run.path, "running", epoch=6)
    try:
        assert from_run(trained_run.path).source["run_state"] == "running"
    finally:
        write_status(trained_run.path, "finished", epoch=6)


def test_cli_analyze_and_diagnose(trained_run):
    from vaelab.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["analyze", str(trained_run.path), "--only", "posterior", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["posterior"]["result"]["latent_dim"] == 4
    bad = subprocess.run([sys.executable, "-m", "vaelab", "analyze", str(trained_run.path), "--set", "sampels=10"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --set sampels: no selected analysis takes 'sampels'")
    assert len(bad.stderr.strip().splitlines()) == 1
    diag = runner.invoke(app, ["diagnose", str(trained_run.path), "--quick"])
    assert diag.exit_code == 0, diag.output
    saved = json.loads((trained_run.path / "analysis" / "diagnosis.json").read_text())["result"]
    table = saved["table"]
    assert table["latent_dim"] == 4 and "fd_prior" in table and "fd_ex-post-gmm" in table
    text = " ".join(saved["verdict"])
    assert f"{table['pca_above_0.01']} of 4 directions of the codes vary with x" in text
    assert f"{table['active_units']} axes do" in text
    assert f"prior {table['fd_prior']:.1f}" in text and "Conclusion:" in text
    assert set(saved) >= {"informative_mismatch", "shell_mismatch", "overfitting_supported", "mismatch_costs", "best_fix"}
    thresholds = json.loads((trained_run.path / "analysis" / "diagnosis.json").read_text())["params"]["thresholds"]
    assert "classifier AUC interval above" in thresholds["informative_mismatch"]
    assert "Conclusion:" in diag.stdout


# --- declarations: parameters and headline numbers ---------------------------------------------------
def test_a_headline_column_carries_the_threshold_it_ran_with(trained_run, tmp_path):
    """`--set threshold=0.05` must not land in a column named for 0.01 (results.csv, report, CLI all read this)."""
    import shutil

    from vaelab.analysis.framework.registry import column
    from vaelab.studies.results import run_numbers

    run = tmp_path / "run"
    shutil.copytree(trained_run.path, run)
    for f in (run / "analysis").glob("*"):
        f.unlink()
    subject = from_run(run)
    loose = run_analysis(subject, "posterior", threshold=0.05)
    numbers = run_numbers(run)
    assert numbers["pca_above_0.05"] == loose["pca"]["above_threshold"] and "pca_above_0.01" not in numbers
    assert column("posterior", "pca_above_{threshold:g}") == "pca_above_0.01"
    assert column("posterior", "pca_above_{threshold:g}", {"threshold": 0.05}) == "pca_above_0.05"
    # the numbers are the analysis's own, under the declared names (an independent read of the saved JSON)
    saved = json.loads((run / "analysis" / "posterior.json").read_text())["result"]
    assert numbers["active_units"] == saved["active_units"] and numbers["test_loss"] == pytest.approx(
        trained_run.metrics[-1]["test_loss"], rel=1e-5)


def test_parameters_are_typed_and_validated_by_the_declaration():
    from vaelab.analysis.framework.registry import ANALYSES, declaration, split_params
    from vaelab.errors import ConfigError

    per = split_params(["posterior", "likelihood"], {"threshold": "0.05", "likelihood.samples": "50", "seed": "3"})
    assert per == {"posterior": {"threshold": 0.05, "seed": 3}, "likelihood": {"samples": 50, "seed": 3}}
    with pytest.raises(ConfigError, match=r"likelihood.samples='many'.*expected int"):
        split_params(["likelihood"], {"samples": "many"})
    with pytest.raises(ConfigError, match="takes no parameter 'sample'; accepted: samples"):
        ANALYSES["likelihood"].validate({"sample": 3})
    with pytest.raises(ConfigError, match="unknown analysis 'posteriors'"):
        declaration("posteriors")
    assert declaration("diagnose").name == "diagnosis"
    for a in ANALYSES.values():  # every declared default passes its own validation
        assert a.validate(a.parameters()) == a.parameters()


def test_a_study_with_a_bad_analysis_parameter_is_refused_before_any_run(tmp_path):
    from vaelab.studies.spec import load_study
    from vaelab.errors import ConfigError

    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nbase: {model: {arch: 64-32-4}}\nanalyses: {likelihood: {samples: many}}\n")
    with pytest.raises(ConfigError, match="likelihood.samples='many'"):
        load_study(spec)


def test_cli_prints_the_declared_headline_numbers(trained_run):
    from vaelab.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["analyze", str(trained_run.path), "--only", "posterior", "--set", "threshold=0.05"])
    assert out.exit_code == 0, out.output
    assert "PCA eigenvalues > 0.05" in out.stdout
    listing = runner.invoke(app, ["analyze", "--list"])
    assert "samples: int = 1000" in listing.stdout and "pca_above_{threshold:g}" in listing.stdout
    info = runner.invoke(app, ["info", str(trained_run.path)])
    assert info.exit_code == 0 and "posterior: active units" in info.stdout


def test_the_diagnose_function_keeps_its_name_after_its_module_is_loaded():
    """A study (or the registry) loads vaelab.analysis.diagnose, the module, by name; `from vaelab.analysis import
    diagnose` must still give the function (it gave the module after a study had run in the same process)."""
    code = ("from vaelab.analysis.framework.registry import declaration\n"
            "declaration('diagnosis').load()\n"
            "from vaelab.analysis import diagnose\n"
            "assert callable(diagnose), type(diagnose)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
