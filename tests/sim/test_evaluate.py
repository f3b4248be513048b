"""The evaluation harness end to end on tiny suites: results JSON layout, resume after a kill,
misbehaving agents, sensor rejection, atomic writes, recording, agent loading and the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sim import agent_loading
from sim import evaluate as ev
from sim.agent_loading import AgentLoadError, load_agent_class
from sim.evaluate import EvaluationError, details_path, evaluate, strip_wall_clock
from sim.ground_truth import INFRACTION_KEYS
from vlmdrive.cli_eval import register

AGENTS = Path(__file__).resolve().parent / "agents"
AUTOPILOT = str(AGENTS / "autopilot_agent.py")
FAULTY = str(AGENTS / "faulty_agent.py")

TINY_A = """\
name: tiny_a
tags: [smoke, urban]
seed: 3
variations: 2
map:
  town: {blocks_x: 2, blocks_y: 2}
route:
  length_m: 100
traffic: {vehicles: 3, pedestrians: 0}
"""
TINY_B = """\
name: tiny_b
tags: [smoke, traffic]
seed: 5
map:
  town: {blocks_x: 2, blocks_y: 2}
route:
  length_m: 120
traffic: {vehicles: 8, pedestrians: 2}
"""
SUITE = """\
suite: tiny
scenarios:
  - {file: tiny_a.yaml}
  - {file: tiny_b.yaml, repetitions: 2}
"""
RECORD_KEYS = {
    "index",
    "route_id",
    "scenario_name",
    "weather_id",
    "save_name",
    "status",
    "num_infractions",
    "infractions",
    "scores",
    "meta",
    "town_name",
}
DETAIL_ROUTE_KEYS = {
    "index",
    "route_id",
    "scenario",
    "file",
    "tags",
    "repetition",
    "seed",
    "status",
    "scores",
    "route_xy",
    "trajectory",
    "infractions",
    "bench2drive",
    "interventions",
    "video",
    "duration_game",
    "duration_system",
    "error",
}


@pytest.fixture(scope="module")
def suite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("suite")
    (folder / "tiny_a.yaml").write_text(TINY_A)
    (folder / "tiny_b.yaml").write_text(TINY_B)
    (folder / "suite.yaml").write_text(SUITE)
    return folder


@pytest.fixture(scope="module")
def baseline(suite_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run of the autopilot over the 4 routes of the tiny suite."""
    out = tmp_path_factory.mktemp("baseline") / "results.json"
    evaluate(AUTOPILOT, "", suite_dir / "suite.yaml", out=out, progress=False)
    return out


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _config(tmp_path: Path, **config) -> str:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(config))
    return str(path)


# ------------------------------------------------------------------ layout
def test_results_json_matches_the_leaderboard_layout(baseline: Path) -> None:
    results = _load(baseline)
    assert set(results) == {
        "_checkpoint",
        "entry_status",
        "eligible",
        "sensors",
        "values",
        "labels",
    }
    assert (results["entry_status"], results["eligible"]) == ("Finished", True)
    assert results["sensors"] == ["carla_speedometer", "carla_gnss", "carla_imu"]
    assert len(results["values"]) == 15 and all(isinstance(v, str) for v in results["values"])
    checkpoint = results["_checkpoint"]
    assert checkpoint["progress"] == [4, 4]
    records = checkpoint["records"]
    assert [r["route_id"] for r in records] == [
        "RouteScenario_0_rep0",
        "RouteScenario_1_rep0",
        "RouteScenario_2_rep0",
        "RouteScenario_2_rep1",
    ]
    assert [r["scenario_name"] for r in records] == ["tiny_a#0", "tiny_a#1", "tiny_b", "tiny_b"]
    for i, record in enumerate(records):
        assert set(record) == RECORD_KEYS
        assert record["index"] == i
        assert tuple(record["infractions"]) == tuple(sorted(INFRACTION_KEYS))  # sort_keys=True
        assert set(record["scores"]) == {"score_route", "score_penalty", "score_composed"}
        assert set(record["meta"]) == {"route_length", "duration_game", "duration_system"}
        assert record["status"] in ("Perfect", "Completed")  # the autopilot finishes them
        assert record["scores"]["score_route"] == 100.0
        assert record["town_name"].startswith("lite-urban-2x2")
        assert record["save_name"].startswith(record["route_id"])
        assert record["weather_id"] == "ClearNoon"
    g = checkpoint["global_record"]
    assert set(g) == {
        "index",
        "route_id",
        "status",
        "infractions",
        "scores_mean",
        "scores_std_dev",
        "meta",
    }
    assert set(g["meta"]) == {"total_length", "duration_game", "duration_system", "exceptions"}
    assert g["meta"]["exceptions"] == []
    mean_ds = sum(r["scores"]["score_composed"] for r in records) / 4
    assert g["scores_mean"]["score_composed"] == pytest.approx(mean_ds, abs=1e-6)


