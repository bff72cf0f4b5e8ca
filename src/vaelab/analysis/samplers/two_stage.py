"""The two-stage VAE of Dai & Wipf (2019), "Diagnosing and enhancing VAE models" (ICLR): after training, a second
small VAE is fitted to the first VAE's codes, so that generation no longer assumes the codes are N(0, I).

Given codes z (N, k) (in vaelab: the informative coordinates of the first VAE's codes), standardised per
coordinate, the second stage has a latent u of dimension kappa (default kappa = k, as in the paper) and

    q(u | z) = N(mu_u(z), diag(sigma_u(z)^2))       encoder MLP
    p(u)     = N(0, I)
    p(z | u) = N(dec(u), gamma I)                   decoder MLP; gamma a learned scalar (log gamma is trained)

trained by minimising the negative ELBO per code, with one reparameterised u ~ q(u|z):

    -ELBO = ||z - dec(u)||^2 / (2 gamma) + (k/2) log(2 pi gamma) + KL(q(u|z) || N(0, I)).

Learning gamma is the paper's key ingredient: when the codes lie near an r-dimensional manifold, r < k, the loss is
unbounded below as gamma -> 0, the optimum drives gamma to 0, and the decoder becomes a nearly deterministic map of
N(0, I) onto the codes' distribution. Generation: u ~ N(0, I) -> z = dec(u), the decoder *mean* (as the paper
describes it: no N(0, gamma I) noise is added; the authors' released code adds it, which matters little once gamma
is small) -> un-standardised -> the first VAE's decoder.
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from vaelab.analysis.framework.common import generator
from vaelab.models.networks import mlp
from vaelab.models.posteriors import GaussianPosterior, gaussian_log_prob
from vaelab.trainer import make_optimizer

MIN_STD = 1e-8  # floor on a coordinate's standard deviation when standardising (constant coordinates)
TARGET_STEPS = 4000  # Adam steps that the default number of epochs aims at, whatever N
MIN_EPOCHS, MAX_EPOCHS = 10, 2000
SAMPLE_SEED_OFFSET = 1  # sample() draws from seed + 1, so its noise is not the noise of fit's first batch


class SkipMLP(nn.Module):
    """x (B, n_in) -> Linear(concat[x, mlp(x)]) (B, n_out): an MLP whose output layer also sees its input, as in
    Dai & Wipf's code; the linear path makes near-identity maps easy from the start."""

    def __init__(self, n_in: int, hidden: tuple[int, ...], n_out: int, activation: str):
        super().__init__()
        self.n_in = n_in
        self.body = mlp([n_in, *hidden], activation, last_activation=True)
        self.head = nn.Linear(n_in + (hidden[-1] if hidden else n_in), n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([x, self.body(x)], dim=-1))


