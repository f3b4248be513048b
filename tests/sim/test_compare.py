"""`vlmdrive compare`: pairing by (suite, seed) and route, the statistics, the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sim.report.compare import CompareError, bootstrap_interval, compare
from vlmdrive.cli import app

SUITE = "scenarios/library/eval/suite_quick.yaml"


def _write(
    path: Path,
    seed: int,
    scores: list[float],
    *,
    suite: str = SUITE,
    scenarios: list[str] | None = None,
    collisions: list[int] | None = None,
    guard: tuple[int, int] | None = None,
) -> Path:
    """A results.json (+ details sidecar) with one route per score."""
    scenarios = scenarios or [f"scenario_{i}" for i in range(len(scores))]
    collisions = collisions or [0] * len(scores)
    records = [
        {
            "index": i,
            "route_id": f"RouteScenario_{i}_rep0",
            "status": "Completed",
            "scenario_name": scenarios[i],
            "scores": {"score_composed": ds, "score_route": 100.0, "score_penalty": ds / 100},
            "infractions": {
                "collisions_vehicle": ["hit"] * collisions[i],
                "red_light": [],
            },
        }
        for i, ds in enumerate(scores)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"_checkpoint": {"records": records}}))
    details_routes = [
        {
            "route_id": f"RouteScenario_{i}_rep0",
            **({"interventions": {"ticks": guard[1], "interventions": guard[0]}} if guard else {}),
        }
        for i in range(len(scores))
    ]
    details = {"version": 1, "suite": suite, "seed": seed, "routes": details_routes}
    path.with_name(f"{path.stem}.details.json").write_text(json.dumps(details))
    return path


def test_routes_pair_by_seed_and_route_id_whatever_the_file_order(tmp_path: Path) -> None:
    # The baseline's seed-1 file sorts first, the candidate's last: pairing is by seed.
    _write(tmp_path / "base/a/results.json", 1, [10.0, 50.0], collisions=[1, 0], guard=(5, 100))
    _write(tmp_path / "base/b/results.json", 0, [20.0, 30.0], guard=(15, 100))
    _write(tmp_path / "cand/a/results.json", 0, [25.0, 30.0], guard=(1, 100))
    _write(tmp_path / "cand/b/results.json", 1, [40.0, 50.2], collisions=[0, 2], guard=(1, 100))
    result = compare([tmp_path / "base"], [tmp_path / "cand"])
    diffs = {(p.seed, p.route_id): p.difference for p in result.pairs}
    assert diffs == pytest.approx(
        {
            (0, "RouteScenario_0_rep0"): 5.0,
            (0, "RouteScenario_1_rep0"): 0.0,
            (1, "RouteScenario_0_rep0"): 30.0,
            (1, "RouteScenario_1_rep0"): 0.2,
        }
    )
    assert result.mean_difference == pytest.approx(8.8)
    assert result.standard_error == pytest.approx(np.std([5, 0, 30, 0.2], ddof=1) / 2)
    assert (result.better, result.worse, result.same) == (2, 0, 2)  # 0.2 counts as the same
    assert result.baseline.driving_score == pytest.approx(27.5)
    assert result.candidate.driving_score == pytest.approx(36.3)
    assert result.baseline.infractions == {"collisions_vehicle": 1}
    assert result.candidate.infractions == {"collisions_vehicle": 2}
    assert result.baseline.guard_share == pytest.approx(40 / 400)
    assert result.candidate.guard_share == pytest.approx(4 / 400)
    assert result.baseline.seeds == (0, 1)
    assert [p.route_id for p in result.largest_changes(1)] == ["RouteScenario_0_rep0"]
    assert result.largest_changes(1)[0].seed == 1


def test_bootstrap_interval_brackets_the_mean_and_repeats() -> None:
    diffs = np.array([-3.0, 1.0, 4.0, 10.0, -1.0, 2.0, 0.5, 7.0])
    low, high = bootstrap_interval(diffs)
    assert low < diffs.mean() < high
    assert (low, high) == bootstrap_interval(diffs)  # a fixed seed: same files, same interval
    assert bootstrap_interval(np.full(5, 2.0)) == pytest.approx((2.0, 2.0))
    wide = bootstrap_interval(diffs * 10)
    assert wide[1] - wide[0] == pytest.approx(10 * (high - low))


def test_a_seed_on_one_side_only_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "base/s0.json", 0, [10.0])
    _write(tmp_path / "base/s1.json", 1, [10.0])
    _write(tmp_path / "cand/s0.json", 0, [12.0])
    with pytest.raises(CompareError, match=r"only the baseline has suite .* seed 1 \(.*s1\.json\)"):
        compare([tmp_path / "base"], [tmp_path / "cand"])


def test_different_routes_or_scenarios_are_refused(tmp_path: Path) -> None:
    base = _write(tmp_path / "base.json", 0, [10.0, 20.0])
    short = _write(tmp_path / "short.json", 0, [10.0])
    with pytest.raises(CompareError, match="RouteScenario_1_rep0 in one only"):
        compare([base], [short])
    other = _write(tmp_path / "other.json", 0, [10.0, 20.0], scenarios=["scenario_0", "fog"])
    with pytest.raises(CompareError, match="RouteScenario_1_rep0 .* runs 'scenario_1' .* 'fog'"):
        compare([base], [other])


def test_two_files_of_one_seed_on_a_side_are_refused(tmp_path: Path) -> None:
    _write(tmp_path / "base/x.json", 0, [10.0])
    _write(tmp_path / "base/y.json", 0, [10.0])
    with pytest.raises(CompareError, match="both hold suite .* seed 0"):
        compare([tmp_path / "base"], [tmp_path / "base/x.json"])


def test_cli_prints_the_comparison_and_writes_json(tmp_path: Path) -> None:
    _write(tmp_path / "base.json", 0, [10.0, 20.0, 30.0])
    _write(tmp_path / "cand.json", 0, [12.0, 18.0, 45.0])
    out = tmp_path / "cmp/compare.json"
    run = CliRunner().invoke(
        app,
        [
            "compare",
            str(tmp_path / "base.json"),
            "--against",
            str(tmp_path / "cand.json"),
            "--json",
            str(out),
        ],
    )
    assert run.exit_code == 0, run.output
    assert "+5.00" in run.output and "better on 2 routes, worse on 1" in run.output
    data = json.loads(out.read_text())
    assert data["routes"] == 3 and data["mean_difference"] == pytest.approx(5.0)
    assert data["baseline"]["driving_score"] == pytest.approx(20.0)
    assert not list(out.parent.glob("*.tmp"))


def test_cli_bad_input_names_the_file(tmp_path: Path) -> None:
    _write(tmp_path / "base.json", 0, [10.0])
    bad = tmp_path / "bad.json"
    bad.write_text('{"_checkpoint": {"records": [{"route_id": "r", "status": "x"}]}}')
    run = CliRunner().invoke(app, ["compare", str(tmp_path / "base.json"), "-a", str(bad)])
    assert run.exit_code == 2
    assert "bad.json" in run.output and "scores" in run.output
    run = CliRunner().invoke(app, ["compare", str(tmp_path / "none"), "-a", str(bad)])
    assert run.exit_code == 2 and "does not exist" in run.output
    empty = tmp_path / "empty"
    empty.mkdir()
    run = CliRunner().invoke(app, ["compare", str(empty), "-a", str(bad)])
    assert run.exit_code == 2 and "holds no results JSON" in run.output


def test_by_scenario_groups_the_seeds_of_each_scenario(tmp_path: Path) -> None:
    names = ["fog_cut_in", "glare_cones"]
    for seed, (base, cand) in enumerate(
        [([40.0, 80.0], [50.0, 20.0]), ([60.0, 90.0], [90.0, 30.0])]
    ):
        _write(tmp_path / f"base/s{seed}.json", seed, base, scenarios=names)
        _write(tmp_path / f"cand/s{seed}.json", seed, cand, scenarios=names)
    result = compare([tmp_path / "base"], [tmp_path / "cand"])
    changes = result.by_scenario()
    # Largest loss first: glare_cones (80, 90 -> 20, 30) before fog_cut_in (40, 60 -> 50, 90).
    assert [c.scenario for c in changes] == ["glare_cones", "fog_cut_in"]
    assert [c.routes for c in changes] == [2, 2]
    assert changes[0].baseline == pytest.approx(85.0) and changes[0].candidate == pytest.approx(
        25.0
    )
    assert changes[1].difference == pytest.approx(20.0)
    out = tmp_path / "cmp.json"
    run = CliRunner().invoke(
        app,
        [
            "compare",
            str(tmp_path / "base"),
            "-a",
            str(tmp_path / "cand"),
            "--by-scenario",
            "--top",
            "0",
            "--json",
            str(out),
        ],
    )
    assert run.exit_code == 0, run.output
    assert "by scenario" in run.output and "-60.0" in run.output and "+20.0" in run.output
    scenarios = json.loads(out.read_text())["scenarios"]
    assert scenarios[0] == {
        "scenario": "glare_cones",
        "routes": 2,
        "baseline": 85.0,
        "candidate": 25.0,
    }
