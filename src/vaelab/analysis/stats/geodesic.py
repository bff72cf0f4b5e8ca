"""Fisher-Rao geometry of diagonal Gaussians (document 004, section 2.3), in closed form.

For N(mu, sigma^2) the Fisher metric is ds^2 = (dmu^2 + 2 dsigma^2) / sigma^2. With u = mu / sqrt(2) it is
2 (du^2 + dsigma^2) / sigma^2: the Poincare half-plane scaled by sqrt(2). So
    d_F((mu1, s1), (mu2, s2)) = sqrt(2) arccosh(1 + ((mu1 - mu2)^2 / 2 + (s1 - s2)^2) / (2 s1 s2)),
and geodesics are half-circles centred on the u axis (vertical lines when mu1 = mu2), traversed at constant
speed in the arc-length coordinate log tan(theta / 2). A diagonal Gaussian in D dimensions is a product of D such
planes: its distance is the root sum of squares of the per-dimension distances, and its geodesic moves every
dimension along its own half-plane geodesic at a constant speed proportional to that dimension's distance.
"""
from __future__ import annotations

import math

import torch

SQRT2 = math.sqrt(2.0)
VERTICAL_TOL = 1e-9  # |u1 - u2| below this (relative to sigma) is a vertical geodesic


def fisher_rao_distance(mu1, sigma1, mu2, sigma2) -> torch.Tensor:
    """Fisher-Rao distance between N(mu1, diag(sigma1^2)) and N(mu2, diag(sigma2^2)): (..., D) inputs -> (...)."""
    mu1, sigma1, mu2, sigma2 = (torch.as_tensor(t, dtype=torch.float64) for t in (mu1, sigma1, mu2, sigma2))
    arg = 1 + ((mu1 - mu2).pow(2) / 2 + (sigma1 - sigma2).pow(2)) / (2 * sigma1 * sigma2)
    per_dim = SQRT2 * torch.acosh(arg.clamp_min(1.0))
    return per_dim.pow(2).sum(-1).sqrt()


def fisher_rao_geodesic(mu1, sigma1, mu2, sigma2, t) -> tuple[torch.Tensor, torch.Tensor]:
    """Points on the geodesic at times t in [0, 1]: mu, sigma of shape (T, ..., D) for t of shape (T,)."""
    mu1, sigma1, mu2, sigma2 = (torch.as_tensor(v, dtype=torch.float64) for v in (mu1, sigma1, mu2, sigma2))
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, *([1] * mu1.dim()))
    u1, u2 = mu1 / SQRT2, mu2 / SQRT2
    vertical = (u2 - u1).abs() <= VERTICAL_TOL * (sigma1 + sigma2)
    du = torch.where(vertical, torch.ones_like(u1), u2 - u1)
    c = ((u2.pow(2) + sigma2.pow(2)) - (u1.pow(2) + sigma1.pow(2))) / (2 * du)  # centre on the u axis
    r = torch.sqrt((u1 - c).pow(2) + sigma1.pow(2))
    th1, th2 = torch.atan2(sigma1, u1 - c), torch.atan2(sigma2, u2 - c)
    s1, s2 = torch.log(torch.tan(th1 / 2)), torch.log(torch.tan(th2 / 2))  # hyperbolic arc-length coordinate
    th = 2 * torch.atan(torch.exp((1 - t) * s1 + t * s2))
    u_arc, sigma_arc = c + r * torch.cos(th), r * torch.sin(th)
    u_vert = (1 - t) * u1 + t * u2
    sigma_vert = sigma1 * torch.pow(sigma2 / sigma1, t)
    u = torch.where(vertical, u_vert, u_arc)
    sigma = torch.where(vertical, sigma_vert, sigma_arc)
    return u * SQRT2, sigma


def path_length(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Fisher-Rao length of a discretised path mu, sigma (T, ..., D) -> (...), midpoint rule per segment."""
    mu, sigma = mu.double(), sigma.double()
    dmu, ds = mu.diff(dim=0), sigma.diff(dim=0)
    s_mid = 0.5 * (sigma[1:] + sigma[:-1])
    seg = ((dmu.pow(2) + 2 * ds.pow(2)) / s_mid.pow(2)).sum(-1).sqrt()
    return seg.sum(0)


def numerical_geodesic(mu1, sigma1, mu2, sigma2, steps: int = 64, iters: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """A reference geodesic by energy minimisation (L-BFGS on the discretised path in (mu, log sigma)), independent
    of the closed form above; used to test it. Returns mu, sigma of shape (steps + 1, D)."""
    mu1, sigma1, mu2, sigma2 = (torch.as_tensor(v, dtype=torch.float64).reshape(-1) for v in (mu1, sigma1, mu2, sigma2))
    t = torch.linspace(0, 1, steps + 1, dtype=torch.float64)[1:-1, None]
    inner_mu = ((1 - t) * mu1 + t * mu2).clone().requires_grad_(True)
    inner_ls = ((1 - t) * sigma1.log() + t * sigma2.log()).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([inner_mu, inner_ls], max_iter=iters, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def path():
        mu = torch.cat([mu1[None], inner_mu, mu2[None]])
        sigma = torch.cat([sigma1[None], inner_ls.exp(), sigma2[None]])
        return mu, sigma

    def closure():
        opt.zero_grad()
        mu, sigma = path()
        s_mid = 0.5 * (sigma[1:] + sigma[:-1])
        energy = ((mu.diff(dim=0).pow(2) + 2 * sigma.diff(dim=0).pow(2)) / s_mid.pow(2)).sum()
        energy.backward()
        return energy

    opt.step(closure)
    mu, sigma = path()
    return mu.detach(), sigma.detach()
