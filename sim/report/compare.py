"""Paired comparison of two agents' evaluations: `vlmdrive compare BASELINE CANDIDATE`.

Closed-loop Driving Scores swing by tens of points from one route to the next, and between
two runs of the same route with another seed, so two means alone say little. Run both
agents on the same suite with the same seeds (`vlmdrive eval --seed S`: the same routes,
scenario variations and world seeds), then compare route by route: the mean of the
per-route differences, its standard error, a bootstrap confidence interval, how many
routes got better or worse, and the infraction counts and guard interventions of each side.

Inputs: each side is one or more results JSON files (`vlmdrive eval --out`), or folders
searched recursively for them (`*.details.json` sidecars are not results). Files are paired
by (suite, seed) from their details sidecars; the two sides must hold the same
(suite, seed) pairs, and each pair the same route ids running the same scenarios. Anything
else is refused with a `CompareError` that names the files and routes, because an unpaired
comparison is the mistake this tool exists to prevent.

The interval is a percentile bootstrap over routes (resampling the per-route differences,
`BOOTSTRAP_SAMPLES` draws, a fixed seed so the same files give the same interval). It treats
routes as independent draws, which they are not quite (a seed's routes share a machine and
nothing else; a scenario appears once per seed), so read it as a guide, not a test.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.report.results import EvaluationResults, RouteResult, load_results

BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0
SAME_SCORE = 0.5  # [DS points] a route whose difference is smaller counts as unchanged


class CompareError(ValueError):
    """The two sides cannot be paired; the message names the files and routes."""


@dataclass(frozen=True)
class RoutePair:
    """One route run by both agents (same suite, seed and route id)."""

    seed: int | None
    route_id: str
    scenario: str
    baseline: RouteResult
    candidate: RouteResult

    @property
    def difference(self) -> float:
        """[DS points] candidate minus baseline."""
        return self.candidate.score_composed - self.baseline.score_composed


@dataclass(frozen=True)
class SideSummary:
    """One agent over all its paired routes."""

    files: tuple[Path, ...]
    seeds: tuple[int | None, ...]
    driving_score: float  # mean over routes [0, 100]
    route_completion: float  # mean [0, 100]
    infraction_penalty: float  # mean [0, 1]
    infractions: dict[str, int]  # Leaderboard key -> count over all routes
    guard_share: float | None  # guard interventions / agent ticks; None: not recorded


@dataclass(frozen=True)
class ScenarioChange:
    """One scenario's mean Driving Score on each side, over its paired routes."""

    scenario: str
    routes: int
    baseline: float  # [DS points] mean over the scenario's routes
    candidate: float

    @property
    def difference(self) -> float:
        """[DS points] candidate minus baseline."""
        return self.candidate - self.baseline


@dataclass(frozen=True)
class Comparison:
    baseline: SideSummary
    candidate: SideSummary
    pairs: tuple[RoutePair, ...]
    mean_difference: float  # [DS points] candidate - baseline, mean over routes
    standard_error: float  # [DS points] of that mean (0 for a single route)
    interval95: tuple[float, float]  # [DS points] percentile bootstrap
    better: int  # routes where the candidate scored SAME_SCORE or more higher
    worse: int
    same: int

    def largest_changes(self, n: int) -> list[RoutePair]:
        """The n routes whose score changed most, largest change first."""
        return sorted(self.pairs, key=lambda p: -abs(p.difference))[:n]

    def by_scenario(self) -> list[ScenarioChange]:
        """Each scenario's mean scores over its routes (one per seed), largest loss first.

        A suite runs each scenario once per seed, so this is where a candidate's gain or
        loss comes from; its per-scenario numbers rest on a few routes each.
        """
        groups: dict[str, list[RoutePair]] = {}
        for pair in self.pairs:
            groups.setdefault(pair.scenario, []).append(pair)
        changes = [
            ScenarioChange(
                scenario=name,
                routes=len(pairs),
                baseline=statistics.fmean(p.baseline.score_composed for p in pairs),
                candidate=statistics.fmean(p.candidate.score_composed for p in pairs),
            )
            for name, pairs in groups.items()
        ]
        return sorted(changes, key=lambda c: (c.difference, c.scenario))

    def to_json(self) -> dict[str, Any]:
        def side(s: SideSummary) -> dict[str, Any]:
            return {
                "files": [str(f) for f in s.files],
                "seeds": list(s.seeds),
                "driving_score": round(s.driving_score, 4),
                "route_completion": round(s.route_completion, 4),
                "infraction_penalty": round(s.infraction_penalty, 6),
                "infractions": dict(sorted(s.infractions.items())),
                "guard_share": None if s.guard_share is None else round(s.guard_share, 4),
            }

        return {
            "baseline": side(self.baseline),
            "candidate": side(self.candidate),
            "routes": len(self.pairs),
            "mean_difference": round(self.mean_difference, 4),
            "standard_error": round(self.standard_error, 4),
            "interval95": [round(v, 4) for v in self.interval95],
            "better": self.better,
            "worse": self.worse,
            "same": self.same,
            "scenarios": [
                {
                    "scenario": c.scenario,
                    "routes": c.routes,
                    "baseline": round(c.baseline, 4),
                    "candidate": round(c.candidate, 4),
                }
                for c in self.by_scenario()
            ],
            "pairs": [
                {
                    "seed": p.seed,
                    "route_id": p.route_id,
                    "scenario": p.scenario,
                    "baseline": round(p.baseline.score_composed, 4),
                    "candidate": round(p.candidate.score_composed, 4),
                }
                for p in self.pairs
            ],
        }


