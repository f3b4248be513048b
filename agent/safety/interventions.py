"""Per-route tally of the safety guard's decisions, for the evaluation results JSON."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from agent.safety.decision import FALLBACKS, GuardDecision, ReasonCode


@dataclass
class InterventionCounter:
    """Counts decisions over one route; `reset()` (or a new counter) per route.

    ticks: decisions recorded. interventions: decisions whose trajectory is not the
    planner's, unchanged (`GuardDecision.intervened`). reasons: how many decisions listed
    each code (a tick with several failed checks counts each of them; accepted ticks count
    under ACCEPTED). fallbacks: decisions per fallback kind.
    """

    ticks: int = 0
    interventions: int = 0
    reasons: Counter[ReasonCode] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)

    def record(self, decision: GuardDecision) -> None:
        self.ticks += 1
        self.interventions += int(decision.intervened)
        self.reasons.update(decision.reasons)
        self.fallbacks[decision.fallback] += 1

    def reset(self) -> None:
        self.ticks = 0
        self.interventions = 0
        self.reasons.clear()
        self.fallbacks.clear()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every reason code and fallback kind present (zeros included), so
        results from different routes have the same keys."""
        return {
            "ticks": self.ticks,
            "interventions": self.interventions,
            "intervention_rate": self.interventions / self.ticks if self.ticks else 0.0,
            "reasons": {code.value: self.reasons[code] for code in ReasonCode},
            "fallbacks": {kind: self.fallbacks[kind] for kind in FALLBACKS},
        }
