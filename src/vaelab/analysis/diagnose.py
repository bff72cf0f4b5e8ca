"""`vaelab diagnose`: document 000's question answered with measurements for the user's own model.

Why does a VAE with a big latent space reconstruct well but generate badly? Two explanations are on the table:
- the "soap bubble" (the asker): the aggregate posterior q(z) is a mixture whose typical set misses the prior's,
  so prior samples land in holes the decoder never saw;
- over-capacity and over-fitting (the answer): the model memorises the training images and does not generalise.
The diagnosis measures both (posterior, prior-gap, likelihood), how many latent dimensions are used, and how much
sample quality (FD) improves when latents come from the posterior neighbourhood or an ex-post mixture instead of
the prior; then it writes a verdict that cites the numbers.
"""
from __future__ import annotations

from typing import Callable

from vaelab.analysis.common import AnalysisResult
from vaelab.analysis.runner import run_analysis

# Thresholds of the verdict, stated in the output so a reader can disagree with them.
HOLES_FACTOR = 5.0  # prior samples in holes at least 5x the 1% expected with no gap ...
AUC_WITH_HOLES = 0.6  # ... while a classifier separates prior from aggregate-posterior samples at least this well,
AUC_GAP = 0.75  # or the classifier alone separates them this well
OVERFIT_RELATIVE = 0.03  # test -ELBO above train by more than 3% ...
OVERFIT_NATS = 1.0  # ... and more than 1 nat
FD_BETTER = 0.8  # an alternative sampler is "better" when its FD is below 80% of the prior's

SETTINGS = {
    "quick": {"likelihood": {"samples": 200, "n_images": 500, "recon_images": 5000},
              "quality": {"n": 1000}, "prior-gap": {"samples": 1000, "mixture_points": 5000}},
    "full": {"likelihood": {"samples": 1000, "n_images": 1000}, "quality": {"n": 2000}, "prior-gap": {}},
}


def diagnose(subject, *, quick: bool = False, seed: int = 0, progress: Callable[[str], None] | None = None) -> AnalysisResult:
    """Run the analyses the verdict needs, then build the table and the verdict (saved as analysis/diagnosis.json)."""
    setting = SETTINGS["quick" if quick else "full"]
    steps = ["posterior", "prior-gap", "likelihood", "quality", "samples", "typical-set"]
    results = {}
    from vaelab.errors import NotApplicable

    for i, name in enumerate(steps, 1):
        if progress:
            progress(f"[{i}/{len(steps)}] {name}")
        try:
            results[name] = run_analysis(subject, name, seed=seed, **setting.get(name, {}))
        except NotApplicable:
            results[name] = None
    data = summarise(results)
    params = {"quick": quick, "seed": seed, "thresholds": {"holes_factor": HOLES_FACTOR, "auc_with_holes": AUC_WITH_HOLES, "auc_gap": AUC_GAP,
              "overfit_relative": OVERFIT_RELATIVE, "overfit_nats": OVERFIT_NATS, "fd_better": FD_BETTER}}
    return AnalysisResult("diagnosis", params, data)


