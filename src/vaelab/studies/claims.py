"""Claims as checks. A study lists its document's claims, each with the measurement that tests it and the rule that
decides it; :func:`scorecard` decides every one from a study folder's runs (never by training or re-measuring), and
the report opens with the result (`vaelab scorecard DIR` prints it).

    claims:
      - id: samples-degrade                                   # names the claim (and its scale options)
        claim: generated images degrade as the latent grows   # the claim in a few words
        document: "Fig. 4: blurrier, less varied samples as d grows, most from 20 to 200"   # its figure or number
        rule: {kind: trend, metric: fd_prior, over: model.latent_dim, direction: increasing}
        explains: "..."                                       # optional: where vaelab says more than the document

Metrics (a rule's ``metric``, ``than``, ``se`` and the keys of ``where``):

- ``test_loss``: a results.csv column (a training number, a grid key, or a column an analysis declares);
- ``posterior:pca_above_{threshold:g}``: an analysis's headline column, named with the parameters the study ran
  that analysis with (``pca_above_0.01``);
- ``quality/fd.neighbourhood``: a path into each run's saved analysis JSON;
- ``collapsed_units``: a metric derived from the analyses (:data:`METRICS`);
- ``log_likelihood - vr_bound``, ``a / b``: the difference or ratio of two metrics (spaces around the operator).

Rules (``kind``), decided at 95% (:mod:`vaelab.studies.intervals`); each reads the finished runs its ``where``
selects (``{variant: [a, b]}``, ``{latent_dim: {min: 4}}``, ``{variant: {prefix: spatial-}}``):

- ``trend``: a metric against a grid key rises (or falls): the least-squares slope over every run (seeds are the
  replicates), against the grid value's rank, log or value; ``by`` another grid key: within each of its values.
- ``compare``: a metric greater (or less) than another metric in the same runs (the mean difference per run), than a
  number, or between two groups of runs ``a`` and ``b`` (Welch); ``statistic: sd`` compares the groups' spreads over
  seeds (an F interval on their ratio).
- ``near``: a metric the same within a relative ``tolerance`` ``across`` a grid key (every pair of its values, Welch),
  or equal to a model-free ``reference`` in every run (with the run's own standard error ``se``).
- ``read``: a metric beats another (or a number) by a relative ``margin`` in every run: a deterministic read of one
  trained model, for studies of one seed and for properties that need no seeds (a geodesic's shape).
- ``verdict``: a field of an analysis (``diagnosis/shell_mismatch``) takes one of the ``expect``ed values in every
  run.
- ``theorem3``: Theorem 3 of document 002 by Monte Carlo (the theory study's check), for the sigmas whose entropy h
  is positive (or negative): P(|f_n(Z1) - f_n(Z2)| < delta) at the largest n within ``within`` of 1.
- ``winner``: among ``fixes`` (the fixes study's), one other than ``beats`` gives the lowest FD beyond the seeds'
  spread, per model setting (:func:`vaelab.report.fixes_figures.decide`).

Outcomes: held, did not hold, or inconclusive with why: one seed (no spread to build an interval from), a failed
run among those the claim reads, an interval that spans the line, or a metric or run not measured at this scale.
An interval on the claimed side holds; one wholly on the other side does not.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vaelab.studies import intervals
from vaelab.studies.intervals import Interval

HELD, NOT_HELD, INCONCLUSIVE = "held", "did not hold", "inconclusive"
OPERATORS = (" - ", " / ")
GRID_KEY = re.compile(r"[a-z_]+(\.[a-z_]+)+")  # model.latent_dim, objective.alpha
GROUPING = ("variant", "seed")  # row keys every study has besides its grid keys


# --- metrics ----------------------------------------------------------------------------------------------------
# Derived metrics: each reads a run's saved analyses (reader, row) -> a number, or None where the run lacks them.
def _latent_dim(reader: "Reader", row: dict) -> Optional[float]:
    """The latent dimensions (of the posterior or typical-set analysis, else the grid's)."""
    for analysis in ("posterior", "typical-set"):
        d = (reader.analysis(row, analysis) or {}).get("latent_dim")
        if d:
            return d
    return row.get("model.latent_dim")


def _collapsed(reader: "Reader", row: dict) -> Optional[float]:
    """Collapsed latent variables: latent dimensions less active units (Var_x[mu_d] above the threshold)."""
    p = reader.analysis(row, "posterior") or {}
    return p["latent_dim"] - p["active_units"] if "active_units" in p else None


def _share(count: Callable) -> Callable:
    """``count`` over the latent dimensions."""
    def read(reader: "Reader", row: dict) -> Optional[float]:
        k, d = count(reader, row), _latent_dim(reader, row)
        return k / d if k is not None and d else None
    return read


def _prior_like(reader: "Reader", row: dict) -> Optional[float]:
    """Units with mu ~ 0 and sigma ~ 1 for every input (the posterior analysis's prior_like_units)."""
    return (reader.analysis(row, "posterior") or {}).get("prior_like_units")


UNIFORMITY_CELLS = {1: 20, 2: 10, 3: 5}  # cells per axis of the prior-quantile grid, by latent dimension


def _uniformity(reader: "Reader", row: dict) -> Optional[float]:
    """How evenly the test codes fill the prior: the entropy of their histogram over a grid of equal prior mass
    (Phi(mu) in [0, 1]^d cut into k^d cells), over its maximum log(k^d). 1 when they fill it as N(0, I) samples do,
    near 0 when they bunch up. Latents of 1 to 3 dimensions only (None beyond: k^d cells outgrow any test set)."""
    import numpy as np
    from scipy.stats import norm

    arrays = reader.view.arrays(row, "posterior")
    if not arrays or "mu_test" not in arrays or arrays["mu_test"].shape[1] not in UNIFORMITY_CELLS:
        return None
    mu = arrays["mu_test"]
    k = UNIFORMITY_CELLS[mu.shape[1]]
    cells = np.clip((norm.cdf(mu) * k).astype(int), 0, k - 1)
    _, counts = np.unique(cells, axis=0, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / (mu.shape[1] * math.log(k)))


def _geodesic_rise(reader: "Reader", row: dict) -> Optional[float]:
    """sigma midway along the Fisher-Rao geodesic over its larger end, in the axis where it rises most, averaged over
    the interpolated pairs (> 1: the variance rises between the ends)."""
    pairs = (reader.analysis(row, "interpolation") or {}).get("pairs") or []
    ratios = [p["geodesic_sigma_peak_ratio"] for p in pairs if "geodesic_sigma_peak_ratio" in p]
    return sum(ratios) / len(ratios) if ratios else None


METRICS: dict[str, Callable[["Reader", dict], Optional[float]]] = {
    "latent_dim": _latent_dim, "collapsed_units": _collapsed, "collapsed_share": _share(_collapsed),
    "prior_like_share": _share(_prior_like), "code_uniformity": _uniformity, "geodesic_sigma_rise": _geodesic_rise}


def expected_typical_gap(n: int) -> float:
    """The typical-set gap of document 002's Fig. 3 (analysis ``typical-set``, percent) that any model gives at n
    latent dimensions: -1/n log q(z|x) - h_bar = (chi^2_n / n - 1) / 2 for every Gaussian posterior, so the gap is
    100 E|exp(-(chi^2_n / n - 1) / 2) - 1|, whatever was trained."""
    from scipy import integrate
    from scipy.stats import chi2

    spread = 12 * math.sqrt(2 * n)
    lo, hi = max(0.0, n - spread), n + spread
    value, _ = integrate.quad(lambda x: abs(math.exp(-(x / n - 1) / 2) - 1) * chi2.pdf(x, n), lo, hi,
                              points=[n], limit=200)
    return 100 * value


def _typical_gap_reference(reader: "Reader", row: dict) -> Optional[float]:
    d = _latent_dim(reader, row)
    return expected_typical_gap(int(d)) if d else None


REFERENCES: dict[str, Callable[["Reader", dict], Optional[float]]] = {"typical-gap": _typical_gap_reference}


def check_metric(text: str) -> str:
    """``text`` if it names a metric (module docstring); else a ValueError that says what a metric can be."""
    from vaelab.analysis.framework.registry import ANALYSES, DIAGNOSIS, declaration
    from vaelab.errors import ConfigError
    from vaelab.studies.results import TRAINING_COLUMNS

    for op in OPERATORS:
        if op in text:
            left, right = text.split(op, 1)
            check_metric(left.strip())
            check_metric(right.strip())
            return text
    analysis, sep, rest = text.partition(":") if ":" in text else text.partition("/")
    if sep:
        try:
            decl = declaration(analysis)
        except ConfigError as exc:
            raise ValueError(f"metric {text!r}: {exc}") from None
        if sep == ":" and rest not in {h.column for h in decl.headline}:
            raise ValueError(f"metric {text!r}: {decl.name} declares no column {rest!r}; its columns: "
                             f"{', '.join(h.column for h in decl.headline) or 'none'}")
        if not rest:
            raise ValueError(f"metric {text!r}: give a path into the {decl.name} analysis's result")
        return text
    known = {c for c, _, _ in TRAINING_COLUMNS} | set(METRICS) | set(GROUPING)
    # a declared column: its {key} or {parameter} parts match any text
    declared = [re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(h.column)) for a in (*ANALYSES.values(), DIAGNOSIS)
                for h in a.headline]
    if text in known or GRID_KEY.fullmatch(text) or any(re.fullmatch(pattern, text) for pattern in declared):
        return text
    raise ValueError(f"unknown metric {text!r}: give a results column (e.g. test_loss, fd_prior), "
                     f"ANALYSIS:COLUMN, ANALYSIS/PATH or one of {', '.join(METRICS)}")


