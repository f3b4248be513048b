"""The Leaderboard agent (model + safety guard + PID) in the Leaderboard lifecycle on the
embedded simulator, and fault injection: NaN / inf plans, a model that raises, a camera
frame missing or repeated, a VLM that raises or overruns its budget, sensor noise, a closed
lane with no way round. No exception may escape `run_step`; the fallback must engage on
the tick of the fault and the reason must be recorded."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import carla
import numpy as np
import pytest
import yaml
from test_training import config, write_dataset

from agent.data.schema import INTENTS
from agent.leaderboard_agent import VLMDriveAgent, get_entry_point, load_agent_config
from agent.reasoner.runtime import ReasonerRuntime
from agent.reasoner.types import Reasoning
from agent.safety.decision import ReasonCode
from agent.training.config import TrainConfig
from agent.training.trainer import Trainer
from scenarios.compile import compile_scenario
from scenarios.loader import ScenarioError, load_scenario
from scenarios.sampler import sample
from sim.control import VehicleControl
from sim.data_provider import DataProvider
from sim.evaluate import agent_global_plan
from sim.lite.world import LiteSimulator
from sim.sensors import parse_sensor_specs

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios/library/eval/construction_left_fog.yaml"
FROZEN_TICKS = 4  # the guard's frozen-camera streak in these tests


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("lb_agent")
    write_dataset(tmp / "data")
    Trainer(TrainConfig.model_validate(config(tmp, vlm=2, frozen=2)), progress=False).run()
    return tmp / "ckpt"


def agent_config(tmp_path: Path, checkpoint: Path, **extra) -> Path:
    cfg = {
        "checkpoint": str(checkpoint),
        "vlm_mode": "distilled",
        "safety": {"enabled": True, "guard": {"frozen_camera_ticks": FROZEN_TICKS}},
        **extra,
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Route:
    """One route of the lite simulator driving a VLMDriveAgent tick by tick."""

    def __init__(self, agent_cfg: Path, plan_first: bool = True) -> None:
        self.sim = LiteSimulator()
        spec = compile_scenario(sample(load_scenario(SCENARIO), n=1)[0], str(SCENARIO))
        self.sim.reset(spec, 0)
        self.agent = VLMDriveAgent("localhost", 2000, False)
        if plan_first:  # the Leaderboard's order
            self.agent.set_global_plan(*agent_global_plan(self.agent, self.sim))
            self.agent.setup(str(agent_cfg))
        else:
            self.agent.setup(str(agent_cfg))
            self.agent.set_global_plan(*agent_global_plan(self.agent, self.sim))
        self.sim.setup_sensors(self.agent.sensors())
        DataProvider.set_simulator(None)  # no privileged access for the agent
        self.control = VehicleControl()

    def tick(self, corrupt=None) -> VehicleControl:
        data = self.sim.tick(self.control)
        if corrupt is not None:
            data = corrupt(data)
        control = self.agent.run_step(data, self.sim.time_s)
        assert isinstance(control, carla.VehicleControl)
        self.control = VehicleControl.sanitized(control)
        return self.control

    def close(self) -> None:
        self.agent.destroy()
        self.sim.close()


@pytest.fixture
def route(checkpoint: Path, tmp_path: Path):
    r = Route(agent_config(tmp_path, checkpoint))
    yield r
    r.close()


def reason(route: Route) -> str:
    assert route.agent.last_decision is not None
    return route.agent.last_decision.reason.value


def assert_emergency_stop(route: Route, control: VehicleControl) -> None:
    assert route.agent.last_decision is not None
    assert route.agent.last_decision.fallback == "emergency_stop"
    assert np.allclose(route.agent.planned_trajectory, 0.0)
    assert control.throttle == 0.0 and control.brake == 1.0


def test_entry_point_sensors_and_carla_control(route: Route) -> None:
    assert get_entry_point() == "VLMDriveAgent"
    parse_sensor_specs(route.agent.sensors())  # within the Leaderboard's limits
    for _ in range(5):
        route.tick()
    tally = route.agent.interventions
    assert tally["ticks"] == 5 and 0 <= tally["interventions"] <= 5
    assert route.agent.planned_trajectory.shape == (8, 2)


def test_setup_before_the_global_plan_also_works(checkpoint: Path, tmp_path: Path) -> None:
    r = Route(agent_config(tmp_path, checkpoint), plan_first=False)
    try:
        r.tick()
        assert r.agent.driver.route.remaining > 0
    finally:
        r.close()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (
            "safety:\n  guard:\n    ttc_threshold: 1.0\n",
            r"bad\.yaml:4:5: safety\.guard\.ttc_threshold",
        ),
        # vlm_latency_s is a property of the async runtime only
        (
            "vlm_mode: distilled\nvlm_latency_s: 0.1\n",
            r"bad\.yaml:3:\d+: vlm_latency_s: .*'async' only",
        ),
    ],
)
def test_bad_agent_config_names_file_line_and_field(
    checkpoint: Path, tmp_path: Path, body: str, error: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"checkpoint: {checkpoint}\n{body}")
    agent = VLMDriveAgent("localhost", 2000, False)
    with pytest.raises(ScenarioError, match=error):
        agent.setup(str(bad))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_plan_stops_on_the_same_tick(route: Route, value: float) -> None:
    route.tick()
    infer = route.agent.driver.infer

    def broken(*args, **kwargs):
        step = infer(*args, **kwargs)
        bad = step.trajectory.copy()
        bad[3] = value
        return dataclasses.replace(step, trajectory=bad)

    route.agent.driver.infer = broken
    control = route.tick()
    assert reason(route) == "NONFINITE_PLAN"
    assert_emergency_stop(route, control)
    assert route.agent.interventions["NONFINITE_PLAN"] == 1


def test_a_model_that_raises_is_stopped_not_propagated(route: Route) -> None:
    route.tick()

    def raising(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (injected)")

    route.agent.driver.infer = raising
    control = route.tick()
    assert reason(route) == "MODEL_ERROR"
    assert_emergency_stop(route, control)
    assert "injected" in (route.agent.last_error or "")


def test_missing_camera_frames_stop_every_tick(route: Route) -> None:
    route.tick()

    def drop_camera(data):
        return {k: v for k, v in data.items() if k != "rgb_front"}

    for _ in range(3):
        control = route.tick(drop_camera)
        assert reason(route) == "CAMERA_MISSING"
        assert_emergency_stop(route, control)
    assert route.agent.interventions["CAMERA_MISSING"] == 3
    route.tick()  # the camera is back: the frame digest streak restarts
    assert reason(route) != "CAMERA_MISSING"


def test_a_repeated_camera_frame_is_caught_after_the_streak(route: Route) -> None:
    first = route.sim.tick(route.control)
    frozen = first["rgb_front"]

    def freeze(data):  # the same image every tick while the car moves at 5 m/s
        data = dict(data)
        data["rgb_front"] = (data["rgb_front"][0], frozen[1])
        data["speedometer"] = (data["speedometer"][0], {"speed": 5.0})
        return data

    reasons = [None] * FROZEN_TICKS
    for k in range(FROZEN_TICKS):
        route.tick(freeze)
        reasons[k] = reason(route)
    # The stored frame counts as the first of the streak only once the agent sees it.
    assert "CAMERA_FROZEN" not in reasons[: FROZEN_TICKS - 1]
    assert reasons[-1] == "CAMERA_FROZEN"
    assert route.agent.last_decision.fallback == "emergency_stop"


class _FaultyVLM:
    """A reasoning model that raises, or hangs until the test releases it (at most
    `HANG_S`): the fault under test. `returned` is set once a hung call has returned."""

    HANG_S = 600.0  # [s] a run_step that waited for the VLM would wait this long

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.release = threading.Event()
        self.returned = threading.Event()

    embedding_dim = 128

    def reason(self, image_bgr: np.ndarray, frame: int) -> Reasoning:
        if self.mode == "raise":
            raise RuntimeError("VLM exploded (injected)")
        self.release.wait(self.HANG_S)
        self.returned.set()
        raise RuntimeError("VLM released (injected)")


def _with_faulty_vlm(route: Route, mode: str) -> _FaultyVLM:
    route.agent.driver.config = route.agent.driver.config.model_copy(update={"vlm_mode": "sync"})
    vlm = _FaultyVLM(mode)
    route.agent.driver.runtime = ReasonerRuntime(
        vlm, "sync" if mode == "raise" else "async", rate_hz=20.0
    )
    return vlm


def test_a_vlm_that_raises_falls_back_to_the_rules(route: Route) -> None:
    _with_faulty_vlm(route, "raise")
    route.tick()
    assert "VLM_ERROR" in [r.value for r in route.agent.last_decision.reasons]
    assert route.agent.last_decision.fallback in ("rules", "emergency_stop")
    assert route.agent.interventions["VLM_ERROR"] >= 1


def test_a_vlm_past_its_budget_times_out(route: Route) -> None:
    vlm = _with_faulty_vlm(route, "hang")
    budget_s = route.agent.guard.config.vlm_timeout_s
    seen = []
    for _ in range(int(budget_s / 0.05) + 3):
        route.tick()
        seen.append([r.value for r in route.agent.last_decision.reasons])
    # Every tick ran while the VLM's one call still hung (no wall-clock bound: a loaded
    # CPU only makes the ticks slower, never lets the hung call return).
    assert not vlm.returned.is_set(), "run_step waited for the VLM"
    vlm.release.set()
    assert not any("VLM_TIMEOUT" in r for r in seen[:10])  # young route: still in budget
    assert "VLM_TIMEOUT" in seen[-1]
    route.agent.driver.runtime.close(join_timeout_s=0.0)
    route.agent.driver.runtime = None


def test_sensor_noise_does_not_crash_or_flood_interventions(route: Route) -> None:
    rng = np.random.default_rng(0)

    def noisy(data):
        data = dict(data)
        frame, image = data["rgb_front"]
        noise = rng.normal(0, 8, image.shape)
        data["rgb_front"] = (frame, np.clip(image + noise, 0, 255).astype(np.uint8))
        gnss = np.asarray(data["gps"][1]) + rng.normal(0, 2e-6, 3)  # ~0.2 m
        data["gps"] = (data["gps"][0], gnss)
        return data

    for _ in range(10):
        route.tick(noisy)
    tally = route.agent.interventions
    assert tally["ticks"] == 10
    emergency = sum(tally.get(c, 0) for c in ("CAMERA_FROZEN", "CAMERA_MISSING", "GUARD_ERROR"))
    assert emergency == 0


def test_a_closed_lane_with_no_way_round_stops_short(route: Route) -> None:
    """The perception head sees a wall of static objects across the whole road 5-7 m ahead
    (within the guard's hand-over distance from standstill) while the planner wants to
    drive through: the guard stops before it."""
    route.tick()
    infer = route.agent.driver.infer
    grid = route.agent.driver.model.cfg.perception
    row = int((6.0 - grid.bev_x_m[0]) / grid.bev_cell_m)

    def wall(*args, **kwargs):
        step = infer(*args, **kwargs)
        bev = np.zeros_like(step.bev_probs)
        bev[grid.bev_classes.index("static"), row, :] = 1.0
        straight = np.stack([np.arange(1, 9) * 4.0, np.zeros(8)], axis=1)  # 8 m/s on
        return dataclasses.replace(step, bev_probs=bev, trajectory=straight, confidence=0.9)

    route.agent.driver.infer = wall
    route.tick()
    decision = route.agent.last_decision
    assert decision.intervened and decision.fallback in ("rules", "emergency_stop")
    assert ReasonCode.PATH_BLOCKED in decision.reasons
    assert np.abs(decision.trajectory[:, 0]).max() < 5.0  # never reaches the wall


def test_guard_off_lets_the_planner_drive(checkpoint: Path, tmp_path: Path) -> None:
    cfg = agent_config(tmp_path, checkpoint, safety={"enabled": False})
    r = Route(cfg)
    try:
        for _ in range(5):
            r.tick()
        assert r.agent.guard is None
        assert r.agent.interventions == {"ticks": 5, "interventions": 0}
    finally:
        r.close()


def test_the_guard_reads_the_reasonings_intent(route: Route) -> None:
    seen = []
    check = route.agent.guard.check
    route.agent.guard.check = lambda inputs: seen.append(inputs) or check(inputs)
    route.tick()
    intent = seen[-1].perception.intent
    assert intent is not None and intent.shape == (len(INTENTS),)
    assert np.isclose(intent.sum(), 1.0, atol=1e-4)
    assert INTENTS[int(np.argmax(intent))] == route.agent.driver.intent


@pytest.mark.parametrize(
    "config", sorted((Path(__file__).parents[2] / "configs").glob("agent*.yaml")), ids=str
)
def test_every_agent_config_in_the_repository_loads(config: Path) -> None:
    """The shipped agent config and the README's measured variants stay valid (unknown keys
    are errors) and name a checkpoint of this repository, or one a make target writes under
    runs/ (`make train`: runs/round1, `make finetune`: runs/finetune-short)."""
    cfg = load_agent_config(str(config))
    repo = config.parents[1]
    if Path(cfg.checkpoint).parts[0] == "runs":
        assert str(cfg.checkpoint) in (repo / "Makefile").read_text()
        return
    assert (repo / cfg.checkpoint / "model.safetensors").is_file()
