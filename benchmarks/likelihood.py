"""Importance-sampled log-likelihood: vaelab against pythae's `VAE.get_nll`, same trained model, same S, one run.

The model: pythae's default VAE shape (MLP 784-512-16, ReLU, Bernoulli), trained by vaelab on dynamically binarized
MNIST for a few epochs, then copied weight for weight into a pythae `VAE` (its default encoder/decoder MLPs have
exactly these layers; pythae's decoder ends in a sigmoid where vaelab's outputs logits). Both estimate log p(x) on
the same binarized test images with S importance samples from q(z|x).

    python benchmarks/likelihood.py [--images 1000] [--samples 1000] [--repeats 3] [--epochs 5]
"""
from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import harness
import torch

import vaelab
from vaelab.analysis import from_run
from vaelab.analysis.likelihood import importance_sampled_log_likelihood


def pythae_copy(model):
    """A pythae VAE with the weights of a vaelab 784-512-16 MLP VAE."""
    from pythae.models import VAE, VAEConfig

    pm = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=16, reconstruction_loss="bce"))
    enc, head, dec = model.encoder.net, model.head, model.decoder.net
    with torch.no_grad():
        pm.encoder.layers[0][0].weight.copy_(enc[0].weight), pm.encoder.layers[0][0].bias.copy_(enc[0].bias)
        pm.encoder.embedding.weight.copy_(head.mu.weight), pm.encoder.embedding.bias.copy_(head.mu.bias)
        pm.encoder.log_var.weight.copy_(head.logvar.weight), pm.encoder.log_var.bias.copy_(head.logvar.bias)
        pm.decoder.layers[0][0].weight.copy_(dec[0].weight), pm.decoder.layers[0][0].bias.copy_(dec[0].bias)
        pm.decoder.layers[1][0].weight.copy_(dec[2].weight), pm.decoder.layers[1][0].bias.copy_(dec[2].bias)
    return pm.eval()


def main() -> None:
    ap = harness.parser(__doc__, "likelihood", repeats=3, threads=0)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=5)
    args = harness.parse(ap)

    cfg = vaelab.build_config({"name": "bench-ll", "data": {"name": "mnist", "pixels": "dynamic"},
                               "model": {"arch": "784-512-16"}, "train": {"epochs": args.epochs, "batch_size": 128, "lr": 1e-3}})
    with tempfile.TemporaryDirectory() as tmp:
        vaelab.train(cfg, out=tmp, progress=False, log=lambda m: None)
        subject = from_run(Path(tmp) / "bench-ll")
    model = subject.model
    pm = pythae_copy(model)
    x = subject.data.x_test[: args.images]
    with torch.no_grad():  # the copy is exact: same posterior, same decoder probabilities
        q = model.encode(x[:8])
        assert torch.allclose(pm.encoder(x[:8]).embedding, q.mu, atol=1e-5)
        assert torch.allclose(pm.decoder(q.mu)["reconstruction"], torch.sigmoid(model.decode(q.mu)), atol=1e-5)

    def ours(r: int) -> tuple[float, float]:
        lp, se = importance_sampled_log_likelihood(model, x, args.samples, generator=torch.Generator().manual_seed(r))
        return float(lp.mean()), float(se.pow(2).sum().sqrt() / len(se))

    def theirs(r: int) -> float:
        torch.manual_seed(r)
        with torch.no_grad():
            return float(pm.get_nll(x, n_samples=args.samples, batch_size=100))

    this_round = {}

    def show(r: int, name: str, seconds: float, value) -> None:
        this_round[name] = seconds, value
        if name == "pythae":
            (vs, (lp, _)), (ps, nll) = this_round["vaelab"], this_round["pythae"]
            print(f"repeat {r + 1}: vaelab {vs:.2f}s ({lp:.3f}), pythae {ps:.2f}s ({nll:.3f})", flush=True)

    rounds = harness.alternate({"vaelab": ours, "pythae": theirs}, args.repeats, each=show)
    results, estimates = rounds.seconds, rounds.values
    med = harness.medians(results)
    v_mean = statistics.mean(e[0] for e in estimates["vaelab"])
    v_se = estimates["vaelab"][0][1]
    p_mean = statistics.mean(estimates["pythae"])
    decoder_flops = 2 * (16 * 512 + 512 * 784) * args.images * args.samples
    summary = {
        "images": args.images, "samples": args.samples, "repeats": args.repeats, "threads": torch.get_num_threads(),
        "seconds": results, "median_seconds": med, "speedup": harness.ratio(results["pythae"], results["vaelab"]),
        "log_likelihood": {"vaelab": v_mean, "vaelab_sampling_se": v_se, "pythae": p_mean,
                           "difference": v_mean - p_mean},
        "vaelab_gflops": decoder_flops / med["vaelab"] / 1e9,
    }
    print(json.dumps(summary, indent=2))
    harness.write_json(args, summary)
    print(f"\nmedian: vaelab {med['vaelab']:.2f}s, pythae get_nll {med['pythae']:.2f}s -> {summary['speedup']:.2f}x; "
          f"log p(x): vaelab {v_mean:.3f} (sampling SE {v_se:.3f}), pythae {p_mean:.3f}")


if __name__ == "__main__":
    main()