# --- the rules --------------------------------------------------------------------------------------------------
Direction = Literal["greater", "less"]


def check_where(where: dict, field: str = "where") -> dict:
    """Filters of runs: each key a metric, each value a value, a list of values or {min, max, prefix}."""
    for key, want in where.items():
        check_metric(key)
        if isinstance(want, dict) and (not want or set(want) - {"min", "max", "prefix"}):
            raise ValueError(f"{field}.{key}: a mapping takes min, max and prefix (got {sorted(want)})")
    return where


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    where: dict[str, Any] = Field(default_factory=dict, description="only runs whose column or metric matches: "
                                                                    "a value, a list, {min, max, prefix}")

    @field_validator("metric", "than", "se", check_fields=False)
    @classmethod
    def _metric(cls, v: Any) -> Any:
        return check_metric(v) if isinstance(v, str) else v

    @field_validator("where", "a", "b", check_fields=False)
    @classmethod
    def _where(cls, v: Optional[dict], info) -> Optional[dict]:
        return v if v is None else check_where(v, info.field_name)

    def keys(self) -> list[str]:
        """The grid keys the rule names (checked against the study's grid)."""
        return []


class Trend(_Rule):
    kind: Literal["trend"]
    metric: str
    over: str = Field(..., description="the grid key along which the metric moves")
    direction: Literal["increasing", "decreasing"]
    x: Literal["rank", "log", "linear"] = Field("rank", description="the slope is per grid step, per decade, per unit")
    by: Optional[str] = Field(None, description="a grid key: the trend must hold within each of its values")

    def keys(self) -> list[str]:
        return [k for k in (self.over, self.by) if k]


