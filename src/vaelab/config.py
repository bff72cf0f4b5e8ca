"""One typed configuration for a run (data, model, objective, training); YAML in and out.

Every invalid value becomes a one-line :class:`ConfigError` naming the field, the bad value and what is accepted.
"""
from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vaelab.data.registry import DATASETS, dataset_spec, known_datasets, user_spec
from vaelab.errors import ConfigError
from vaelab.models.build import count_parameters
from vaelab.models.likelihoods import LIKELIHOODS
from vaelab.models.networks import ACTIVATIONS, conv_latent_size
from vaelab.models.posteriors import POSTERIORS
from vaelab.models.priors import PRIORS
from vaelab.objectives import OBJECTIVES

# The choices of each name-valued field come from where each family is declared (one place per name).
Activation = Literal[tuple(ACTIVATIONS)]
Network = Literal["mlp", "conv", "conv-spatial"]
Posterior = Literal[tuple(POSTERIORS)]
Likelihood = Literal[tuple(LIKELIHOODS)]
PriorName = Literal[tuple(PRIORS)]
ObjectiveName = Literal[tuple(OBJECTIVES)]


def described(names: dict[str, str]) -> str:
    """'a (what a is), b (what b is)' for a field's help."""
    return ", ".join(f"{name} ({text})" if text else name for name, text in names.items())

MAX_PARAMETERS = 2_000_000_000  # refuse models whose weights alone would not fit in memory
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    """Which images, how many, and how pixels are presented."""

    name: str = Field("digits", description="dataset: digits, mnist, fashion-mnist or one added with `vaelab data add`")
    pixels: Literal["continuous", "dynamic", "fixed"] = Field(
        "dynamic", description="continuous grey values, dynamic (fresh draw per epoch) or fixed binarization")
    binarize_seed: int = Field(0, ge=0, description="seed of the fixed binarization (and of the test set's draw)")
    train_size: Optional[int] = Field(None, ge=1, description="use only the first N training images")
    test_size: Optional[int] = Field(None, ge=1, description="use only the first N test images")

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        if v not in DATASETS and user_spec(v) is None:  # a built-in, or one added with `vaelab data add`
            known = list(known_datasets())
            close = difflib.get_close_matches(v, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown dataset {v!r}{hint}; known: {', '.join(known)} "
                             "(add your own with `vaelab data add NAME SOURCE`)")
        return v


def parse_arch(arch: str) -> tuple[int, list[int], int]:
    """'784-256-32-8-2' -> (784 inputs, hidden [256, 32, 8], latent 2), as the documents write MLPs."""
    parts = arch.split("-")
    if len(parts) < 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"arch {arch!r} is not of the form INPUT-HIDDEN-...-LATENT with positive integers, e.g. 784-256-32-8-2")
    sizes = [int(p) for p in parts]
    return sizes[0], sizes[1:-1], sizes[-1]


