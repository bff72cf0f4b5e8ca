"""``winner``: among ``fixes`` (the fixes study's), one other than ``beats`` gives the lowest FD beyond the seeds'
spread, per model setting (:func:`vaelab.studies.fixes.decide`, the decision the study's figures draw)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vaelab.studies import fixes
from vaelab.studies.claims.decisions import HELD, INCONCLUSIVE, NOT_HELD, Decision, all_of
from vaelab.studies.claims.reader import Reader
from vaelab.studies.claims.rules.base import RuleBase


class Winner(RuleBase):
    kind: Literal["winner"]
    fixes: list[str] = Field(..., min_length=2, description="the fixes that compete (fixes study names)")
    beats: str = Field("standard", description="the baseline a fix must beat")

    @model_validator(mode="after")
    def _known(self):
        names = [f.name for f in fixes.FIXES]
        for name in (*self.fixes, self.beats):
            if name not in names:
                raise ValueError(f"unknown fix {name!r}; choose from {', '.join(names)}")
        if self.beats not in self.fixes:
            raise ValueError(f"beats {self.beats!r} must be one of the fixes")
        return self

    def decide(self, reader: Reader) -> Decision:
        competing = [f for f in fixes.FIXES if f.name in self.fixes]
        baseline = fixes.words(self.beats)
        settings = fixes.settings(reader.spec)
        if not settings:
            return Decision(INCONCLUSIVE, "not measured", "no variant is labelled FIX-SETTING")
        parts = []
        for setting in settings:
            title = f"latent {setting}" if setting.isdigit() else f"{setting} model"
            stats = fixes.fd_stats(reader.results.rows, setting, competing)
            ranking = fixes.decide(stats)
            if ranking is None or self.beats not in stats:
                parts.append((title, Decision(INCONCLUSIVE, "not measured", f"no FD for {baseline}")))
                continue
            shown = fixes.verdict(stats, ranking, "FD", "low") + (
                f" ({baseline}: {stats[self.beats].text()})" if ranking.best != self.beats else "")
            if ranking.kind == "one-seed":
                parts.append((title, Decision(INCONCLUSIVE, shown, "one seed: no spread to tell the fixes apart")))
            elif ranking.kind == "alone":
                parts.append((title, Decision(INCONCLUSIVE, shown, "only one fix measured")))
            elif self.beats in ranking.tied:
                parts.append((title, Decision(NOT_HELD, shown, f"{baseline} is within the seeds' spread of the best")))
            else:
                parts.append((title, Decision(HELD, shown)))
        return all_of(parts, every=True)