class Compare(_Rule):
    kind: Literal["compare"]
    metric: str
    direction: Direction
    than: Union[float, str, None] = Field(None, description="a metric of the same runs, or a number")
    a: Optional[dict[str, Any]] = Field(None, description="with b: two groups of runs (filters like where)")
    b: Optional[dict[str, Any]] = None
    statistic: Literal["mean", "sd"] = Field("mean", description="sd: the groups' spread over seeds")
    names: Optional[tuple[str, str]] = Field(None, description="what to call groups a and b (default: their filters)")

    @model_validator(mode="after")
    def _one_form(self):
        if (self.than is None) == (self.a is None or self.b is None) or (self.a is None) != (self.b is None):
            raise ValueError("compare takes either `than` (a metric or a number) or both groups `a` and `b`")
        if self.statistic == "sd" and self.a is None:
            raise ValueError("statistic sd compares the spread of two groups `a` and `b`")
        return self


class Near(_Rule):
    kind: Literal["near"]
    metric: str
    tolerance: float = Field(..., gt=0, description="relative: 0.1 is within 10%")
    across: Optional[str] = Field(None, description="a grid key: the metric's mean the same at each of its values")
    reference: Optional[Literal[tuple(REFERENCES)]] = Field(  # type: ignore[valid-type]
        None, description="a model-free value of each run")
    se: Optional[str] = Field(None, description="with reference: the metric's standard error in each run")
    by: Optional[str] = None

    @model_validator(mode="after")
    def _one_form(self):
        if (self.across is None) == (self.reference is None):
            raise ValueError("near takes either `across` (a grid key) or `reference` "
                             f"(one of {', '.join(REFERENCES)})")
        return self

    def keys(self) -> list[str]:
        return [k for k in (self.across, self.by) if k]


class Read(_Rule):
    kind: Literal["read"]
    metric: str
    direction: Direction
    than: Union[float, str]
    margin: float = Field(0.0, ge=0, description="relative: 0.2 is by more than 20%")


class Verdict(_Rule):
    kind: Literal["verdict"]
    metric: str = Field(..., description="an analysis field, e.g. diagnosis/shell_mismatch")
    expect: list[Any] = Field(..., min_length=1, description="the values that mean the claim holds")


class Theorem3(_Rule):
    kind: Literal["theorem3"]
    entropy: Literal["positive", "negative"] = Field(..., description="the sigmas whose h = 1/2 log(2 pi e sigma^2) is")
    boundary: float = Field(0.01, ge=0, description="sigmas with |h| below this are too close to 0 to tell; left out")
    within: float = Field(0.05, gt=0, lt=1, description="P at the largest n must be at least 1 - within")


class Winner(_Rule):
    kind: Literal["winner"]
    fixes: list[str] = Field(..., min_length=2, description="the fixes that compete (fixes study names)")
    beats: str = Field("standard", description="the baseline a fix must beat")

    @model_validator(mode="after")
    def _known(self):
        from vaelab.report.fixes_figures import FIXES

        names = [f.name for f in FIXES]
        for name in (*self.fixes, self.beats):
            if name not in names:
                raise ValueError(f"unknown fix {name!r}; choose from {', '.join(names)}")
        if self.beats not in self.fixes:
            raise ValueError(f"beats {self.beats!r} must be one of the fixes")
        return self


Rule = Annotated[Union[Trend, Compare, Near, Read, Verdict, Theorem3, Winner], Field(discriminator="kind")]
RULES = {m.model_fields["kind"].annotation.__args__[0]: m
         for m in (Trend, Compare, Near, Read, Verdict, Theorem3, Winner)}  # kind -> its model