def summarise(results: dict) -> dict:
    """The diagnosis table (plain numbers) and the verdict (sentences citing them)."""
    post, gap, lik, qual = (results.get(k) for k in ("posterior", "prior-gap", "likelihood", "quality"))
    p = post.data
    d, active = p["latent_dim"], p["active_units"]
    table = {"latent_dim": d, "active_units": active, "kl_active_units": p["kl_active_units"],
             "prior_like_units": p["prior_like_units"], "kl_total": p["kl_total"],
             "pca_above_0.01": p["pca"]["above_threshold"]}
    verdict = []
    used = f"{active} of {d} latent dimensions are used (Var_x[mu(x)] > {post.params['threshold']})"
    if p["prior_like_units"] is not None:
        used += f"; {p['prior_like_units']} have mu ~ 0 and sigma ~ 1 for every input, i.e. they carry nothing"
    verdict.append(used + ".")

    soap = None
    if gap is not None:
        g = gap.data
        table.update({"kl_aggregate_prior": g["kl_aggregate_prior"], "holes": g["holes"],
                      "classifier_auc": g["classifier_auc"], "mmd2": g["mmd2"]})
        soap = bool((g["holes"] >= HOLES_FACTOR * g["holes_expected_without_gap"] and g["classifier_auc"] >= AUC_WITH_HOLES)
                    or g["classifier_auc"] >= AUC_GAP)
        verdict.append(
            f"Aggregate posterior vs prior: {100 * g['holes']:.1f}% of prior samples fall in holes (below the 1% "
            f"density quantile of the codes; 1% expected with no gap), a classifier tells prior from posterior codes "
            f"with AUC {g['classifier_auc']:.2f}, KL(q(z) || p(z)) ~ {g['kl_aggregate_prior']:.1f} nats "
            f"(measured on the {g['dims_used']} of {g['latent_dim']} dimensions that carry KL or vary with x; the others equal the prior). "
            + ("The soap-bubble explanation is supported: the prior puts mass where the decoder was not trained."
               if soap else "The soap-bubble explanation is not supported: prior samples land where codes are."))
    l = lik.data
    train_e, test_e = l["train"]["neg_elbo"], l["test"]["neg_elbo"]
    over_gap = test_e - train_e
    overfit = over_gap > OVERFIT_NATS and over_gap > OVERFIT_RELATIVE * abs(train_e)
    table.update({"train_neg_elbo": train_e, "test_neg_elbo": test_e, "overfit_gap": over_gap,
                  "log_likelihood": l.get("log_likelihood")})
    verdict.append(
        f"Train -ELBO {train_e:.2f} vs test {test_e:.2f} nats (gap {over_gap:+.2f}, {100 * over_gap / abs(train_e):+.1f}%). "
        + ("The over-fitting explanation is supported: the model does clearly better on images it trained on."
           if overfit else "The over-fitting explanation is not supported: test and train are close."))

    fix, readable = None, {}
    if qual is not None:
        fd = qual.data["fd"]
        table.update({f"fd_{k}": v for k, v in fd.items()})
        alternatives = {k: fd[k] for k in ("neighbourhood", "posterior", "ex-post-gmm") if k in fd}
        best = min(alternatives, key=alternatives.get)
        ratio = alternatives[best] / fd["prior"] if fd["prior"] > 0 else 1.0
        fix = best if ratio < FD_BETTER else None
        readable = {"neighbourhood": "N(mu(x), I) around training codes", "posterior": "the posteriors N(mu(x), sigma(x)^2)",
                    "ex-post-gmm": "an ex-post Gaussian mixture fitted to the codes"}
        verdict.append(
            f"FD to test images: prior {fd['prior']:.2f}, N(mu(x), I) {fd['neighbourhood']:.2f}, N(mu(x), sigma(x)^2) "
            f"{fd['posterior']:.2f}, ex-post GMM {fd['ex-post-gmm']:.2f} (reconstructions {fd['reconstruction']:.2f}, "
            f"real training images {fd['real-train']:.2f}). "
            + (f"Sampling from {readable[best]} instead of the prior cuts FD by {100 * (1 - ratio):.0f}%."
               if fix else "No alternative sampler beats the prior by 20% or more."))
    if soap and not overfit:
        conclusion = "Conclusion: the gap between the prior and the aggregate posterior explains the poor samples better than over-fitting."
    elif overfit and not soap:
        conclusion = "Conclusion: over-fitting explains the poor samples better than the prior/posterior gap."
    elif soap and overfit:
        conclusion = "Conclusion: both explanations hold for this model."
    else:
        conclusion = "Conclusion: neither explanation is supported by these numbers at the stated thresholds."
    if fix == "ex-post-gmm":
        conclusion += " Fix: sample from the ex-post Gaussian mixture fitted to the codes (Ghosh et al. 2020)."
    elif fix:
        conclusion += f" Samples from {readable[fix]} are better than from the prior."
    verdict.append(conclusion)
    return {"table": table, "verdict": verdict, "soap_bubble_supported": soap, "overfitting_supported": overfit,
            "best_sampler": fix}


def plot(result: AnalysisResult, save) -> None:
    """The diagnosis reuses the figures of the analyses it ran (samples, KL per dim, PCA spectrum, norms)."""
