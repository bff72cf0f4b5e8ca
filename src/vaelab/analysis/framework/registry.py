"""One declaration per analysis: where its function lives, its parameters (a typed model built from the function's
keyword-only signature, validated like the run config) and its headline numbers (the columns of a study's
results.csv, the report's tables, the CLI's summary lines and `vaelab info`).

A headline's column may name a parameter, ``"pca_above_{threshold:g}"``: the column then carries the threshold the
analysis actually ran with, so ``--set threshold=0.05`` gives ``pca_above_0.05``, never a mislabelled column.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from vaelab.errors import ConfigError

NOT_PARAMETERS = {"log", "progress"}  # callbacks, not data


@dataclass(frozen=True)
class Headline:
    """One number a results table shows for an analysis.

    ``path`` is a dotted path into the analysis's result (``pca.above_threshold``); a ``*`` as its last part expands
    a dict into one column per key (``fd.*`` with column ``fd_{key}``). ``column`` and ``label`` are format strings
    over the analysis's parameters (and ``key``)."""

    column: str
    path: str
    label: str
    better: Literal["high", "low"] | None = None
    in_report: bool | tuple[str, ...] = False  # shown in the report's findings (for a ``*`` path: these keys)
    keys: tuple[str, ...] = ()  # for a ``*`` path: only these keys become columns (all when empty)
    interval: tuple[str, str] | None = None  # paths of its confidence interval's ends, where it has one

    def values(self, result: dict, params: dict) -> Iterator[tuple[str, str, Any]]:
        """(column, label, value) of this headline in one result (nothing where the result lacks it)."""
        *head, last = self.path.split(".")
        node = lookup(result, ".".join(head)) if head else result
        if not isinstance(node, dict):
            return
        items = [(k, v) for k, v in node.items() if not self.keys or k in self.keys] if last == "*" else \
            [(None, node[last])] if last in node else []
        for key, value in items:
            if isinstance(value, dict):  # e.g. an optional block left out: {"mi_nats": ...} is reached by path
                continue
            yield self.column.format(key=key, **params), self.label.format(key=key, **params), value


    def text(self, result: dict, params: dict) -> Iterator[str]:
        """'label value [low, high]' lines for a terminal."""
        ends = [lookup(result, p) for p in self.interval] if self.interval else [None, None]
        ci = f" [{_fmt(ends[0])}, {_fmt(ends[1])}]" if None not in ends else ""
        for _, label, value in self.values(result, params):
            yield f"{label} {_fmt(value)}{ci}"


def lookup(result: dict, path: str) -> Any:
    """``result["a"]["b"]`` for the path ``"a.b"`` (None where a part is missing)."""
    node: Any = result
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Analysis:
    name: str
    module: str  # vaelab.analysis.<module> holds the function and its `plot`
    function: str
    summary: str
    headline: tuple[Headline, ...] = field(default=())
    sentences: tuple[str, ...] = ()  # paths of the result's plain-words readings, printed under its numbers

    def load(self) -> tuple[Callable, Callable]:
        mod = importlib.import_module(f"vaelab.analysis.{self.module}")
        return getattr(mod, self.function), mod.plot

    @functools.cache
    def params_model(self) -> type[BaseModel]:
        """The typed parameters, from the function's keyword-only arguments (their annotations and defaults); built
        once per declaration (every results row and every validation asks for it)."""
        fn, _ = self.load()
        hints = typing.get_type_hints(fn)
        fields = {p.name: (hints.get(p.name, Any), p.default) for p in inspect.signature(fn).parameters.values()
                  if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in NOT_PARAMETERS}
        return create_model(f"{self.function}_params", __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
                            **fields)

    def parameters(self) -> dict[str, Any]:
        """Keyword parameters and their defaults."""
        return {k: f.default for k, f in self.params_model().model_fields.items()}

    def validate(self, params: dict[str, Any], where: str = "") -> dict[str, Any]:
        """``params`` checked and typed (strings from the command line are converted); one line names a bad one."""
        model = self.params_model()
        data = {k: v for k, v in params.items() if k not in NOT_PARAMETERS}
        try:
            return {**params, **model.model_validate(data).model_dump(exclude_unset=True)}
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                raise ConfigError(f"{where}{self.name} takes no parameter {key!r}; accepted: "
                                  f"{', '.join(self.parameters())}") from None
            expected = model.model_fields[key].annotation if key in model.model_fields else "?"
            raise ConfigError(f"{where}{self.name}.{key}={params.get(key)!r}: {err['msg'].lower()} "
                              f"(expected {type_name(expected)})") from None

    def numbers(self, result: dict, params: dict) -> dict[str, Any]:
        """{column: value} of the headline numbers in a saved result, columns formatted with ``params``."""
        full = {**self.parameters(), **params}
        return {col: v for h in self.headline for col, _, v in h.values(result, full)}

    def summary_lines(self, result: dict, params: dict) -> list[str]:
        """The headline numbers as a few lines for a terminal, then the result's readings."""
        full = {**self.parameters(), **params}
        parts = [t for h in self.headline for t in h.text(result, full)]
        lines = ["; ".join(parts[i:i + 3]) for i in range(0, len(parts), 3)]
        return lines + [t for t in (lookup(result, p) for p in self.sentences) if isinstance(t, str) and t]