class SecondStage(nn.Module):
    """The second-stage VAE: encoder z (B, k) -> q(u|z) over kappa dims, decoder u (B, kappa) -> mean of z (B, k),
    and the scalar log gamma of p(z|u) = N(dec(u), gamma I)."""

    def __init__(self, k: int, kappa: int, hidden: tuple[int, ...], activation: str = "relu",
                 gamma_init: float = 0.1):
        super().__init__()
        self.encoder = SkipMLP(k, hidden, 2 * kappa, activation)
        self.decoder = SkipMLP(kappa, tuple(reversed(hidden)), k, activation)
        self.log_gamma = nn.Parameter(torch.tensor(math.log(gamma_init)))

    def encode(self, z: torch.Tensor) -> GaussianPosterior:
        """q(u|z): mu, logvar (B, kappa)."""
        mu, logvar = self.encoder(z).chunk(2, dim=-1)
        return GaussianPosterior(mu, logvar)

    def loss(self, z: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Negative ELBO of a batch z (B, k), averaged over the batch: a scalar."""
        q = self.encode(z)
        u = q.rsample(1, generator=g)[0]  # (B, kappa)
        mean = self.decoder(u)  # (B, k)
        log_lik = gaussian_log_prob(z, mean, self.log_gamma.expand_as(mean))  # log N(z; dec(u), gamma I): (B,)
        return (q.kl_per_dim().sum(-1) - log_lik).mean()


class TwoStageVAE:
    """A second-stage VAE fitted to codes (N, k); a sampler with ExPostGMM's interface: ``fit(codes) -> self``,
    ``sample(n) -> (n, k)`` float32.

    hidden: widths of the encoder's hidden layers (the decoder mirrors them). The paper used 3 layers of 1024; the
        default, 2 ReLU layers of 128 (plus the input-to-output skip of the authors' code), trains on 10,000 x 64
        codes in about 7 s of one CPU core (4,000 steps; (256, 256) takes about 13 s); in our checks the wider
        layers did no better at k <= 64, while more steps did.
    latent_dim: kappa, default k.
    epochs: default sized to N so that training takes about 4,000 Adam steps (10 to 2,000 epochs); the learning
        rate follows a cosine from ``lr`` to 0 over the planned steps.
    gamma_init: the starting gamma. On standardised codes gamma = 1 is a stationary point (every direction is
        explained as noise, and posterior collapse is exactly optimal to first order: the paper's code starts there
        and trains for hundreds of epochs); starting below 1 makes every direction worth encoding from the first step.
    max_seconds: stop after the epoch that passes it (the fit is then no longer reproducible across machines:
        ``history['stopped_early']`` says so).
    seed: fixes the initialisation (under torch.manual_seed; the global RNG state is restored afterwards), the
        batching and the reparameterisation noise (one torch.Generator), and the draws of ``sample``.
    threads: torch's intra-op threads during fit, restored afterwards (one is as fast for layers this small and does
        not collapse when the cores are shared); None leaves torch's setting.
    Training runs on the CPU in float32.
    """

    def __init__(self, hidden: tuple[int, ...] = (128, 128), latent_dim: int | None = None, epochs: int | None = None,
                 batch_size: int = 128, lr: float = 3e-3, seed: int = 0, max_seconds: float = 120.0,
                 gamma_init: float = 0.1, activation: str = "relu", threads: int | None = 1):
        self.hidden, self.latent_dim, self.epochs = tuple(hidden), latent_dim, epochs
        self.batch_size, self.lr, self.seed, self.max_seconds = batch_size, lr, seed, max_seconds
        self.gamma_init, self.activation, self.threads = gamma_init, activation, threads
        self.net: SecondStage | None = None
        self.mean: torch.Tensor | None = None  # (k,) standardisation
        self.std: torch.Tensor | None = None  # (k,)
        self.history: dict = {}

    @property
    def gamma(self) -> float:
        """The learned variance of p(z|u), in standardised units (the codes' per-coordinate variance is 1)."""
        return self.net.log_gamma.detach().exp().item()

    def fit(self, codes: torch.Tensor) -> "TwoStageVAE":
        """Standardise codes (N, k) and train the second stage on them; records ``self.history``: the last epoch's
        mean loss (negative ELBO per code, standardised units), gamma, epochs, steps, seconds."""
        threads_before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return self._fit(torch.as_tensor(codes).detach().float().cpu())
        finally:
            torch.set_num_threads(threads_before)

    def _fit(self, z: torch.Tensor) -> "TwoStageVAE":
        if z.ndim != 2 or z.shape[0] < 2:
            raise ValueError(f"codes must be an (N, k) array with N >= 2, got shape {tuple(z.shape)}")
        n, k = z.shape
        self.mean, self.std = z.mean(0), z.std(0).clamp_min(MIN_STD)
        z = (z - self.mean) / self.std
        kappa = self.latent_dim or k
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net = SecondStage(k, kappa, self.hidden, self.activation, self.gamma_init)
        g = generator(self.seed)

        batch = min(self.batch_size, n)
        steps_per_epoch = math.ceil(n / batch)
        epochs = self.epochs or min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch)))
        opt = make_optimizer(self.net, self.lr)  # PyTorch's fused Adam: a fifth of the fit's time saved
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)

        start, done, epoch_loss = time.perf_counter(), 0, float("nan")
        self.net.train()
        while done < epochs and (done == 0 or time.perf_counter() - start < self.max_seconds):
            order, total = torch.randperm(n, generator=g), 0.0
            for i in range(0, n, batch):
                idx = order[i:i + batch]
                loss = self.net.loss(z[idx], g)
                opt.zero_grad()
                loss.backward()
                opt.step()
                schedule.step()
                total += loss.item() * idx.numel()
            epoch_loss, done = total / n, done + 1
        self.net.eval()
        self.history = {"loss": epoch_loss, "gamma": self.gamma, "epochs": done, "planned_epochs": epochs,
                        "steps": done * steps_per_epoch, "seconds": time.perf_counter() - start,
                        "stopped_early": done < epochs, "n": n, "k": k, "latent_dim": kappa}
        return self

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        """n codes (n, k) float32 on the CPU: u ~ N(0, I) (n, kappa) -> decoder mean -> un-standardised. The same
        ``seed`` (default: the fit's) gives the same draws on every call."""
        if self.net is None:
            raise RuntimeError("TwoStageVAE.sample before fit")
        seed = self.seed if seed is None else seed
        u = torch.randn((n, self.net.decoder.n_in), generator=generator(seed + SAMPLE_SEED_OFFSET))
        return (self.net.decoder(u) * self.std + self.mean).float()

    @torch.no_grad()
    def encode(self, codes: torch.Tensor) -> GaussianPosterior:
        """q(u|z) of codes (N, k) in their original units: mu, logvar (N, kappa)."""
        if self.net is None:
            raise RuntimeError("TwoStageVAE.encode before fit")
        return self.net.encode((torch.as_tensor(codes).float().cpu() - self.mean) / self.std)