def test_details_sidecar(baseline: Path) -> None:
    details = _load(details_path(baseline))
    assert set(details) == {"version", "agent", "suite", "backend", "seed", "summary", "routes"}
    assert (details["version"], details["backend"], details["seed"]) == (1, "lite", 0)
    summary = details["summary"]
    assert summary["routes"] == 4 and summary["progress"] == [4, 4]
    assert summary["success_rate"] == 100.0 and summary["route_completion"] == 100.0
    assert set(summary["by_tag"]) == {"smoke", "traffic", "urban"}
    assert summary["by_tag"]["traffic"]["routes"] == 2
    records = _load(baseline)["_checkpoint"]["records"]
    for route, record in zip(details["routes"], records, strict=True):
        assert set(route) == DETAIL_ROUTE_KEYS
        assert route["route_id"] == record["route_id"] and route["scores"] == record["scores"]
        traj = np.array(route["trajectory"])
        assert traj.shape[1] == 5 and np.allclose(np.diff(traj[:, 0]), 0.25)  # 4 Hz
        xy = np.array(route["route_xy"])
        spacing = np.linalg.norm(np.diff(xy, axis=0), axis=1)
        assert 1.5 < np.median(spacing) < 2.5 and xy.shape[1] == 2
        assert route["interventions"].keys() == {"standstill_steps"}
        assert route["video"] is None and route["error"] is None
        assert set(route["bench2drive"]) == {"success", "efficiency", "comfort"}
        assert route["bench2drive"]["comfort"]["segments"] > 0
    seeds = [r["seed"] for r in details["routes"]]
    assert len(set(seeds)) == 4  # repetitions get their own world seed


def test_route_seeds_do_not_depend_on_order() -> None:
    assert ev.route_seed(0, 2, 1) == ev.route_seed(0, 2, 1)
    assert len({ev.route_seed(0, r, k) for r in range(3) for k in range(3)}) == 9
    assert ev.route_seed(1, 0, 0) != ev.route_seed(0, 0, 0)


