"""Claims as checks (vaelab.studies.claims): each rule kind against hand-made runs whose answer is known, the
intervals that decide them, the spec's validation of claims, the scorecard in the report and `vaelab scorecard`."""
import json
import math
import re
import subprocess
import sys

import pytest
import yaml

from vaelab.errors import ConfigError
from vaelab.studies.view import StudyView
from vaelab.studies import intervals
from vaelab.studies.claims import HELD, INCONCLUSIVE, NOT_HELD, expected_typical_gap
from vaelab.studies.scorecard import scorecard
from vaelab.studies.spec import StudySpec, builtin_studies, load_study


def _view(tmp_path, rows, claims, grid=None, **spec):
    spec = StudySpec(name="t", grid=grid if grid is not None else {"model.latent_dim": sorted({r["model.latent_dim"]
                                                                   for r in rows if "model.latent_dim" in r})},
                     claims=claims, **spec)
    return StudyView(tmp_path, spec, rows)


def _claim(rule, **extra):
    return {"id": "c", "claim": "a claim", "document": "Fig. 1", "rule": rule, **extra}


def _decide(tmp_path, rows, rule, **spec):
    [outcome] = scorecard(tmp_path, _view(tmp_path, rows, [_claim(rule)], **spec))
    return outcome


def _grid_rows(values_by_x: dict, metric="fd_prior", **extra):
    """One finished run per (x, seed): values_by_x = {x: [value of seed 0, seed 1, ...]}."""
    return [{"run": f"r-z{x}-s{s}", "status": "finished", "model.latent_dim": x, "seed": s, metric: v, **extra}
            for x, vals in values_by_x.items() for s, v in enumerate(vals)]


def _analysis(tmp_path, run, name, result):
    folder = tmp_path / "runs" / run / "analysis"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"result": result}))


# --- intervals ------------------------------------------------------------------------------------------------
def test_intervals_match_textbook_values():
    from scipy import stats

    iv = intervals.mean([1.0, 2.0, 3.0, 4.0])
    half = stats.t.ppf(0.975, 3) * stats.sem([1, 2, 3, 4])
    assert iv.value == 2.5 and math.isclose(iv.high - iv.value, half) and iv.n == 4
    assert intervals.mean([5.0]) is None  # one replicate: no interval, never a zero-width one
    fit = stats.linregress([0, 1, 2, 3, 0, 1, 2, 3], [1, 3, 4, 7, 2, 2, 5, 6])
    iv = intervals.slope([0, 1, 2, 3, 0, 1, 2, 3], [1, 3, 4, 7, 2, 2, 5, 6])
    assert math.isclose(iv.value, fit.slope) and math.isclose(iv.high - iv.value, stats.t.ppf(0.975, 6) * fit.stderr)
    welch = stats.ttest_ind([1.0, 2.0, 4.0], [5.0, 7.0], equal_var=False).confidence_interval()
    iv = intervals.difference([1.0, 2.0, 4.0], [5.0, 7.0])
    assert math.isclose(iv.low, welch.low) and math.isclose(iv.high, welch.high)
    assert intervals.difference([1.0, 1.0], [3.0, 3.0]).low == -2.0  # no spread at all: the difference is exact
    ratio = intervals.sd_ratio([1.0, 2.0, 3.0], [1.0, 3.0, 5.0])
    assert math.isclose(ratio.value, 0.5) and ratio.low < 0.5 < ratio.high
    assert intervals.proportion(1.0, 1000).low > 0.99 and intervals.proportion(0.0, 1000).high < 0.01
    assert intervals.Interval(318.1, 270.4, 369.2, 2).text() == "318 [270, 369]"
    assert intervals.Interval(0.05, 0.008, 0.092, 2).text(signed=True) == "+0.050 [+0.008, +0.092]"


def _exact(mean, sd, n):
    """n values whose mean and sample sd are exactly ``mean`` and ``sd``: the same estimate and spread at any n."""
    z = [i - (n - 1) / 2 for i in range(n)]
    scale = math.sqrt(sum(v * v for v in z) / (n - 1))
    return [mean + sd * v / scale for v in z]


def _seeds_wanted(why):
    found = re.search(r"about (\d+) seeds per setting would decide it", why)
    return int(found.group(1)) if found else None


