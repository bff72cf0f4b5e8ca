"""`vaelab diagnose`: document 000's question answered with measurements for the user's own model.

Why does a VAE with a big latent space reconstruct well but generate badly? Two explanations are on the table:
- the "soap bubble" (the asker): the aggregate posterior q(z) is a mixture whose typical set misses the prior's,
  so prior samples land where the decoder never trained;
- over-capacity and over-fitting (the answer): the model memorises the training images.
The diagnosis measures, at any latent size:
- where the information is: the informative subspace of the codes (PCA of Cov_x[mu(x)]) beside the per-axis count;
- the shape of q(z) there against the model's prior (N(0, I)'s identity covariance, or another prior's samples),
  with two-sample tests (effect sizes with intervals), and the shell ("bubble") of the complement against the
  prior's (the exact chi-square law for N(0, I)) (vaelab.analysis.prior_gap);
- which part of the mismatch costs sample quality, by intervention: FD of latents whose informative coordinates
  and whose complement come, independently, from the prior or from q(z) (vaelab.analysis.samplers);
- over-fitting as a train/test gap and as memorisation (the data-copying test, vaelab.analysis.memorisation);
- the fixes side by side (ex-post Gaussian, ex-post mixture, two-stage VAE, on the informative coordinates), and
  names the one that works best for this model with the FD it reaches; the fitted fixes are saved under
  OUT/fixes/<sampler>/ (vaelab.analysis.samplers.fitted) for `vaelab sample` to draw from without refitting.
"""
from __future__ import annotations

from typing import Callable

from vaelab.analysis.framework.common import AnalysisResult
from vaelab.analysis.framework.registry import declaration
from vaelab.analysis.framework.runner import run_analysis
from vaelab.analysis.samplers import DESCRIPTIONS, FIXES, fix_folder, save_fixes
from vaelab.errors import NotApplicable
from vaelab.models.priors import prior_label

# Thresholds of the verdict, stated in the output so a reader can disagree with them.
OVERFIT_RELATIVE = 0.03  # test -ELBO above train by more than 3% ...
OVERFIT_NATS = 1.0  # ... and more than 1 nat
FD_BETTER = 0.8  # a sampler is "better" when its FD is below 80% of the prior's
INTERVENTION_DOMINATES = 2.0  # one part "costs" sample quality when swapping it in cuts FD at least twice as much

SETTINGS = {
    "quick": {"likelihood": {"samples": 200, "n_images": 500, "recon_images": 5000},
              "quality": {"n": 1000}, "prior-gap": {"samples": 1000, "mixture_points": 5000, "permutations": 100},
              "memorisation": {"n": 1000, "train_points": 5000}, "samples": {}, "typical-set": {"n_images": 1000}},
    "full": {"likelihood": {"samples": 1000, "n_images": 1000}, "quality": {"n": 2000}, "prior-gap": {},
             "memorisation": {}, "samples": {}, "typical-set": {}},
}
STEPS = ("posterior", "prior-gap", "likelihood", "quality", "memorisation", "samples", "typical-set")
FEATURE_STEPS = ("quality", "memorisation")  # the steps that compare images in a feature space (``features``)


def diagnose(subject, *, quick: bool = False, seed: int = 0, features: str | None = None,
             progress: Callable[[str], None] | None = None) -> AnalysisResult:
    """Run the analyses the verdict needs, then build the table and the verdict (saved as analysis/diagnosis.json).
    ``features``: the feature space of sample quality and memorisation (vaelab.analysis.features; default: the
    evaluation classifier's when the data has labels, the contrastive network's when it has none)."""
    setting = SETTINGS["quick" if quick else "full"]
    results = {}
    for i, name in enumerate(STEPS, 1):
        if progress:
            progress(f"[{i}/{len(STEPS)}] {name}")
        options = {**setting.get(name, {}), **({"features": features} if features and name in FEATURE_STEPS else {})}
        try:
            results[name] = run_analysis(subject, name, seed=seed, **options)
        except NotApplicable:
            results[name] = None
    data = summarise(results)
    data["fixes"] = keep_fixes(subject, results.get("quality"), seed, progress)
    gap = results["prior-gap"]
    used = next((r.data["features"] for r in (results.get(k) for k in FEATURE_STEPS) if r is not None), None)
    data["features"] = used
    params = {"quick": quick, "seed": seed, "features": features, "thresholds": {
        "active_and_pca": results["posterior"].params["threshold"],
        "informative_mismatch": gap.params["rules"]["informative"] if gap else None,
        "shell_mismatch": gap.params["rules"]["shell"] if gap else None,
        "overfit_relative": OVERFIT_RELATIVE, "overfit_nats": OVERFIT_NATS, "fd_better": FD_BETTER,
        "intervention_dominates": INTERVENTION_DOMINATES}}
    return AnalysisResult("diagnosis", params, data)