# ------------------------------------------------------------------ resume
def test_resume_after_kill_gives_the_same_files(
    baseline: Path, suite_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.json"
    load_agent_class(AUTOPILOT).setups = 0
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during the third route's setup
        evaluate(
            AUTOPILOT,
            _config(tmp_path, interrupt_at_setup=3),
            suite_dir / "suite.yaml",
            out=out,
            progress=False,
        )
    partial = _load(out)  # still valid JSON, the two finished routes in it
    assert partial["_checkpoint"]["progress"] == [2, 4]
    assert [r["route_id"] for r in partial["_checkpoint"]["records"]] == [
        "RouteScenario_0_rep0",
        "RouteScenario_1_rep0",
    ]
    assert partial["entry_status"] == "Started" and partial["_checkpoint"]["global_record"] == {}
    assert len(_load(details_path(out))["routes"]) == 2
    results = evaluate(
        AUTOPILOT, "", suite_dir / "suite.yaml", out=out, resume=True, progress=False
    )
    assert strip_wall_clock(results) == strip_wall_clock(_load(baseline))
    assert strip_wall_clock(_load(out)) == strip_wall_clock(_load(baseline))
    assert strip_wall_clock(_load(details_path(out))) == strip_wall_clock(
        _load(details_path(baseline))
    )


def test_resume_takes_the_shorter_file_and_refuses_another_suite(
    baseline: Path, suite_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.json"
    results = _load(baseline)
    results["_checkpoint"]["records"] = results["_checkpoint"]["records"][:3]
    out.write_text(json.dumps(results))
    details = _load(details_path(baseline))
    details["routes"] = details["routes"][:1]  # killed between the two writes
    details_path(out).write_text(json.dumps(details))
    state = ev.ResultsState(
        out,
        {k: details[k] for k in ("version", "agent", "suite", "backend", "seed")},
        ev.plan_routes(suite_dir / "suite.yaml"),
    )
    state.resume()
    assert state.done == 1
    with pytest.raises(EvaluationError, match="has suite=.*suite.yaml', this run has suite="):
        evaluate(AUTOPILOT, "", suite_dir / "tiny_b.yaml", out=out, resume=True, progress=False)
    out.write_text(baseline.read_text())
    details_path(out).write_text(details_path(baseline).read_text())
    with pytest.raises(
        EvaluationError,
        match="route 1 is 'RouteScenario_1_rep0', this suite's is 'RouteScenario_0_rep1'",
    ):
        evaluate(
            AUTOPILOT,
            "",
            suite_dir / "suite.yaml",
            out=out,
            repetitions=2,
            resume=True,
            progress=False,
        )


# ------------------------------------------------------------------ misbehaving agents
def _run_faulty(tmp_path: Path, suite_dir: Path, **config) -> tuple[dict, dict]:
    out = tmp_path / "results.json"
    results = evaluate(
        FAULTY, _config(tmp_path, **config), suite_dir / "tiny_a.yaml", out=out, progress=False
    )
    return results, _load(details_path(out))


def test_agent_exception_fails_the_route_and_the_evaluation_goes_on(
    tmp_path: Path, suite_dir: Path
) -> None:
    results, details = _run_faulty(tmp_path, suite_dir, mode="crash_after", steps=60)
    records = results["_checkpoint"]["records"]
    assert [r["status"] for r in records] == ["Failed - Agent crashed"] * 2
    assert results["entry_status"] == "Finished" and results["_checkpoint"]["progress"] == [2, 2]
    for record, route in zip(records, details["routes"], strict=True):
        assert 0.0 < record["scores"]["score_route"] < 100.0  # what it drove in 3 s
        assert record["meta"]["duration_game"] == pytest.approx(3.05)
        assert "tensor shape mismatch" in route["error"]
    assert results["_checkpoint"]["global_record"]["meta"]["exceptions"] == [
        ["RouteScenario_0_rep0", 0, "Failed - Agent crashed"],
        ["RouteScenario_1_rep0", 1, "Failed - Agent crashed"],
    ]


def test_wrong_control_type_is_an_agent_crash(tmp_path: Path, suite_dir: Path) -> None:
    results, details = _run_faulty(tmp_path, suite_dir, mode="wrong_type")
    assert results["_checkpoint"]["records"][0]["status"] == "Failed - Agent crashed"
    assert "run_step returned dict" in details["routes"][0]["error"]


def test_nan_control_is_a_safe_stop(tmp_path: Path, suite_dir: Path) -> None:
    results, details = _run_faulty(tmp_path, suite_dir, mode="nan", steps=30)
    assert [r["status"] for r in results["_checkpoint"]["records"]] == ["Perfect", "Perfect"]
    traj = np.array(details["routes"][0]["trajectory"])
    assert np.all(traj[traj[:, 0] <= 1.5, 4] == 0.0)  # braked while the controls were NaN


def test_setup_failure_is_recorded_and_the_evaluation_goes_on(
    tmp_path: Path, suite_dir: Path
) -> None:
    results, details = _run_faulty(tmp_path, suite_dir, mode="setup_error")
    records = results["_checkpoint"]["records"]
    assert [r["status"] for r in records] == ["Failed - Agent couldn't be set up"] * 2
    assert records[0]["scores"]["score_composed"] == 0.0
    assert results["entry_status"] == "Finished" and results["sensors"] == []
    assert "cannot load the model weights" in details["routes"][0]["error"]


@pytest.mark.parametrize(
    ("mode", "rule"),
    [
        ("nine_cameras", "too many sensor.camera.rgb sensors: 9 > the Leaderboard's limit of 8"),
        ("far_sensor", "mount radius 4.00 m exceeds the Leaderboard's 3.0 m"),
    ],
)
def test_invalid_sensors_reject_the_entry(
    tmp_path: Path, suite_dir: Path, mode: str, rule: str, caplog: pytest.LogCaptureFixture
) -> None:
    results, details = _run_faulty(tmp_path, suite_dir, mode=mode)
    records = results["_checkpoint"]["records"]
    assert [r["status"] for r in records] == ["Failed - Agent's sensors were invalid"]
    assert (results["entry_status"], results["eligible"]) == ("Rejected", False)
    assert results["_checkpoint"]["progress"] == [1, 2]  # the Leaderboard stops there
    assert results["_checkpoint"]["global_record"] == {} and results["sensors"] == []
    assert rule in details["routes"][0]["error"]
    assert rule in caplog.text


# ------------------------------------------------------------------ files
def test_atomic_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "results.json"
    ev.write_json_atomic(path, {"old": True})

    def broken_dump(data, fp, **kwargs) -> None:
        fp.write('{"new": tr')
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        ev.write_json_atomic(path, {"new": True})
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left


def test_strip_wall_clock() -> None:
    data = {
        "meta": {"duration_system": 3.2, "duration_game": 1.0},
        "routes": [{"duration_system": 1}],
    }
    assert strip_wall_clock(data) == {
        "meta": {"duration_system": 0, "duration_game": 1.0},
        "routes": [{"duration_system": 0}],
    }


class FakeRecorder:
    instances: list[FakeRecorder] = []

    def __init__(self, out_path: Path, fps: float = 10.0) -> None:
        self.out_path, self.fps, self.calls = out_path, fps, []
        FakeRecorder.instances.append(self)

    def add(self, sim, control, planned_xy_ego, events, caption: str) -> None:
        self.calls.append((planned_xy_ego, caption))

    def close(self) -> Path:
        return self.out_path


def test_record_hands_every_tick_to_the_recorder(
    tmp_path: Path, suite_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = type(sys)("sim.report.recorder")
    module.RouteRecorder = FakeRecorder  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sim.report.recorder", module)
    FakeRecorder.instances = []
    out = tmp_path / "results.json"
    evaluate(
        AUTOPILOT,
        "",
        suite_dir / "tiny_b.yaml",
        out=out,
        record=tmp_path / "videos",
        progress=False,
    )
    (rec,) = FakeRecorder.instances
    route = _load(details_path(out))["routes"][0]
    assert route["video"] == str(rec.out_path)
    assert rec.out_path.parent == tmp_path / "videos" and rec.out_path.suffix == ".mp4"
    assert len(rec.calls) == round(route["duration_game"] / 0.05)
    assert rec.calls[0][0] is None and rec.calls[-1][0].shape == (8, 2)
    assert "RouteScenario_0_rep0" in rec.calls[-1][1]


def test_record_without_the_recorder_module_fails_before_writing(
    tmp_path: Path, suite_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sim.report.recorder", None)
    out = tmp_path / "results.json"
    with pytest.raises(EvaluationError, match="RouteRecorder"):
        evaluate(AUTOPILOT, "", suite_dir / "tiny_b.yaml", out=out, record=tmp_path, progress=False)
    assert not out.exists()


# ------------------------------------------------------------------ agent loading
def test_load_agent_class_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_agent_class(AUTOPILOT).__name__ == "AutopilotAgent"
    with pytest.raises(AgentLoadError, match="does not exist"):
        load_agent_class(str(tmp_path / "missing_agent.py"))
    (tmp_path / "no_entry_agent.py").write_text("class A: pass\n")
    with pytest.raises(AgentLoadError, match="defines no get_entry_point"):
        load_agent_class(str(tmp_path / "no_entry_agent.py"))
    (tmp_path / "not_class_agent.py").write_text("A = 3\ndef get_entry_point():\n    return 'A'\n")
    with pytest.raises(AgentLoadError, match="is not a class"):
        load_agent_class(str(tmp_path / "not_class_agent.py"))
    (tmp_path / "typo_agent.py").write_text("def get_entry_point():\n    return 'Agnet'\n")
    with pytest.raises(AgentLoadError, match="returned 'Agnet', not defined"):
        load_agent_class(str(tmp_path / "typo_agent.py"))
    (tmp_path / "broken_agent.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(AgentLoadError, match="importing .*broken_agent.py failed"):
        load_agent_class(str(tmp_path / "broken_agent.py"))
    monkeypatch.setattr(agent_loading, "EXPERT_FILE", tmp_path / "agent" / "expert.py")
    with pytest.raises(AgentLoadError, match="agent 'expert' resolves to .*expert.py"):
        load_agent_class("expert")


def test_leaderboard_base_import_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "leaderboard" or m.startswith("leaderboard.")]:
        monkeypatch.delitem(sys.modules, name)
    unrelated = tmp_path / "unrelated"
    (unrelated / "leaderboard").mkdir(parents=True)
    (unrelated / "leaderboard" / "__init__.py").write_text("REDIS = True\n")  # PyPI's namesake
    monkeypatch.syspath_prepend(str(unrelated))
    assert agent_loading.import_leaderboard_base() is None
    monkeypatch.delitem(sys.modules, "leaderboard")
    real = tmp_path / "real"
    pkg = real / "leaderboard" / "autoagents"
    pkg.mkdir(parents=True)
    (real / "leaderboard" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "autonomous_agent.py").write_text(
        "from enum import Enum\nclass Track(Enum):\n    SENSORS = 'SENSORS'\n"
        "class AutonomousAgent:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(real))
    found = agent_loading.import_leaderboard_base()
    assert found is not None and [c.__name__ for c in found] == ["AutonomousAgent", "Track"]
    for name in [m for m in sys.modules if m == "leaderboard" or m.startswith("leaderboard.")]:
        monkeypatch.delitem(sys.modules, name)


def test_fallback_base_keeps_the_plan_it_is_given() -> None:
    agent = agent_loading.LiteAutonomousAgent("localhost", 2000)
    assert agent_loading.track_name(agent) == "SENSORS"
    agent.set_global_plan([({"lat": 1.0, "lon": 2.0, "z": 0.0}, 4)], [("transform", 4)])
    assert agent._global_plan == [({"lat": 1.0, "lon": 2.0, "z": 0.0}, 4)]
    assert agent._global_plan_world_coord == [("transform", 4)]


# ------------------------------------------------------------------ CLI
def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """vlmdrive"""

    register(app)
    return app


def test_cli_bad_suite_exits_2_without_results(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nweather:\n  preset: Sunny\n")
    out = tmp_path / "results.json"
    result = CliRunner().invoke(
        _app(), ["eval", "--agent", AUTOPILOT, "--suite", str(bad), "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 2, result.output
    assert f"{bad}:3:3: weather.preset: unknown weather preset 'Sunny'" in result.output
    assert not out.exists() and not details_path(out).exists()


def test_cli_runs_and_prints_the_summary(tmp_path: Path, suite_dir: Path) -> None:
    out = tmp_path / "results.json"
    args = ["eval", "--agent", AUTOPILOT, "--suite", str(suite_dir / "tiny_b.yaml")]
    result = CliRunner().invoke(_app(), [*args, "--out", str(out)])  # with the progress bar
    assert result.exit_code == 0, result.output
    assert "Leaderboard evaluation (Finished)" in result.output and "traffic (1)" in result.output
    assert _load(out)["_checkpoint"]["progress"] == [1, 1]
    result = CliRunner().invoke(
        _app(), ["eval", "--agent", str(tmp_path / "nope.py"), "--suite", str(suite_dir)]
    )
    assert result.exit_code == 2 and "does not exist" in result.output


# ------------------------------------------------------------------ controls and plans
def test_as_control_accepts_control_likes_and_refuses_the_rest() -> None:
    from sim.control import VehicleControl

    ours = VehicleControl(throttle=0.3)
    assert ev.as_control(ours) is ours
    carla = pytest.importorskip("carla")
    assert ev.as_control(carla.VehicleControl(throttle=2.0, steer=-0.5)) == VehicleControl(
        1.0, -0.5
    )
    assert ev.as_control(carla.VehicleControl(throttle=float("nan"))).is_safe_stop
    for bad in (None, {"throttle": 1.0}, (1.0, 0.0, 0.0)):
        with pytest.raises(TypeError, match="expected a VehicleControl"):
            ev.as_control(bad)


def test_an_agent_on_carlas_own_base_gets_the_dense_route(
    monkeypatch: pytest.MonkeyPatch, lite_small_sim
) -> None:
    carla = pytest.importorskip("carla")

    class CarlaBase:
        pass

    monkeypatch.setattr(agent_loading, "_LEADERBOARD", (CarlaBase, agent_loading.LiteTrack))
    sim = lite_small_sim
    gps, world = ev.agent_global_plan(CarlaBase(), sim)
    assert len(gps) == len(world) == len(sim.route.points)  # it downsamples by itself
    assert isinstance(world[0][0], carla.Transform) and set(gps[0][0]) == {"lat", "lon", "z"}
    ours = ev.agent_global_plan(agent_loading.LiteAutonomousAgent("localhost", 2000), sim)
    assert [t for t, _ in ours[1]] == [t for t, _ in sim.global_plan()[1]]
