"""The scorecard as text: an aligned table for a terminal (`vaelab scorecard DIR`) and the counts line."""
from __future__ import annotations

import textwrap

from vaelab.studies.claims.decisions import ClaimOutcome, outcome_counts
from vaelab.studies.results import StudyResults


def render_text(outcomes: list[ClaimOutcome], results: StudyResults, width: int = 110) -> str:
    """The scorecard as an aligned table for a terminal: outcome, claim, the document's figure, vaelab's
    measurement; under each row why, and what vaelab adds."""
    spec, done = results.spec, len(results.finished())
    title = (f"scorecard of {spec.name}" + (f" (document {spec.document})" if spec.document else "")
             + (f": {len(results.rows)} runs, {done} finished" if results.rows else "") + f"; {results.folder}")
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


def counts_text(counts: dict[str, int]) -> str:
    """'4 held, 1 did not hold, 0 inconclusive'."""
    return ", ".join(f"{v} {k}" for k, v in counts.items())
