"""A claim of a study's document with the rule that decides it, checked when the study is read, and decided from the
study's results."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vaelab.studies.claims.decisions import INCONCLUSIVE, ClaimOutcome, Decision, seeds_sentence, seeds_wanted
from vaelab.studies.claims.reader import Reader
from vaelab.studies.claims.rules import Rule
from vaelab.studies.results import StudyResults


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


def decide_claim(claim: Claim, reader: Reader) -> ClaimOutcome:
    """One claim decided from the study's runs (an error in reading them is an inconclusive outcome, not a crash)."""
    try:
        d = claim.rule.decide(reader)
    except Exception as exc:  # noqa: BLE001 - one unreadable claim must not lose the scorecard
        d = Decision(INCONCLUSIVE, "", f"could not be read ({type(exc).__name__}: {exc})")
    why, seeds = d.why, len(reader.results.spec.seeds)
    wanted = seeds_wanted(d.more, seeds) if d.outcome == INCONCLUSIVE else None
    if wanted is not None:
        more = seeds_sentence(d.more, seeds)
        why = f"{why}; {more}" if why else more
    return ClaimOutcome(claim.id, claim.claim, claim.document, d.outcome, d.measurement or "-", why, claim.explains,
                        d.interval, wanted)


def decide_claims(claims: list[Claim], results: StudyResults) -> list[ClaimOutcome]:
    """Every claim decided from the study's results, in order (each run's analyses read once for all of them)."""
    reader = Reader(results)
    return [decide_claim(c, reader) for c in claims]
