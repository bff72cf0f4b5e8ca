"""A study: a grid of runs plus the analyses that compare them. Specs are YAML (built-ins ship in
``vaelab/studies/builtin/``); every field is validated with a one-line error that names the bad value.

    name: latent-dim
    title: "..."
    document: "002"
    base: {data: {...}, model: {...}, objective: {...}, train: {...}}   # a run config, shared by every run
    variants:                      # optional: labelled overrides, crossed with the grid
      - {label: variational, set: {objective.name: elbo}}
    grid: {model.latent_dim: [2, 20, 200, 800]}                        # every combination
    seeds: [0, 1, 2]
    analyses: {posterior: {}, likelihood: {samples: 1000}}              # run on every run, with parameters
    figures: [latent-2d, typical-gap, ...]                             # study-level comparison figures
    scales: {small: {set: {...}, grid: {...}, seeds: [0], analyses: {...}}}   # --scale NAME shrinks it
    claims:                        # the document's claims, each with the rule that decides it (vaelab.studies.claims)
      - {id: samples-degrade, claim: "...", document: "Fig. 4 ...", rule: {kind: trend, metric: fd_prior, ...}}
    # a scale may set a claim's rule parameters: scales: {small: {claim_options: {samples-jump: {a: ..., b: ...}}}}
"""
from __future__ import annotations

import copy
import difflib
import itertools
import math
import re
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from vaelab.analysis.framework.registry import declaration
from vaelab.config import build_config, safe_load_yaml
from vaelab.errors import ConfigError
from vaelab.studies.claims import RULES, Claim, check_claims

BUILTIN_DIR = Path(__file__).parent / "builtin"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted config keys -> values")


class Scale(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    set: dict[str, Any] = Field(default_factory=dict)
    grid: Optional[dict[str, list[Any]]] = None
    variants: Optional[list[Variant]] = None
    seeds: Optional[list[int]] = None
    analyses: dict[str, dict[str, Any]] = Field(default_factory=dict, description="merged into the study's")
    figure_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="merged into the study's")
    claim_options: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                     description="claim id -> rule parameters at this scale")


MAX_RUNS = 10_000  # runs one study may plan


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    title: str = ""
    document: str = ""
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    variants: list[Variant] = Field(default_factory=list)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    claims: list[Claim] = Field(default_factory=list, description="the document's claims and the rules that decide them")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    analyses: dict[str, dict[str, Any]] = Field(default_factory=dict)
    figures: list[str] = Field(default_factory=list)
    figure_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="figure name -> options")
    scales: dict[str, Scale] = Field(default_factory=dict)
    scale: str = Field("full", description="set by --scale; the study folder carries the scale in its name")
    scale_description: str = ""
    no_runs: bool = Field(False, description="a study of figures only (e.g. the theorem check), with no training")
    cpus_per_run: float = Field(1.0, gt=0)
    gpus_per_run: float = Field(0.0, ge=0)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(f"study name {v!r} must be 1-64 letters, digits, '.', '_' or '-' (it names a folder)")
        return v

    @field_validator("analyses")
    @classmethod
    def _declared_analyses(cls, v: dict) -> dict:
        """Each analysis is one vaelab declares, with parameters its declaration accepts (checked before any run)."""
        for name, params in v.items():
            try:
                declaration(name).validate(params or {}, "analyses: ")
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return v

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, v: dict) -> dict:
        for key, values in v.items():
            if not values:
                raise ValueError(f"grid key {key!r} has no values")
        return v

    @field_validator("claims")
    @classmethod
    def _claims_on_the_grid(cls, v: list[Claim], info: ValidationInfo) -> list[Claim]:
        check_claims(v, list(info.data.get("grid") or {}))
        return v

    @field_validator("scales")
    @classmethod
    def _claim_options(cls, v: dict[str, Scale], info: ValidationInfo) -> dict[str, Scale]:
        """Each scale's claim options name a claim and give its rule valid parameters (checked before any run)."""
        for name, scale in v.items():
            _scaled_claims(info.data.get("claims") or [], scale, f"scale {name!r}: ")
        return v

    def scaled(self, scale: str | None) -> "StudySpec":
        """The spec at a named scale (None or 'full': as written, the document's own setting)."""
        if scale in (None, "full"):
            return self
        if scale not in self.scales:
            raise ConfigError(f"study {self.name!r} has no scale {scale!r}; choose from full, {', '.join(self.scales)}")
        s = self.scales[scale]
        base = _apply_dotted(self.base, s.set)
        analyses = {k: {**v, **s.analyses.get(k, {})} for k, v in self.analyses.items()}
        try:
            self._declared_analyses(analyses)
        except ValueError as exc:
            raise ConfigError(f"study {self.name!r}, scale {scale!r}: {exc}") from None
        options = {k: {**self.figure_options.get(k, {}), **s.figure_options.get(k, {})}
                   for k in {*self.figure_options, *s.figure_options}}
        # a scale is its own study folder, so runs of different scales never meet under one name
        claims = _scaled_claims(self.claims, s, f"study {self.name!r}, scale {scale!r}: ", ConfigError)
        return self.model_copy(update={"name": f"{self.name}-{scale}", "scale": scale, "scale_description": s.description,
                                       "figure_options": options, "claims": claims,
            "base": base, "grid": s.grid if s.grid is not None else self.grid,
            "variants": s.variants if s.variants is not None else self.variants,
            "seeds": s.seeds or self.seeds, "analyses": analyses, "scales": {}})

    def expand(self) -> list["PlannedRun"]:
        """Every run of the study: variants x grid x seeds, each a validated RunConfig."""
        if self.no_runs:
            return []
        keys = list(self.grid)
        variants = self.variants or [Variant(label="run")]
        planned = len(variants) * len(self.seeds) * math.prod(len(v) for v in self.grid.values())
        if planned > MAX_RUNS:  # counted before anything is expanded or allocated
            raise ConfigError(f"study {self.name!r} would have {planned} runs ({len(variants)} variants x "
                              f"{' x '.join(str(len(v)) for v in self.grid.values()) or 1} grid points x {len(self.seeds)} "
                              f"seeds); the limit is {MAX_RUNS}: split it into several studies")
        combos = list(itertools.product(*(self.grid[k] for k in keys))) or [()]
        runs = []
        for variant in variants:
            for combo in combos:
                for seed in self.seeds:
                    values = dict(zip(keys, combo))
                    cfg_dict = _apply_dotted(self.base, {**variant.set, **values, "train.seed": seed})
                    label = "-".join([variant.label] * bool(self.variants) + [_short(k, v) for k, v in values.items()])
                    name = f"{self.name}-{label or 'run'}-s{seed}".replace("/", "_")
                    cfg_dict["name"] = name
                    try:
                        cfg = build_config(cfg_dict)
                    except ConfigError as exc:
                        raise ConfigError(f"study {self.name!r}, run {name}: {exc}") from None
                    runs.append(PlannedRun(name, cfg, variant.label if self.variants else "", values, seed))
        names = [r.name for r in runs]
        if len(set(names)) != len(names):
            raise ConfigError(f"study {self.name!r} gives two runs the same name; give variants distinct labels")
        return runs


