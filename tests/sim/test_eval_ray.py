"""The evaluation on 2 local Ray workers gives the same files as in-process (wall clock aside)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.evaluate import details_path, evaluate, strip_wall_clock

ray = pytest.importorskip("ray")

AGENTS = Path(__file__).resolve().parent / "agents"
TINY = """\
name: tiny_{i}
tags: [smoke]
seed: {i}
variations: 2
map:
  town: {{blocks_x: 2, blocks_y: 2}}
route:
  length_m: 100
traffic: {{vehicles: 4, pedestrians: 1}}
"""


def _suite(folder: Path) -> Path:
    for i in range(2):
        (folder / f"tiny_{i}.yaml").write_text(TINY.format(i=i))
    (folder / "suite.yaml").write_text(
        "suite: ray\nscenarios:\n  - {file: tiny_0.yaml, repetitions: 2}\n  - {file: tiny_1.yaml}\n"
    )
    return folder / "suite.yaml"


def _files(out: Path) -> tuple[dict, dict]:
    return (
        strip_wall_clock(json.loads(out.read_text())),
        strip_wall_clock(json.loads(details_path(out).read_text())),
    )


@pytest.mark.slow
def test_two_ray_workers_match_one_process(tmp_path: Path) -> None:
    suite = _suite(tmp_path)
    agent = str(AGENTS / "autopilot_agent.py")
    serial = tmp_path / "serial" / "results.json"
    parallel = tmp_path / "parallel" / "results.json"
    evaluate(agent, "", suite, out=serial, progress=False)
    results = evaluate(agent, "", suite, out=parallel, workers=2, progress=False)
    assert not ray.is_initialized()  # the local cluster it started is shut down
    assert results["_checkpoint"]["progress"] == [6, 6]
    assert [r["route_id"] for r in results["_checkpoint"]["records"]] == [
        "RouteScenario_0_rep0",
        "RouteScenario_0_rep1",
        "RouteScenario_1_rep0",
        "RouteScenario_1_rep1",
        "RouteScenario_2_rep0",
        "RouteScenario_3_rep0",
    ]
    assert _files(parallel) == _files(serial)


@pytest.mark.slow
def test_ray_workers_stop_at_a_rejection_like_one_process(tmp_path: Path) -> None:
    suite = _suite(tmp_path)
    config = tmp_path / "agent.json"
    config.write_text(json.dumps({"mode": "nine_cameras"}))
    agent = str(AGENTS / "faulty_agent.py")
    serial = tmp_path / "serial" / "results.json"
    parallel = tmp_path / "parallel" / "results.json"
    evaluate(agent, str(config), suite, out=serial, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        results = evaluate(agent, str(config), suite, out=parallel, workers=2, progress=False)
        assert ray.is_initialized()  # a cluster it did not start is left running
    finally:
        ray.shutdown()
    assert results["entry_status"] == "Rejected"
    assert results["_checkpoint"]["progress"] == [1, 6]
    assert _files(parallel) == _files(serial)
