"""Likelihood (documents 000 and 004): importance-sampled log p(x), the VR bound, and the train/test gap.

Importance sampling with the encoder as proposal (Burda et al. 2016, appendix):
    log p(x) ~ log (1/S) sum_s w_s,   w_s = p(x|z_s) p(z_s) / q(z_s|x),   z_s ~ q(z|x).
The encoder runs once per image; samples are drawn in chunks for a batch of images at a time and the sums are
kept as running logsumexps, so memory stays bounded for any S. The per-image standard error is the delta method
on the mean weight: se[log p_hat] = sqrt(Var(w) / S) / mean(w), computed from logsumexp(log w) and
logsumexp(2 log w). The accumulators are float64 and the densities float32.

The delta method needs weights with a finite variance. Where their tail is heavy (document 000's 65,536 latent
units: eight independent estimates spread 3x wider than the SE each reported), it under-states the spread. So the
largest weights of each image are kept as they stream by and fitted with a generalized Pareto law (PSIS's k-hat,
vaelab.analysis.stats.pareto); the result says for how many images k-hat passes the threshold at which an estimate from S
samples is unreliable, and flags the sampling SE (``se_sampling_reliable`` false) when more of them do than
would by chance if every image's weights had four finite moments (tail shape k <= 1/4, where the variance the SE is
read from converges): k-hat from few tail weights is noisy, so light tails pass the threshold now and then (5.4% of
images at S = 200, 0.05% at S = 1,000; pareto.chance_share). The flag says that the SE is too small, not by how much:
against independent replicates (benchmarks/README.md) the SE of flagged models was 1.05-4.3x too small. An SE that
holds under any tail costs independent replicates: ``replicates=R`` (:func:`replicated_estimate`) draws R
independent estimates of S samples each, reports their mean, and its sampling SE from their spread (sd / sqrt R).

The decoder, which holds nearly all of the work, runs in float32, or in bf16 autocast (its outputs still float32)
where that is both faster and accurate for this model: ``precision="auto"`` (:func:`choose_precision`) estimates
log p(x) of the first test images twice on the same noise, in float32 and in bf16, and uses bf16 only when it ran at
least BF16_MIN_SPEEDUP times faster and moved the mean estimate by at most BF16_MAX_BIAS nats (with two standard
errors of that shift). The check draws its own noise, so the estimate itself is the same draw either way; the
check's numbers go into the result. Estimates too small to repay the check (under CHECK_MIN_WORK decodes) stay
float32.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch
from scipy import stats

from vaelab.analysis.framework.common import AnalysisResult, generator, model_device, subsample
from vaelab.analysis.stats.pareto import chance_share, k_threshold, pareto_k, tail_size
from vaelab.errors import ConfigError, NotApplicable
from vaelab.models.posteriors import LOG_2PI
from vaelab.models.priors import prior_of
from vaelab.objectives import log_weights, renyi_from_log_weights
from vaelab.plotting import pyplot
from vaelab.precision import GIVE_UP_SLOWER, alternating_medians
from vaelab.streams import standard_normal

# pixels (or latent units) per chunk: 4 MB of float32. At 1 << 23 each chunk's tensors were 32 MB, which glibc
# serves with fresh mmap'd pages, so every chunk paid page faults: document 002's IS estimate (1,000 images,
# S = 1,000, bf16, one thread) took 6.0-6.8 s against 4.2-4.4 s at 1 << 20, to the same digits.
MAX_ELEMENTS = 1 << 20
BF16_MAX_BIAS = 0.02  # nats: the most the mean log p(x) may move under bf16 (the shift plus two standard errors)
BF16_MIN_SPEEDUP = 1.15  # bf16 must be at least this much faster than float32 on the check
CHECK_IMAGES, CHECK_SAMPLES = 48, 128  # the check's size: 1.2% of the work of 1,000 images at S = 1,000, both ways
CHECK_MIN_WORK = 20 * CHECK_IMAGES * CHECK_SAMPLES  # images x samples below which auto stays float32 unchecked
# the sampling SE is flagged when more images pass the k-hat threshold than tails of shape 1/4 would by chance, at
# this false-alarm rate (a one-sided binomial test against pareto.chance_share)
FLAG_FALSE_ALARM = 0.001
MAX_REPLICATES = 100
REPLICATE_SEED_STEP = 7919  # replicate r > 0 of the likelihood analysis draws from seed + r * this


def _decoding(precision: str, device: torch.device):
    """The context the decoder runs in: bf16 autocast, or nothing for float32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class ISEstimate:
    """Per-image importance-sampled estimates, each (N,) float64."""

    log_p: torch.Tensor  # log (1/S) sum_s w_s, nats
    se: torch.Tensor  # its delta-method standard error (under-stated where pareto_k is high)
    pareto_k: torch.Tensor  # k-hat of the weights' tail (vaelab.analysis.stats.pareto); NaN where S is too small


