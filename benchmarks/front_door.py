"""The front door at a realistic size: three models a user brings, each taken through the command line as a user would
(`vaelab data add`, `vaelab train` where it applies, `vaelab diagnose`, `vaelab sample`), with every step's wall time
and peak resident memory (each step is its own process; os.wait4's rusage of it):

- plain: a convolutional VAE in plain PyTorch (the encoder returns a torch Normal over an 8 x 7 x 7 latent, a tanh
  decoder, images in [-1, 1]), trained on MNIST by its own loop (not vaelab's trainer: a Gaussian likelihood of std
  0.2 in [-1, 1] units, i.e. vaelab's default --gaussian-std 0.1, and the KL), then
  `vaelab diagnose --model plain_vae.py:make --data mnist --input-range -1,1` and `vaelab sample OUT`;
- diffusers: a tiny diffusers AutoencoderKL (3 blocks, latent 4 x 7 x 7), trained by a plain loop (the same Gaussian
  likelihood and its KL), its scaling_factor set to 1 / std of its latents as latent-diffusion models do, saved with
  save_pretrained, then `vaelab diagnose --diffusers DIR --data mnist` and `vaelab sample OUT`;
- colour: 32 x 32 colour patches cut from scikit-learn's two sample photographs (offline), written as a folder of
  PNGs without class folders, `vaelab data add`, `vaelab train --network conv`, `vaelab diagnose RUN`,
  `vaelab sample RUN`.

    nice -n 10 python benchmarks/front_door.py [--small] [--full-diagnosis] [--work DIR] [--json OUT]

The MNIST models see the first 12,000 training and 2,000 test images (added with `vaelab data add` as mnist-12k;
--mnist-train 0 uses the whole of MNIST). --small is a smoke run (2,000 images, a few steps). A step that fails is
recorded with the end of its stderr and the flow's later steps are skipped. The result goes to
benchmarks/out/front_door.json (front_door-small.json with --small) and is printed as a table.
"""
from __future__ import annotations

import os
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_images

import harness
from vaelab.data import load_dataset

PLAIN_VAE = '''
"""A convolutional VAE in plain PyTorch: MNIST images (B, 1, 28, 28) in [-1, 1]; the encoder returns a Normal over an
(8, 7, 7) latent; a tanh decoder."""
from pathlib import Path

import torch
from torch import distributions, nn

WEIGHTS = Path(__file__).with_name("plain_vae.pt")


class ConvVAE(nn.Module):
    def __init__(self, latent_channels=8):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                                 nn.Conv2d(64, 2 * latent_channels, 3, 1, 1))
        self.dec = nn.Sequential(nn.Conv2d(latent_channels, 64, 3, 1, 1), nn.ReLU(),
                                 nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1),
                                 nn.Tanh())

    def encode(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        return distributions.Normal(mu, torch.exp(0.5 * logvar.clamp(-12, 8)))

    def decode(self, z):
        return self.dec(z)


def make():
    model = ConvVAE()
    model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return model
'''

# The two training loops: plain PyTorch, run as their own processes. argv: work folder, dataset, epochs or steps.
TRAIN_PLAIN = '''
import sys, time
import torch
from torch import distributions
from vaelab.data import load_dataset
sys.path.insert(0, sys.argv[1])
from plain_vae import WEIGHTS, ConvVAE
torch.manual_seed(0)
x = load_dataset(sys.argv[2]).x_train * 2 - 1
model, sigma = ConvVAE(), 0.2
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
prior = distributions.Normal(0.0, 1.0)
for epoch in range(int(sys.argv[3])):
    t0, total = time.perf_counter(), 0.0
    for idx in torch.randperm(len(x)).split(128):
        q = model.encode(x[idx])
        rec = model.decode(q.rsample())
        loss = (((x[idx] - rec) ** 2).sum((1, 2, 3)) / (2 * sigma ** 2)
                + distributions.kl_divergence(q, prior).sum((1, 2, 3))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    print(f"epoch {epoch + 1}: loss {total / len(x):.1f} ({time.perf_counter() - t0:.0f} s)", flush=True)
torch.save(model.state_dict(), WEIGHTS)
'''