def test_the_seeds_an_inconclusive_claim_needs_are_those_at_which_the_rule_decides(tmp_path):
    """Ground truth: the rule itself, rerun on more seeds with the same estimate and spread. A mean of per-run
    differences (compare against a number) follows the estimate exactly: decided at the seeds named, not one
    before."""
    rule = {"kind": "compare", "metric": "fd_prior", "than": 0.0, "direction": "greater"}

    def decide(n):
        rows = [{"run": f"r-s{i}", "status": "finished", "seed": i, "fd_prior": v} for i, v in enumerate(_exact(1.0, 2.5, n))]
        return _decide(tmp_path, rows, rule, grid={}, seeds=list(range(n)))

    three = decide(3)
    wanted = _seeds_wanted(three.why)
    assert three.outcome == INCONCLUSIVE and "spans 0" in three.why and wanted is not None, three.why
    assert f"(3 now: {wanted / 3:.3g}x the runs)" in three.why
    assert decide(wanted).outcome == HELD and decide(wanted - 1).outcome == INCONCLUSIVE
    # the solver against the closed form: t(n - 1) sd / sqrt(n) < |mean| first at n = wanted
    from scipy import stats
    first = next(n for n in range(3, 200) if stats.t.ppf(0.975, n - 1) * 2.5 / math.sqrt(n) < 1.0)
    assert wanted == first
    # an estimate on the line: no number of seeds decides it, and none is named
    on_line = [{"run": f"r-s{i}", "status": "finished", "seed": i, "fd_prior": v} for i, v in enumerate(_exact(0.0, 1, 3))]
    flat = _decide(tmp_path, on_line, rule, grid={}, seeds=[0, 1, 2])
    assert flat.outcome == INCONCLUSIVE and _seeds_wanted(flat.why) is None
    # one seed: no spread to extrapolate from
    assert intervals.replicates_to_decide(intervals.Interval(1.0, -1.0, 3.0, 4), 1.0) is None  # no t quantile


def test_the_seeds_named_decide_a_trend_and_an_equivalence(tmp_path):
    """A trend (a slope over four grid points) and a `near` (Welch per pair) with three noisy seeds each name a
    number of seeds; rerun with that many (same means and spreads), the rule decides, and with one seed fewer it does
    not."""
    means = {2: 100.0, 20: 104.0, 200: 108.0, 800: 112.0}

    def trend(n):  # the seeds scatter so that the slope's residual sd is 12 at any n (means exactly on the line)
        sd = 12.0 * math.sqrt((4 * n - 2) / (4 * (n - 1)))
        rows = _grid_rows({x: _exact(m, sd, n) for x, m in means.items()})
        return _decide(tmp_path, rows, TREND, seeds=list(range(n)))

    wanted = _seeds_wanted(trend(3).why)
    assert trend(3).outcome == INCONCLUSIVE and wanted and wanted > 3
    assert trend(wanted).outcome == HELD and trend(wanted - 1).outcome == INCONCLUSIVE

    for sds in ((2.0, 2.0), (0.3, 3.0)):  # Welch's degrees of freedom: exact for groups of equal size, any spreads
        def near(n):
            rows = _grid_rows({2: _exact(22.0, sds[0], n), 20: _exact(22.5, sds[1], n)}, "test_recon")
            return _decide(tmp_path, rows, NEAR, seeds=list(range(n)))

        three = near(3)
        wanted = _seeds_wanted(three.why)
        assert three.outcome == INCONCLUSIVE and wanted and wanted > 3 and three.seeds_to_decide == wanted
        assert near(wanted).outcome == HELD and near(wanted - 1).outcome == INCONCLUSIVE, sds


# --- trend ----------------------------------------------------------------------------------------------------
TREND = {"kind": "trend", "metric": "fd_prior", "over": "model.latent_dim", "direction": "increasing"}


def test_trend_held_did_not_hold_and_one_seed(tmp_path):
    rising = _grid_rows({2: [100, 104, 98], 20: [150, 149, 155], 200: [300, 290, 310], 800: [350, 360, 345]})
    held = _decide(tmp_path, rising, TREND)
    assert held.outcome == HELD and "slope per grid step +" in held.measurement and held.interval.low > 0
    falling = _decide(tmp_path, rising, {**TREND, "direction": "decreasing"})
    assert falling.outcome == NOT_HELD and "other side" in falling.why
    one_seed = _decide(tmp_path, _grid_rows({2: [100], 20: [150], 200: [300], 800: [350]}), TREND)
    assert one_seed.outcome == INCONCLUSIVE and "one seed" in one_seed.why
    logged = _decide(tmp_path, rising, {**TREND, "x": "log"})
    assert logged.outcome == HELD and "per decade" in logged.measurement


def test_a_noisy_trend_is_not_called(tmp_path):
    """The means rise (so 'the last is larger' would call it) but the seeds scatter more than they move."""
    noisy = _grid_rows({2: [100, 160, 40], 20: [70, 180, 60], 200: [150, 50, 140], 800: [90, 200, 60]})
    out = _decide(tmp_path, noisy, TREND)
    assert out.interval.value > 0 and out.outcome == INCONCLUSIVE and "spans 0" in out.why


def test_trend_by_another_grid_key_must_hold_in_each(tmp_path):
    rows = [{"run": f"r-{k}-{a}-{s}", "status": "finished", "model.latent_dim": k, "objective.alpha": a, "seed": s,
             "active_units": (10 - 4 * a if k == 30 else 5 + 4 * a) + 0.1 * s}
            for k in (30, 40) for a in (0.0, 0.5, 1.0) for s in (0, 1)]
    rule = {"kind": "trend", "metric": "active_units", "over": "objective.alpha", "by": "model.latent_dim",
            "direction": "decreasing"}
    out = _decide(tmp_path, rows, rule, grid={"model.latent_dim": [30, 40], "objective.alpha": [0.0, 0.5, 1.0]})
    assert out.outcome == NOT_HELD and "did not hold for latent_dim = 40" in out.why
    assert "latent_dim = 30:" in out.measurement and "latent_dim = 40:" in out.measurement


