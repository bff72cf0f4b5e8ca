"""A model written in plain PyTorch, as the analyses see it.

:class:`TorchModelAdapter` wraps a pair of callables, ``encoder(x) -> posterior`` and ``decoder(z) -> likelihood
parameters``; :func:`from_torch` builds one from a module with ``encode``/``decode`` methods (or two callables) and
reads the latent shape off one call of the encoder.

What the encoder may return (see :func:`posterior_parameters`): ``mu`` alone (a deterministic autoencoder), a pair
``(mu, logvar)``, a ``torch.distributions.Normal`` or ``Independent(Normal)``, or any object with ``.mean`` and
``.logvar``, ``.std`` or ``.stddev`` (diffusers' ``DiagonalGaussianDistribution``; an object with ``.latent_dist``,
diffusers' ``AutoencoderKLOutput``, is opened first). Latents may have any shape, (D,) or (C, H, W): the analyses
see them flattened to (D,), the decoder gets them back in their own shape. What the decoder may return: a tensor
(N, C, H, W) or (N, C*H*W), or an object with a ``.sample`` tensor (diffusers' ``DecoderOutput``).

Images: vaelab's are in [0, 1]; a model trained on [-1, 1] declares ``input_range=(-1, 1)``, and the adapter maps
the images into that range for the encoder and the decoder's means back into [0, 1].

Every call is checked: a NaN, a wrong shape, a wrong dtype, an output of a type that is not understood, or means
(probabilities) outside the declared range raise a :class:`vaelab.errors.RunError` that names the call, what it
returned and what is accepted.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import distributions, nn

from vaelab.errors import RunError
from vaelab.models.likelihoods import build_likelihood
from vaelab.models.posteriors import GaussianPosterior, full_precision
from vaelab.models.priors import Prior, StandardNormal
from vaelab.numerics import all_finite, value_range

DECODER_OUTPUTS = ("logits", "probs", "mean")
DEFAULT_GAUSSIAN_STD = 0.1  # from_torch / from_diffusers / the CLI: pixel noise std, in vaelab's [0, 1] units
RANGE_SLACK = 0.25  # decoder means may overshoot the declared range by this fraction of its width before it is an error
PROBE_BATCH = 2  # images in the one encode/decode call that reads the latent shape and checks the model
PROBE_SAMPLES = 16  # prior samples decoded by the check (generation decodes them; their means must be in range too)

ENCODER_ACCEPTS = ("a tensor mu, a pair (mu, logvar), a torch.distributions.Normal or Independent(Normal), "
                   "or an object with .mean and .logvar, .std or .stddev")
DECODER_ACCEPTS = "a tensor (N, C, H, W) or (N, C*H*W), or an object with a .sample tensor (diffusers' DecoderOutput)"


def _check(name: str, t, expected_shape: tuple, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise RunError(f"{name} returned {type(t).__name__}; expected a tensor of shape {expected_shape} ({what})")
    if not t.is_floating_point():
        raise RunError(f"{name} returned dtype {t.dtype}; expected a floating-point tensor ({what})")
    if tuple(t.shape) != tuple(expected_shape):
        raise RunError(f"{name} returned shape {tuple(t.shape)}; expected {tuple(expected_shape)} ({what})")
    if not all_finite(t):
        bad = int((~torch.isfinite(t)).sum())
        raise RunError(f"{name} returned {bad} non-finite values (NaN or inf) in a tensor of shape {tuple(t.shape)}")
    return t


def _describe(out: Any) -> str:
    """What a call returned, for an error line: the type, and the base distribution of an Independent."""
    if isinstance(out, distributions.Independent):
        return f"Independent({type(out.base_dist).__name__})"
    if isinstance(out, (tuple, list)):
        return f"{type(out).__name__} of {len(out)} values"
    return type(out).__name__


def posterior_parameters(out: Any) -> tuple[Any, Any, str]:
    """What an encoder returned -> (mu, logvar or None, what it was), each in the encoder's own latent shape.

    A standard deviation becomes a log-variance, 2 log sigma (a zero sigma gives -inf, which the checks name)."""
    if hasattr(out, "latent_dist"):  # diffusers' AutoencoderKLOutput
        out = out.latent_dist
    if isinstance(out, torch.Tensor):
        return out, None, "mu"
    if isinstance(out, tuple) or (isinstance(out, list) and all(isinstance(o, torch.Tensor) for o in out)):
        if len(out) != 2:
            raise RunError(f"encode returned {len(out)} values; expected (mu, logvar) or mu alone "
                           f"(accepted: {ENCODER_ACCEPTS})")
        return out[0], out[1], "(mu, logvar)"
    if isinstance(out, distributions.Independent):
        base = out.base_dist
        while isinstance(base, distributions.Independent):
            base = base.base_dist
        if not isinstance(base, distributions.Normal):
            raise RunError(f"encode returned {_describe(out)}; expected {ENCODER_ACCEPTS}")
        return base.loc, 2 * torch.log(base.scale), "Independent(Normal)"
    if isinstance(out, distributions.Normal):
        return out.loc, 2 * torch.log(out.scale), "Normal"
    if isinstance(out, distributions.Distribution):
        raise RunError(f"encode returned {_describe(out)}; expected {ENCODER_ACCEPTS}")
    mean = getattr(out, "mean", None)
    if isinstance(mean, torch.Tensor):
        if getattr(out, "deterministic", False) is True:  # diffusers' deterministic distribution: std 0
            return mean, None, f"{type(out).__name__} (deterministic)"
        for attr in ("logvar", "std", "stddev"):
            value = getattr(out, attr, None)
            if isinstance(value, torch.Tensor):
                return mean, value if attr == "logvar" else 2 * torch.log(value), f"{type(out).__name__} (.mean, .{attr})"
    if isinstance(out, list):  # (a list of numbers, not of tensors)
        raise RunError(f"encode returned list; expected {ENCODER_ACCEPTS}")
    raise RunError(f"encode returned {_describe(out)}; expected {ENCODER_ACCEPTS}")


def decoder_parameters(out: Any) -> Any:
    """What a decoder returned -> the tensor of likelihood parameters (``.sample`` of diffusers' DecoderOutput)."""
    if isinstance(out, torch.Tensor):
        return out
    sample = getattr(out, "sample", None)
    if isinstance(sample, torch.Tensor):  # (a torch distribution's .sample is a method, and is refused below)
        return sample
    if isinstance(out, (tuple, list)) and len(out) == 1 and isinstance(out[0], torch.Tensor):  # return_dict=False
        return out[0]
    raise RunError(f"decode returned {_describe(out)}; expected {DECODER_ACCEPTS}")


def _range_text(lo: float, hi: float) -> str:
    return f"[{lo:g}, {hi:g}]"


class TorchModelAdapter(nn.Module):
    """Wrap user callables as a :class:`vaelab.models.vae.LatentModel`.

    encoder: x (B, C, H, W) -> the posterior over latents of shape ``latent_dim`` (an int D, or a shape such as
    (C, H, W)): any of :data:`ENCODER_ACCEPTS`, each tensor (B, *latent shape) or (B, D).
    decoder: z (N, *latent shape) -> (N, C, H, W) (or (N, C*H*W), or an object with ``.sample``) parameters:
    ``decoder_output`` says whether they are Bernoulli logits, Bernoulli probabilities, or Gaussian means (with
    ``gaussian_std``, in vaelab's [0, 1] pixel units). ``prior``: a :class:`vaelab.models.priors.Prior` over flat
    (N, D) latents, N(0, I) by default.

    input_range: None (default) gives the encoder vaelab's [0, 1] images and reads means unchecked; ``(lo, hi)``
    declares the model's pixel range: images are mapped to it, the decoder's means are checked against it (a value
    more than a quarter of its width outside is an error, or clipped with ``clamp_output=True``) and mapped back.
    ``source``: facts about where the model came from (the adapter, what the latent is), copied into every result.
    """

    def __init__(self, encoder: Callable, decoder: Callable, latent_dim: int | tuple[int, ...],
                 image_shape: tuple[int, int, int], likelihood: str = "bernoulli", decoder_output: str = "logits",
                 gaussian_std: float = 1.0, prior: Prior | None = None, *,
                 input_range: tuple[float, float] | None = None, clamp_output: bool = False,
                 source: dict[str, Any] | None = None):
        super().__init__()
        if decoder_output not in DECODER_OUTPUTS:
            raise RunError(f"decoder_output {decoder_output!r} is not one of {', '.join(DECODER_OUTPUTS)}")
        if likelihood == "gaussian" and decoder_output != "mean":
            raise RunError("a gaussian likelihood needs decoder_output='mean'")
        if input_range is not None:
            lo, hi = (float(v) for v in input_range)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise RunError(f"input_range {tuple(input_range)} is not (low, high) with low < high, e.g. (0, 1) or (-1, 1)")
            input_range = (lo, hi)
        self.encoder_fn, self.decoder_fn = encoder, decoder
        for i, part in enumerate((encoder, decoder)):
            if isinstance(part, nn.Module):
                self.add_module(("encoder", "decoder")[i], part)
        shape = (latent_dim,) if isinstance(latent_dim, int) else tuple(latent_dim)
        self.latent_shape = tuple(int(s) for s in shape)
        self.latent_dim = math.prod(self.latent_shape)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.decoder_output = decoder_output
        self.input_range = input_range
        self.clamp_output = clamp_output
        self.source = {"adapter": type(self).__name__, "latent_shape": list(self.latent_shape),
                       "input_range": list(input_range or (0.0, 1.0)), **(source or {})}
        self.likelihood = build_likelihood(likelihood, self.image_shape, gaussian_std if likelihood == "gaussian" else None)
        self.prior = prior if prior is not None else StandardNormal(self.latent_dim)
        self.prior.bind(self.encode)

    def _flat(self, name: str, t, b: int, what: str) -> torch.Tensor:
        """A (b, *latent shape) or (b, D) tensor from the encoder, checked, as (b, D)."""
        if isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape[1] == self.latent_dim:
            expected = (b, self.latent_dim)
        else:
            expected = (b, *self.latent_shape)
        return _check(name, t, expected, what).reshape(b, self.latent_dim)

    def encode(self, x: torch.Tensor) -> GaussianPosterior:
        """x (B, C, H, W) in [0, 1] -> q(z|x) with flat mu, logvar (B, D)."""
        if self.input_range is not None:
            lo, hi = self.input_range
            x = x * (hi - lo) + lo
        mu, logvar, kind = posterior_parameters(self.encoder_fn(x))
        b = x.shape[0]
        if logvar is None:
            return GaussianPosterior(self._flat("encode", mu, b, f"posterior means, from {kind}"), None)
        mu = self._flat("encode (mu)", mu, b, f"posterior means, from {kind}")
        logvar = self._flat("encode (logvar)", logvar, b, f"posterior log-variances, from {kind}")
        return GaussianPosterior(mu, logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., D) -> likelihood parameters (..., C, H, W): logits for Bernoulli, means in [0, 1] for Gaussian."""
        lead = z.shape[:-1]
        flat = z.reshape(-1, *self.latent_shape)
        out = decoder_parameters(self.decoder_fn(flat))
        n = flat.shape[0]
        if out.dim() == 2 and out.shape[1] == math.prod(self.image_shape):
            out = out.view(n, *self.image_shape)
        out = full_precision(_check("decode", out, (n, *self.image_shape), "likelihood parameters per pixel"))
        if self.decoder_output == "probs":  # (in float32 also under autocast, as vaelab's own decoders)
            self._check_range(out, 0.0, 1.0, 0.0, "probabilities",
                              "declare decoder_output='logits' (--decoder-output logits) if these are logits")
            p = out.clamp(1e-6, 1 - 1e-6)
            out = torch.log(p) - torch.log1p(-p)  # probabilities -> logits
        elif self.decoder_output == "mean" and self.input_range is not None:
            lo, hi = self.input_range
            if self.clamp_output:
                out = out.clamp(lo, hi)
            else:
                self._check_range(out, lo, hi, RANGE_SLACK * (hi - lo), "means",
                                  "declare the model's range with input_range=(low, high) (--input-range LOW,HIGH), "
                                  "or clip the means as a sampling pipeline does with clamp_output=True (--clamp-output)")
            out = (out - lo) / (hi - lo)  # the model's range -> vaelab's [0, 1]
        return out.view(*lead, *self.image_shape)

    @staticmethod
    def _check_range(out: torch.Tensor, lo: float, hi: float, slack: float, what: str, fix: str) -> None:
        low, high = value_range(out)
        if low < lo - slack or high > hi + slack:
            raise RunError(f"decode returned {what} in [{low:.3g}, {high:.3g}], outside the declared range "
                           f"{_range_text(lo, hi)}; expected {what} in that range: {fix}")

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        return self.prior.log_prob(z)

    def log_likelihood(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return self.likelihood.log_prob(x, params)


def latent_shape_of(encoder: Callable, image_shape: tuple[int, int, int],
                    input_range: tuple[float, float] | None = (0.0, 1.0),
                    device: torch.device | str = "cpu") -> tuple[int, ...]:
    """The shape of one latent, read off one call of ``encoder`` on grey images (mid-range) of ``image_shape``."""
    lo, hi = input_range or (0.0, 1.0)
    x = torch.full((PROBE_BATCH, *image_shape), (lo + hi) / 2, device=device)
    try:
        with torch.no_grad():
            mu, _, _ = posterior_parameters(encoder(x))
    except RunError:
        raise
    except Exception as exc:  # the user's code: name what it was given
        raise RunError(f"encode raised {type(exc).__name__} ({first_line(exc)}) on images of shape "
                       f"{(PROBE_BATCH, *image_shape)} in {_range_text(lo, hi)}; expected a model of images "
                       f"{tuple(image_shape)} (the dataset's)") from None
    if not isinstance(mu, torch.Tensor) or mu.dim() < 2 or mu.shape[0] != PROBE_BATCH:
        got = f"shape {tuple(mu.shape)}" if isinstance(mu, torch.Tensor) else type(mu).__name__
        raise RunError(f"encode returned means of {got} for {PROBE_BATCH} images; expected a tensor "
                       f"({PROBE_BATCH}, D) or ({PROBE_BATCH}, C, H, W)")
    return tuple(int(s) for s in mu.shape[1:])


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else "no message"


def check_model(model: TorchModelAdapter, x: torch.Tensor | None = None) -> TorchModelAdapter:
    """One encode and decode of ``x`` (images in [0, 1]; grey ones by default) and one decode of prior samples: a
    model that does not fit the protocol, the data or its declared range fails here, with its own one-line error, not
    inside an analysis."""
    device = _device(model)
    x = torch.full((PROBE_BATCH, *model.image_shape), 0.5) if x is None else x
    with torch.no_grad():
        try:
            posterior = model.encode(x.to(device))
            model.decode(posterior.mu)
            model.decode(torch.randn(PROBE_SAMPLES, model.latent_dim, generator=torch.Generator().manual_seed(0)).to(device))
        except RunError:
            raise
        except Exception as exc:
            raise RunError(f"the model raised {type(exc).__name__} ({first_line(exc)}) on {x.shape[0]} images "
                           f"{tuple(model.image_shape)}; expected encode(x) and decode(z) to run on the dataset's images") from None
    return model


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def from_torch(model_or_encoder, decoder: Callable | None = None, *, image_shape: tuple[int, int, int],
               latent_shape: tuple[int, ...] | None = None, input_range: tuple[float, float] = (0.0, 1.0),
               likelihood: str = "bernoulli", decoder_output: str | None = None,
               gaussian_std: float = DEFAULT_GAUSSIAN_STD, prior: Prior | None = None,
               clamp_output: bool = False, probe: torch.Tensor | None = None) -> TorchModelAdapter:
    """A model in plain PyTorch as a LatentModel: a module (or any object) with ``encode(x)`` and ``decode(z)``
    methods, or two callables ``encoder, decoder``.

    ``image_shape``: (C, H, W) of the images it models. ``latent_shape``: read off one call of the encoder when not
    given. ``input_range``: the pixel range the model was trained on, (0, 1) or (-1, 1). ``decoder_output``: what
    the decoder returns, "logits" (default for a Bernoulli likelihood), "probs" or "mean" (default and only choice
    for a Gaussian one). The model is checked by one encode and decode (of ``probe``, images (B, C, H, W) in [0, 1],
    grey ones by default) and one decode of prior samples before it is returned."""
    if decoder is None:
        encode, decode = getattr(model_or_encoder, "encode", None), getattr(model_or_encoder, "decode", None)
        if not (callable(encode) and callable(decode)):
            raise RunError(f"{type(model_or_encoder).__name__} has no encode/decode methods; expected a module with "
                           "encode(x) and decode(z), or two callables (encoder, decoder)")
        parts: tuple = (encode, decode)
    else:
        parts = (model_or_encoder, decoder)
        for name, part in zip(("encoder", "decoder"), parts):
            if not callable(part):
                raise RunError(f"the {name} is a {type(part).__name__}, not callable; expected two callables "
                               "(encoder, decoder) or a module with encode(x) and decode(z)")
    if decoder_output is None:
        decoder_output = "mean" if likelihood == "gaussian" else "logits"
    modules = [p for p in (model_or_encoder, decoder) if isinstance(p, nn.Module)]
    if latent_shape is None:
        latent_shape = latent_shape_of(parts[0], image_shape, input_range, _device(nn.ModuleList(modules)))
    adapter = TorchModelAdapter(parts[0], parts[1], latent_shape, image_shape, likelihood, decoder_output,
                                gaussian_std, prior, input_range=input_range, clamp_output=clamp_output,
                                source={"adapter": "torch"})
    if decoder is None and isinstance(model_or_encoder, nn.Module):
        adapter.add_module("user_model", model_or_encoder)  # its parameters (device, .eval()) follow the adapter
    return check_model(adapter, probe)