TRAIN_DIFFUSERS = '''
import sys, time
import torch
from diffusers import AutoencoderKL
from vaelab.data import load_dataset
torch.manual_seed(0)
x = load_dataset(sys.argv[2]).x_train * 2 - 1
vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 3,
                    up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 32), layers_per_block=1,
                    latent_channels=4, norm_num_groups=8, sample_size=28)
opt, sigma, steps = torch.optim.Adam(vae.parameters(), lr=1e-3), 0.2, int(sys.argv[3])
t0 = time.perf_counter()
for step in range(steps):
    idx = torch.randint(0, len(x), (64,))
    q = vae.encode(x[idx]).latent_dist
    rec = vae.decode(q.sample()).sample
    loss = (((x[idx] - rec) ** 2).sum((1, 2, 3)) / (2 * sigma ** 2) + q.kl()).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if (step + 1) % 50 == 0 or step + 1 == steps:
        print(f"step {step + 1}: loss {loss.item():.1f} ({time.perf_counter() - t0:.0f} s)", flush=True)
vae.eval()
with torch.no_grad():
    z = vae.encode(x[:2048]).latent_dist.sample()
vae.register_to_config(scaling_factor=float(1 / z.std()))
vae.save_pretrained("tinyvae")
print(f"scaling_factor {vae.config.scaling_factor:.4f}")
'''


def colour_patches(folder: Path, n: int, size: int = 32, seed: int = 0) -> None:
    """n colour patches (size x size) cut at random from scikit-learn's two sample photographs, as PNGs in folder."""
    rng = np.random.RandomState(seed)
    photos = load_sample_images().images
    folder.mkdir(parents=True)
    for k in range(n):
        img = photos[k % len(photos)]
        i, j = rng.randint(0, img.shape[0] - size), rng.randint(0, img.shape[1] - size)
        Image.fromarray(img[i:i + size, j:j + size]).save(folder / f"{k:05d}.png")


def mnist_subset(path: Path, train: int, test: int) -> None:
    """An .npz of the first MNIST images (uint8, with labels), for the smoke run's `vaelab data add`."""
    d = load_dataset("mnist", train_size=train, test_size=test)
    x_train, x_test = ((x.numpy() * 255).round().astype(np.uint8) for x in (d.x_train, d.x_test))
    np.savez(path, x_train=x_train, y_train=d.y_train.numpy(), x_test=x_test, y_test=d.y_test.numpy())