def type_name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


H = Headline
ANALYSES: dict[str, Analysis] = {a.name: a for a in (
    Analysis("posterior", "posterior", "posterior_statistics",
             "per-dimension mu/sigma^2/KL, active units, I(x; z), PCA spectrum of the means", (
                 H("active_units", "active_units", "active units (Var[mu] > {threshold:g})", in_report=True),
                 H("kl_active_units", "kl_active_units", "units with KL > {threshold:g} nats"),
                 H("pca_above_{threshold:g}", "pca.above_threshold", "PCA eigenvalues > {threshold:g}", in_report=True),
                 H("mutual_information", "mutual_information.mi_nats", "I(x; z) (nats)")), ("count_note",)),
    Analysis("typical-set", "typical", "typical_set",
             "typical-set gap of posterior samples, latent norms vs sqrt(n), Theorem 3 by Monte Carlo", (
                 H("typical_gap_percent", "gap.percent_gap_mean", "typical-set gap (% per dim)", in_report=True),
                 H("norm_posterior_over_sqrt_n", "norms.posterior_sample.mean_over_sqrt_n",
                   "||z|| / sqrt(n) of posterior samples"))),
    Analysis("prior-gap", "prior_gap", "aggregate_posterior_gap",
             "aggregate posterior vs prior: shape, tests in the informative subspace, shell test, KL bound", (
                 H("informative_dims", "informative.dims", "informative directions (eigenvalue > {threshold:g})"),
                 H("classifier_auc", "classifier_auc", "AUC prior vs q(z), informative coordinates", in_report=True,
                   interval=("tests.classifier.ci_low", "tests.classifier.ci_high")),
                 H("shell_variance", "shell_variance", "complement variance per direction (prior 1)", in_report=True,
                   interval=("tests.shell.ci_low", "tests.shell.ci_high")),
                 H("kl_aggregate_prior", "kl_aggregate_prior", "KL(q(z) || p(z)) from Gaussian moments (nats)"),
                 H("holes", "holes", "finite-mixture holes (share of prior samples)")), ("reading",)),
    Analysis("samples", "samples", "samples",
             "decoded samples: prior, q(z), interventions, ex-post Gaussian/GMM, two-stage, quantile grids"),
    Analysis("likelihood", "likelihood", "likelihood",
             "importance-sampled log p(x) with SE, VR bound, train/test reconstruction gap", (
                 H("log_likelihood", "log_likelihood", "test log p(x) (nats, S = {samples})", "high", True),
                 H("log_likelihood_se", "log_likelihood_se_images", "its standard error over images"),
                 H("log_likelihood_se_sampling", "log_likelihood_se_sampling",
                   "its sampling SE (replicates = {replicates}; the delta method at 1)"),
                 H("pareto_k_unreliable", "pareto_k_share_unreliable",
                   "share of images whose weights' Pareto k-hat makes the IS estimate unreliable at this S", "low"),
                 H("vr_bound", "vr_bound", "VR bound (nats)", "high", True),
                 H("overfit_gap", "overfit_gap_neg_elbo", "test - train -ELBO (nats)", in_report=True)),
             ("se_reading",)),
    Analysis("quality", "quality", "sample_quality",
             "FD, KID, precision/recall, density/coverage per sampler (prior, q(z), interventions, fixes)", (
                 H("fd_{key}", "fd.*", "FD of {key} samples", "low", ("prior", "ex-post-gmm", "two-stage")),)),
    Analysis("memorisation", "memorisation", "memorisation",
             "data-copying test and authenticity of samples and reconstructions (classifier or label-free features)", (
                 H("copying_ct_{key}", "c_t.*", "data-copying C_T of {key} (< {threshold:g} flags copying)",
                   keys=("prior", "reconstruction-test")),), ("copying.sentence",)),
    Analysis("probes", "probes", "linear_probes",
             "logistic-regression probes on mu, [mu, sigma^2], z, over training snapshots", (
                 H("probe_{key}", "final.*", "probe accuracy on {key}", "high", ("mu", "mu+sigma2")),)),
    Analysis("interpolation", "interpolate", "interpolation",
             "five-row interpolations incl. Fisher-Rao geodesics, with lengths"),
)}
DIAGNOSIS = Analysis("diagnosis", "diagnose", "diagnose", "document 000's question answered for this model", (
    H("informative_mismatch", "informative_mismatch", "prior and q(z) differ in the informative coordinates"),
    H("shell_mismatch", "shell_mismatch", "prior and q(z) differ in the complement (the shell)"),
    H("mismatch_costs", "mismatch_costs", "which part of the mismatch costs sample quality"),
    H("best_fix", "best_fix", "the fix with the lowest FD"),
    H("overfitting", "overfitting_supported", "over-fitting supported")))