def keep_fixes(subject, quality: AnalysisResult | None, seed: int = 0,
               progress: Callable[[str], None] | None = None) -> dict[str, str]:
    """Save the fixes the quality analysis fitted (taken from the subject's cache, not refitted; fitted with the
    quality analysis' defaults when it did not run) under OUT/fixes/<sampler>/; returns each one's folder
    relative to OUT ({} when results stay in memory)."""
    if subject.out_dir is None:
        return {}
    kept = ("fit_points", "threshold", "max_informative", "gmm_components", "seed")
    options = {"seed": seed} if quality is None else {k: quality.params[k] for k in kept}
    saved = save_fixes(subject, fix_folder(subject.out_dir, ""), **options)
    if progress:
        progress(f"saved the fitted fixes ({', '.join(saved)}) in {fix_folder(subject.out_dir, '')}; "
                 "`vaelab sample` draws from them without refitting")
    return {name: str(path.relative_to(subject.out_dir)) for name, path in saved.items()}


def _ci(t: dict, digits: int = 2) -> str:
    return f"{t['effect']:.{digits}f} [{t['ci_low']:.{digits}f}, {t['ci_high']:.{digits}f}]"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def usage_sentence(p: dict, threshold: float) -> str:
    pca = p["pca"]
    at_least = "at least " if pca.get("above_threshold_is_lower_bound") else ""
    s = (f"{at_least}{pca['above_threshold']} of {p['latent_dim']} directions of the codes vary with x (eigenvalues of "
         f"Cov_x[mu(x)] > {threshold}); {p['active_units']} axes do (active units, Var_x[mu_d(x)] > {threshold})")
    if p.get("prior_like_units") is not None:
        s += f"; {p['prior_like_units']} axes have mu ~ 0 and sigma ~ 1 for every input"
    s += "."
    if p.get("count_note"):
        s += f" The counts disagree: {p['count_note']}."
    return s


def gap_sentences(g: dict) -> list[str]:
    info, tests, kl = g["informative"], g["tests"], g["gaussian_kl"]
    reference = g.get("reference", "N(0, I)")
    standard = reference == "N(0, I)"
    out = [f"Shape of the aggregate posterior against the {prior_label(reference)}: {g['reading']}."]
    if info["dims"]:
        c = tests["classifier"]
        out.append(
            f"In the {info['dims']} informative coordinates, prior vs aggregate-posterior samples: classifier AUC "
            f"{_ci(c)} ({_p(c['p_value'])}), MMD^2 {tests['mmd']['effect']:.4f} ({_p(tests['mmd']['p_value'])}), "
            f"energy {_p(tests['energy']['p_value'])}, kNN {_p(tests['knn']['p_value'])}; Gaussian KL >= "
            f"{kl['informative']:.2f} [{kl['informative_ci'][0]:.2f}, {kl['informative_ci'][1]:.2f}] nats"
            + ("" if standard else " (against the prior samples' moments)") + ". "
            + ("They differ: generation draws the decoder's inputs from the wrong distribution there."
               if g["informative_mismatch"] else "They match at the stated thresholds."))
    if "shell" in tests:
        s = tests["shell"]
        out.append(
            f"In the other {g['complement']['dims']} dimensions (the 'bubble'), the codes' variance per direction is "
            f"{_ci(s, 3)} against the prior's 1 ({_p(s['p_value'])}, "
            + ("exact chi-square law" if standard else "two-sample test against the prior's samples")
            + f"); {100 * s['overlap']:.0f}% of "
            f"prior samples fall inside the codes' shell ({100 * s['overlap_without_gap']:.0f}% without a gap). "
            + ("The shells differ: the soap-bubble picture holds for the population, not only for the finite mixture."
               if g["shell_mismatch"] else "The difference is below the stated thresholds (variance within 0.8..1.25, "
               "most prior samples inside the codes' shell): no soap bubble in the population."))
    m = g["finite_mixture"]
    out.append(f"(The {m['points']}-point mixture of encoded images puts {100 * m['holes']:.0f}% of prior samples in "
               f"'holes' and gives a KL of {m['kl']:.1f} nats on {m['dims_used']} axes; those numbers describe that "
               "finite mixture, not the population, and the verdict does not read them.)")
    return out