def main() -> None:
    ap = harness.parser(__doc__, "front_door")
    ap.add_argument("--small", action="store_true", help="a smoke run: an MNIST subset, a few steps")
    ap.add_argument("--full-diagnosis", action="store_true", help="`vaelab diagnose` without --quick")
    ap.add_argument("--work", type=Path, default=Path("benchmarks/out/front_door"), help="where models, data and "
                    "results go (emptied first)")
    ap.add_argument("--mnist-train", type=int, default=12000, help="the first N MNIST training images, added with "
                    "`vaelab data add` as mnist-Nk (0: the whole of MNIST)")
    ap.add_argument("--mnist-test", type=int, default=2000, help="with --mnist-train: the first N test images")
    ap.add_argument("--child-threads", type=int, default=0, help="torch threads of every step (OMP_NUM_THREADS; "
                    "default 0: torch's own choice); 1 keeps a loaded machine from thrashing")
    ap.add_argument("--only", choices=("plain", "diffusers", "colour"), action="append")
    args = harness.parse(ap)
    if args.small and args.json == harness.ROOT / "benchmarks/out/front_door.json":
        args.json = harness.ROOT / "benchmarks/out/front_door-small.json"
    work, args.json = args.work.resolve(), args.json.resolve()
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    os.chdir(work)  # every command runs here with the relative paths a user types; each one's output is in logs/
    env = {**os.environ, "VAELAB_DATA": str(work / "data")}  # user datasets go here, never ~/.cache
    if args.child_threads:
        os.environ["OMP_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(args.child_threads)
    vaelab = [sys.executable, "-m", "vaelab"]
    quick = [] if args.full_diagnosis else ["--quick"]
    sizes = {"mnist_train": 2000, "mnist_test": 500, "epochs": 1, "steps": 30, "patches": 600, "train_epochs": 1} \
        if args.small else {"mnist_train": args.mnist_train, "mnist_test": args.mnist_test, "epochs": 2, "steps": 300,
                             "patches": 6000, "train_epochs": 5}

    steps: list[dict] = []

    def step(flow: str, name: str, cmd: list[str], *, shown: str | None = None, data_env: bool = True) -> bool:
        """Run one step as its own process; record it; False when it failed."""
        child = harness.run_child(cmd, env=env if data_env else None, check=False)
        command = shown or "vaelab " + " ".join(map(str, cmd[3:]))
        stem = work / "logs" / f"{flow}-{name.split()[0]}"
        stem.with_suffix(".out").write_text(child.stdout)
        stem.with_suffix(".err").write_text(child.stderr)
        row = {"flow": flow, "step": name, "command": command,
               "seconds": round(child.seconds, 1), "peak_rss_mb": round(child.peak_rss_mb), "ok": child.returncode == 0}
        if child.returncode != 0:
            row["error"] = child.stderr.strip().splitlines()[-1:] or [f"exit {child.returncode}"]
        row["output"] = child.stdout.strip().splitlines()[-12:]
        steps.append(row)
        print(f"[{flow}] {name}: {command}\n    {row['seconds']} s, {row['peak_rss_mb']} MB"
              + ("" if row["ok"] else f", FAILED: {row['error']}"),
              flush=True)
        return row["ok"]

    mnist = "mnist"
    if sizes["mnist_train"] and (not args.only or {"plain", "diffusers"} & set(args.only)):
        mnist = f"mnist-{sizes['mnist_train'] // 1000}k"
        mnist_subset(Path(f"{mnist}.npz"), sizes["mnist_train"], sizes["mnist_test"])
        step("mnist", "data add", vaelab + ["data", "add", mnist, f"{mnist}.npz"])
    mnist_env = bool(sizes["mnist_train"])  # the whole MNIST is read from the default data folder

    if not args.only or "plain" in args.only:
        Path("plain_vae.py").write_text(textwrap.dedent(PLAIN_VAE).lstrip())
        Path("train_plain.py").write_text(textwrap.dedent(TRAIN_PLAIN).lstrip())
        ok = step("plain", "train (own loop)", [sys.executable, "train_plain.py", ".", mnist,
                                                str(sizes["epochs"])],
                  shown=f"python train_plain.py ({sizes['epochs']} epochs, batch 128)", data_env=mnist_env)
        ok = ok and step("plain", "diagnose", vaelab + ["diagnose", "--model", "plain_vae.py:make",
                                                        "--data", mnist, "--input-range", "-1,1", *quick, "--out",
                                                        "plain-diagnosis"], data_env=mnist_env)
        ok and step("plain", "sample", vaelab + ["sample", "plain-diagnosis", "-n", "64", "--out", "plain-samples.png"],
                    data_env=mnist_env)

    if not args.only or "diffusers" in args.only:
        Path("train_diffusers.py").write_text(textwrap.dedent(TRAIN_DIFFUSERS).lstrip())
        ok = step("diffusers", "train (own loop)", [sys.executable, "train_diffusers.py", ".", mnist,
                                                    str(sizes["steps"])],
                  shown=f"python train_diffusers.py ({sizes['steps']} steps, batch 64)", data_env=mnist_env)
        ok = ok and step("diffusers", "diagnose", vaelab + ["diagnose", "--diffusers", "tinyvae", "--data",
                                                            mnist, *quick, "--out", "tinyvae-diagnosis"],
                         data_env=mnist_env)
        ok and step("diffusers", "sample", vaelab + ["sample", "tinyvae-diagnosis", "-n", "64", "--out",
                                                     "tinyvae-samples.png"], data_env=mnist_env)

    if not args.only or "colour" in args.only:
        colour_patches(Path("patches"), sizes["patches"])
        run = "runs/patches"
        ok = step("colour", "data add", vaelab + ["data", "add", "patches", "patches/"])
        ok = ok and step("colour", "train", vaelab + [
            "train", "--dataset", "patches", "--network", "conv", "--pixels", "continuous", "--likelihood", "gaussian",
            "--latent-dim", "32", "--epochs", str(sizes["train_epochs"]), "--out", "runs", "--name",
            "patches", "--no-progress"])
        ok = ok and step("colour", "diagnose", vaelab + ["diagnose", run, *quick])
        ok and step("colour", "sample", vaelab + ["sample", run, "-n", "64", "--out", "patches-samples.png"])

    print(f"\n{'flow':<10}{'step':<18}{'seconds':>9}{'peak MB':>9}  command")
    for row in steps:
        print(f"{row['flow']:<10}{row['step']:<18}{row['seconds']:>9}{row['peak_rss_mb']:>9}  {row['command']}"
              + ("" if row["ok"] else "  (FAILED)"))
    print(f"written {harness.write_json(args, {'sizes': sizes, 'steps': steps})}")


if __name__ == "__main__":
    main()
