"""The importance-sampled log-likelihood of a 65,536-unit latent (document 000's 8x8x1024 model): its noise drawn
by torch.randn (one serial generator) against vaelab.streams.standard_normal (fixed streams filled on torch's
threads), alternating in one process at the same images and S.

At 65,536 latent units every sample of 100 images is 6.5 million normals, and at two threads torch.randn was 45% of
the estimate's time (the decoder's convolutions run on both cores, the generator on one). Without ``--run`` the
script trains the model briefly (1,280 MNIST images, one epoch: enough for the timing, which does not depend on how
well the model is trained).

    python benchmarks/likelihood_streams.py [--run RUN_DIR] [--threads 2] [--images 100] [--samples 50] [--repeats 3]
"""
from __future__ import annotations

import tempfile

import harness
import torch

import vaelab
from vaelab.analysis import from_run
from vaelab.analysis import likelihood as lik

MODEL = {"data": {"name": "mnist", "pixels": "dynamic", "train_size": 1280},
         "model": {"network": "conv-spatial", "conv_channels": [32, 64], "posterior": "diagonal",
                   "latent_channels": 1024},
         "train": {"epochs": 1, "batch_size": 128, "lr": 1e-3}}


def serial_normal(shape, generator, device="cpu", dtype=torch.float32):
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def estimate(model, x, samples: int, noise) -> tuple[float, float]:
    """(mean log p(x), its standard error) of one bf16 IS estimate with ``noise`` as the draw."""
    lik.standard_normal = noise
    lp, se = lik.importance_sampled_log_likelihood(model, x, samples, generator=torch.Generator().manual_seed(0),
                                                   precision="bf16")
    return float(lp.mean()), float(se.square().sum().sqrt() / len(se))


def main() -> None:
    ap = harness.parser(__doc__, "likelihood_streams", repeats=3, threads=2)
    ap.add_argument("--run", help="a trained run of a spatial-latent model (default: train one briefly)")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--samples", type=int, default=50)
    args = harness.parse(ap)
    streams = lik.standard_normal
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or vaelab.train(vaelab.build_config({**MODEL, "name": "doc000"}), out=tmp,
                                           progress=False, log=lambda m: None).path
        subject = from_run(run_dir)
    model, x = subject.model.eval(), subject.reference.x_test[:args.images]
    decodes = args.images * args.samples
    print(f"{harness.machine()['cpu']}; latent {tuple(model.latent_shape)}; {args.images} images x S = {args.samples}")
    estimate(model, x[:8], 2, streams)  # warm-up
    rounds = harness.alternate({label: lambda r, noise=noise: estimate(model, x, args.samples, noise)
                                for label, noise in (("torch.randn", serial_normal), ("streams", streams))},
                               args.repeats)
    lik.standard_normal = streams
    times, med = rounds.seconds, harness.medians(rounds.seconds)
    result = {"threads": args.threads, "images": args.images, "samples": args.samples}
    for label, ts in times.items():
        ms = 1e3 * med[label] / decodes * 100
        mean, se = rounds.values[label][-1]
        result[label] = {"seconds": ts, "ms_per_100_decodes": ms, "mean_log_p": mean, "se": se}
        print(f"{label}: {ms:.1f} ms per 100 decodes (repeats {', '.join(f'{t:.2f}' for t in ts)} s); "
              f"mean log p(x) {mean:.3f} +- {se:.3f}")
    result["speedup"] = harness.ratio(times["torch.randn"], times["streams"])
    print(f"streams {result['speedup']:.2f}x")
    harness.write_json(args, result)


if __name__ == "__main__":
    main()
