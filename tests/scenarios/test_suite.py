"""Suite files: repetitions, variation limits, the shipped demo suite; two-way zones."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scenarios.compile import compile_scenario
from scenarios.loader import load_suite
from scenarios.sampler import sample

LIBRARY = Path(__file__).resolve().parents[2] / "scenarios" / "library"


def test_suite_entry_can_limit_variations(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "name: a\nvariations: 5\ntraffic: {vehicles: {choice: [1, 2]}}\n"
    )
    (tmp_path / "suite.yaml").write_text(
        "suite: s\nscenarios:\n  - {file: a.yaml, variations: 2, repetitions: 3}\n"
    )
    (item,) = load_suite(tmp_path / "suite.yaml")
    assert item.scenario.variations == 2 and item.repetitions == 3
    full = sample(load_suite(tmp_path / "a.yaml")[0].scenario)
    limited = sample(item.scenario)
    # The first N variations of the file, the same draws.
    assert [s.traffic for s in limited] == [s.traffic for s in full[:2]]


def test_demo_suite_is_one_variation_of_four_eval_scenarios() -> None:
    items = load_suite(LIBRARY / "demo" / "suite.yaml")
    assert len(items) == 4
    assert all(item.path.parent.name == "eval" for item in items)
    assert all(len(sample(item.scenario)) == 1 for item in items)


def test_two_way_events_open_the_oncoming_lane_around_them() -> None:
    (item,) = [
        i
        for i in load_suite(LIBRARY / "eval" / "suite.yaml")
        if i.scenario.name == "construction_two_way_oncoming_glare"
    ]
    concrete = sample(item.scenario)[0]
    spec = compile_scenario(concrete)
    ((start, end),) = spec.oncoming_zones
    at = float(concrete.events[0].at_m)  # type: ignore[arg-type]
    assert start < at < end
    one_way = [
        i
        for i in load_suite(LIBRARY / "eval" / "suite.yaml")
        if i.scenario.name == "construction_left_fog"
    ][0]
    assert compile_scenario(sample(one_way.scenario)[0]).oncoming_zones == ()
    assert np.isfinite([start, end]).all()