class ModelConfig(_Section):
    """Encoder/decoder networks, posterior family, likelihood and prior."""

    network: Network = Field("mlp", description="mlp, conv (vector latent) or conv-spatial (C x H x W latent)")
    arch: Optional[str] = Field(None, description="MLP as the documents write it, e.g. 784-256-32-8-2 (sets hidden and latent_dim)")
    hidden: list[int] = Field(default_factory=lambda: [256, 256], description="MLP hidden widths (encoder; the decoder mirrors them)")
    latent_dim: int = Field(16, ge=1, description="latent size of mlp and conv networks")
    conv_channels: list[int] = Field(default_factory=lambda: [32, 64], description="channels of the stride-2 conv layers")
    latent_channels: int = Field(16, ge=1, description="conv-spatial: latent channels C")
    latent_size: Optional[int] = Field(None, ge=1, description="conv-spatial: latent height = width (checked against the input)")
    activation: Activation = "relu"
    posterior: Posterior = Field("diagonal", description=described(POSTERIORS))
    likelihood: Likelihood = Field("bernoulli", description=described({n: c.description for n, c in LIKELIHOODS.items()}))
    gaussian_std: Optional[float] = Field(None, gt=0, description="gaussian likelihood: fixed std; unset = learned per pixel")
    prior: PriorName = Field("standard", description=described({n: p.description for n, p in PRIORS.items()}))
    prior_components: int = Field(500, ge=1, description="vamp and mog: number of mixture components K")

    @model_validator(mode="before")
    @classmethod
    def _expand_arch(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("arch") is not None:
            _, hidden, latent = parse_arch(str(data["arch"]))
            data = {**data, "arch": str(data["arch"]), "hidden": hidden, "latent_dim": latent, "network": data.get("network", "mlp")}
        return data

    @field_validator("hidden", "conv_channels")
    @classmethod
    def _positive_widths(cls, v: list[int]) -> list[int]:
        bad = [w for w in v if w < 1]
        if bad:
            raise ValueError(f"widths must be positive integers, got {bad[0]}")
        return v

    @model_validator(mode="after")
    def _arch_only_for_mlp(self) -> "ModelConfig":
        if self.arch is not None and self.network != "mlp":
            raise ValueError(f"arch {self.arch!r} describes an MLP, but network is {self.network!r}")
        if self.network != "mlp" and not self.conv_channels:
            raise ValueError(f"network {self.network!r} needs at least one conv layer in conv_channels")
        if self.prior != "standard" and self.posterior == "deterministic":
            raise ValueError(f"prior {self.prior!r} needs a posterior with a variance: the deterministic posterior is "
                             "trained with the standard prior's quadratic penalty only")
        if not PRIORS[self.prior].mixture and self.prior_components != 500:
            mixtures = " and ".join(repr(n) for n, p in PRIORS.items() if p.mixture)
            raise ValueError(f"prior_components is only used by priors {mixtures}, not {self.prior!r}")
        return self


class ObjectiveConfig(_Section):
    """The training objective: ELBO, IWAE, Renyi VR bound, VR-max, or a deterministic AE with a quadratic penalty."""

    name: ObjectiveName = Field("elbo", description=described({n: o.description for n, o in OBJECTIVES.items()}))
    samples: int = Field(1, ge=1, le=10_000, description="K: latent samples per input")
    beta: float = Field(1.0, ge=0, description="elbo: weight of the KL term")
    warmup_epochs: int = Field(0, ge=0, description="elbo: epochs over which the KL weight rises linearly from 0 to beta")
    alpha: Optional[float] = Field(None, description="renyi: the alpha of VR_alpha (1 = ELBO, 0 = IWAE)")
    penalty: float = Field(1.0, ge=0, description="deterministic: weight of the quadratic penalty 0.5 ||mu||^2")

    @model_validator(mode="after")
    def _consistent(self) -> "ObjectiveConfig":
        kind = OBJECTIVES[self.name]
        if "alpha" in kind.options:
            if self.alpha is None:
                raise ValueError(f"objective {self.name!r} needs alpha (any finite real; 1 = ELBO, 0 = IWAE)")
            if not math.isfinite(self.alpha):
                raise ValueError(f"alpha must be finite, got {self.alpha}; use objective 'vr-max' for alpha -> -inf")
        defaults = type(self).model_fields
        unused = [f for f in OPTION_FIELDS if f not in kind.options and getattr(self, f) != defaults[f].default]
        if unused:  # the fields that go together (beta and warmup_epochs) are named together
            users = [n for n, o in OBJECTIVES.items() if unused[0] in o.options]
            named = [f for f in OPTION_FIELDS if f in OBJECTIVES[users[0]].options]
            raise ValueError(f"{' and '.join(named)} {'is' if len(named) == 1 else 'are'} only used by objective "
                             f"{' and '.join(repr(u) for u in users)}, not {self.name!r}")
        if not kind.samples and self.samples != 1:
            raise ValueError(f"objective {self.name!r} does not sample; samples must be 1, got {self.samples}")
        return self


OPTION_FIELDS = ("alpha", "beta", "warmup_epochs", "penalty")  # read by some objectives only (ObjectiveKind.options)


class TrainConfig(_Section):
    epochs: int = Field(20, ge=1, le=100_000)
    batch_size: int = Field(128, ge=1, le=1_000_000)
    lr: float = Field(1e-3, gt=0, le=10)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when present, else cpu")
    snapshot_every: int = Field(0, ge=0, description="keep the weights every N epochs (0 = never), for analyses over training")
    eval_batch_size: int = Field(1000, ge=1)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="bf16: matrix products of training steps in bf16 autocast (losses, sampling and evaluation "
        "stay fp32); auto: whichever of fp32 and bf16 a probe of this machine finds faster at the model's shapes "
        "while keeping the loss (vaelab.precision)")
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="on: each training step's objective and backward run as torch.compile'd graphs (inductor "
        "fuses the element-wise work; vectorised seeds are not compiled); auto: with at least 100 s of training left "
        "after 60 steps, compile and keep the compiled step if it measures faster (vaelab.training_step)")
    trace_every: int = Field(0, ge=0, description="record the posterior of traced test images every N steps (0 = never)")
    trace_per_class: int = Field(6, ge=1, le=1000, description="traced test images per class (the first ones of each class)")
    trace_epochs: int = Field(0, ge=0, description="trace only during the first N epochs (0 = all)")


