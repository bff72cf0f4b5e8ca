"""The VAE of a latent-diffusion model (diffusers' ``AutoencoderKL``), as the analyses see it.

The analyses see the latent the diffusion model sees: ``z = (latent - shift_factor) * scaling_factor``, with the
factors from the VAE's config (``shift_factor`` unset reads as 0); the decoder gets ``latent = z / scaling_factor +
shift_factor``. Images are in [-1, 1] for the VAE; decoded means are clipped to [-1, 1], as the pipelines do, and
mapped back to vaelab's [0, 1]. diffusers is an optional extra (``pip install 'vaelab[diffusers]'``): nothing here
imports it except :func:`load_diffusers`, which reads a ``save_pretrained`` folder.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from vaelab.analysis.adapters.plain import (DEFAULT_GAUSSIAN_STD, TorchModelAdapter, check_model, first_line,
                                            latent_shape_of)
from vaelab.errors import RunError

DIFFUSERS_RANGE = (-1.0, 1.0)
ACCEPTED_FOLDER = ("a folder written by AutoencoderKL.save_pretrained (config.json with _class_name "
                   "'AutoencoderKL' and its weights), or a pipeline folder with such a vae/ subfolder")


def latent_sentence(scale: float, shift: float, latent_shape: tuple[int, ...]) -> str:
    """The sentence every result and the verdict carry: which latent the numbers are about."""
    return (f"The latent analysed is the scaled one the diffusion model sees, z = (latent - {shift:g}) * {scale:g} "
            f"(the VAE's shift_factor and scaling_factor), of shape {tuple(latent_shape)} flattened to "
            f"{math.prod(latent_shape)} dimensions; the prior it is compared with is N(0, I).")


def from_diffusers(vae, *, image_shape: tuple[int, int, int] | None = None,
                   gaussian_std: float = DEFAULT_GAUSSIAN_STD, probe: torch.Tensor | None = None) -> TorchModelAdapter:
    """A diffusers ``AutoencoderKL`` (or any model with its ``encode(x).latent_dist`` / ``decode(z).sample`` and a
    ``config`` with ``scaling_factor``) as a LatentModel over the scaled latent.

    image_shape: (C, H, W) of the images (the dataset's); by default the config's in_channels and sample_size.
    gaussian_std: the pixel noise of the Gaussian likelihood, in vaelab's [0, 1] units. probe: images (B, C, H, W) in
    [0, 1] for the one encode/decode that checks the model (grey ones by default)."""
    config = getattr(vae, "config", None)
    if config is None or not all(callable(getattr(vae, m, None)) for m in ("encode", "decode")):
        raise RunError(f"{type(vae).__name__} is not a diffusers AutoencoderKL (no config, encode or decode); "
                       "expected an AutoencoderKL, e.g. AutoencoderKL.from_pretrained(folder)")
    scale = float(getattr(config, "scaling_factor", None) or 1.0)
    shift = float(getattr(config, "shift_factor", None) or 0.0)
    if image_shape is None:
        size = config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        image_shape = (int(config.in_channels), int(h), int(w))
    dtype = next(vae.parameters()).dtype

    def encoder(x):  # (B, C, H, W) in [-1, 1] -> the scaled posterior: mean (B, c, h, w), logvar (B, c, h, w)
        dist = vae.encode(x.to(dtype)).latent_dist
        return (dist.mean.float() - shift) * scale, dist.logvar.float() + 2 * math.log(scale)

    def decoder(z):  # (N, c, h, w) scaled -> decoded images in [-1, 1]
        return vae.decode((z / scale + shift).to(dtype)).sample.float()

    device = next(vae.parameters()).device
    latent_shape = latent_shape_of(encoder, image_shape, DIFFUSERS_RANGE, device)
    adapter = TorchModelAdapter(
        encoder, decoder, latent_shape, image_shape, likelihood="gaussian", decoder_output="mean",
        gaussian_std=gaussian_std, input_range=DIFFUSERS_RANGE, clamp_output=True,
        source={"adapter": f"diffusers {type(vae).__name__}", "scaling_factor": scale, "shift_factor": shift,
                "latent": latent_sentence(scale, shift, latent_shape)})
    adapter.add_module("diffusers_vae", vae)
    return check_model(adapter, probe)


def load_diffusers(folder: str | Path, device: str | torch.device = "cpu"):
    """An AutoencoderKL from a ``save_pretrained`` folder (or a pipeline folder's ``vae/``), in eval mode."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"--diffusers {folder}: no such folder; expected {ACCEPTED_FOLDER}")
    if not (folder / "config.json").exists() and (folder / "vae" / "config.json").exists():
        folder = folder / "vae"
    try:
        config = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        raise RunError(f"{folder} has no config.json; expected {ACCEPTED_FOLDER}") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"{folder / 'config.json'} is not readable JSON ({exc}); expected {ACCEPTED_FOLDER}") from None
    kind = config.get("_class_name") if isinstance(config, dict) else None
    if kind != "AutoencoderKL":
        raise RunError(f"{folder} holds {kind or 'no diffusers model'}, not an AutoencoderKL; expected {ACCEPTED_FOLDER}")
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise RunError("diffusers is not installed; install it with `pip install 'vaelab[diffusers]'`") from None
    try:
        vae = AutoencoderKL.from_pretrained(folder, low_cpu_mem_usage=False)  # (without accelerate, no 5-line notice)
    except Exception as exc:  # diffusers' own errors (missing or corrupt weights) are of many kinds
        raise RunError(f"{folder}: AutoencoderKL.from_pretrained failed ({type(exc).__name__}: {first_line(exc)}); "
                       f"expected {ACCEPTED_FOLDER}") from None
    return vae.to(device).eval()
