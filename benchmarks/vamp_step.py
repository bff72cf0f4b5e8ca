"""A VampPrior training step with the mixture's log-density in float32 (`vaelab.models.priors.mixture_log_prob`:
centred expansion, each code's dominant component summed directly) against the same step with the expansion in
float64 (what mixture_log_prob did before 2026-12-07), side by side in alternating rounds.

The model is the fixes study's (document 002's MLP, Fashion-MNIST shapes, two hidden layers of 256, an isotropic
posterior, a Bernoulli decoder) with a VampPrior of K = 500 pseudo-inputs; a step is vaelab's ELBO (one sample, the
KL by Monte Carlo against the mixture), its backward and an Adam update, at batch 256, in the machine's autocast
precision (bf16 where the probe chooses it) or fp32 (``--precision``).

    python benchmarks/vamp_step.py [--latent 200 800] [--repeats 7] [--threads 1] [--precision bf16]
"""
from __future__ import annotations

import contextlib

import harness
import torch

from vaelab.config import build_config
from vaelab.models import priors
from vaelab.models.build import build_model
from vaelab.models.posteriors import LOG_2PI
from vaelab.objectives import elbo


def float64_mixture_log_prob(z, means, logvars, log_weights):
    """mixture_log_prob as it was: the uncentred expansion in float64, chunked the same way."""
    lead, d = z.shape[:-1], z.shape[-1]
    m, logv = means.double(), logvars.double()
    prec = torch.exp(-logv)
    const = log_weights.double() - 0.5 * ((m.pow(2) * prec).sum(-1) + logv.sum(-1) + d * LOG_2PI)
    rows = max(1, priors.MIXTURE_CHUNK // (d + m.shape[0]))
    out = [torch.logsumexp(const - 0.5 * (c.pow(2) @ prec.T - 2 * c @ (m * prec).T), dim=-1)
           for c in (chunk.double() for chunk in z.reshape(-1, d).split(rows))]
    return torch.cat(out).view(lead).to(z.dtype)


def main() -> None:
    ap = harness.parser(__doc__, "vamp-step", repeats=7, threads=1)
    ap.add_argument("--latent", type=int, nargs="+", default=[200, 800])
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    args = harness.parse(ap)
    current = priors.mixture_log_prob
    results = {}
    for latent in args.latent:
        cfg = build_config({"data": {"name": "fashion-mnist"},
                            "model": {"network": "mlp", "hidden": [256, 256], "posterior": "isotropic",
                                      "likelihood": "bernoulli", "latent_dim": latent, "prior": "vamp",
                                      "prior_components": 500}})
        torch.manual_seed(0)
        model = build_model(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        x = (torch.rand(256, 1, 28, 28) > 0.5).float()

        def step(log_prob):
            def one(_round):
                priors.mixture_log_prob = log_prob
                autocast = torch.autocast("cpu", dtype=torch.bfloat16) if args.precision == "bf16" \
                    else contextlib.nullcontext()
                with autocast:
                    loss = elbo(model, x).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return one

        contenders = {"float64 expansion": step(float64_mixture_log_prob), "float32 (vaelab)": step(current)}
        for fn in contenders.values():  # warm-up: oneDNN's kernel choice, first allocations
            fn(0)
            fn(0)
        rounds = harness.alternate(contenders, args.repeats)
        priors.mixture_log_prob = current
        med = harness.medians(rounds.seconds)
        r, q1, q3 = harness.round_ratios(rounds.seconds["float64 expansion"], rounds.seconds["float32 (vaelab)"])
        print(f"latent {latent}, K = 500, batch 256, {args.precision}, {torch.get_num_threads()} thread(s): a step "
              f"{med['float64 expansion'] * 1e3:.1f} ms with the float64 expansion, {med['float32 (vaelab)'] * 1e3:.1f} "
              f"ms in float32; {r:.2f}x (quartiles {q1:.2f}-{q3:.2f} over {args.repeats} alternating rounds)")
        results[latent] = {"seconds": rounds.seconds, "medians": med, "float64_over_float32": {"median": r, "q1": q1,
                                                                                               "q3": q3}}
    print(f"results: {harness.write_json(args, {'precision': args.precision, 'latent': results})}")


if __name__ == "__main__":
    main()