def results_files(path: Path) -> list[Path]:
    """`path` itself when it is a file, else every results JSON below it, sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CompareError(f"{path} does not exist")
    found = sorted(
        p for p in path.rglob("*.json") if not p.name.endswith(".details.json") and p.is_file()
    )
    if not found:
        raise CompareError(f"{path} holds no results JSON (vlmdrive eval --out FILE.json)")
    return found


def _load_side(paths: list[Path]) -> dict[tuple[str, int | None], EvaluationResults]:
    """(suite, seed) -> that evaluation, from every results file of one side."""
    by_key: dict[tuple[str, int | None], EvaluationResults] = {}
    for path in paths:
        for file in results_files(path):
            results = load_results(file)  # ResultsFormatError names the file and field
            key = (results.suite, results.seed)
            if key in by_key:
                raise CompareError(
                    f"{by_key[key].path} and {file} both hold suite {results.suite or '?'!r} "
                    f"seed {results.seed}: give each side one evaluation per seed"
                )
            by_key[key] = results
    return by_key


def _describe(key: tuple[str, int | None]) -> str:
    suite, seed = key
    return f"suite {suite or '?'!r} seed {seed}"


def pair_routes(
    baseline: dict[tuple[str, int | None], EvaluationResults],
    candidate: dict[tuple[str, int | None], EvaluationResults],
) -> list[RoutePair]:
    """Every route of both sides, matched by (suite, seed) and route id (see the docstring)."""
    only_base = sorted(set(baseline) - set(candidate), key=str)
    only_cand = sorted(set(candidate) - set(baseline), key=str)
    if only_base or only_cand:
        parts = [f"only the baseline has {_describe(k)} ({baseline[k].path})" for k in only_base]
        parts += [f"only the candidate has {_describe(k)} ({candidate[k].path})" for k in only_cand]
        raise CompareError("; ".join(parts) + ": run both agents with the same suite and seeds")
    pairs: list[RoutePair] = []
    for key in sorted(baseline, key=str):
        a, b = baseline[key], candidate[key]
        routes_a = {r.route_id: r for r in a.routes}
        routes_b = {r.route_id: r for r in b.routes}
        if set(routes_a) != set(routes_b):
            missing = sorted(set(routes_a) ^ set(routes_b))
            raise CompareError(
                f"{a.path} and {b.path} ({_describe(key)}) do not hold the same routes: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} in one only "
                "(an unfinished evaluation? `vlmdrive eval --resume` completes it)"
            )
        for route_id in sorted(routes_a, key=lambda r: routes_a[r].index):
            ra, rb = routes_a[route_id], routes_b[route_id]
            if ra.scenario_name != rb.scenario_name:
                raise CompareError(
                    f"{route_id} ({_describe(key)}) runs {ra.scenario_name!r} in {a.path} "
                    f"but {rb.scenario_name!r} in {b.path}: not the same suite"
                )
            pairs.append(RoutePair(key[1], route_id, ra.scenario_name, ra, rb))
    if not pairs:
        raise CompareError("the evaluations hold no routes to compare")
    return pairs


def _side(
    results: dict[tuple[str, int | None], EvaluationResults], routes: list[RouteResult]
) -> SideSummary:
    infractions: Counter[str] = Counter()
    ticks = interventions = 0
    recorded = False
    for route in routes:
        for kind, messages in route.infractions.items():
            if messages:
                infractions[kind] += len(messages)
        counts = route.details.interventions if route.details is not None else {}
        if "ticks" in counts:
            recorded = True
            ticks += int(counts["ticks"])
            interventions += int(counts.get("interventions", 0))
    keys = sorted(results, key=str)
    return SideSummary(
        files=tuple(results[k].path for k in keys),
        seeds=tuple(k[1] for k in keys),
        driving_score=statistics.fmean(r.score_composed for r in routes),
        route_completion=statistics.fmean(r.score_route for r in routes),
        infraction_penalty=statistics.fmean(r.score_penalty for r in routes),
        infractions=dict(infractions),
        guard_share=interventions / ticks if recorded and ticks else None,
    )


def bootstrap_interval(differences: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `differences` (see the docstring)."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = rng.integers(0, len(differences), size=(BOOTSTRAP_SAMPLES, len(differences)))
    means = differences[draws].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def compare(baseline: list[Path], candidate: list[Path]) -> Comparison:
    """Pair and compare the two sides' results files or folders (module docstring)."""
    base = _load_side(baseline)
    cand = _load_side(candidate)
    pairs = pair_routes(base, cand)
    diffs = np.array([p.difference for p in pairs])
    se = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else 0.0
    return Comparison(
        baseline=_side(base, [p.baseline for p in pairs]),
        candidate=_side(cand, [p.candidate for p in pairs]),
        pairs=tuple(pairs),
        mean_difference=float(diffs.mean()),
        standard_error=se,
        interval95=bootstrap_interval(diffs),
        better=int((diffs >= SAME_SCORE).sum()),
        worse=int((diffs <= -SAME_SCORE).sum()),
        same=int((np.abs(diffs) < SAME_SCORE).sum()),
    )