def importance_sampled_log_likelihood(model, x: torch.Tensor, samples: int = 1000, *, batch_images: int = 100,
                                      generator: torch.Generator | None = None,
                                      precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image IS estimate of log p(x) and its standard error: x (N, C, H, W) -> (N,), (N,) float64 nats.
    ``precision``: the decoder's, "fp32" or "bf16" (autocast; see :func:`choose_precision`)."""
    est = importance_sampled_estimate(model, x, samples, batch_images=batch_images, generator=generator,
                                      precision=precision)
    return est.log_p, est.se


@torch.no_grad()
def importance_sampled_estimate(model, x: torch.Tensor, samples: int = 1000, *, batch_images: int = 100,
                                generator: torch.Generator | None = None, precision: str = "fp32") -> ISEstimate:
    """:func:`importance_sampled_log_likelihood` with the Pareto k-hat of each image's weights (the M + 1 largest
    log weights are kept as the samples stream by)."""
    device = model_device(model)
    pixels = math.prod(x.shape[1:])
    keep = tail_size(samples) + 1
    log_p, se, k_hat = [], [], []
    for i in range(0, x.shape[0], batch_images):
        xb = x[i:i + batch_images].to(device)
        b = xb.shape[0]
        q = model.encode(xb)
        if q.logvar is None:
            raise NotApplicable("importance sampling needs a posterior with a variance; this model is deterministic")
        width = max(pixels, q.mu.shape[1])  # decoded pixels or latent units per sample, whichever is wider
        chunk = max(1, min(samples, MAX_ELEMENTS // (b * width)))
        lse1 = torch.full((b,), -math.inf, dtype=torch.float64, device=device)
        lse2 = lse1.clone()
        top = torch.empty(0, b, dtype=torch.float64, device=device)  # the largest log weights so far
        # log q read off the noise, log N(z; 0, I) as one norm: at 65,536 latent units the passes over (k, B, D) of
        # q.log_prob and the prior's log_prob, not the decoder, were most of the time
        sigma, d = torch.exp(0.5 * q.logvar), q.mu.shape[1]
        standard = getattr(prior_of(model), "is_standard_normal", False)
        done = 0
        while done < samples:
            k = min(chunk, samples - done)
            # z = mu + sigma * eps as rsample forms it; at 65,536 latent units a chunk is 6.5 million normals, which
            # standard_normal draws in parallel streams (smaller chunks are torch.randn's, as before)
            eps = standard_normal((k, *q.mu.shape), generator, device, q.mu.dtype)
            z = torch.addcmul(q.mu, sigma, eps)  # (k, B, D)
            with _decoding(precision, device):
                params = model.decode(z)  # float32 out under autocast too
            log_q = q.log_prob_of_noise(eps)
            if standard:  # log N(z; 0, I) as one norm
                log_pz = -0.5 * (torch.linalg.vector_norm(z, dim=-1).square() + d * LOG_2PI)
            else:
                log_pz = model.log_prior(z)
            log_w = (model.log_likelihood(xb, params) + log_pz - log_q).double()  # (k, B)
            lse1 = torch.logaddexp(lse1, torch.logsumexp(log_w, 0))
            lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * log_w, 0))
            top = torch.cat([top, log_w])
            top = torch.topk(top, min(keep, top.shape[0]), dim=0, sorted=False).values
            done += k
        lp = lse1 - math.log(samples)
        rel_var = torch.exp(lse2 - math.log(samples) - 2 * lp) - 1.0  # Var(w) / mean(w)^2
        log_p.append(lp.cpu())
        se.append(torch.sqrt(rel_var.clamp_min(0) / samples).cpu())
        k_hat.append(pareto_k(top))
    return ISEstimate(torch.cat(log_p), torch.cat(se), torch.cat(k_hat))


@dataclass
class ReplicatedEstimate:
    """R independent IS estimates of the same images, each from S samples."""

    log_p: torch.Tensor  # (N,) float64: per image, the mean of its R estimates
    means: torch.Tensor  # (R,) float64: each replicate's mean over images
    se_sampling: float  # SE of log_p.mean() from the replicates' spread: sd(means) / sqrt(R); NaN when R = 1
    se_delta: float  # the same SE by the delta method, sqrt(sum se^2) / (N R): too small where the tails are heavy
    first: ISEstimate  # the first replicate (its k-hat describes the weights at S)


def replicated_estimate(model, x: torch.Tensor, samples: int, generators: list[torch.Generator],
                        precision: str = "fp32") -> ReplicatedEstimate:
    """R = len(generators) independent :func:`importance_sampled_estimate` s of x (N, C, H, W), each drawing from
    its own generator (give them independent seeds); R = 1 is the single estimate. The spread of their means is a
    direct measurement of the estimate's sampling error, valid whatever the weights' tail (the delta method needs a
    finite variance of the weights, which PSIS's k-hat >= 1/2 rules out); it is itself an estimate from R values
    (relative sd about 1 / sqrt(2 (R - 1)))."""
    runs = [importance_sampled_estimate(model, x, samples, generator=g, precision=precision) for g in generators]
    replicates = len(runs)
    per_image = torch.stack([r.log_p for r in runs])  # (R, N)
    means = per_image.mean(1)
    n = per_image.shape[1]
    se = float(means.std() / math.sqrt(replicates)) if replicates > 1 else math.nan
    delta = float(torch.stack([r.se for r in runs]).pow(2).sum().sqrt() / (n * replicates))
    return ReplicatedEstimate(per_image.mean(0), means, se, delta, runs[0])


@torch.no_grad()
def vr_bound(model, x: torch.Tensor, samples: int = 10, alpha: float = 1.0, *, batch_images: int = 500,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image VR_alpha bound with K = ``samples`` (Li & Turner 2016): (N,) nats. alpha = 1 is the MC ELBO."""
    device = model_device(model)
    width = max(math.prod(model.latent_shape), math.prod(x.shape[1:]))  # latent units or pixels per sample
    batch_images = max(1, min(batch_images, MAX_ELEMENTS // (samples * width)))
    out = []
    for i in range(0, x.shape[0], batch_images):
        log_w, _, _ = log_weights(model, x[i:i + batch_images].to(device), samples, generator)
        out.append(renyi_from_log_weights(log_w.double(), alpha).cpu())
    return torch.cat(out)


@torch.no_grad()
def reconstruction_terms(model, x: torch.Tensor, *, batch_images: int = 500, generator=None) -> dict:
    """Average -E_q log p(x|z) (one sample), KL to the model's prior (closed form for N(0, I), else by the same
    sample), the ELBO, and pixel MSE of the mean reconstruction."""
    device = model_device(model)
    prior = prior_of(model)
    nll = kl = mse = 0.0
    for i in range(0, x.shape[0], batch_images):
        xb = x[i:i + batch_images].to(device)
        q = model.encode(xb)
        z = q.rsample(1, generator)  # (1, B, D)
        nll += float(-model.log_likelihood(xb, model.decode(z)).double().sum())
        if q.logvar is not None:
            kl += float(prior.kl(q, z).double().sum())
        mse += float((model.likelihood.mean(model.decode(q.mu)) - xb).pow(2).flatten(1).sum(1).double().sum())
    n = x.shape[0]
    return {"recon_nll": nll / n, "kl": kl / n, "neg_elbo": (nll + kl) / n, "mse_per_image": mse / n}


def tail_summary(k_hat: torch.Tensor, samples: int) -> dict:
    """What the weights' Pareto k-hat (N,) says about the sampling standard error: its median and largest value, the
    share of images at or above the reliability threshold for S = ``samples``, the share that light tails (k = 1/4)
    reach by chance, and whether the sampling SE holds: false when a one-sided binomial test finds the share above
    chance at level FLAG_FALSE_ALARM (then the delta-method sampling SE under-states the estimate's spread)."""
    finite = k_hat[torch.isfinite(k_hat)]
    if finite.numel() == 0:
        return {"pareto_k_median": None, "pareto_k_max": None, "pareto_k_threshold": None,
                "pareto_k_share_unreliable": None, "pareto_k_share_by_chance": None, "se_sampling_reliable": None}
    threshold, chance = k_threshold(samples), chance_share(samples)
    over = int((finite >= threshold).sum())
    p_value = float(stats.binom.sf(over - 1, finite.numel(), chance))  # P(at least this many by chance)
    return {"pareto_k_median": float(finite.median()), "pareto_k_max": float(finite.max()),
            "pareto_k_threshold": threshold, "pareto_k_share_unreliable": over / finite.numel(),
            "pareto_k_share_by_chance": chance, "se_sampling_reliable": p_value >= FLAG_FALSE_ALARM}


def tail_reading(tail: dict, samples: int, replicates: int = 1) -> str:
    """One sentence on the sampling SE from :func:`tail_summary`'s dict, for an estimate from ``replicates``
    independent estimates: '' when the weights' tails give no reason for doubt (or k-hat is unavailable)."""
    share, chance = tail["pareto_k_share_unreliable"], tail["pareto_k_share_by_chance"]
    if share is None or tail["se_sampling_reliable"]:
        return ""
    tails = (f"Heavy-tailed importance weights: Pareto k-hat passes {tail['pareto_k_threshold']:.2f} for {share:.1%} "
             f"of images (light tails would reach {chance:.2%} by chance; median k-hat {tail['pareto_k_median']:.2f}), "
             f"so the estimate's downward bias is larger than usual at S = {samples}")
    if replicates > 1:
        own = 1 / math.sqrt(2 * (replicates - 1))  # relative sd of an sd from R values
        return (f"{tails}, and one estimate's delta-method SE would be too small; the SE given is the spread of "
                f"{replicates} independent estimates (itself uncertain by about {own:.0%}).")
    return (f"{tails}, and the delta-method sampling SE is too small (1.05-4.3x in benchmarks/README.md); "
            f"likelihood.replicates=8 measures it from 8 independent estimates.")


def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else 0.0


def choose_precision(model, x: torch.Tensor, samples: int, seed: int) -> tuple[str, dict]:
    """The decoder precision for IS estimates of ``model`` on images like x (N, C, H, W), and the check's numbers.

    A first pass of 4 images x 8 samples in each precision (after a warm-up of each) ends the check with float32
    where bf16 ran more than GIVE_UP_SLOWER times slower. Otherwise both precisions estimate log p(x) of the first
    CHECK_IMAGES images with min(samples, CHECK_SAMPLES) samples on the same noise; bf16 is chosen when it is at least
    BF16_MIN_SPEEDUP times faster and |mean shift| + 2 SE(shift) <= BF16_MAX_BIAS nats."""
    device = model_device(model)
    xs, s = x[:CHECK_IMAGES], min(samples, CHECK_SAMPLES)

    def first_pass(precision: str) -> float:  # 4 images x 8 samples: 0.5% of the check
        t0 = time.perf_counter()
        importance_sampled_log_likelihood(model, xs[:4], 8, generator=generator(seed, device), precision=precision)
        return time.perf_counter() - t0

    # a CPU without bf16 arithmetic runs it 20-50x slower (document 000's 8x8x1024 conv decoder on an AVX2-only EPYC:
    # 26x on this first pass, and the whole check took 212 s against 2.3 s with this stop, benchmarks/
    # precision_probe.py); one timed first pass after the warm-up tells
    first = alternating_medians(lambda: first_pass("fp32"), lambda: first_pass("bf16"), 0.0, rounds=1)
    if first[1] > GIVE_UP_SLOWER * first[0]:
        return "fp32", {"images": 4, "samples": 8, "fp32_seconds": round(first[0], 4),
                        "bf16_seconds": round(first[1], 4), "speedup": round(first[0] / first[1], 3),
                        "reason": f"bf16 {first[1] / first[0]:.1f}x slower on a first pass here; not checked further"}
    est, seconds = {}, {}
    for precision in ("fp32", "bf16"):
        t0 = time.perf_counter()
        est[precision] = importance_sampled_log_likelihood(model, xs, s, generator=generator(seed, device),
                                                           precision=precision)[0]
        seconds[precision] = time.perf_counter() - t0
    shift = est["bf16"] - est["fp32"]
    mean_shift, se_shift = _mean_se(shift)
    bias = abs(mean_shift) + 2 * se_shift
    speedup = seconds["fp32"] / max(seconds["bf16"], 1e-9)
    check = {"images": int(xs.shape[0]), "samples": s, "fp32_seconds": round(seconds["fp32"], 4),
             "bf16_seconds": round(seconds["bf16"], 4), "speedup": round(speedup, 3),
             "mean_shift_nats": mean_shift, "max_abs_shift_nats": float(shift.abs().max()),
             "bias_bound_nats": bias}
    if speedup < BF16_MIN_SPEEDUP:
        return "fp32", {**check, "reason": f"bf16 only {speedup:.2f}x faster here"}
    if bias > BF16_MAX_BIAS:
        return "fp32", {**check, "reason": f"bf16 moves the mean by up to {bias:.3f} nats (> {BF16_MAX_BIAS})"}
    return "bf16", {**check, "reason": f"{speedup:.2f}x faster, mean moved by at most {bias:.3f} nats"}


def likelihood(subject, *, samples: int = 1000, n_images: int = 1000, vr_samples: int = 10,
               alpha: float | None = None, recon_images: int = 10000, seed: int = 0,
               precision: str = "auto", replicates: int = 1) -> AnalysisResult:
    """IS log-likelihood (S samples) on test images, the VR bound (K samples), and train vs test reconstruction.
    ``precision`` of the IS decoder: auto (:func:`choose_precision`), fp32 or bf16. ``replicates`` R > 1: R
    independent IS estimates (R times the work), their mean reported with a sampling SE from their spread that holds
    whatever the weights' tail (:func:`replicated_estimate`); R = 1, one estimate with the delta-method SE."""
    if not 1 <= samples <= 100000:
        raise ConfigError(f"samples {samples} is outside 1..100000")
    if not 1 <= replicates <= MAX_REPLICATES:
        raise ConfigError(f"replicates {replicates} is outside 1..{MAX_REPLICATES}")
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"precision {precision!r} is not one of auto, fp32, bf16")
    model = subject.model
    if alpha is None:  # the bound the run trained with (ELBO for elbo/deterministic runs)
        cfg = getattr(subject.run, "config", None)
        obj = cfg.objective if cfg is not None else None
        alpha = {"iwae": 0.0, "vr-max": -math.inf}.get(getattr(obj, "name", ""), getattr(obj, "alpha", None))
        alpha = 1.0 if alpha is None else alpha
    g = generator(seed, subject.device)
    x_test, x_train = subject.data.x_test, subject.data.x_train
    test_idx = subsample(x_test.shape[0], n_images, seed)
    xs = x_test[test_idx]
    data: dict = {"alpha": alpha if math.isfinite(alpha) else "-inf", "prior": prior_of(model).describe()}
    deterministic = model.encode(xs[:1].to(subject.device)).logvar is None
    if not deterministic:
        used = precision
        if precision == "auto":
            if xs.shape[0] * samples >= CHECK_MIN_WORK:
                used, data["precision_check"] = choose_precision(model, xs, samples, seed + 1)
            else:
                used = "fp32"
        # the first (or only) estimate draws from g, further replicates from their own seeds, so that the VR bound
        # and the reconstruction terms after it see the same noise whatever R is
        others = [generator(seed + REPLICATE_SEED_STEP * r, subject.device) for r in range(1, replicates)]
        rep = replicated_estimate(model, xs, samples, [g, *others], precision=used)
        lp, tail = rep.log_p, tail_summary(rep.first.pareto_k, samples)
        mean, se_images = _mean_se(lp)
        data.update({"precision": used, "log_likelihood": mean, "log_likelihood_se_images": se_images,
                     "per_image_se_median": float(rep.first.se.median()), **tail})
        if replicates == 1:
            data.update({"log_likelihood_se_sampling": rep.se_delta, "se_sampling_method": "delta"})
        else:  # the SE is measured, not modelled: it holds whatever the tails (the k-hat stays reported)
            data.update({"log_likelihood_se_sampling": rep.se_sampling,
                         "se_sampling_method": f"replicates ({replicates})",
                         "log_likelihood_replicates": rep.means.tolist(),
                         "log_likelihood_se_sampling_delta": rep.se_delta,
                         "se_sampling_reliable_delta": tail["se_sampling_reliable"], "se_sampling_reliable": True})
        data["se_reading"] = tail_reading(tail, samples, replicates)
        vr = vr_bound(model, xs, vr_samples, alpha, generator=g)
        data["vr_bound"], data["vr_bound_se"] = _mean_se(vr)
    splits = {}
    for split, x in (("train", x_train), ("test", x_test)):
        idx = subsample(x.shape[0], recon_images, seed)
        splits[split] = reconstruction_terms(model, x[idx], generator=g)
    data["train"], data["test"] = splits["train"], splits["test"]
    data["overfit_gap_recon_nll"] = splits["test"]["recon_nll"] - splits["train"]["recon_nll"]
    data["overfit_gap_neg_elbo"] = splits["test"]["neg_elbo"] - splits["train"]["neg_elbo"]
    params = {"samples": samples, "n_images": int(test_idx.numel()), "vr_samples": vr_samples,
              "alpha": alpha if math.isfinite(alpha) else "-inf", "recon_images": recon_images, "seed": seed,
              "precision": precision, "replicates": replicates}
    arrays = {"log_likelihood_per_image": lp.numpy()} if not deterministic else {}
    return AnalysisResult("likelihood", params, data, arrays)


def plot(result: AnalysisResult, save) -> None:
    plt = pyplot()
    r = result.data
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    labels = ["train", "test"]
    vals = [r["train"]["recon_nll"], r["test"]["recon_nll"]]
    kls = [r["train"]["kl"], r["test"]["kl"]]
    ax.bar(labels, vals, color="#4C72B0", label="-E log p(x|z)")
    ax.bar(labels, kls, bottom=vals, color="#DD8452", label="KL(q(z|x) || p(z))")
    ax.set_ylabel("nats per image")
    ax.set_title(f"Train/test gap: {r['overfit_gap_neg_elbo']:+.2f} nats (-ELBO)")
    ax.legend()
    save(fig, "train-test")
    if "log_likelihood_per_image" in result.arrays:
        fig, ax = plt.subplots(figsize=(5.2, 3.4))
        ax.hist(result.arrays["log_likelihood_per_image"], bins=50, color="#55A868")
        ax.axvline(r["log_likelihood"], color="black", ls="--", lw=1, label=f"mean {r['log_likelihood']:.2f}")
        ax.set_xlabel(f"log p(x), importance sampled, S = {result.params['samples']} (nats)")
        ax.set_ylabel("test images")
        ax.legend()
        save(fig, "log-likelihood")
