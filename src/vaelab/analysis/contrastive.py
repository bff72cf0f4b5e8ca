"""Label-free features: a small CNN trained contrastively (SimCLR's NT-Xent, Chen et al. 2020) on two augmented
views of each training image, without labels, once per dataset and cached under the data folder
(vaelab.analysis.netcache). Its 128-d encoder output (before the projection head) is the feature space of the
quality and memorisation analyses when the data has no labels.

The augmentations are torch ops on a batch (N, C, H, W) in [0, 1], for greyscale or colour images of any size: a
random affine warp (scale, rotation, a shift of up to a tenth of the image), contrast and brightness (and a gain
per channel for colour), Gaussian noise, and one erased box. There is no blur among them, so the features stay
sensitive to the blur that sets VAE samples apart from real images.
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.nn import functional as F

from vaelab.analysis.netcache import cached_network, dataset_key

CONTRASTIVE_VERSION = 1
CONTRASTIVE_STEPS = 600  # optimizer steps of BATCH images (two views each): 1.3 epochs of MNIST
BATCH = 128
TEMPERATURE = 0.2
EMBED_BATCH = 500


class ContrastiveNet(nn.Module):
    """Conv(w, stride 2)-Conv(2w, stride 2)-Conv(4w)-Linear(128) encoder (the features) and a 2-layer projection
    head (the contrastive loss' space): images (N, C, H, W) -> features (N, 128), projections (N, 64). Strided
    convolutions instead of pooling: a training step costs 0.6x the evaluation classifier's on the same images."""

    def __init__(self, image_shape: tuple[int, int, int], width: int = 16, n_features: int = 128,
                 n_projection: int = 64):
        super().__init__()
        c, h, w = image_shape
        self.encoder = nn.Sequential(
            nn.Conv2d(c, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(4 * width * (h // 4) * (w // 4), n_features), nn.ReLU())
        self.projection = nn.Sequential(nn.Linear(n_features, n_features), nn.ReLU(),
                                        nn.Linear(n_features, n_projection))
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.encoder(x.contiguous(memory_format=torch.channels_last)))

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch_size: int = EMBED_BATCH) -> torch.Tensor:
        """Encoder features (N, 128) of images in [0, 1]."""
        self.eval()
        return torch.cat([self.encoder(x[i:i + batch_size].contiguous(memory_format=torch.channels_last))
                          for i in range(0, x.shape[0], batch_size)])


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One random view of each image of x (N, C, H, W) in [0, 1], drawn with generator g: (N, C, H, W) in [0, 1]."""
    n, c, h, w = x.shape

    def u(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand((n, *shape), generator=g)

    scale, angle = u(0.8, 1.15, 1), u(-math.pi / 12, math.pi / 12, 1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.cat([cos, -sin, u(-0.2, 0.2, 1)], 1), torch.cat([sin, cos, u(-0.2, 0.2, 1)], 1)], 1)
    v = F.grid_sample(x, F.affine_grid(theta, (n, c, h, w), align_corners=False), padding_mode="zeros",
                      align_corners=False)
    mean = v.mean((1, 2, 3), keepdim=True)
    v = (v - mean) * u(0.6, 1.4, 1, 1, 1) + mean + u(-0.15, 0.15, 1, 1, 1)
    if c > 1:
        v = v * u(0.8, 1.2, c, 1, 1)
    v = v + u(0, 0.08, 1, 1, 1) * torch.randn(v.shape, generator=g)
    # one erased box (cutout), a quarter to a half of each side, on half of the images
    bh, bw = (u(0.25, 0.5) * h).long(), (u(0.25, 0.5) * w).long()
    top, left = (u(0, 1) * (h - bh + 1)).long(), (u(0, 1) * (w - bw + 1)).long()
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    box = ((rows >= top.view(n, 1, 1)) & (rows < (top + bh).view(n, 1, 1)) & (cols >= left.view(n, 1, 1))
           & (cols < (left + bw).view(n, 1, 1)) & (u(0, 1) < 0.5).view(n, 1, 1))
    return v.masked_fill(box.unsqueeze(1), 0.0).clamp(0, 1)


def nt_xent(p: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """SimCLR's NT-Xent loss of projections p (2B, P): rows i and i + B are two views of one image."""
    z = F.normalize(p, dim=1)
    sim = (z @ z.T / temperature).fill_diagonal_(-math.inf)
    b = p.shape[0] // 2
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return F.cross_entropy(sim, target)


def train_contrastive(data, *, steps: int = CONTRASTIVE_STEPS, batch: int = BATCH, seed: int = 0,
                      log=None) -> tuple[ContrastiveNet, dict]:
    """Train the contrastive feature network on the training images, labels unused (Adam, one-cycle schedule,
    ``steps`` steps of ``batch`` images); deterministic given the seed (and torch's thread count)."""
    torch.manual_seed(seed)
    model = ContrastiveNet(data.image_shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    x, n = data.x_train, data.x_train.shape[0]
    batch = min(batch, n)
    t0, c0, order, at, losses = time.perf_counter(), time.process_time(), torch.randperm(n, generator=g), 0, []
    model.train()
    for step in range(steps):
        if at + batch > n:
            order, at = torch.randperm(n, generator=g), 0
        images = x[order[at:at + batch]]
        at += batch
        loss = nt_xent(model(torch.cat([augment(images, g), augment(images, g)])))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log and (step + 1) % 100 == 0:
            log(f"contrastive features for {data.name}: step {step + 1}/{steps}, "
                f"NT-Xent {sum(losses[-100:]) / 100:.3f}")
    info = {"dataset": data.name, "steps": steps, "batch": batch, "epochs": round(steps * batch / n, 2),
            "temperature": TEMPERATURE, "seed": seed, "version": CONTRASTIVE_VERSION,
            "final_loss": sum(losses[-50:]) / len(losses[-50:]), "train_seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - c0, 1),
            "threads": torch.get_num_threads(), "image_shape": list(data.image_shape)}
    return model.eval(), info


def contrastive_network(data, *, root=None, log=None, steps: int | None = None) -> tuple[ContrastiveNet, dict]:
    """The cached contrastive feature network of this dataset (its images, not its labels, key the cache), trained
    (``steps``, default CONTRASTIVE_STEPS) and cached on first use."""
    steps = steps or CONTRASTIVE_STEPS
    key = f"{dataset_key(data, labels=False)}-s{steps}-v{CONTRASTIVE_VERSION}"
    return cached_network("contrastive", key, lambda info: ContrastiveNet(tuple(info["image_shape"])),
                          lambda: train_contrastive(data, steps=steps, log=log), root=root)
