"""The reader of a study's results for its claims: each metric's value in each run (the run's saved analyses read
once), the runs a rule's ``where`` selects, and the inconclusive outcome when they are not all there."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

from vaelab.analysis.framework.registry import column, lookup
from vaelab.studies.claims.decisions import INCONCLUSIVE, Decision
from vaelab.studies.claims.metrics import METRICS, OPERATORS, is_number, match, short, sort_values, where_text
from vaelab.studies.results import StudyResults


class Selection(NamedTuple):
    """The runs a filter selects: those that finished, and those that did not (and may have matched)."""

    finished: list[dict]
    failed: list[dict]


class Reader:
    """A study's results (:class:`StudyResults`) as its claims read them: metrics per run, selections of runs."""

    def __init__(self, results: StudyResults):
        self.results, self.spec = results, results.spec
        self._analyses: dict[tuple[str, str], Any] = {}

    def analysis(self, row: dict, name: str) -> Optional[dict]:
        key = (row["run"], name)
        if key not in self._analyses:
            self._analyses[key] = self.results.analysis(row, name)
        return self._analyses[key]

    def column(self, metric: str) -> str:
        """An ``ANALYSIS:TEMPLATE`` metric's column, named with the parameters the study ran the analysis with."""
        analysis, _, template = metric.partition(":")
        return column(analysis, template, self.spec.analyses.get(analysis))

    def name(self, metric: str) -> str:
        """A metric as the results table or the analysis names it."""
        for op in OPERATORS:
            if op in metric:
                return op.join(self.name(m.strip()) for m in metric.split(op, 1))
        return self.column(metric) if ":" in metric else metric

    def value(self, row: dict, metric: str) -> Any:
        for op in OPERATORS:
            if op in metric:
                a, b = (self.value(row, m.strip()) for m in metric.split(op, 1))
                if not (is_number(a) and is_number(b)) or (op == " / " and b == 0):
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
        return [float(v) for v in (self.value(r, metric) for r in rows) if is_number(v)]

    def matches(self, row: dict, where: dict, finished: bool = True) -> bool:
        """Whether the row passes the filters (for a run that did not finish, only its results columns are read)."""
        for key, want in where.items():
            if key not in row and not finished:
                continue
            if not match(row[key] if key in row else self.value(row, key), want):
                return False
        return True

    def select(self, where: dict) -> Selection:
        """The runs that match ``where``: finished, and not finished."""
        rows = self.results.rows
        return Selection([r for r in rows if r.get("status") == "finished" and self.matches(r, where)],
                         [r for r in rows if r.get("status") != "finished" and self.matches(r, where, False)])

    def measured(self, where: dict, *metrics: str) -> tuple[list[dict], Optional[Decision]]:
        """The finished runs ``where`` selects, and the inconclusive decision when not all of them are there with
        every one of ``metrics`` (None when they are)."""
        rows, failed = self.select(where)
        for metric in metrics:
            missing = self.missing(rows, metric, failed, where)
            if missing:
                return rows, missing
        return rows, None

    def label(self, row: dict) -> str:
        seeds = len({r.get("seed") for r in self.results.rows}) > 1
        return self.results.label(row) + (f", seed {row.get('seed')}" if seeds else "")

    def missing(self, rows: list[dict], metric: str, failed: list[dict], where: dict) -> Optional[Decision]:
        """Inconclusive when the claim's runs failed, are absent, or lack the metric; None when all is there."""
        name = self.name(metric)
        if failed:
            names = ", ".join(r["run"] for r in failed[:3]) + (", ..." if len(failed) > 3 else "")
            return Decision(INCONCLUSIVE, "", f"{len(failed)} of the runs it reads did not finish ({names})")
        if not rows:
            return Decision(INCONCLUSIVE, "not measured",
                            f"no finished run{' with ' + where_text(where) if where else ''} at this scale")
        lacking = [r["run"] for r in rows if not is_number(self.value(r, metric))]
        if len(lacking) == len(rows):
            return Decision(INCONCLUSIVE, "not measured", f"no run has {name} (the study does not measure it)")
        if lacking:
            return Decision(INCONCLUSIVE, "", f"{len(lacking)} of {len(rows)} runs lack {name} ({lacking[0]}, ...)")
        return None


def groups(rows: list[dict], by: Optional[str]) -> list[tuple[str, list[dict]]]:
    """The rows split by the values of grid key ``by`` (one unlabelled group without it)."""
    if not by:
        return [("", rows)]
    return [(f"{short(by)} = {v}", [r for r in rows if match(r.get(by), v)])
            for v in sort_values({r.get(by) for r in rows})]
