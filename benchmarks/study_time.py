"""The full-scale latent-dim study (document 002: Fashion-MNIST, 784-256-256-d, latent 2/20/200/800, 3 seeds, batch
256, 100 epochs): its training time for vaelab and for pythae 0.1.2, measured on a slice and scaled, side by side.

For each latent size, vaelab trains the study's 3 seeds as one vectorised model (what `vaelab study` does) and pythae
trains one seed (its VAE with the same MLP; pythae has no isotropic posterior, so its encoder is diagonal, which
costs the same), both for --epochs epochs with the same threads; the median epoch after the first is scaled to 100
epochs (x3 seeds for pythae). Add the wall time of the study's analyses, measured by running the study with
`train.epochs: 2` (see benchmarks/README.md), to get the whole study.

    python benchmarks/study_time.py [--epochs 3]
"""
from __future__ import annotations

import json
import logging
import statistics
import tempfile

import harness
import torch

import vaelab
from vaelab.data import PixelSampler, load_dataset
from vaelab.ensemble import train_ensemble

DIMS = [2, 20, 200, 800]
SEEDS = [0, 1, 2]
STUDY_EPOCHS = 100


def vaelab_epoch_seconds(dim: int, epochs: int) -> float:
    """Median seconds of one epoch of the 3-seed vectorised group (all 3 runs), epochs after the first."""
    cfgs = [vaelab.build_config({"name": f"z{dim}-s{s}", "data": {"name": "fashion-mnist", "pixels": "dynamic"},
                                 "model": {"hidden": [256, 256], "latent_dim": dim, "posterior": "isotropic"},
                                 "train": {"epochs": epochs, "batch_size": 256, "lr": 1e-4, "seed": s}}) for s in SEEDS]
    with tempfile.TemporaryDirectory() as tmp:
        runs = train_ensemble(cfgs, tmp, progress=False, log=lambda m: None)
        per_epoch = [sum(run.metrics[e]["seconds"] for run in runs) for e in range(1, epochs)]
    return statistics.median(per_epoch)


def pythae_epoch_seconds(dim: int, epochs: int, x_train: torch.Tensor, x_test: torch.Tensor) -> float:
    """Median seconds of one pythae epoch (one seed, training + its evaluation), epochs after the first."""
    from pythae.models import VAE, VAEConfig
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.models.base.base_utils import ModelOutput

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU())
            self.mu, self.logvar = torch.nn.Linear(256, dim), torch.nn.Linear(256, dim)

        def forward(self, x):
            h = self.net(x.flatten(1))
            return ModelOutput(embedding=self.mu(h), log_covariance=self.logvar(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(dim, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                           torch.nn.ReLU(), torch.nn.Linear(256, 784), torch.nn.Sigmoid())

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z).view(-1, 1, 28, 28))

    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=dim, reconstruction_loss="bce"), encoder=Encoder(),
                decoder=Decoder())
    return statistics.median(harness.train_pythae(model, epochs, 1e-4, 256, x_train, x_test)["epoch_seconds"][1:])


def main() -> None:
    ap = harness.parser(__doc__, "study_time", threads=0)
    ap.add_argument("--epochs", type=int, default=3)
    args = harness.parse(ap)
    logging.getLogger("pythae").setLevel(logging.WARNING)
    data = load_dataset("fashion-mnist")
    pixels = PixelSampler("fixed", data.x_train, data.x_test, 0)
    rows = {}
    for dim in DIMS:
        v = vaelab_epoch_seconds(dim, args.epochs)  # all 3 seeds
        p = pythae_epoch_seconds(dim, args.epochs, pixels.train_fixed, pixels.test)  # one seed
        rows[dim] = {"vaelab_3_seeds_epoch_s": round(v, 2), "pythae_1_seed_epoch_s": round(p, 2),
                     "vaelab_training_min": round(v * STUDY_EPOCHS / 60, 1),
                     "pythae_training_min": round(p * len(SEEDS) * STUDY_EPOCHS / 60, 1)}
        print(dim, rows[dim], flush=True)
    total = {k: round(sum(r[k] for r in rows.values()), 1) for k in ("vaelab_training_min", "pythae_training_min")}
    total["ratio"] = round(total["pythae_training_min"] / total["vaelab_training_min"], 2)
    print(json.dumps(total))
    harness.write_json(args, {"epochs": args.epochs, "threads": torch.get_num_threads(), "per_dim": rows,
                              "total": total})


if __name__ == "__main__":
    main()
