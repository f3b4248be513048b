"""The expert in closed loop: the rule set with ground truth through the evaluation harness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.evaluate import details_path, evaluate

CONSTRUCTION = """
name: expert_construction
seed: 3
map:
  town: {road_type: urban, lanes_per_direction: 2, curvature: 0.0, block_m: 160}
route: {length_m: 150}
weather: {preset: WetNoon}
traffic: {vehicles: 0, pedestrians: 0, speed_limit_kmh: 40}
events:
  - {type: construction_zone, at_m: 50, side: right, length_m: 25}
"""

TWO_WAY = """
name: expert_two_way
seed: 5
map:
  town: {road_type: urban, curvature: 0.0, block_m: 160}
route: {length_m: 150}
traffic: {vehicles: 0, pedestrians: 0, speed_limit_kmh: 40}
events:
  - {type: accident, at_m: 50, side: right, two_way: true}
"""

CROSSING = """
name: expert_crossing
seed: 7
map:
  town: {road_type: urban, lanes_per_direction: 2, curvature: 0.0, block_m: 160}
route: {length_m: 120}
traffic: {vehicles: 0, pedestrians: 0, speed_limit_kmh: 40}
events:
  - {type: pedestrian_crossing, at_m: 60, side: right, trigger_distance_m: 30}
"""


@pytest.mark.parametrize(
    ("name", "text"),
    [("construction", CONSTRUCTION), ("two_way", TWO_WAY), ("crossing", CROSSING)],
)
def test_expert_clears_the_edge_case_without_infractions(tmp_path: Path, name, text) -> None:
    scenario = tmp_path / f"{name}.yaml"
    scenario.write_text(text)
    out = tmp_path / "results.json"
    results = evaluate("expert", "", scenario, out=out, progress=False)
    record = results["_checkpoint"]["records"][0]
    assert record["status"] == "Perfect", record["infractions"]
    assert record["scores"]["score_composed"] == pytest.approx(100.0)
    route = json.loads(details_path(out).read_text())["routes"][0]
    if name in ("construction", "two_way"):
        # It passed the closed lane: somewhere the ego was a lane width off the route.
        import numpy as np

        traj = np.array(route["trajectory"])[:, 1:3]
        route_xy = np.array(route["route_xy"])
        offset = np.min(np.linalg.norm(traj[:, None] - route_xy[None], axis=2), axis=1)
        assert offset.max() > 2.5