# --- compare --------------------------------------------------------------------------------------------------
def test_compare_metrics_of_the_same_runs_and_a_number(tmp_path):
    rows = [{"run": f"r{i}", "status": "finished", "seed": i, "probe_mu": p, "probe_mu+sigma2": p + d}
            for i, (p, d) in enumerate([(0.90, 0.02), (0.91, 0.03), (0.93, 0.02), (0.92, 0.025)])]
    rule = {"kind": "compare", "metric": "probe_mu+sigma2", "than": "probe_mu", "direction": "greater"}
    out = _decide(tmp_path, rows, rule, grid={})
    assert out.outcome == HELD and "probe_mu+sigma2 - probe_mu, mean over 4 runs: +0.024" in out.measurement
    assert _decide(tmp_path, rows, {**rule, "direction": "less"}, grid={}).outcome == NOT_HELD
    number = {"kind": "compare", "metric": "probe_mu", "than": 0.95, "direction": "greater"}
    assert _decide(tmp_path, rows, number, grid={}).outcome == NOT_HELD
    one = _decide(tmp_path, rows[:1], rule, grid={})
    assert one.outcome == INCONCLUSIVE and "one run" in one.why


def test_compare_two_groups_means_and_spreads(tmp_path):
    def runs(variant, values):
        return [{"run": f"{variant}-s{i}", "status": "finished", "variant": variant, "seed": i, "test_loss": v}
                for i, v in enumerate(values)]
    rows = runs("ae", [20.1, 20.3, 20.2]) + runs("vae", [21.0, 21.2, 20.9]) + runs("wide", [19.0, 23.0, 21.5])
    spec = {"grid": {}, "variants": [{"label": v} for v in ("ae", "vae", "wide")]}
    rule = {"kind": "compare", "metric": "test_loss", "a": {"variant": "ae"}, "b": {"variant": "vae"}, "direction": "less"}
    assert _decide(tmp_path, rows, rule, **spec).outcome == HELD
    assert _decide(tmp_path, rows, {**rule, "direction": "greater"}, **spec).outcome == NOT_HELD
    wide = _decide(tmp_path, rows, {**rule, "b": {"variant": "wide"}}, **spec)
    assert wide.outcome == INCONCLUSIVE and "spans 0" in wide.why
    spread = {**rule, "statistic": "sd", "b": {"variant": "wide"}, "names": ["ae", "wide"]}
    out = _decide(tmp_path, rows, spread, **spec)  # sd 0.1 against 2.0 over 3 seeds each: the F interval tells them
    assert out.outcome == HELD and "sd over seeds 0.100 (ae, 3 runs)" in out.measurement and out.interval.high < 1
    two = [r for r in rows if r["seed"] < 2]  # 2 seeds each: an F(1, 1) interval is too wide to tell 0.14 from 1.2
    out = _decide(tmp_path, two, {**spread, "b": {"variant": "vae"}}, **spec)
    assert out.outcome == INCONCLUSIVE
    missing = _decide(tmp_path, rows, {**rule, "b": {"variant": "nope"}}, **spec)
    assert missing.outcome == INCONCLUSIVE and "no finished run with variant nope" in missing.why


# --- near -----------------------------------------------------------------------------------------------------
NEAR = {"kind": "near", "metric": "test_recon", "across": "model.latent_dim", "tolerance": 0.1}


def test_near_across_the_grid(tmp_path):
    same = _grid_rows({2: [22.0, 22.2, 21.9], 20: [22.3, 22.1, 22.0], 200: [21.8, 22.1, 22.2]}, "test_recon")
    assert _decide(tmp_path, same, NEAR).outcome == HELD
    apart = _grid_rows({2: [22.0, 22.2, 21.9], 20: [22.3, 22.1, 22.0], 200: [30.0, 30.1, 29.9]}, "test_recon")
    out = _decide(tmp_path, apart, NEAR)
    assert out.outcome == NOT_HELD and "latent_dim 200 vs 2" in out.measurement
    noisy = _grid_rows({2: [22.0, 18.0, 26.0], 20: [22.3, 22.1, 22.0]}, "test_recon")
    assert _decide(tmp_path, noisy, NEAR).outcome == INCONCLUSIVE


def test_expected_typical_gap_is_the_monte_carlo_value():
    import numpy as np

    rng = np.random.default_rng(0)
    for n in (2, 64, 800):
        chi = rng.chisquare(n, 400_000)
        mc = 100 * np.abs(np.exp(-(chi / n - 1) / 2) - 1).mean()
        assert math.isclose(expected_typical_gap(n), mc, rel_tol=0.01)


