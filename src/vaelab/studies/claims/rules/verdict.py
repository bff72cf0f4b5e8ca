"""``verdict``: a field of an analysis (``diagnosis/shell_mismatch``) takes one of the ``expect``ed values in every
run."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from vaelab.studies.claims.decisions import HELD, INCONCLUSIVE, NOT_HELD, Decision, all_of
from vaelab.studies.claims.reader import Reader
from vaelab.studies.claims.rules.base import RuleBase


class Verdict(RuleBase):
    kind: Literal["verdict"]
    metric: str = Field(..., description="an analysis field, e.g. diagnosis/shell_mismatch")
    expect: list[Any] = Field(..., min_length=1, description="the values that mean the claim holds")

    def decide(self, reader: Reader) -> Decision:
        rows, failed = reader.select(self.where)
        if failed or not rows:
            return reader.missing(rows, self.metric, failed, self.where)
        parts = []
        for r in rows:
            v = reader.value(r, self.metric)
            if v is None:
                parts.append((reader.label(r), Decision(INCONCLUSIVE, "not measured", "not measured")))
            else:
                parts.append((reader.label(r), Decision(HELD if v in self.expect else NOT_HELD, str(v))))
        d = all_of(parts, every=False)
        return Decision(d.outcome, f"{reader.name(self.metric)}: {d.measurement}",
                        f"holds when {' or '.join(map(str, self.expect))}" + (f"; {d.why}" if d.why else ""))