class PlannedRun:
    """One run of a study: its name, config, and the coordinates that place it in the grid."""

    def __init__(self, name: str, config, variant: str, values: dict[str, Any], seed: int):
        self.name, self.config, self.variant, self.values, self.seed = name, config, variant, values, seed

    def coordinates(self) -> dict[str, Any]:
        return {**({"variant": self.variant} if self.variant else {}), **self.values, "seed": self.seed}

    def __repr__(self) -> str:
        return f"PlannedRun({self.name!r})"


def _scaled_claims(claims: list[Claim], scale: Scale, where: str, error: type[Exception] = ValueError) -> list[Claim]:
    """The claims with the scale's claim options merged into their rules; an unknown id or a bad parameter is one
    line naming both."""
    ids = {c.id for c in claims}
    for key in scale.claim_options:
        if key not in ids:
            raise error(f"{where}claim_options names no claim {key!r} (claims: {', '.join(ids) or 'none'})")
    out = []
    for c in claims:
        try:
            out.append(c.with_options(scale.claim_options[c.id]) if c.id in scale.claim_options else c)
        except ValidationError as exc:
            raise error(f"{where}claim_options.{c.id}: {_one_line(exc.errors()[0])}") from None
    return out


def _short(key: str, value: Any) -> str:
    leaf = key.rsplit(".", 1)[-1]
    short = {"latent_dim": "z", "alpha": "a", "latent_channels": "c", "hidden": "h", "arch": ""}.get(leaf, leaf)
    text = "x".join(map(str, value)) if isinstance(value, list) else str(value)
    return f"{short}{text}" if short else text


def _apply_dotted(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with dotted keys ('model.latent_dim') set."""
    out = copy.deepcopy(base)
    for key, value in updates.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {key!r}: {p!r} is not a section")
        node[parts[-1]] = value
    if "model" in out and "arch" in out["model"] and any(k in updates for k in ("model.hidden", "model.latent_dim")):
        out["model"].pop("arch")
    return out


def builtin_studies() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def load_study(name_or_path: str | Path) -> StudySpec:
    """A built-in study by name, or a study YAML file."""
    builtins = builtin_studies()
    path = builtins.get(str(name_or_path)) or Path(name_or_path)
    if not path.exists():
        raise ConfigError(f"no built-in study or file {str(name_or_path)!r}; built-in studies: {', '.join(builtins)}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read study file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    raw = safe_load_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study file must be a mapping with at least 'name' and 'base'")
    try:
        return StudySpec(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {study_error(exc, raw)}") from None
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def study_error(exc: ValidationError, raw: dict | None = None) -> str:
    """The first validation error of a study spec as one line, with the closest valid key for unknown ones; a claim
    is named by its id (``claims[samples-degrade].rule.metric``) where the spec gives one."""
    err = exc.errors()[0]
    loc = list(err["loc"])
    if loc[:1] == ["claims"] and len(loc) > 1 and isinstance(loc[1], int):
        claims = (raw or {}).get("claims")
        claim = claims[loc[1]] if isinstance(claims, list) and loc[1] < len(claims) else None
        name = claim.get("id") if isinstance(claim, dict) else None
        loc[:2] = [f"claims[{name if name else loc[1]}]"]
        if loc[1:2] == ["rule"] and len(loc) > 2 and loc[2] in RULES:
            del loc[2]  # the rule's kind, which pydantic adds to the path
    where = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        valid = list(_model_at(err["loc"]).model_fields)
        close = difflib.get_close_matches(str(err["loc"][-1]), valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown key {where!r}{hint} (valid: {', '.join(valid)})"
    return f"{where}: {_one_line(err)}"


def _one_line(err: dict) -> str:
    given = err.get("input")
    shown = f" (got {given!r})" if not isinstance(given, (dict, list)) and repr(given) not in err["msg"] else ""
    return err["msg"].removeprefix("Value error, ") + shown


def _model_at(loc: tuple) -> type[BaseModel]:
    """The model whose keys an unknown key at ``loc`` was checked against."""
    if len(loc) < 2:
        return StudySpec
    if loc[0] == "claims":
        return RULES[loc[3]] if len(loc) > 4 and loc[2] == "rule" and loc[3] in RULES else Claim
    return {"variants": Variant, "scales": Scale}.get(str(loc[0]), StudySpec)
