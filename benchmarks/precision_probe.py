"""What `precision: auto` costs to decide, with and without its early stop, on document 000's 8x8x1024 conv VAE.

Two decisions are timed, each with the early stop (a first timed round that finds bf16 more than
vaelab.precision.GIVE_UP_SLOWER times slower ends the probe) and without it (GIVE_UP_SLOWER = inf, the code before
the stop), alternating in one process:

- the trainer's probe (vaelab.precision.choose_for_batch): the model's training step, batch 128, in fp32 and bf16;
- the likelihood analysis's check (vaelab.analysis.likelihood.choose_precision): 48 test images x 128 samples.

On a CPU with fast bf16 both variants do the same work (the stop never fires), so the saving shows only where bf16
is slow: CPUs without AVX-512 BF16 or AMX. The model is untrained (the timings do not depend on the weights).

    python benchmarks/precision_probe.py [--threads 2] [--out benchmarks/out/precision_probe.json]
"""
from __future__ import annotations

import json
import math

import harness
import torch

import vaelab
from vaelab import precision
from vaelab.analysis import likelihood as lik
from vaelab.data import PixelSampler, load_dataset
from vaelab.models import build_model
from vaelab.objectives import Objective


def main() -> None:
    ap = harness.parser(__doc__, "precision_probe", threads=2)
    ap.add_argument("--latent-channels", type=int, default=1024)
    args = harness.parse(ap)
    cfg = vaelab.build_config({"data": {"name": "mnist"}, "model": {
        "network": "conv-spatial", "conv_channels": [32, 64], "latent_channels": args.latent_channels,
        "posterior": "diagonal"}, "train": {"batch_size": 128}})
    torch.manual_seed(0)
    model = build_model(cfg)
    data = load_dataset("mnist", test_size=1000)
    x = PixelSampler("dynamic", data.x_train[:1], data.x_test, cfg.data.binarize_seed).test
    objective = Objective(cfg.objective)
    result: dict = {"threads": args.threads,
                    "model": f"conv-spatial 8x8x{args.latent_channels}", "give_up_slower": precision.GIVE_UP_SLOWER}
    for stop in (True, False):
        name = "with_stop" if stop else "without_stop"
        limit = precision.GIVE_UP_SLOWER if stop else math.inf
        precision.GIVE_UP_SLOWER = lik.GIVE_UP_SLOWER = limit
        seconds, choice = harness.timed(lambda: precision.choose_precision(
            model, 128, torch.device("cpu"),
            lambda: objective(model, x[:128], torch.Generator().manual_seed(0)).loss, use_cache=False))
        result[f"train_probe_{name}"] = {"seconds": round(seconds, 2), **choice.as_metrics()}
        print(f"training-step probe, {name.replace('_', ' ')}: {seconds:.1f} s -> {choice.precision} ({choice.reason})",
              flush=True)
        with torch.no_grad():
            seconds, (used, check) = harness.timed(lambda: lik.choose_precision(model, x, 1000, seed=1))
        result[f"likelihood_check_{name}"] = {"seconds": round(seconds, 2), "precision": used, **check}
        print(f"likelihood check, {name.replace('_', ' ')}: {seconds:.1f} s -> {used} ({check['reason']})", flush=True)
        precision.GIVE_UP_SLOWER = lik.GIVE_UP_SLOWER = result["give_up_slower"]
    for what in ("train_probe", "likelihood_check"):
        result[f"{what}_speedup"] = result[f"{what}_without_stop"]["seconds"] / result[f"{what}_with_stop"]["seconds"]
    print(json.dumps({k: v for k, v in result.items() if k.endswith("speedup")}, indent=2))
    harness.write_json(args, result)


if __name__ == "__main__":
    main()