def test_near_a_model_free_reference(tmp_path):
    rule = {"kind": "near", "metric": "typical_gap_percent", "reference": "typical-gap", "tolerance": 0.1,
            "se": "typical-set/gap.percent_gap_se"}
    rows = _grid_rows({2: [expected_typical_gap(2)] * 2, 64: [expected_typical_gap(64)] * 2}, "typical_gap_percent")
    for r in rows:
        _analysis(tmp_path, r["run"], "typical-set", {"latent_dim": r["model.latent_dim"], "gap": {"percent_gap_se": 0.1}})
    out = _decide(tmp_path, rows, rule)
    assert out.outcome == HELD and "latent_dim = 2:" in out.measurement
    off = [{**r, "typical_gap_percent": 1.5 * r["typical_gap_percent"]} for r in rows]
    assert _decide(tmp_path, off, rule).outcome == NOT_HELD


def test_derived_metrics_read_the_runs_analyses(tmp_path):
    """code_uniformity from the saved codes (N(0, I) codes fill the prior's quantile grid, bunched ones do not) and
    collapsed_units from the posterior analysis, compared between two groups of runs."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for variant, scale in (("vae", 1.0), ("ae", 0.1)):
        for seed in range(3):
            run = f"{variant}-s{seed}"
            rows.append({"run": run, "status": "finished", "variant": variant, "seed": seed})
            _analysis(tmp_path, run, "posterior", {"latent_dim": 8, "active_units": 8 - (seed + 3) * (variant == "ae")})
            np.savez(tmp_path / "runs" / run / "analysis" / "posterior.npz", mu_test=scale * rng.standard_normal((2000, 2)))
    spec = {"grid": {}, "variants": [{"label": "vae"}, {"label": "ae"}]}
    rule = {"kind": "compare", "metric": "code_uniformity", "a": {"variant": "ae"}, "b": {"variant": "vae"},
            "direction": "less"}
    out = _decide(tmp_path, rows, rule, **spec)
    assert out.outcome == HELD and re.search(r"code_uniformity mean 0\.[0-6]\d* \(variant ae.* vs 0\.9\d+", out.measurement)
    out = _decide(tmp_path, rows, {**rule, "metric": "collapsed_units", "direction": "greater"}, **spec)
    assert out.outcome == HELD and "collapsed_units mean 4.00 (variant ae, 3 runs) vs 0" in out.measurement


# --- read, verdict, failures ----------------------------------------------------------------------------------
def test_read_per_run_with_a_margin(tmp_path):
    rows = [{"run": "big", "status": "finished", "variant": "spatial-big", "seed": 0},
            {"run": "small", "status": "finished", "variant": "small-4", "seed": 0}]
    for run, fd in (("big", {"prior": 300.0, "neighbourhood": 120.0}), ("small", {"prior": 100.0, "neighbourhood": 95.0})):
        _analysis(tmp_path, run, "quality", {"fd": fd})
    spec = {"grid": {}, "variants": [{"label": "spatial-big"}, {"label": "small-4"}]}
    rule = {"kind": "read", "metric": "quality/fd.neighbourhood", "than": "quality/fd.prior", "direction": "less",
            "margin": 0.2, "where": {"variant": {"prefix": "spatial-"}}}
    out = _decide(tmp_path, rows, rule, **spec)  # one seed: a read of each trained model, no interval needed
    assert out.outcome == HELD and "120 vs 300 (-60%)" in out.measurement
    out = _decide(tmp_path, rows, {**rule, "where": {"variant": "small-4"}}, **spec)
    assert out.outcome == INCONCLUSIVE and "within the 20% margin" in out.why
    out = _decide(tmp_path, rows, {**rule, "direction": "greater"}, **spec)
    assert out.outcome == NOT_HELD


def test_read_over_many_runs_gives_their_range_and_names_the_runs_that_did_not_hold(tmp_path):
    rows = _grid_rows({2: [2.0, 3.0, 4.0, 4.5], 20: [5.0, 6.0, 9.5, 7.0]}, metric="test_loss")
    rule = {"kind": "read", "metric": "test_loss", "than": 1.0, "direction": "greater"}
    out = _decide(tmp_path, rows, rule)
    assert out.outcome == HELD and out.measurement == "in 8 runs, test_loss 2.00 to 9.50 vs 1.00 (+100% to +850%)"
    rows.append({"run": "r-z200-s0", "status": "finished", "model.latent_dim": 200, "seed": 0, "test_loss": 0.5})
    out = _decide(tmp_path, rows, rule)
    assert out.outcome == INCONCLUSIVE  # replicates that disagree
    assert out.measurement == ("in 9 runs, test_loss 0.500 to 9.50 vs 1.00 (-50% to +850%); not held or open in 1: "
                               "latent_dim = 200, seed 0: test_loss 0.500 vs 1.00 (-50%)")
    assert out.why == "greater than 1.00, read per run; held in 8, did not hold in 1 of 9 runs"
    out = _decide(tmp_path, rows, {**rule, "direction": "less"})  # most runs fail: counted, not listed
    assert out.outcome == INCONCLUSIVE and out.measurement == "in 9 runs, test_loss 0.500 to 9.50 vs 1.00 (-50% to +850%)"
    assert out.why == "less than 1.00, read per run; held in 1, did not hold in 8 of 9 runs"


def test_verdict_reads_the_diagnosis(tmp_path):
    rows = [{"run": f"r{i}", "status": "finished", "seed": i} for i in range(2)]
    rule = {"kind": "verdict", "metric": "diagnosis/mismatch_costs", "expect": ["complement", "both"]}
    for costs, expected in ((["complement", "both"], HELD), (["informative", "neither"], NOT_HELD),
                            (["complement", "informative"], INCONCLUSIVE)):
        for r, c in zip(rows, costs):
            _analysis(tmp_path, r["run"], "diagnosis", {"mismatch_costs": c})
        assert _decide(tmp_path, rows, rule, grid={}).outcome == expected


def test_a_failed_run_or_a_missing_metric_is_inconclusive(tmp_path):
    rows = _grid_rows({2: [100, 104], 20: [150, 149], 200: [300, 290]})
    rows[-1] = {**rows[-1], "status": "failed", "reason": "loss became nan", "fd_prior": None}
    out = _decide(tmp_path, rows, TREND)
    assert out.outcome == INCONCLUSIVE and "did not finish (r-z200-s1)" in out.why
    out = _decide(tmp_path, rows[:-1], {**TREND, "metric": "log_likelihood"})
    assert out.outcome == INCONCLUSIVE and "no run has log_likelihood" in out.why


# --- theorem3 and winner --------------------------------------------------------------------------------------
def test_theorem3_holds_where_h_is_positive_and_not_below(tmp_path):
    view = _view(tmp_path, [], [_claim({"kind": "theorem3", "entropy": "positive"}),
                                _claim({"kind": "theorem3", "entropy": "negative"}, id="d")], grid={},
                 figure_options={"theorem3": {"pairs": 1000}})
    h = lambda s: 0.5 * math.log(2 * math.pi * math.e * s * s)  # noqa: E731
    view.theorem = [{"sigma": s, "entropy": h(s), "n": n, "p_within_delta": p}
                    for s, p in ((1.0, 1.0), (0.242, 0.4), (0.1, 0.0)) for n in (10, 1000)]
    pos, neg = scorecard(tmp_path, view)
    assert pos.outcome == HELD and "sigma 1 (h = +1.42)" in pos.measurement and "sigma 0.242" in pos.why
    assert neg.outcome == NOT_HELD and "sigma 0.1 (h = -0.88)" in neg.measurement


def test_winner_reuses_the_fixes_rule(tmp_path):
    def runs(variant, fds, **extra):
        return [{"run": f"{variant}-s{i}", "status": "finished", "variant": variant, "seed": i, "fd_prior": fd, **extra}
                for i, fd in enumerate(fds)]
    spec = {"grid": {}, "variants": [{"label": v} for v in ("standard-64", "vamp-64", "warmup-64")]}
    rule = {"kind": "winner", "fixes": ["standard", "vamp", "warmup"]}
    rows = runs("standard-64", [300, 310, 305]) + runs("vamp-64", [200, 205, 198]) + runs("warmup-64", [290, 300, 295])
    out = _decide(tmp_path, rows, rule, **spec)
    assert out.outcome == HELD and out.measurement.startswith("latent 64: the VampPrior gives the lowest FD")
    close = runs("standard-64", [300, 310, 305]) + runs("vamp-64", [298, 306, 300]) + runs("warmup-64", [400, 390, 410])
    assert _decide(tmp_path, close, rule, **spec).outcome == NOT_HELD
    one = _decide(tmp_path, [r for r in rows if r["seed"] == 0], rule, **spec)
    assert one.outcome == INCONCLUSIVE and "one seed" in one.why


# --- the spec -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("claim, message", [
    ({"rule": {**TREND, "metric": "fid_prior"}}, "claims[c].rule.metric: unknown metric 'fid_prior'"),
    ({"rule": {**TREND, "directoin": "increasing"}}, "unknown key 'claims[c].rule.directoin'; did you mean 'direction'?"),
    ({"rule": {**TREND, "over": "model.latent"}}, "claim c: 'model.latent' is not a grid key of the study"),
    ({"rule": {"kind": "slope", "metric": "fd_prior"}}, "claims[c].rule: Input tag 'slope'"),
    ({"rule": {"kind": "compare", "metric": "fd_prior", "direction": "less"}}, "compare takes either `than`"),
    ({"rule": {**TREND, "metric": "posterior:pca_above"}}, "posterior declares no column 'pca_above'"),
    ({"rule": {**TREND, "where": {"variant": {"starts": "x"}}}}, "where.variant: a mapping takes min, max and prefix"),
    ({"rule": {"kind": "winner", "fixes": ["standard", "magic"]}}, "unknown fix 'magic'"),
    ({"claim": ""}, "claims[c].claim: String should have at least 1 character"),
])
def test_bad_claims_are_one_line_errors_naming_the_field(tmp_path, claim, message):
    spec = {"name": "x", "grid": {"model.latent_dim": [2, 4]}, "claims": [{**_claim(TREND), **claim}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        load_study(path)
    assert "\n" not in str(exc.value)


def test_scale_options_of_claims(tmp_path):
    compare = {"kind": "compare", "metric": "fd_prior", "a": {"model.latent_dim": 200}, "b": {"model.latent_dim": 20},
               "direction": "greater"}
    spec = {"name": "x", "grid": {"model.latent_dim": [20, 200]}, "claims": [_claim(compare)],
            "scales": {"small": {"grid": {"model.latent_dim": [8, 64]},
                                 "claim_options": {"c": {"a": {"model.latent_dim": 64}, "b": {"model.latent_dim": 8}}}}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert load_study(path).scaled("small").claims[0].rule.a == {"model.latent_dim": 64}
    for options, message in (({"nope": {}}, "claim_options names no claim 'nope'"),
                             ({"c": {"direction": "up"}}, "claim_options.c: Input should be 'greater' or 'less'")):
        spec["scales"]["small"]["claim_options"] = options
        path.write_text(yaml.safe_dump(spec))
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_study(path)


def test_every_builtin_study_states_claims_valid_at_every_scale():
    for name in builtin_studies():
        spec = load_study(name)
        assert spec.claims, name
        for scale in ["full", *spec.scales]:
            assert [c.id for c in spec.scaled(scale).claims] == [c.id for c in spec.claims]


# --- the report and the command -------------------------------------------------------------------------------
def _study_folder(tmp_path, document="002"):
    """A study folder by hand: study.yaml as a study writes it, results.json, no analyses."""
    from vaelab.studies.results import write_results

    rows = _grid_rows({2: [100, 104, 98], 20: [150, 149, 155], 200: [300, 290, 310]})
    spec = StudySpec(name="hand", document=document, grid={"model.latent_dim": [2, 20, 200]}, seeds=[0, 1, 2],
                     claims=[_claim(TREND, id="samples-degrade", explains="vaelab says more"),
                             _claim({**TREND, "metric": "log_likelihood"}, id="unmeasured")])
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    write_results(tmp_path, rows)
    return tmp_path


def test_the_report_opens_with_the_scorecard(tmp_path):
    from vaelab.report.html import write_report

    html = write_report(_study_folder(tmp_path)).read_text()
    sections = re.findall(r'<section id="([^"]+)"', html)
    assert sections[:2] == ["scorecard", "findings"]
    card = html[html.index('id="scorecard"'):html.index('id="findings"')]
    assert '<tr id="claim-samples-degrade">' in card and '<span class="badge held">held</span>' in card
    assert '<span class="badge inconclusive">inconclusive</span>' in card and "vaelab says more" in card
    assert "1 held, 0 did not hold, 1 inconclusive" in " ".join(card.split())


def test_scorecard_command(tmp_path):
    folder = _study_folder(tmp_path / "study")
    run = lambda *a: subprocess.run([sys.executable, "-m", "vaelab", "scorecard", *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True)
    out = run(folder)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("scorecard of hand (document 002): 9 runs, 9 finished")
    assert lines[1].split()[:3] == ["outcome", "claim", "document"]
    assert any(line.startswith("held          a claim") for line in lines)
    assert "why: no run has log_likelihood" in out.stdout and "vaelab adds: vaelab says more" in out.stdout
    assert lines[-1] == "1 held, 0 did not hold, 1 inconclusive"
    as_json = json.loads(run(folder, "--json").stdout)
    assert [c["outcome"] for c in as_json] == [HELD, INCONCLUSIVE] and as_json[0]["interval"]["low"] > 0
    bad = run(tmp_path / "nowhere")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "not a vaelab study folder" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_a_reproduction_page_and_index_from_a_study_folder(tmp_path):
    """The page carries the scorecard as a table (pipes escaped), the findings, how it was made (or that it was not
    recorded), and the index lists it; writing it again replaces it and leaves no temporary folder."""
    from vaelab.report.reproduction import write_reproduction
    from vaelab.studies import provenance

    folder = _study_folder(tmp_path / "study")
    to = tmp_path / "repro"
    page = write_reproduction(folder, to)
    assert page == to / "002-hand" / "README.md"
    text = page.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| **")]
    assert [r.split("|")[1].strip() for r in rows] == ["**held**", "**inconclusive**"]
    assert "slope" in rows[0] and "*vaelab adds:* vaelab says more" in rows[0] and "no run has log_likelihood" in rows[1]
    assert "1 held, 0 did not hold, 1 inconclusive." in text and "Wall time: not recorded" in text
    assert "Runs: 9, finished 9" in text and "## Findings" in text
    summary = json.loads((to / "002-hand" / "reproduction.json").read_text())
    assert summary["claims"] == {HELD: 1, NOT_HELD: 0, INCONCLUSIVE: 1} and summary["seconds"] is None
    index = (to / "README.md").read_text()
    assert "| 002 | [hand](002-hand/README.md) | full | 1 | 0 | 1 | 9/9 | not recorded |" in index
    # provenance recorded afterwards (an interrupted and a complete invocation) is summed on the next page
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    provenance.record(folder, now, 30.0, 3, complete=False)
    assert "the recorded invocations trained 3 of the 9 runs" in write_reproduction(folder, to).read_text()
    entry = provenance.record(folder, now, 60.0, 6, code="9.9+gabc")
    assert entry["vaelab"] == "9.9+gabc" and entry["machine"]["cores"] >= 1 and entry["peak_rss_gb"] > 0
    text = write_reproduction(folder, to).read_text()
    assert "Wall time: 90 s over 2 invocations; peak memory" in text
    assert f"vaelab {provenance.version()}, 9.9+gabc;" in text  # the two versions that ran it
    assert "recorded invocations trained" not in text  # 3 + 6 runs: every run's training was timed
    assert sorted(p.name for p in to.iterdir()) == ["002-hand", "README.md"]
    out = subprocess.run([sys.executable, "-m", "vaelab", "reproduction", str(tmp_path / "nowhere"), "--to", str(to)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "not a vaelab study folder" in out.stderr and len(out.stderr.splitlines()) == 1


def test_a_study_of_two_documents_gets_a_page_folder_without_spaces(tmp_path):
    """The fixes study is of "002 and 000": its page folder is a path a link can name, its title says 'Documents'."""
    from vaelab.report.reproduction import write_reproduction

    page = write_reproduction(_study_folder(tmp_path / "study", document="002 and 000"), tmp_path / "repro")
    assert page == tmp_path / "repro" / "002-and-000-hand" / "README.md"
    assert page.read_text().startswith("# Documents 002 and 000: hand")
    assert "[hand](002-and-000-hand/README.md)" in (tmp_path / "repro" / "README.md").read_text()


def test_a_reproduction_page_says_what_would_decide_an_open_claim_and_its_cost(tmp_path):
    """An inconclusive trend that more seeds would decide: the page names the seeds, the runs they add and their
    worker time at the study's pace, which is the runs' own training (their epochs) and analysis times summed."""
    from vaelab.report.reproduction import write_reproduction
    from vaelab.studies.results import write_results

    rows = _grid_rows({2: [100, 130, 85], 20: [118, 95, 140], 200: [125, 150, 110]}, train_seconds=100.0)
    spec = StudySpec(name="noisy", document="002", grid={"model.latent_dim": [2, 20, 200]}, seeds=[0, 1, 2],
                     claims=[_claim(TREND, id="rises")])
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    write_results(tmp_path, rows)
    for row in rows:  # each run's analyses took 300 s: with training, 9 x 400 s = 1 h of worker time
        folder = tmp_path / "runs" / row["run"] / "analysis"
        folder.mkdir(parents=True)
        (folder / "posterior.json").write_text(json.dumps({"result": {}, "seconds": {"compute": 100.0, "figures": 20.0}}))
        (folder / "quality.json").write_text(json.dumps({"result": {}, "seconds": {"compute": 180.0}}))
    [outcome] = scorecard(tmp_path)
    wanted = outcome.seeds_to_decide
    assert outcome.outcome == INCONCLUSIVE and wanted and wanted > 3
    text = write_reproduction(tmp_path, tmp_path / "repro").read_text()
    assert "Compute: 15 min of training and 45 min of analyses" in text, text
    assert wanted == 7  # (the count itself is tested against the rule rerun on more seeds, above)
    line = next(x for x in text.splitlines() if x.startswith("- *a claim*"))
    assert line == ("- *a claim*: about 7 seeds per setting instead of 3, at the estimate and spread measured: the "
                    "study with 4 more seeds is 12 more runs, about 80 min of worker time at this study's pace on this "
                    "machine.")  # 9 runs x 4/3; 1 h of worker time x 4/3
    summary = json.loads((tmp_path / "repro" / "002-noisy" / "reproduction.json").read_text())
    assert summary["compute_seconds"] == {"training": 900.0, "analyses": 2700.0}


KILLED_INVOCATION = """
import json, os, signal, sys, time
from pathlib import Path
from vaelab.studies import provenance
folder = Path(sys.argv[1])
with provenance.Invocation(folder, heartbeat=0.1):
    run = folder / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "finished", "updated": time.time()}))
    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGKILL)  # no chance to record: only the heartbeat speaks for it
