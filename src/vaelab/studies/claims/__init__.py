"""Claims as checks. A study lists its document's claims, each with the measurement that tests it and the rule that
decides it; :func:`vaelab.studies.scorecard.scorecard` decides every one from a study folder's runs (never by training
or re-measuring), and the report opens with the result (`vaelab scorecard DIR` prints it).

    claims:
      - id: samples-degrade                                   # names the claim (and its scale options)
        claim: generated images degrade as the latent grows   # the claim in a few words
        document: "Fig. 4: blurrier, less varied samples as d grows, most from 20 to 200"   # its figure or number
        rule: {kind: trend, metric: fd_prior, over: model.latent_dim, direction: increasing}
        explains: "..."                                       # optional: where vaelab says more than the document

The package, one job a module:

- :mod:`.metrics`: what a rule's ``metric``, ``than``, ``se`` and ``where`` may name, and the derived metrics;
- :mod:`.rules`: the rule kinds, one class and one module each (``trend``, ``compare``, ``near``, ``read``,
  ``verdict``, ``theorem3``, ``winner``; each module's docstring says what its kind decides), decided at 95%
  (:mod:`vaelab.studies.intervals`) on the finished runs its ``where`` selects (``{variant: [a, b]}``,
  ``{latent_dim: {min: 4}}``, ``{variant: {prefix: spatial-}}``);
- :mod:`.reader`: a study's results (:class:`vaelab.studies.results.StudyResults`) as the rules read them;
- :mod:`.decisions`: held, did not hold, or inconclusive with why, from an interval;
- :mod:`.claim`: a claim and its rule, checked and decided;
- :mod:`.render`: the scorecard as text.
"""
from vaelab.studies.claims.claim import Claim, check_claims, decide_claim, decide_claims
from vaelab.studies.claims.decisions import (HELD, INCONCLUSIVE, NOT_HELD, OUTCOMES, ClaimOutcome, Decision,
                                             outcome_counts)
from vaelab.studies.claims.metrics import METRICS, REFERENCES, check_metric, check_where, expected_typical_gap
from vaelab.studies.claims.reader import Reader
from vaelab.studies.claims.render import counts_text, render_text
from vaelab.studies.claims.rules import RULES, Rule, RuleBase

__all__ = ["HELD", "INCONCLUSIVE", "METRICS", "NOT_HELD", "OUTCOMES", "REFERENCES", "RULES", "Claim", "ClaimOutcome",
           "Decision", "Reader", "Rule", "RuleBase", "check_claims", "check_metric", "check_where", "counts_text",
           "decide_claim", "decide_claims", "expected_typical_gap", "outcome_counts", "render_text"]