ALIASES = {"diagnose": "diagnosis"}  # a study's `analyses:` may say diagnose


def declaration(name: str) -> Analysis:
    """The declaration of an analysis (or of the diagnosis) by name; an unknown name is a one-line error."""
    name = ALIASES.get(name, name)
    if name == DIAGNOSIS.name:
        return DIAGNOSIS
    if name not in ANALYSES:
        raise ConfigError(f"unknown analysis {name!r}; choose from {', '.join([*ANALYSES, DIAGNOSIS.name])}")
    return ANALYSES[name]


def report_columns() -> list[tuple[str, str, str | None, str]]:
    """(analysis, column template, better, label template) of the numbers the report shows, in declaration order;
    a ``{key}`` template stands for each of the headline's keys."""
    out = []
    for a in (*ANALYSES.values(), DIAGNOSIS):
        for h in a.headline:
            if h.in_report:
                for key in h.in_report if isinstance(h.in_report, tuple) else (None,):
                    out.append((a.name, h.column.replace("{key}", key) if key else h.column, h.better,
                                h.label.replace("{key}", key) if key else h.label))
    return out


def column(analysis: str, template: str, params: dict[str, Any] | None = None) -> str:
    """A headline's column name with the parameters it ran with (defaults where not given)."""
    return template.format(**{**declaration(analysis).parameters(), **(params or {})})


def parse_names(text: str | None) -> list[str]:
    """'posterior,likelihood' -> validated names (all when None/empty)."""
    if not text:
        return list(ANALYSES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in ANALYSES:
            raise ConfigError(f"unknown analysis {n!r}; choose from {', '.join(ANALYSES)}")
    return names


def split_params(names: list[str], settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Route key=value settings to the analyses that take them (``likelihood.samples=5000`` to one, ``seed=1`` to every
    one that has a seed), each validated by its declaration; an unknown key is an error naming the accepted."""
    per: dict[str, dict[str, Any]] = {n: {} for n in names}
    accepted = {n: ANALYSES[n].parameters() for n in names}
    for key, value in settings.items():
        analysis, dot, param = key.partition(".")
        targets = [analysis] if dot and analysis in accepted else [n for n in names if key in accepted[n]]
        param = param if dot and analysis in accepted else key
        targets = [n for n in targets if param in accepted[n]]
        if not targets:
            options = sorted({p for n in names for p in accepted[n]})
            raise ConfigError(f"--set {key}: no selected analysis takes {param!r}; accepted: {', '.join(options)}")
        for n in targets:
            per[n][param] = value
    return {n: ANALYSES[n].validate(p, "--set ") for n, p in per.items()}
