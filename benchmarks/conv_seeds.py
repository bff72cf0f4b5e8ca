"""Why a study trains the seeds of a convolutional model one by one: M members of document 000's spatial model
(MNIST, conv-spatial, 8x8x256 latent, batch 128, as the fixes study's `medium` scale trains it) through
``torch.func.vmap`` over ``functional_call`` (how vaelab vectorises models it cannot fold), against the same M
models stepped one after another, side by side in alternating rounds.

A step is the whole of training's work: the negative ELBO (Bernoulli likelihood, Gaussian KL, the noise drawn
outside), its backward and an Adam update of every member. Vectorising saves per-operation overheads only (the
FLOPs are the same); for MLPs it pays (performance docs), for these convolutions vmap turns each layer into grouped
convolutions.

    python benchmarks/conv_seeds.py [--members 3] [--repeats 7] [--threads 1]
"""
from __future__ import annotations

import copy

import harness
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from vaelab.config import build_config
from vaelab.models.build import build_model

CONFIG = {"data": {"name": "mnist", "pixels": "dynamic"},
          "model": {"network": "conv-spatial", "conv_channels": [32, 64], "latent_channels": 256,
                    "posterior": "diagonal"},
          "train": {"batch_size": 128, "lr": 1e-3}}


def negative_elbo(model, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x (B, 1, 28, 28) binary, eps (B, D) -> the batch mean of -ELBO."""
    q = model.encode(x)
    z = q.mu + eps * torch.exp(0.5 * q.logvar)
    recon = F.binary_cross_entropy_with_logits(model.decode(z), x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (q.mu.pow(2) + q.logvar.exp() - 1 - q.logvar).sum(1)
    return (recon + kl).mean()


class _Loss(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, eps):
        return negative_elbo(self.model, x, eps)


def main() -> None:
    ap = harness.parser(__doc__, "conv-seeds", repeats=7, threads=1)
    ap.add_argument("--members", type=int, default=3)
    args = harness.parse(ap)
    config = build_config(CONFIG)
    m, b = args.members, config.train.batch_size
    torch.manual_seed(0)
    models = [build_model(config) for _ in range(m)]
    x = (torch.rand(m, b, 1, 28, 28) > 0.5).float()
    eps = torch.randn(m, b, models[0].latent_dim)

    separate_opts = [torch.optim.Adam(mod.parameters(), lr=config.train.lr) for mod in models]

    def separate(_round):
        for mod, opt, xk, ek in zip(models, separate_opts, x, eps):
            opt.zero_grad(set_to_none=True)
            negative_elbo(mod, xk, ek).backward()
            opt.step()

    params, buffers = stack_module_state([_Loss(copy.deepcopy(mod)) for mod in models])
    stacked = {k: torch.nn.Parameter(v.detach().clone()) for k, v in params.items()}
    wrapper = _Loss(copy.deepcopy(models[0]))
    batched = vmap(lambda p, bu, xx, ee: functional_call(wrapper, (p, bu), (xx, ee)), in_dims=(0, 0, 0, 0))
    stacked_opt = torch.optim.Adam(stacked.values(), lr=config.train.lr)

    def vectorised(_round):
        stacked_opt.zero_grad(set_to_none=True)
        batched(stacked, buffers, x, eps).sum().backward()
        stacked_opt.step()

    for fn in (separate, vectorised):  # warm-up: oneDNN's kernel choice and first allocations
        fn(0)
        fn(0)
    rounds = harness.alternate({"separate": separate, "vmap": vectorised}, args.repeats)
    med = harness.medians(rounds.seconds)
    r, q1, q3 = harness.round_ratios(rounds.seconds["vmap"], rounds.seconds["separate"])
    print(f"{m} members, batch {b}, {torch.get_num_threads()} thread(s): one step of all members "
          f"separate {med['separate']:.3f} s, vmap {med['vmap']:.3f} s; vmap / separate {r:.2f} "
          f"(quartiles {q1:.2f}-{q3:.2f} over {args.repeats} alternating rounds)")
    path = harness.write_json(args, {"members": m, "batch": b, "seconds": rounds.seconds, "medians": med,
                                     "vmap_over_separate": {"median": r, "q1": q1, "q3": q3}})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
