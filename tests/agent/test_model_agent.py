"""The minimal model agent in the Leaderboard lifecycle on the embedded simulator, with a
tiny checkpoint trained in the test: every VLM mode drives, returns controls and a
planned trajectory, and reads only Leaderboard sensor data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_training import config, write_dataset

from agent.model_agent import ModelAgent
from agent.training.config import TrainConfig
from agent.training.trainer import Trainer
from scenarios.compile import compile_scenario
from scenarios.loader import ScenarioError, load_scenario
from scenarios.sampler import sample
from sim.control import VehicleControl
from sim.data_provider import DataProvider
from sim.evaluate import agent_global_plan
from sim.lite.world import LiteSimulator

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios/library/eval/construction_left_fog.yaml"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("agent")
    write_dataset(tmp / "data")
    Trainer(TrainConfig.model_validate(config(tmp, vlm=2, frozen=2)), progress=False).run()
    return tmp / "ckpt"


def drive(
    checkpoint: Path,
    tmp_path: Path,
    mode: str,
    ticks: int = 30,
    worker: str = "process",
    trace: list | None = None,
    **extra,
) -> ModelAgent:
    """Drive the model agent `ticks` ticks on SCENARIO; `trace` collects each tick's plan."""
    sim = LiteSimulator()
    sim.reset(compile_scenario(sample(load_scenario(SCENARIO), n=1)[0], str(SCENARIO)), 0)
    agent_cfg = tmp_path / "agent.yaml"
    agent_cfg.write_text(
        yaml.safe_dump(
            {"checkpoint": str(checkpoint), "vlm_mode": mode, "vlm_worker": worker, **extra}
        )
    )
    agent = ModelAgent("localhost", 2000, False)
    agent.set_global_plan(*agent_global_plan(agent, sim))
    agent.setup(str(agent_cfg))
    sim.setup_sensors(agent.sensors())
    DataProvider.set_simulator(None)  # the model agent must not need privileged access
    control = VehicleControl()
    try:
        for _ in range(ticks):
            data = sim.tick(control)
            control = agent.run_step(data, sim.time_s)
            if trace is not None:
                trace.append((agent.planned_trajectory.copy(), agent.driver.reasoning_text))
            assert isinstance(control, VehicleControl)
            assert 0 <= control.throttle <= 1 and -1 <= control.steer <= 1
    finally:
        agent.destroy()
    return agent


@pytest.mark.parametrize(
    ("mode", "worker"),
    [("off", "process"), ("distilled", "process"), ("async", "process"), ("sync", "process")]
    + [("async", "thread"), ("sync", "thread")],
)
def test_every_vlm_mode_drives(checkpoint: Path, tmp_path: Path, mode: str, worker: str) -> None:
    agent = drive(checkpoint, tmp_path, mode, worker=worker)
    assert agent.planned_trajectory is not None
    assert agent.planned_trajectory.shape == (8, 2)
    assert np.isfinite(agent.planned_trajectory).all()
    assert agent.driver.candidates is not None and agent.driver.candidates.shape[1:] == (8, 2)
    if mode == "sync":  # reasoned at least once at 2 Hz over 1.5 s of game time
        assert agent.reasoning_text


def test_async_vlm_with_game_time_latency_drives_the_same_twice(
    checkpoint: Path, tmp_path: Path
) -> None:
    """`vlm_latency_s`: the reasoning lands on a tick fixed by game time, so two drives
    (a busy machine or an idle one) plan the same trajectories tick by tick."""
    runs: list[list] = [[], []]
    for trace in runs:
        drive(checkpoint, tmp_path, "async", 24, "thread", trace, vlm_latency_s=0.1)
    for (plan_a, text_a), (plan_b, text_b) in zip(*runs, strict=True):
        np.testing.assert_array_equal(plan_a, plan_b)
        assert text_a == text_b
    texts = [text for _, text in runs[0]]
    # 2 Hz from tick 0, 0.1 s (2 ticks) latency: nothing before tick 2, then a reasoning.
    assert texts[:2] == ["", ""] and texts[2] and texts[2] == texts[11]