def intervention(fd: dict) -> tuple[str, str | None]:
    """Which part of the mismatch costs sample quality: swap each part of prior samples for q(z)'s and compare FD."""
    if not all(k in fd for k in ("prior", "q-informative", "q-complement", "posterior")):
        return "neither", None
    p = fd["prior"]
    cut_inf, cut_comp = p - fd["q-informative"], p - fd["q-complement"]
    useful = lambda cut: cut > (1 - FD_BETTER) * p  # noqa: E731 - a cut of at least 20% of the prior's FD
    if useful(cut_inf) and cut_inf >= INTERVENTION_DOMINATES * max(cut_comp, 0):
        costs = "informative"
    elif useful(cut_comp) and cut_comp >= INTERVENTION_DOMINATES * max(cut_inf, 0):
        costs = "complement"
    elif useful(cut_inf) and useful(cut_comp):
        costs = "both"
    else:
        costs = "neither"
    reading = {"informative": "the few directions the decoder reads cost the sample quality, not the bubble",
               "complement": "the complement (the bubble) costs the sample quality, not the informative directions",
               "both": "both parts cost sample quality",
               "neither": "neither part alone changes sample quality by 20% or more"}[costs]
    sentence = (f"Intervention (FD to test images): prior {p:.1f}; q(z)'s informative coordinates with the prior's "
                f"complement {fd['q-informative']:.1f}; the prior's informative coordinates with q(z)'s complement "
                f"{fd['q-complement']:.1f}; q(z) itself {fd['posterior']:.1f}. So {reading}.")
    return costs, sentence


def headline(result) -> dict:
    """An analysis result's headline numbers, named as its declaration names them (vaelab.analysis.framework.registry)."""
    return declaration(result.name).numbers(result.data, result.params)


