"""Interpolations between two test images (document 004, Fig. 5), five rows:

1. the convex hull in input space: (1 - t) x1 + t x2;
2. the convex hull of the posterior means, decoded without sampling;
3. the convex hull of one sample from each posterior;
4. the Fisher-Rao geodesic between q(z|x1) and q(z|x2), sampling z_t ~ N(mu(t), sigma(t)^2) along it;
5. the same geodesic decoded at its means mu(t), without sampling.
With the geodesic's Fisher-Rao length (the distance) against the length of the straight line in (mu, sigma).
"""
from __future__ import annotations

import torch

from vaelab.analysis.framework.common import AnalysisResult, decode_means, encode_all, generator
from vaelab.analysis.stats.geodesic import fisher_rao_distance, fisher_rao_geodesic, path_length
from vaelab.errors import NotApplicable
from vaelab.plotting import pyplot, show_images

ROWS = ("input space", "latent means", "sampled latents", "geodesic, sampled", "geodesic, means")


def pick_pairs(y: torch.Tensor | None, n_pairs: int, seed: int, n: int | None = None) -> list[tuple[int, int]]:
    """n_pairs (i, j) index pairs of test images with different labels, seeded; without labels (``y`` None, ``n``
    images), pairs of different images."""
    if y is None:
        y = torch.arange(n)  # every image its own class
    g = generator(seed)
    pairs = []
    order = torch.randperm(y.shape[0], generator=g).tolist()
    for i in order:
        for j in order[::-1]:
            if y[i] != y[j] and (i, j) not in pairs and (j, i) not in pairs:
                pairs.append((i, j))
                break
        if len(pairs) == n_pairs:
            break
    return pairs


def interpolation(subject, *, pairs: int = 3, steps: int = 10, seed: int = 0) -> AnalysisResult:
    """The five interpolation rows for ``pairs`` pairs of test images, with geodesic and straight-line lengths."""
    x, y = subject.data.x_test, subject.data.y_test
    mu, logvar = encode_all(subject.model, x[:1])
    if logvar is None:
        raise NotApplicable("geodesic interpolation needs posterior variances; this model is deterministic")
    g = generator(seed, subject.device)
    t = torch.linspace(0, 1, steps)
    arrays, rows = {}, []
    for p, (i, j) in enumerate(pick_pairs(y, pairs, seed, x.shape[0])):
        xi, xj = x[i:i + 1], x[j:j + 1]
        mu, logvar = encode_all(subject.model, torch.cat([xi, xj]))
        m1, m2 = mu[0].double(), mu[1].double()
        s1, s2 = torch.exp(0.5 * logvar[0]).double(), torch.exp(0.5 * logvar[1]).double()
        tt = t[:, None].double()
        input_row = (1 - t[:, None, None, None]) * xi + t[:, None, None, None] * xj
        means_row = (1 - tt) * m1 + tt * m2
        z1 = m1 + s1 * torch.randn(m1.shape, generator=g, dtype=torch.float64, device=m1.device)
        z2 = m2 + s2 * torch.randn(m2.shape, generator=g, dtype=torch.float64, device=m2.device)
        sampled_row = (1 - tt) * z1 + tt * z2
        geo_mu, geo_sigma = fisher_rao_geodesic(m1, s1, m2, s2, t)
        geo_sampled = geo_mu + geo_sigma * torch.randn(geo_mu.shape, generator=g, dtype=torch.float64, device=m1.device)
        images = [input_row.cpu()] + [decode_means(subject.model, z.float()) for z in (means_row, sampled_row, geo_sampled, geo_mu)]
        arrays[f"pair{p}"] = torch.stack(images).numpy()  # (5, steps, C, H, W)
        if p == 0:  # document 004's Fig. 4: the geodesic against the straight line in (mu, sigma), widest dims
            per_dim = fisher_rao_distance(m1[:, None], s1[:, None], m2[:, None], s2[:, None])
            dims = per_dim.argsort(descending=True)[:3]
            curve_t = torch.linspace(0, 1, 101, dtype=torch.float64)
            c_mu, c_sigma = fisher_rao_geodesic(m1[dims], s1[dims], m2[dims], s2[dims], curve_t)
            arrays["curve_dims"] = dims.cpu().numpy()
            arrays["curve_geodesic"] = torch.stack([c_mu, c_sigma], 1).cpu().numpy()  # (101, 2, 3)
        fine = torch.linspace(0, 1, 513, dtype=torch.float64)[:, None]
        hull_len = path_length((1 - fine) * m1 + fine * m2, (1 - fine) * s1 + fine * s2)
        sig_mid = geo_sigma[steps // 2] if steps % 2 else 0.5 * (geo_sigma[steps // 2 - 1] + geo_sigma[steps // 2])
        rows.append({"pair": p, "test_indices": [i, j], "labels": [int(y[i]), int(y[j])] if y is not None else [-1, -1],
                     "fisher_rao_distance": float(fisher_rao_distance(m1, s1, m2, s2)),
                     "straight_line_fisher_length": float(hull_len),
                     "euclidean_mean_distance": float((m1 - m2).norm()),
                     "geodesic_sigma_peak_ratio": float((sig_mid / torch.maximum(s1, s2)).max()),
                     })
    arrays["t"] = t.numpy()
    return AnalysisResult("interpolation", {"pairs": pairs, "steps": steps, "seed": seed}, {"pairs": rows, "rows": list(ROWS)}, arrays)


def plot(result: AnalysisResult, save) -> None:
    plt = pyplot()
    for row in result.data["pairs"]:
        key = f"pair{row['pair']}"
        if key not in result.arrays:
            continue
        imgs = result.arrays[key]  # (5, steps, C, H, W)
        fig, axes = plt.subplots(5, 1, figsize=(1.0 * imgs.shape[1] + 1.5, 6.6))
        for ax, name, r in zip(axes, ROWS, imgs):
            show_images(ax, r, ncol=r.shape[0])
            ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        ends = row["labels"] if min(row["labels"]) >= 0 else [f"image {k}" for k in row["test_indices"]]  # unlabelled
        fig.suptitle(f"Interpolations {ends[0]} -> {ends[1]}: Fisher-Rao distance "
                     f"{row['fisher_rao_distance']:.2f}, straight line {row['straight_line_fisher_length']:.2f}")
        save(fig, str(row["pair"]))
    if "curve_geodesic" in result.arrays:
        curve, dims = result.arrays["curve_geodesic"], result.arrays["curve_dims"]
        fig, ax = plt.subplots(figsize=(5.6, 3.8))
        for k, d in enumerate(dims):
            mu, sigma = curve[:, 0, k], curve[:, 1, k]
            line, = ax.plot(mu, sigma, lw=2, label=f"z{d + 1}: Fisher-Rao geodesic")
            ax.plot([mu[0], mu[-1]], [sigma[0], sigma[-1]], ls=":", color=line.get_color(), label=f"z{d + 1}: straight line")
            ax.plot([mu[0], mu[-1]], [sigma[0], sigma[-1]], "o", color=line.get_color())
        ax.set_xlabel("posterior mean mu")
        ax.set_ylabel("posterior standard deviation sigma")
        ax.set_title("Geodesics vs straight lines in (mu, sigma), pair 0")
        ax.legend(fontsize=7, ncol=2)
        save(fig, "geodesic-curves")