def test_bad_agent_config_names_the_field(checkpoint: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"checkpoint: {checkpoint}\nvlm_mode: turbo\n")
    agent = ModelAgent("localhost", 2000, False)
    with pytest.raises(ScenarioError, match="bad.yaml:2:1: vlm_mode"):
        agent.setup(str(bad))


SHORT_ROUTE = """
name: short_straight
seed: 2
variations: 1
map:
  town: {road_type: urban, lanes_per_direction: 2, curvature: 0.0, block_m: 160}
route: {length_m: 40}
weather: {preset: WetNoon}
traffic: {vehicles: 0, pedestrians: 0, speed_limit_kmh: 30}
"""


def test_dagger_collection_lets_the_model_drive_and_the_expert_label(
    checkpoint: Path, tmp_path: Path
) -> None:
    """`collect --dagger`: with beta 1 the model agent drives every stored frame (so the ego
    goes where the model takes it, not where the expert would), every frame keeps the
    expert's label; with beta 0 the agent runs but never drives: the plain expert data."""
    from agent.data.collect import collect
    from agent.data.dataset import load_shards
    from agent.data.schema import FIELDS

    suite = tmp_path / "short.yaml"
    suite.write_text(SHORT_ROUTE)
    agent_cfg = tmp_path / "agent.yaml"
    agent_cfg.write_text(
        yaml.safe_dump(
            {"checkpoint": str(checkpoint), "vlm_mode": "distilled", "safety": {"enabled": False}}
        )
    )
    expert = collect(suite, 1, tmp_path / "expert", seed=1, progress=False)
    on_policy = collect(
        suite, 1, tmp_path / "model", seed=1, dagger=agent_cfg, dagger_beta=1.0, progress=False
    )
    never = collect(
        suite, 1, tmp_path / "never", seed=1, dagger=agent_cfg, dagger_beta=0.0, progress=False
    )
    assert on_policy.counts["policy_frames"] == on_policy.frames > 0
    assert never.counts["policy_frames"] == 0 and expert.counts["policy_frames"] == 0
    a, b, c = (load_shards(tmp_path / d) for d in ("expert", "model", "never"))
    for name in FIELDS:
        np.testing.assert_array_equal(a[name], c[name], err_msg=name)
    n = min(len(a["speed_mps"]), len(b["speed_mps"]))
    assert not np.allclose(a["speed_mps"][:n], b["speed_mps"][:n])  # the model drove
    assert np.isfinite(b["trajectory"]).all()
    index = json.loads((tmp_path / "model" / "index.json").read_text())
    assert index["args"]["dagger"] == str(agent_cfg)
    assert "--dagger" in (tmp_path / "model" / "README.md").read_text()


def test_process_worker_serves_the_vlm_from_a_child_and_destroy_ends_it(
    checkpoint: Path, tmp_path: Path
) -> None:
    import os

    from agent.model_agent import ModelAgentConfig, ModelDriver
    from agent.reasoner.process import ProcessReasoner

    driver = ModelDriver(
        ModelAgentConfig(checkpoint=checkpoint, vlm_mode="async", vlm_worker="process")
    )
    child = driver.vlm_process
    assert isinstance(child, ProcessReasoner) and driver.runtime is not None
    assert driver.runtime.model is child and child.pid not in (None, os.getpid())
    pid = child.pid
    driver.close()
    assert not child.alive
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # type: ignore[arg-type]


def test_missing_vlm_directory_is_named_before_a_child_starts(
    checkpoint: Path, tmp_path: Path
) -> None:
    from agent.model_agent import ModelAgentConfig, ModelDriver

    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="vlm_path: .*nowhere"):
        ModelDriver(ModelAgentConfig(checkpoint=checkpoint, vlm_mode="async", vlm_path=missing))