def summarise(results: dict) -> dict:
    """The diagnosis table (plain numbers) and the verdict (sentences citing them)."""
    post, gap, lik, qual, mem = (results.get(k) for k in ("posterior", "prior-gap", "likelihood", "quality", "memorisation"))
    p = post.data
    thr = post.params["threshold"]
    table = {"latent_dim": p["latent_dim"], **headline(post), "prior_like_units": p["prior_like_units"],
             "kl_total": p["kl_total"]}
    verdict = [usage_sentence(p, thr)]
    informative = shell = None
    if gap is not None:
        g = gap.data
        t = g["tests"]
        informative, shell = g["informative_mismatch"], g["shell_mismatch"]
        table.update({**headline(gap),
                      "max_aggregate_variance": g["informative"]["max_aggregate_variance"],
                      "min_aggregate_variance": g["informative"]["min_aggregate_variance"],
                      "complement_variance": g["complement"]["variance_per_direction"],
                      "mmd_p": t["mmd"]["p_value"] if "mmd" in t else None,
                      "shell_overlap": t["shell"]["overlap"] if "shell" in t else None,
                      "kl_lower_bound": g["gaussian_kl"]["total_lower_bound"], "mixture_holes": g["finite_mixture"]["holes"]})
        verdict.extend(gap_sentences(g))

    copying = mem.data["copying"] if mem is not None else None
    if lik is not None:
        l = lik.data
        train_e, test_e = l["train"]["neg_elbo"], l["test"]["neg_elbo"]
        over_gap = test_e - train_e
        elbo_overfit = over_gap > OVERFIT_NATS and over_gap > OVERFIT_RELATIVE * abs(train_e)
        table.update({"train_neg_elbo": train_e, "test_neg_elbo": test_e, "overfit_gap": over_gap,
                      "log_likelihood": l.get("log_likelihood")})
        over = (f"Train -ELBO {train_e:.2f} vs test {test_e:.2f} nats (gap {over_gap:+.2f}, "
                f"{100 * over_gap / abs(train_e):+.1f}%)")
    else:  # a deterministic encoder has no ELBO: over-fitting is read from the data-copying test alone
        elbo_overfit = False
        over = "No ELBO (the likelihood analysis does not apply to this model)"
    if copying is not None:
        table.update({f"copying_ct_{k}": v for k, v in mem.data["c_t"].items()})
        over += f". Data-copying test (Meehan et al. 2020; C_T < {copying['threshold']:g} flags copying): {copying['sentence'].rstrip('.')}"
    overfit = bool(elbo_overfit or (copying is not None and copying["memorisation"]))
    verdict.append(over + ". " + ("The over-fitting explanation is supported."
                                  if overfit else "The over-fitting explanation is not supported."))

    costs, best = None, None
    if qual is not None:
        fd = qual.data["fd"]
        table.update(headline(qual))
        costs, sentence = intervention(fd)
        if sentence:
            verdict.append(sentence)
        fixes = {k: fd[k] for k in FIXES if k in fd}
        if fixes:
            best = min(fixes, key=fixes.get)
            ratio = fixes[best] / fd["prior"] if fd["prior"] > 0 else 1.0
            table.update({"best_fix": best, "best_fix_fd": fixes[best], "best_fix_cut": 1 - ratio})
            verdict.append(
                f"Fixes (FD, {qual.data.get('feature_kind', 'classifier')} features): "
                + ", ".join(f"{k} {v:.1f}" for k, v in fixes.items())
                + f", against the prior {fd['prior']:.1f} and q(z) {fd['posterior']:.1f} (reconstructions "
                f"{fd['reconstruction']:.1f}, real training images {fd['real-train']:.1f}). "
                + (f"Best: {DESCRIPTIONS[best]}, FD {fixes[best]:.1f}, {100 * (1 - ratio):.0f}% below the prior's."
                   if ratio < FD_BETTER else "No fix beats the prior by 20% or more."))
            if ratio >= FD_BETTER:
                best = None

    parts = []
    if informative:
        parts.append("the aggregate posterior differs from the prior in the informative directions")
    if shell:
        parts.append("its shell in the complement differs from the prior's (a population soap bubble)")
    if overfit:
        parts.append("the model over-fits")
    if not parts:
        parts.append("neither a prior/posterior mismatch nor over-fitting is supported at the stated thresholds")
    conclusion = "Conclusion: " + "; ".join(parts) + "."
    if costs in ("informative", "complement", "both"):
        conclusion += {"informative": " The poor samples come from the informative directions.",
                       "complement": " The poor samples come from the complement (the bubble).",
                       "both": " Both parts cost sample quality."}[costs]
    if best:
        conclusion += f" Fix: sample from {DESCRIPTIONS[best]} (FD {table['best_fix_fd']:.1f})."
    verdict.append(conclusion)
    return {"table": table, "verdict": verdict, "informative_mismatch": informative, "shell_mismatch": shell,
            "soap_bubble_supported": shell, "overfitting_supported": overfit, "mismatch_costs": costs,
            "best_fix": best}


def plot(result: AnalysisResult, save) -> None:
    """The diagnosis reuses the figures of the analyses it ran (samples, shape, KL per dim, PCA spectrum, norms)."""
