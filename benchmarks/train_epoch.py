"""Seconds per MNIST training epoch: vaelab's trainer against the canonical PyTorch example loop, in one run.

vaelab:   784-512-16 MLP VAE (pythae's default VAE shape), Bernoulli likelihood, batch 128, Adam 1e-3.
Example:  pytorch/examples vae/main.py loop (784-400-20, DataLoader over a TensorDataset, batch 128, Adam 1e-3,
          BCE summed + KL), written out below since torchvision has no CPU build here; also run at 784-512-16 so
          the two loops are compared on the same network.
Both see the same continuous MNIST pixels. Reports the median over epochs (after one warm-up epoch) and ratios.

    python benchmarks/train_epoch.py [--epochs 3] [--out benchmarks/out/train_epoch.json]
"""
from __future__ import annotations

import tempfile

import harness
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vaelab
from vaelab.data import load_dataset


class ExampleVAE(nn.Module):
    """pytorch/examples vae/main.py, with the sizes as parameters."""

    def __init__(self, hidden=400, latent=20):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, hidden), nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.fc3, self.fc4 = nn.Linear(latent, hidden), nn.Linear(hidden, 784)

    def forward(self, x):
        h1 = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def example_epoch_seconds(x: torch.Tensor, hidden: int, latent: int, epochs: int) -> list[float]:
    model = ExampleVAE(hidden, latent)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=128, shuffle=True)

    def epoch() -> None:
        for data, _ in loader:
            opt.zero_grad()
            recon, mu, logvar = model(data)
            bce = F.binary_cross_entropy(recon, data.view(-1, 784), reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            (bce + kld).backward()
            opt.step()

    return [harness.timed(epoch)[0] for _ in range(epochs + 1)][1:]


def vaelab_epoch_seconds(epochs: int) -> list[float]:
    cfg = vaelab.build_config({
        "name": "bench", "data": {"name": "mnist", "pixels": "continuous"},
        "model": {"arch": "784-512-16"}, "train": {"epochs": epochs + 1, "batch_size": 128, "lr": 1e-3},
    })
    with tempfile.TemporaryDirectory() as tmp:
        run = vaelab.train(cfg, out=tmp, progress=False, log=lambda m: None)
        # training time only (the per-epoch test evaluation and checkpoint are excluded, as for the example loop)
        return [60000 / m["train_examples_per_s"] for m in run.metrics][1:]


def mlp_train_flops(sizes: list[int]) -> float:
    """Multiply-adds x 2 of forward, x 3 for forward + backward, per example, for an encoder/decoder MLP."""
    enc = sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) + sizes[-2] * sizes[-1]  # mu and logvar heads
    dec = sum(a * b for a, b in zip(sizes[::-1][:-1], sizes[::-1][1:]))
    return 3 * 2 * (enc + dec)


def main() -> None:
    ap = harness.parser(__doc__, "train_epoch", threads=0)
    ap.add_argument("--epochs", type=int, default=3)
    args = harness.parse(ap)
    x = load_dataset("mnist").x_train
    results = {
        "vaelab 784-512-16": vaelab_epoch_seconds(args.epochs),
        "example loop 784-400-20": example_epoch_seconds(x, 400, 20, args.epochs),
        "example loop 784-512-16": example_epoch_seconds(x, 512, 16, args.epochs),
    }
    med, ours = harness.medians(results), results["vaelab 784-512-16"]
    flops = mlp_train_flops([784, 512, 16]) * 60000
    report = {
        "threads": torch.get_num_threads(), "epochs_timed": args.epochs,
        "seconds_per_epoch": results, "median": med,
        "ratio_example_400_20_over_vaelab": harness.ratio(results["example loop 784-400-20"], ours),
        "ratio_example_512_16_over_vaelab": harness.ratio(results["example loop 784-512-16"], ours),
        "vaelab_gflops": flops / med["vaelab 784-512-16"] / 1e9,
    }
    harness.write_json(args, report)
    print(f"{'loop':<26}{'median s/epoch':>16}  all")
    for k, v in results.items():
        print(f"{k:<26}{med[k]:>16.3f}  {', '.join(f'{t:.3f}' for t in v)}")
    print(f"example 784-400-20 / vaelab: {report['ratio_example_400_20_over_vaelab']:.2f}x;  "
          f"example 784-512-16 / vaelab: {report['ratio_example_512_16_over_vaelab']:.2f}x;  "
          f"vaelab achieves {report['vaelab_gflops']:.1f} GFLOP/s (fp32 matmul peak here ~160)")


if __name__ == "__main__":
    main()
