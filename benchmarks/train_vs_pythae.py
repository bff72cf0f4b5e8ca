"""Training speed and quality: vaelab against pythae 0.1.2's TrainingPipeline, same data, same network, one run.

The setting is pythae's default VAE: MLP 784-512-16, ReLU, Bernoulli (BCE), batch 128, Adam 1e-3, on MNIST with one
fixed binarization (vaelab's `pixels: fixed`, the same arrays handed to pythae). Both evaluate on the same binarized
test set every epoch. Seconds per epoch include each library's per-epoch evaluation (and vaelab's checkpoint);
medians over epochs after the first. vaelab runs once per precision asked for: fp32, bf16 (autocast on the matrix
products) and auto (the default: what the probe picks on this machine; its choice is printed). A precision may carry
train.compile after a colon (`fp32:on`: compiled from the first step, compile time counted in the first epoch and in
the medians' run; the default is the config's `auto`, which compiles only runs with at least 100 s of training left).

    python benchmarks/train_vs_pythae.py [--epochs 10] [--precisions fp32,bf16,auto,fp32:on] [--out ...]

On a CPU whose bf16 products are slow (no AVX-512 BF16: 3.7 GFLOP/s against 80-110 fp32 on one such machine) leave
bf16 out: ten bf16 epochs take about 15 minutes there.
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

SIZES = [784, 512, 16]


def train_flops_per_example() -> float:
    enc = 784 * 512 + 2 * 512 * 16
    dec = 16 * 512 + 512 * 784
    return 3 * 2 * (enc + dec)  # forward + backward, 2 flops per multiply-add


def run_vaelab(epochs: int, variant: str, device: str = "cpu") -> dict:
    """vaelab's trainer at ``variant``: a precision (fp32, bf16 or auto), optionally ``:compile`` (on, off, auto);
    what it trained in is in ``precision_used`` and ``compiled``."""
    precision, _, compile = variant.partition(":")
    cfg = vaelab.build_config({"name": "bench", "data": {"name": "mnist", "pixels": "fixed"},
                               "model": {"arch": "784-512-16"},
                               "train": {"epochs": epochs, "batch_size": 128, "lr": 1e-3, "precision": precision,
                                         "compile": compile or "auto", "device": device}})
    with tempfile.TemporaryDirectory() as tmp:
        run = vaelab.train(cfg, out=tmp, progress=False, log=lambda m: None)
        rows = run.metrics
    return {"precision_used": rows[0].get("precision", precision), "probe": rows[0].get("precision_probe"),
            "compiled": rows[-1].get("compiled"), "first_epoch_seconds": rows[0]["seconds"],
            "epoch_seconds": [r["seconds"] for r in rows], "train_seconds": [60000 / r["train_examples_per_s"] for r in rows],
            "test_neg_elbo": [r["test_loss"] for r in rows]}


def run_pythae(epochs: int, x_train: torch.Tensor, x_test: torch.Tensor, device: str = "cpu") -> dict:
    from pythae.models import VAE, VAEConfig

    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=16, reconstruction_loss="bce"))
    r = harness.train_pythae(model, epochs, 1e-3, 128, x_train, x_test, device)
    return {"epoch_seconds": r["epoch_seconds"], "test_neg_elbo": r["eval_loss"]}


def main() -> None:
    ap = harness.parser(__doc__, "train_vs_pythae", threads=0)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--precisions", default="fp32,bf16,auto", help="vaelab's runs, comma-separated "
                    "(precision[:compile])")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu",
                    help="where both libraries train (default: cuda when present)")
    args = harness.parse(ap)
    logging.getLogger("pythae").setLevel(logging.WARNING)
    data = load_dataset("mnist")
    cfg = vaelab.build_config({"data": {"name": "mnist", "pixels": "fixed"}})
    pixels = PixelSampler("fixed", data.x_train, data.x_test, cfg.data.binarize_seed)  # exactly what vaelab trains on
    results = {"pythae": run_pythae(args.epochs, pixels.train_fixed, pixels.test, args.device)}
    for precision in args.precisions.split(","):
        results[f"vaelab-{precision}"] = run_vaelab(args.epochs, precision, args.device)
    summary = {"epochs": args.epochs, "device": args.device, "threads": torch.get_num_threads(), "runs": results,
               "median_epoch_seconds": {}, "final_test_neg_elbo": {},
               "auto_chose": results.get("vaelab-auto", {}).get("precision_used")}
    for name, r in results.items():
        summary["median_epoch_seconds"][name] = statistics.median(r["epoch_seconds"][1:])
        summary["final_test_neg_elbo"][name] = r["test_neg_elbo"][-1]
    med = summary["median_epoch_seconds"]
    summary["speedup_vs_pythae"] = {k: med["pythae"] / v for k, v in med.items() if k != "pythae"}
    # every epoch counted, the first (which compiles, where a run compiles) included
    total = summary["total_seconds"] = {k: sum(r["epoch_seconds"]) for k, r in results.items()}
    summary["speedup_total_vs_pythae"] = {k: total["pythae"] / v for k, v in total.items() if k != "pythae"}
    flops = train_flops_per_example() * 60000
    summary["train_gflops"] = {k: flops / statistics.median(results[k]["train_seconds"][1:]) / 1e9
                               for k in results if k != "pythae"}
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    harness.write_json(args, summary)


if __name__ == "__main__":
    main()
