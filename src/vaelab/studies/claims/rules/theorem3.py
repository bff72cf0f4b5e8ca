"""``theorem3``: Theorem 3 of document 002 by Monte Carlo (the theory study's check, :mod:`vaelab.studies.theorem`),
for the sigmas whose entropy h is positive (or negative): P(|f_n(Z1) - f_n(Z2)| < delta) at the largest n within
``within`` of 1."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from vaelab.studies import intervals, theorem
from vaelab.studies.claims.decisions import INCONCLUSIVE, Decision, all_of, side
from vaelab.studies.claims.reader import Reader
from vaelab.studies.claims.rules.base import RuleBase


class Theorem3(RuleBase):
    kind: Literal["theorem3"]
    entropy: Literal["positive", "negative"] = Field(..., description="the sigmas whose h = 1/2 log(2 pi e sigma^2) is")
    boundary: float = Field(0.01, ge=0, description="sigmas with |h| below this are too close to 0 to tell; left out")
    within: float = Field(0.05, gt=0, lt=1, description="P at the largest n must be at least 1 - within")

    def decide(self, reader: Reader) -> Decision:
        rows = theorem.rows(reader.results)
        n = max(r["n"] for r in rows)
        last = [r for r in rows if r["n"] == n]
        sign = 1 if self.entropy == "positive" else -1
        chosen = [r for r in last if sign * r["entropy"] >= self.boundary]
        left = [r for r in last if abs(r["entropy"]) < self.boundary]
        note = "; ".join(f"sigma {r['sigma']:g} (h = {r['entropy']:+.4f}) sits too close to h = 0 to tell at n = {n}: "
                         f"P = {r['p_within_delta']:.3f}" for r in left)
        if not chosen:
            return Decision(INCONCLUSIVE, "not measured", f"no sigma with {self.entropy} entropy in the check"
                            + (f"; {note}" if note else ""))
        options = theorem.TheoremOptions.of(reader.spec)
        parts = []
        for r in chosen:
            iv = intervals.proportion(r["p_within_delta"], int(options.pairs))
            parts.append((f"sigma {r['sigma']:g} (h = {r['entropy']:+.2f})",
                          side(iv, "greater", 1 - self.within, f"P = {iv.text()}")))
        d = all_of(parts, every=True)
        return Decision(d.outcome, f"P(|f_n(Z1) - f_n(Z2)| < {options.delta:g}) at n = {n}, {d.measurement}",
                        "; ".join(p for p in (d.why, note) if p), d.interval)