class Claim(BaseModel):
    """One claim of a study's document with the rule that decides it."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(..., pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    claim: str = Field(..., min_length=1, description="the claim in a few words")
    document: str = Field(..., min_length=1, description="the document's figure or number")
    rule: Rule
    explains: str = Field("", description="where vaelab explains more than the document did")

    def with_options(self, options: dict[str, Any]) -> "Claim":
        """The claim with ``options`` merged into its rule (a scale's ``claim_options``), validated."""
        return Claim.model_validate({**self.model_dump(), "rule": {**self.rule.model_dump(exclude_unset=True),
                                                                   "kind": self.rule.kind, **options}})


def check_claims(claims: list[Claim], grid: list[str]) -> None:
    """Distinct ids, and every grid key a rule names is one of the study's (a one-line ValueError otherwise)."""
    seen = set()
    for c in claims:
        if c.id in seen:
            raise ValueError(f"two claims have the id {c.id!r}")
        seen.add(c.id)
        for key in c.rule.keys():
            if key not in grid:
                raise ValueError(f"claim {c.id}: {key!r} is not a grid key of the study "
                                 f"(grid: {', '.join(grid) or 'none'})")


# --- outcomes ---------------------------------------------------------------------------------------------------
@dataclass
class Decision:
    """What a rule found: the outcome, vaelab's measurement (with its interval), why, and the deciding interval."""

    outcome: str
    measurement: str
    why: str = ""
    interval: Optional[Interval] = None


@dataclass
class ClaimOutcome:
    id: str
    claim: str
    document: str
    outcome: str  # held | did not hold | inconclusive
    measurement: str
    why: str
    explains: str
    interval: Optional[Interval] = None

    def to_json(self) -> dict:
        return asdict(self)


def _side(iv: Interval, direction: str, line: float, what: str) -> Decision:
    """Held when the interval lies on the claimed side of ``line``; not held when wholly on (or at) the other."""
    above = direction in ("greater", "increasing")
    if (iv.low > line) if above else (iv.high < line):
        return Decision(HELD, what, "", iv)
    if (iv.high <= line) if above else (iv.low >= line):
        return Decision(NOT_HELD, what, f"its 95% interval lies on the other side of {intervals.number(line)}", iv)
    return Decision(INCONCLUSIVE, what, f"its 95% interval spans {intervals.number(line)}", iv)


def _equivalent(iv: Interval, tolerance: float, what: str) -> Decision:
    """Held when the interval lies within +-tolerance, not held when wholly outside it."""
    if -tolerance <= iv.low and iv.high <= tolerance:
        return Decision(HELD, what, f"within the tolerance of {100 * tolerance:g}%", iv)
    if iv.low > tolerance or iv.high < -tolerance:
        return Decision(NOT_HELD, what, f"beyond the tolerance of {100 * tolerance:g}%", iv)
    return Decision(INCONCLUSIVE, what, f"its 95% interval reaches past the tolerance of {100 * tolerance:g}%", iv)


def _all_of(parts: list[tuple[str, Decision]], every: bool) -> Decision:
    """One decision from several labelled ones. ``every``: the claim holds for each part (a grid value, a sigma, a
    setting), so one part that did not hold decides it; otherwise the parts are replicates (runs) that must agree."""
    if len(parts) == 1:
        label, d = parts[0]
        return Decision(d.outcome, f"{label}: {d.measurement}" if label else d.measurement, d.why, d.interval)
    outcomes = [d.outcome for _, d in parts]
    measurement = "; ".join(f"{label}: {d.measurement}" for label, d in parts)
    reasons: dict[str, list[str]] = {}  # why -> the parts it was said of, in order
    for label, d in parts:
        if d.why and d.outcome != HELD:
            reasons.setdefault(d.why, []).append(label)
    whys = "; ".join(f"{why} ({', '.join(labels)})" for why, labels in reasons.items())
    held = sum(o == HELD for o in outcomes)
    if held == len(parts):
        return Decision(HELD, measurement, "")
    if every and NOT_HELD in outcomes or not every and all(o == NOT_HELD for o in outcomes):
        failed = [label for label, d in parts if d.outcome == NOT_HELD]
        return Decision(NOT_HELD, measurement, f"did not hold for {', '.join(failed)}" + (f": {whys}" if whys else ""))
    return Decision(INCONCLUSIVE, measurement, (f"held in {held} of {len(parts)}; " if held else "") + whys)


# --- reading a study --------------------------------------------------------------------------------------------
class Reader:
    """A study's runs, with their metrics (analyses read once per run) and the selections a rule asks for."""

    def __init__(self, view):
        self.view, self.spec = view, view.spec
        self._analyses: dict[tuple[str, str], Any] = {}

    def analysis(self, row: dict, name: str) -> Optional[dict]:
        key = (row["run"], name)
        if key not in self._analyses:
            self._analyses[key] = self.view.analysis(row, name)
        return self._analyses[key]

    def column(self, metric: str) -> str:
        """An ``ANALYSIS:TEMPLATE`` metric's column, named with the parameters the study ran the analysis with."""
        from vaelab.analysis.framework.registry import column

        analysis, _, template = metric.partition(":")
        return column(analysis, template, self.spec.analyses.get(analysis))

    def name(self, metric: str) -> str:
        """A metric as the results table or the analysis names it."""
        for op in OPERATORS:
            if op in metric:
                return op.join(self.name(m.strip()) for m in metric.split(op, 1))
        return self.column(metric) if ":" in metric else metric

    def value(self, row: dict, metric: str) -> Any:
        from vaelab.analysis.framework.registry import lookup

        for op in OPERATORS:
            if op in metric:
                a, b = (self.value(row, m.strip()) for m in metric.split(op, 1))
                if not (_number(a) and _number(b)) or (op == " / " and b == 0):
                    return None
                return a - b if op == " - " else a / b
        if metric in METRICS and metric not in row:
            return METRICS[metric](self, row)
        if ":" in metric:
            return row.get(self.column(metric))
        if "/" in metric:
            analysis, _, path = metric.partition("/")
            return lookup(self.analysis(row, "diagnosis" if analysis == "diagnose" else analysis) or {}, path)
        return row.get(metric)

    def numbers(self, rows: list[dict], metric: str) -> list[float]:
        return [float(v) for v in (self.value(r, metric) for r in rows) if _number(v)]

    def matches(self, row: dict, where: dict, finished: bool = True) -> bool:
        """Whether the row passes the filters (for a run that did not finish, only its results columns are read)."""
        for key, want in where.items():
            if key not in row and not finished:
                continue
            if not _match(row[key] if key in row else self.value(row, key), want):
                return False
        return True

    def select(self, where: dict) -> tuple[list[dict], list[dict]]:
        """(finished runs that match, runs that did not finish and may)."""
        done = [r for r in self.view.rows if r.get("status") == "finished" and self.matches(r, where)]
        failed = [r for r in self.view.rows if r.get("status") != "finished" and self.matches(r, where, False)]
        return done, failed

    def label(self, row: dict) -> str:
        seeds = len({r.get("seed") for r in self.view.rows}) > 1
        return self.view.label(row) + (f", seed {row.get('seed')}" if seeds else "")

    def theorem_options(self) -> dict[str, Any]:
        """The options of the study's theorem3 figure, its defaults filled in."""
        import inspect

        from vaelab.report.study_figures import theorem3

        defaults = {k: p.default for k, p in inspect.signature(theorem3).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        return {**defaults, **self.spec.figure_options.get("theorem3", {})}

    def theorem(self) -> list[dict]:
        """Theorem 3's Monte Carlo rows: those the theorem3 figure drew, or the same check run with its options."""
        if not getattr(self.view, "theorem", None):
            from vaelab.analysis.typical import theorem3_check

            o = self.theorem_options()
            self.view.theorem = theorem3_check(dims=tuple(o["dims"]), sigmas=tuple(o["sigmas"]), pairs=o["pairs"],
                                               delta=o["delta"])
        return self.view.theorem


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _match(got: Any, want: Any) -> bool:
    if isinstance(want, list):
        return any(_match(got, w) for w in want)
    if isinstance(want, dict):
        if "prefix" in want and not str(got).startswith(str(want["prefix"])):
            return False
        if "min" in want or "max" in want:
            return _number(got) and want.get("min", -math.inf) <= got <= want.get("max", math.inf)
        return True
    if _number(got) and _number(want):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
    return str(got) == str(want)


def _where_text(where: dict) -> str:
    def one(v):
        if isinstance(v, list):
            return " or ".join(map(str, v))
        if isinstance(v, dict):
            return ", ".join(f"{'starts with' if k == 'prefix' else 'at least' if k == 'min' else 'at most'} {x}"
                             for k, x in v.items())
        return str(v)
    return ", ".join(f"{k.rsplit('.', 1)[-1]} {one(v)}" for k, v in where.items())


def _runs(n: int) -> str:
    return f"{n} run{'s' * (n != 1)}"


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _sorted(values) -> list:
    return sorted(values, key=lambda v: (not _number(v), v if _number(v) else str(v)))


def _missing(reader: Reader, rows: list[dict], metric: str, failed: list[dict], where: dict) -> Optional[Decision]:
    """Inconclusive when the claim's runs failed, are absent, or lack the metric; None when all is there."""
    name = reader.name(metric)
    if failed:
        names = ", ".join(r["run"] for r in failed[:3]) + (", ..." if len(failed) > 3 else "")
        return Decision(INCONCLUSIVE, "", f"{len(failed)} of the runs it reads did not finish ({names})")
    if not rows:
        return Decision(INCONCLUSIVE, "not measured",
                        f"no finished run{' with ' + _where_text(where) if where else ''} at this scale")
    lacking = [r["run"] for r in rows if not _number(reader.value(r, metric))]
    if len(lacking) == len(rows):
        return Decision(INCONCLUSIVE, "not measured", f"no run has {name} (the study does not measure it)")
    if lacking:
        return Decision(INCONCLUSIVE, "", f"{len(lacking)} of {len(rows)} runs lack {name} ({lacking[0]}, ...)")
    return None


# --- deciding each kind -----------------------------------------------------------------------------------------
def _groups(rows: list[dict], by: Optional[str]) -> list[tuple[str, list[dict]]]:
    if not by:
        return [("", rows)]
    return [(f"{_short(by)} = {v}", [r for r in rows if _match(r.get(by), v)])
            for v in _sorted({r.get(by) for r in rows})]


def trend(rule: Trend, reader: Reader) -> Decision:
    rows, failed = reader.select(rule.where)
    missing = _missing(reader, rows, rule.metric, failed, rule.where)
    if missing:
        return missing
    parts = [(label, _trend(rule, reader, group)) for label, group in _groups(rows, rule.by)]
    return _all_of(parts, every=True)


def _trend(rule: Trend, reader: Reader, rows: list[dict]) -> Decision:
    grid = _sorted({r[rule.over] for r in rows})
    means = []
    for g in grid:
        vals = reader.numbers([r for r in rows if _match(r[rule.over], g)], rule.metric)
        means.append(f"{intervals.number(sum(vals) / len(vals))}")
    seeds = max(sum(_match(r[rule.over], g) for r in rows) for g in grid)
    shown = (f"{reader.name(rule.metric)} {', '.join(means)} at {_short(rule.over)} {', '.join(map(str, grid))}"
             + (f" (mean of {seeds} seeds)" if seeds > 1 else ""))
    if len(grid) < 2:
        return Decision(INCONCLUSIVE, shown, f"one value of {_short(rule.over)} at this scale")
    if seeds < 2:
        return Decision(INCONCLUSIVE, shown, "one seed: no spread over seeds to tell a trend from noise")
    if rule.x == "log" and any(not _number(g) or g <= 0 for g in grid):
        return Decision(INCONCLUSIVE, shown, f"x: log needs positive values of {_short(rule.over)}")
    position = {str(g): (i if rule.x == "rank" else math.log10(g) if rule.x == "log" else g)
                for i, g in enumerate(grid)}
    xs = [position[str(next(g for g in grid if _match(r[rule.over], g)))] for r in rows]
    iv = intervals.slope(xs, [float(reader.value(r, rule.metric)) for r in rows])
    unit = {"rank": "grid step", "log": "decade", "linear": "unit"}[rule.x]
    return _side(iv, rule.direction, 0.0, f"{shown}; slope per {unit} {iv.text(signed=True)}")


def compare(rule: Compare, reader: Reader) -> Decision:
    name = reader.name(rule.metric)
    if rule.a is None:  # one set of runs: the metric against another metric of the same runs, or a number
        rows, failed = reader.select(rule.where)
        missing = _missing(reader, rows, rule.metric, failed, rule.where) or (
            _missing(reader, rows, rule.than, [], rule.where) if isinstance(rule.than, str) else None)
        if missing:
            return missing
        other = reader.name(rule.than) if isinstance(rule.than, str) else intervals.number(rule.than)
        diffs = [reader.value(r, rule.metric) - (reader.value(r, rule.than) if isinstance(rule.than, str)
                                                 else rule.than) for r in rows]
        iv = intervals.mean(diffs)
        if iv is None:
            return Decision(INCONCLUSIVE, f"{name} - {other}: {intervals.number(diffs[0])}",
                            "one run: no spread over seeds to build an interval from")
        return _side(iv, rule.direction, 0.0, f"{name} - {other}, mean over {iv.n} runs: {iv.text(signed=True)}")
    sides = []
    for group in (rule.a, rule.b):
        rows, failed = reader.select({**rule.where, **group})
        missing = _missing(reader, rows, rule.metric, failed, {**rule.where, **group})
        if missing:
            return missing
        sides.append(reader.numbers(rows, rule.metric))
    a, b = sides
    name_a, name_b = rule.names or (_where_text(rule.a), _where_text(rule.b))
    stat = (lambda v: sum(v) / len(v)) if rule.statistic == "mean" else \
        (lambda v: math.sqrt(sum((x - sum(v) / len(v)) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else math.nan)
    word = "mean" if rule.statistic == "mean" else "sd over seeds"
    shown = (f"{name} {word} {intervals.number(stat(a))} ({name_a}, {_runs(len(a))}) vs "
             f"{intervals.number(stat(b))} ({name_b}, {_runs(len(b))})")
    if min(len(a), len(b)) < 2:
        return Decision(INCONCLUSIVE, shown, "one seed: no spread over seeds to build an interval from")
    if rule.statistic == "sd":
        iv = intervals.sd_ratio(a, b)
        if iv is None:
            return Decision(INCONCLUSIVE, shown, f"{name_b} has no spread at all to compare against")
        return _side(iv, rule.direction, 1.0, f"{shown}; ratio {iv.text()}")
    iv = intervals.difference(a, b)
    return _side(iv, rule.direction, 0.0, f"{shown}; difference {iv.text(signed=True)}")


def near(rule: Near, reader: Reader) -> Decision:
    rows, failed = reader.select(rule.where)
    missing = _missing(reader, rows, rule.metric, failed, rule.where)
    if missing:
        return missing
    if rule.reference:  # per grid point (and variant): its seeds' mean against the reference
        points: dict[str, list[dict]] = {}
        for r in rows:
            points.setdefault(reader.view.label(r), []).append(r)
        return _all_of([(label, _near_reference(rule, reader, runs)) for label, runs in points.items()], every=True)
    return _all_of([(label, _near_across(rule, reader, group)) for label, group in _groups(rows, rule.by)],
                   every=True)


def _near_reference(rule: Near, reader: Reader, rows: list[dict]) -> Decision:
    """The runs' mean value against the model-free reference, relative, with the runs' mean standard error (not
    shrunk by their number: seeds of one grid point may share the analysis's random draws)."""
    from scipy.stats import norm

    ref, value = REFERENCES[rule.reference](reader, rows[0]), sum(reader.numbers(rows, rule.metric)) / len(rows)
    if not _number(ref) or ref == 0:
        return Decision(INCONCLUSIVE, f"{intervals.number(value)}", f"no {rule.reference} reference for these runs")
    ses = reader.numbers(rows, rule.se) if rule.se else [0.0] * len(rows)
    if len(ses) < len(rows):
        return Decision(INCONCLUSIVE, f"{intervals.number(value)}", f"a run lacks {reader.name(rule.se)}")
    se = sum(ses) / len(ses)
    z = float(norm.ppf(0.5 + intervals.LEVEL / 2))
    dev = value / ref - 1
    iv = Interval(dev, dev - z * se / abs(ref), dev + z * se / abs(ref), 1)
    return _equivalent(iv, rule.tolerance, f"{intervals.number(value)} against {intervals.number(ref)} "
                                           f"({iv.text(signed=True, scale=100, unit='%')})")


def _near_across(rule: Near, reader: Reader, rows: list[dict]) -> Decision:
    """Every pair of the grid key's values: the difference of their means, relative to the mean over all runs."""
    grid = _sorted({r[rule.across] for r in rows})
    values = {str(g): reader.numbers([r for r in rows if _match(r[rule.across], g)], rule.metric) for g in grid}
    overall = [v for vs in values.values() for v in vs]
    centre = abs(sum(overall) / len(overall)) or 1.0
    shown = (f"{reader.name(rule.metric)} {', '.join(intervals.number(sum(v) / len(v)) for v in values.values())} "
             f"at {_short(rule.across)} {', '.join(map(str, grid))}")
    if len(grid) < 2:
        return Decision(INCONCLUSIVE, shown, f"one value of {_short(rule.across)} at this scale")
    if min(len(v) for v in values.values()) < 2:
        return Decision(INCONCLUSIVE, shown, "one seed: no spread over seeds to build an interval from")
    pairs = [(g, h, intervals.difference(values[str(h)], values[str(g)]))
             for i, g in enumerate(grid) for h in grid[i + 1:]]
    pairs = [(g, h, Interval(iv.value / centre, iv.low / centre, iv.high / centre, iv.n)) for g, h, iv in pairs]
    verdicts = [(g, h, _equivalent(iv, rule.tolerance, "")) for g, h, iv in pairs]
    order = {HELD: 0, INCONCLUSIVE: 1, NOT_HELD: 2}
    g, h, worst = max(verdicts, key=lambda t: (order[t[2].outcome], abs(t[2].interval.value)))
    pair = f"{_short(rule.across)} {h} vs {g}"
    return Decision(worst.outcome, f"{shown}; {pair}: {worst.interval.text(signed=True, scale=100, unit='%')} of the "
                                   "mean", worst.why + ("" if worst.outcome == HELD else f" ({pair})"), worst.interval)


def read(rule: Read, reader: Reader) -> Decision:
    rows, failed = reader.select(rule.where)
    missing = _missing(reader, rows, rule.metric, failed, rule.where) or (
        _missing(reader, rows, rule.than, [], rule.where) if isinstance(rule.than, str) else None)
    if missing:
        return missing
    sign = 1 if rule.direction == "greater" else -1
    parts = []
    for r in rows:
        a = reader.value(r, rule.metric)
        b = reader.value(r, rule.than) if isinstance(rule.than, str) else rule.than
        change = (a - b) / abs(b) if b else math.copysign(math.inf, a - b) if a != b else 0.0
        shown = f"{reader.name(rule.metric)} {intervals.number(a)} vs {intervals.number(b)} ({100 * change:+.0f}%)"
        if sign * change > rule.margin:
            parts.append((reader.label(r), Decision(HELD, shown)))
        elif sign * change <= 0:
            parts.append((reader.label(r), Decision(NOT_HELD, shown)))
        else:
            parts.append((reader.label(r), Decision(INCONCLUSIVE, shown, f"within the {100 * rule.margin:g}% margin")))
    than = reader.name(rule.than) if isinstance(rule.than, str) else intervals.number(rule.than)
    d = _all_of(parts, every=False)
    rule_text = f"{rule.direction} than {than}" + (f" by more than {100 * rule.margin:g}%" if rule.margin else "")
    return Decision(d.outcome, d.measurement, f"{rule_text}, read per run" + (f"; {d.why}" if d.why else ""))


def verdict(rule: Verdict, reader: Reader) -> Decision:
    rows, failed = reader.select(rule.where)
    if failed or not rows:
        return _missing(reader, rows, rule.metric, failed, rule.where)
    parts = []
    for r in rows:
        v = reader.value(r, rule.metric)
        if v is None:
            parts.append((reader.label(r), Decision(INCONCLUSIVE, "not measured", "not measured")))
        else:
            parts.append((reader.label(r), Decision(HELD if v in rule.expect else NOT_HELD, str(v))))
    d = _all_of(parts, every=False)
    return Decision(d.outcome, f"{reader.name(rule.metric)}: {d.measurement}",
                    f"holds when {' or '.join(map(str, rule.expect))}" + (f"; {d.why}" if d.why else ""))


def theorem3(rule: Theorem3, reader: Reader) -> Decision:
    rows = reader.theorem()
    n = max(r["n"] for r in rows)
    last = [r for r in rows if r["n"] == n]
    sign = 1 if rule.entropy == "positive" else -1
    chosen = [r for r in last if sign * r["entropy"] >= rule.boundary]
    left = [r for r in last if abs(r["entropy"]) < rule.boundary]
    note = "; ".join(f"sigma {r['sigma']:g} (h = {r['entropy']:+.4f}) sits too close to h = 0 to tell at n = {n}: "
                     f"P = {r['p_within_delta']:.3f}" for r in left)
    if not chosen:
        return Decision(INCONCLUSIVE, "not measured", f"no sigma with {rule.entropy} entropy in the check"
                        + (f"; {note}" if note else ""))
    options = reader.theorem_options()
    parts = []
    for r in chosen:
        iv = intervals.proportion(r["p_within_delta"], int(options["pairs"]))
        parts.append((f"sigma {r['sigma']:g} (h = {r['entropy']:+.2f})", _side(iv, "greater", 1 - rule.within,
                                                                                f"P = {iv.text()}")))
    d = _all_of(parts, every=True)
    return Decision(d.outcome, f"P(|f_n(Z1) - f_n(Z2)| < {options['delta']:g}) at n = {n}, {d.measurement}",
                    "; ".join(p for p in (d.why, note) if p), d.interval)


def winner(rule: Winner, reader: Reader) -> Decision:
    from vaelab.report import fixes_figures as ff

    fixes = [f for f in ff.FIXES if f.name in rule.fixes]
    baseline = next(f.words for f in fixes if f.name == rule.beats)
    settings = ff.settings(reader.view)
    if not settings:
        return Decision(INCONCLUSIVE, "not measured", "no variant is labelled FIX-SETTING")
    parts = []
    for setting in settings:
        title = f"latent {setting}" if setting.isdigit() else f"{setting} model"
        stats = ff.collect(reader.view.rows, setting, fixes, ff.fd_of)
        decision = ff.decide(stats)
        if decision is None or rule.beats not in stats:
            parts.append((title, Decision(INCONCLUSIVE, "not measured", f"no FD for {baseline}")))
            continue
        shown = ff.verdict(stats, decision, "FD", "low") + (
            f" ({baseline}: {stats[rule.beats].text()})" if decision.best != rule.beats else "")
        if decision.kind == "one-seed":
            parts.append((title, Decision(INCONCLUSIVE, shown, "one seed: no spread to tell the fixes apart")))
        elif decision.kind == "alone":
            parts.append((title, Decision(INCONCLUSIVE, shown, "only one fix measured")))
        elif rule.beats in decision.tied:
            parts.append((title, Decision(NOT_HELD, shown, f"{baseline} is within the seeds' spread of the best")))
        else:
            parts.append((title, Decision(HELD, shown)))
    return _all_of(parts, every=True)


DECIDE: dict[type, Callable[[Any, Reader], Decision]] = {
    Trend: trend, Compare: compare, Near: near, Read: read, Verdict: verdict, Theorem3: theorem3, Winner: winner}


# --- the scorecard ----------------------------------------------------------------------------------------------
def open_study(folder: str | Path):
    """A study folder opened for reading (:class:`vaelab.studies.view.StudyView`): its spec as run and its
    results; a folder that is not a study is a one-line error."""
    import yaml
    from pydantic import ValidationError

    from vaelab.errors import ConfigError, RunError
    from vaelab.studies.view import StudyView
    from vaelab.studies.results import read_results
    from vaelab.studies.spec import StudySpec, study_error

    folder = Path(folder)
    spec_path = folder / "study.yaml"
    if not spec_path.is_file():
        raise RunError(f"{folder} is not a vaelab study folder (no study.yaml); run `vaelab study NAME` first")
    try:
        raw = yaml.safe_load(spec_path.read_text())
        spec = StudySpec(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{spec_path}: {study_error(exc, raw)}") from None
    except (OSError, yaml.YAMLError, TypeError) as exc:
        raise RunError(f"cannot read {spec_path}: {exc}") from None
    return StudyView(folder, spec, read_results(folder))


def claims_of(spec) -> list[Claim]:
    """The spec's claims; for a built-in study run before claims existed, the built-in's claims at its scale."""
    if spec.claims:
        return spec.claims
    from vaelab.studies.spec import builtin_studies, load_study

    base = spec.name.removesuffix(f"-{spec.scale}") if spec.scale != "full" else spec.name
    if base in builtin_studies():
        builtin = load_study(base)
        if spec.scale == "full" or spec.scale in builtin.scales:
            return builtin.scaled(spec.scale).claims
    return []


def decide_claim(claim: Claim, reader: Reader) -> ClaimOutcome:
    """One claim decided from the study's runs (an error in reading them is an inconclusive outcome, not a crash)."""
    try:
        d = DECIDE[type(claim.rule)](claim.rule, reader)
    except Exception as exc:  # noqa: BLE001 - one unreadable claim must not lose the scorecard
        d = Decision(INCONCLUSIVE, "", f"could not be read ({type(exc).__name__}: {exc})")
    return ClaimOutcome(claim.id, claim.claim, claim.document, d.outcome, d.measurement or "-", d.why, claim.explains,
                        d.interval)


def scorecard(folder: str | Path, view=None) -> list[ClaimOutcome]:
    """Every claim of the study in ``folder`` decided from its runs (``view``: the StudyView the report has open,
    with what its figures computed, e.g. Theorem 3's check)."""
    view = view if view is not None else open_study(folder)
    reader = Reader(view)
    return [decide_claim(c, reader) for c in claims_of(view.spec)]


def render_text(outcomes: list[ClaimOutcome], view, width: int = 110) -> str:
    """The scorecard as an aligned table for a terminal: outcome, claim, the document's figure, vaelab's
    measurement; under each row why, and what vaelab adds."""
    import textwrap

    spec, done = view.spec, len(view.finished())
    title = (f"scorecard of {spec.name}" + (f" (document {spec.document})" if spec.document else "")
             + (f": {len(view.rows)} runs, {done} finished" if view.rows else "") + f"; {view.folder}")
    if not outcomes:
        return f"{title}\n  this study declares no claims"
    cols = [("outcome", 12), ("claim", 30), ("document", 30)]
    rest = max(30, width - sum(w + 2 for _, w in cols))
    cols.append(("vaelab's measurement (95% interval)", rest))
    lines = [title, "  ".join(f"{h:<{w}}" for h, w in cols).rstrip(), "  ".join("-" * w for _, w in cols)]
    for o in outcomes:
        cells = [textwrap.wrap(text, w) or [""] for text, (_, w) in zip((o.outcome, o.claim, o.document, o.measurement),
                                                                        cols)]
        for i in range(max(map(len, cells))):
            lines.append("  ".join(f"{(c[i] if i < len(c) else ''):<{w}}" for c, (_, w) in zip(cells, cols)).rstrip())
        indent = " " * (cols[0][1] + 2)
        for label, text in (("why", o.why), ("vaelab adds", o.explains)):
            if text:
                lines += textwrap.wrap(f"{label}: {text}", width - len(indent), initial_indent=indent,
                                       subsequent_indent=indent + "  ")
        lines.append("")
    lines.append(counts_text(outcome_counts(outcomes)))
    return "\n".join(lines)


def outcome_counts(outcomes: list[ClaimOutcome]) -> dict[str, int]:
    """How many claims held, did not hold and were inconclusive, in that order."""
    return {k: sum(o.outcome == k for o in outcomes) for k in (HELD, NOT_HELD, INCONCLUSIVE)}


def counts_text(counts: dict[str, int]) -> str:
    """'4 held, 1 did not hold, 0 inconclusive'."""
    return ", ".join(f"{v} {k}" for k, v in counts.items())