class RunConfig(_Section):
    """Everything needed to rebuild a run's data and model and to continue its training."""

    name: str = Field("run", description="the run's folder name under the output directory")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not NAME_PATTERN.match(v) or ".." in v:
            raise ValueError(f"run name {v!r} must be 1-128 letters, digits, '.', '_' or '-', start with a letter or digit, "
                             "and not contain '..' (it names a folder inside the output directory)")
        return v

    @model_validator(mode="after")
    def _fits_data(self) -> "RunConfig":
        spec = dataset_spec(self.data.name)
        m = self.model
        if m.arch is not None:
            n_in, _, _ = parse_arch(m.arch)
            if n_in != spec.n_pixels:
                raise ValueError(f"arch {m.arch!r} starts with {n_in} inputs but {spec.name} images have {spec.n_pixels} pixels "
                                 f"({'x'.join(map(str, spec.image_shape))})")
        if m.network != "mlp":
            size = conv_latent_size(spec.image_shape, len(m.conv_channels))
            if size < 1:
                raise ValueError(f"{len(m.conv_channels)} stride-2 conv layers shrink {spec.name}'s "
                                 f"{spec.image_shape[1]}x{spec.image_shape[2]} images below 1x1; use fewer conv_channels")
            if m.network == "conv-spatial" and m.latent_size is not None and m.latent_size != size:
                raise ValueError(f"latent_size {m.latent_size} does not fit the decoder: {len(m.conv_channels)} conv layers on "
                                 f"{spec.image_shape[1]}x{spec.image_shape[2]} images give a {size}x{size} latent")
        if (m.posterior == "deterministic") != (not OBJECTIVES[self.objective.name].samples):
            raise ValueError(f"posterior {m.posterior!r} and objective {self.objective.name!r} do not go together: "
                             "the deterministic posterior is trained with objective 'deterministic' and only with it")
        n_params = count_parameters(self)
        if n_params > MAX_PARAMETERS:
            raise ValueError(f"the model would have about {n_params:.3g} parameters ({n_params * 4 / 2**30:.3g} GiB of float32 "
                             f"weights, more for Adam); the limit is {MAX_PARAMETERS:.0e}")
        return self

    # --- YAML in and out -------------------------------------------------------------------------
    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, source: str = "config") -> "RunConfig":
        data = safe_load_yaml(text, source)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of sections (data, model, objective, train), got {type(data).__name__}")
        return build_config(data, source)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {getattr(exc, 'strerror', None) or exc}") from None
        return cls.from_yaml(text, str(path))


def safe_load_yaml(text: str, source: str) -> Any:
    """yaml.safe_load, with malformed YAML (or bytes that YAML refuses) as a one-line ConfigError."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: malformed YAML{where}: {' '.join(str(problem).split())}") from None


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names accepted at ``loc`` (a pydantic error location) inside ``model``."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def format_validation_error(exc: ValidationError, source: str = "config") -> str:
    """The first pydantic error as one line: where, what was given, what is accepted."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    where = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(RunConfig, loc)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{source}: unknown key {where!r}{hint} (valid keys here: {', '.join(valid)})"
    msg = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    shown = repr(given) if not isinstance(given, dict) and len(repr(given)) < 80 else None
    prefix = f"{source}: {where}: " if where else f"{source}: "
    return prefix + msg + (f" (got {shown})" if shown and shown not in msg else "")


def build_config(data: dict, source: str = "config") -> RunConfig:
    """A validated RunConfig from a plain dict, or a one-line ConfigError."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


def override(config: RunConfig, updates: dict[str, Any], source: str = "command line") -> RunConfig:
    """A copy of ``config`` with dotted keys replaced (``{'train.epochs': 5}``), validated again."""
    data = config.model_dump(mode="json")
    for dotted, value in updates.items():
        section, _, key = dotted.rpartition(".")
        target = data[section] if section else data
        target[key] = value
        if dotted == "model.arch" and value is not None:
            target.pop("hidden", None), target.pop("latent_dim", None)
            target["network"] = "mlp"
    if data["model"].get("arch") and any(k in updates for k in ("model.hidden", "model.latent_dim", "model.network")) \
            and "model.arch" not in updates:
        data["model"]["arch"] = None  # explicit sizes replace an arch string from a config file
    return build_config(data, source)
