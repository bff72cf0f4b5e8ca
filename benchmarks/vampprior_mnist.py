"""VampPrior against the standard normal prior on MNIST: the same network, epochs and optimiser, two priors.

Both VAEs are MLPs 784-300-300-40 (ReLU, Bernoulli likelihood, diagonal posterior), trained by vaelab on dynamically
binarized MNIST with the ELBO, batch 100, Adam, a linear KL warm-up; one with p(z) = N(0, I), one with a VampPrior of
K pseudo-inputs (Tomczak & Welling 2018). Each is measured by vaelab's likelihood analysis: the importance-sampled
log p(x) (S samples from q(z|x), on the fixed binarized test draw), with standard errors over images and over sampling.

The paper's number, for reference: -85.57 nats (VampPrior, K = 500, MLP 784-300-300-40 with gated units, warm-up
100 epochs, up to 2000 epochs with early stopping, S = 5000), against -88.56 for the standard prior (their Table 2).

Both models see the same test images, so the difference of their log-likelihoods is also given per image, with the
standard error of the paired differences (much smaller than either model's SE over images).

    python benchmarks/vampprior_mnist.py [--epochs 40] [--warmup 10] [--components 500] [--samples 1000] [--images 10000]
    python benchmarks/vampprior_mnist.py --time-epoch   # one epoch of each, to choose --epochs

One torch thread by default (--threads): on this shared 2-core machine two threads contending with other work ran a
training step 4-40x slower than one.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import harness
import torch

import vaelab
from vaelab.analysis import from_run
from vaelab.analysis.likelihood import likelihood

PAPER = {"vamp": -85.57, "standard": -88.56}  # Tomczak & Welling (2018), Table 2, MNIST, VAE (L = 1)


def config(prior: str, args, epochs: int) -> "vaelab.RunConfig":
    model = {"arch": f"784-{args.hidden}-{args.latent}".replace(",", "-"), "prior": prior}
    if prior != "standard":
        model["prior_components"] = args.components
    return vaelab.build_config({
        "name": f"mnist-{prior}", "data": {"name": "mnist", "pixels": "dynamic"}, "model": model,
        "objective": {"name": "elbo", "warmup_epochs": min(args.warmup, epochs)},
        "train": {"epochs": epochs, "batch_size": args.batch, "lr": args.lr, "seed": args.seed}})


def main() -> None:
    ap = harness.parser(__doc__, "vampprior_mnist", threads=1)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=10, help="KL warm-up epochs (the paper: 100 of up to 2000)")
    ap.add_argument("--components", type=int, default=500, help="K pseudo-inputs of the VampPrior")
    ap.add_argument("--hidden", default="300,300")
    ap.add_argument("--latent", type=int, default=40)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=1000, help="S importance samples per test image")
    ap.add_argument("--images", type=int, default=10000, help="test images for log p(x)")
    ap.add_argument("--priors", default="standard,vamp")
    ap.add_argument("--runs", default="benchmarks/out/vampprior-runs")
    ap.add_argument("--time-epoch", action="store_true", help="train one epoch of each and report its seconds")
    args = harness.parse(ap)

    runs = Path(args.runs)
    epochs = 1 if args.time_epoch else args.epochs
    rows, per_image = {}, {}
    for prior in args.priors.split(","):
        cfg = config(prior, args, epochs)
        shutil.rmtree(runs / cfg.name, ignore_errors=True)
        seconds, _ = harness.timed(lambda: vaelab.train(cfg, out=runs, progress=False, log=lambda m: None))
        print(f"{prior}: {epochs} epochs in {seconds:.0f}s", flush=True)
        if args.time_epoch:
            continue
        subject = from_run(runs / cfg.name)
        with torch.no_grad():
            likelihood_seconds, result = harness.timed(lambda: likelihood(subject, samples=args.samples,
                                                                          n_images=args.images, seed=args.seed))
        r, per_image[prior] = result.data, torch.from_numpy(result.arrays["log_likelihood_per_image"])
        last = subject.run.metrics[-1]
        rows[prior] = {"log_likelihood": r["log_likelihood"], "se_images": r["log_likelihood_se_images"],
                       "se_sampling": r["log_likelihood_se_sampling"], "vr_bound": r["vr_bound"],
                       "test_neg_elbo": r["test"]["neg_elbo"], "test_kl": r["test"]["kl"],
                       "train_test_gap": r["overfit_gap_neg_elbo"], "last_test_loss": last["test_loss"],
                       "train_seconds": seconds, "likelihood_seconds": likelihood_seconds,
                       "paper": PAPER.get(prior)}
        print(f"{prior}: log p(x) {r['log_likelihood']:.2f} +- {r['log_likelihood_se_images']:.2f}", flush=True)
    if args.time_epoch:
        return
    settings = {k: getattr(args, k) for k in ("epochs", "warmup", "components", "hidden", "latent", "batch", "lr",
                                               "seed", "samples", "images")}
    summary = {"settings": settings, "threads": torch.get_num_threads(), "results": rows}
    if {"standard", "vamp"} <= set(per_image):
        diff = per_image["vamp"] - per_image["standard"]  # the same test images, in the same order
        summary["vamp_minus_standard"] = {"mean": float(diff.mean()), "se": float(diff.std() / math.sqrt(diff.numel())),
                                          "share_of_images_better": float((diff > 0).double().mean())}
    harness.write_json(args, summary)
    print(f"\nMNIST (dynamic binarization), MLP 784-{args.hidden.replace(',', '-')}-{args.latent}, {args.epochs} epochs, "
          f"warm-up {args.warmup}, batch {args.batch}, lr {args.lr}; log p(x) by importance sampling, "
          f"S = {args.samples}, {args.images} test images\n")
    print("| prior | test log p(x) (nats) | SE images | SE sampling | VR bound (ELBO) | test -ELBO | paper |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for prior, v in rows.items():
        name = f"VampPrior (K = {args.components})" if prior == "vamp" else prior
        paper = f"{v['paper']:.2f}" if v["paper"] is not None else ""
        print(f"| {name} | {v['log_likelihood']:.2f} | {v['se_images']:.2f} | {v['se_sampling']:.3f} | "
              f"{v['vr_bound']:.2f} | {v['test_neg_elbo']:.2f} | {paper} |")
    if "vamp_minus_standard" in summary:
        d = summary["vamp_minus_standard"]
        print(f"\nVampPrior - standard, paired over the same images: {d['mean']:+.2f} +- {d['se']:.2f} nats "
              f"(better on {100 * d['share_of_images_better']:.0f}% of images); the paper: "
              f"{PAPER['vamp'] - PAPER['standard']:+.2f}")


if __name__ == "__main__":
    main()