"""


def test_a_killed_study_invocation_still_counts_up_to_its_last_heartbeat(tmp_path):
    """An invocation killed outright (SIGKILL) leaves the entry its heartbeat last wrote: its wall time to within a
    heartbeat and the runs it trained; one that ends is recorded complete, and one interrupted incomplete, each once."""
    from vaelab.studies import provenance

    out = subprocess.run([sys.executable, "-c", KILLED_INVOCATION, str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == -9, out.stderr
    [killed] = provenance.read(tmp_path)["invocations"]
    assert killed["running"] and not killed["complete"] and 0.8 <= killed["seconds"] <= 10.0
    assert killed["runs_trained"] == 1
    with provenance.Invocation(tmp_path) as invocation:
        invocation.end(complete=True)
    with pytest.raises(KeyboardInterrupt), provenance.Invocation(tmp_path):
        raise KeyboardInterrupt
    entries = provenance.read(tmp_path)["invocations"]
    assert [(e["complete"], "running" in e, e["runs_trained"]) for e in entries] == [
        (False, True, 1), (True, False, 0), (False, False, 0)]
    made = provenance.summary(tmp_path)
    assert made["invocations"] == 3 and made["runs_trained"] == 1 and made["seconds"] >= 0.8
    assert made["vaelab"] == provenance.version()  # one version, named once


def test_a_study_resumed_after_an_upgrade_names_every_version_that_ran_it(tmp_path):
    import datetime as dt

    from vaelab.studies import provenance

    for code in ("1.0+gaaa", "1.1+gbbb", "1.1+gbbb", "1.2+gccc"):
        provenance.record(tmp_path, dt.datetime.now(dt.timezone.utc), 1.0, 0, code=code)
    assert provenance.summary(tmp_path)["vaelab"] == "1.0+gaaa, 1.1+gbbb, 1.2+gccc"


@pytest.mark.slow
def test_a_builtin_study_scorecard_end_to_end(tmp_path, monkeypatch):
    """latent-dim at its tiny scale (one seed): every claim is decided or inconclusive with why, in the report too."""
    from vaelab.report import run_study
    from vaelab.studies.pools import LocalExecutor

    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "data"))
    folder = run_study(load_study("latent-dim").scaled("tiny"), tmp_path, executor=LocalExecutor(workers=2),
                       progress=False, log=lambda m: None)
    outcomes = scorecard(folder)
    assert [o.id for o in outcomes] == [c.id for c in load_study("latent-dim").claims]
    assert all(o.outcome in (HELD, NOT_HELD, INCONCLUSIVE) and (o.outcome != INCONCLUSIVE or o.why) for o in outcomes)
    assert all("one seed" in o.why for o in outcomes if o.id in ("samples-degrade", "samples-jump"))
    html = (folder / "report.html").read_text()
    assert all(f'<tr id="claim-{o.id}">' in html for o in outcomes)
    out = subprocess.run([sys.executable, "-m", "vaelab", "scorecard", str(folder)], capture_output=True, text=True)
    assert out.returncode == 0 and "samples worse at 200 dims" in out.stdout and "4 inconclusive" in out.stdout
    made = json.loads((folder / "provenance.json").read_text())["invocations"]
    assert len(made) == 1 and made[0]["complete"] and made[0]["runs_trained"] == 2 and made[0]["seconds"] > 0
    out = subprocess.run([sys.executable, "-m", "vaelab", "reproduction", str(folder), "--to", str(tmp_path / "r")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    page = tmp_path / "r" / "002-latent-dim-tiny"
    assert {"headline.png", "samples-grid.png", "README.md"} <= {p.name for p in page.iterdir()}
    assert "](headline.png)" in (page / "README.md").read_text()
    compute = json.loads((page / "reproduction.json").read_text())["compute_seconds"]  # read from what runs wrote
    assert compute["training"] > 0 and compute["analyses"] > 0


def test_provenance_counts_the_runs_an_invocation_trained_from_their_status(tmp_path):
    """An invocation that crashed after a run's training ended, before its results came back (in its analyses), still
    counts that run; a record from before the count came from the status files leaves an interrupted invocation's
    count unknown, so no page calls the wall time a lower bound on its account."""
    import datetime as dt

    from vaelab.studies import provenance

    folder = tmp_path / "s"
    states = {"a": "finished", "b": "running", "c": "failed"}
    for name in states:
        (folder / "runs" / name).mkdir(parents=True)
    (folder / "runs" / "a" / "status.json").write_text('{"state": "finished", "updated": 1.0}')
    (folder / "runs" / "d").mkdir()
    (folder / "runs" / "d" / "status.json").write_text('{"state": "failed", "updated": 1.0}')
    before = provenance.trained_runs(folder)
    for name, state in states.items():
        (folder / "runs" / name / "status.json").write_text(json.dumps({"state": state, "updated": 1.0}))
    assert set(before) == {"a", "d"} and provenance.newly_trained(before, provenance.trained_runs(folder)) == 1  # c
    (folder / "runs" / "d" / "status.json").write_text('{"state": "finished", "updated": 2.0}')  # retried
    assert provenance.newly_trained(before, provenance.trained_runs(folder)) == 2
    now = dt.datetime.now(dt.timezone.utc)
    entry = provenance.record(folder, now, 10.0, 1, complete=False)
    assert entry["counted_from"] == "run status" and provenance.summary(folder)["runs_trained"] == 1
    old = dict(entry, runs_trained=0)
    del old["counted_from"]
    (folder / "provenance.json").write_text(json.dumps({"invocations": [old, entry]}))
    assert provenance.summary(folder)["runs_trained"] is None
