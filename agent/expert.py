"""The expert: the rule set with the simulator's ground truth, as a Leaderboard agent.

It is what `vlmdrive eval --agent expert` runs, what drives to collect demonstrations and
the reference score. Like CARLA's privileged experts (PDM-Lite reads `CarlaDataProvider`),
it reads the simulator through `sim.data_provider.DataProvider`, which the evaluation
harness sets for each route; its sensors are only the cheap ones (no camera) unless the
agent config asks for cameras (data collection).

Agent config (YAML, optional): `rules: {<RulesConfig field>: value}`, `cameras: bool`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from agent.rules import ObstacleView, Plan, RulePlanner, RulesConfig, view_from_ground_truth
from sim.agent_loading import AutonomousAgent, Track
from sim.control import VehicleControl
from sim.data_provider import DataProvider
from sim.ground_truth import GroundTruth
from sim.sensors import default_sensor_suite
from sim.tracking import WaypointTracker


def get_entry_point() -> str:
    return "ExpertAgent"


@dataclass(frozen=True)
class ExpertObservation:
    """One tick as the expert sees it: the ground truth, its obstacle view and its plan."""

    gt: GroundTruth
    view: ObstacleView
    plan: Plan


class ExpertDriver:
    """Ground truth -> plan -> control, for one route of one simulator."""

    def __init__(self, config: RulesConfig | None = None) -> None:
        self.planner = RulePlanner(config or RulesConfig())
        self.tracker = WaypointTracker()
        self.last_seen: ExpertObservation | None = None  # the last tick's observation

    @property
    def last_plan(self) -> Plan | None:
        return None if self.last_seen is None else self.last_seen.plan

    def reset(self) -> None:
        self.planner.reset()
        self.tracker.reset()
        self.last_seen = None

    def observe(self, simulator) -> ExpertObservation:
        """Plan this tick from `simulator`'s ground truth (once per tick: the planner keeps
        state between ticks)."""
        gt = simulator.ground_truth()
        view = view_from_ground_truth(
            gt, simulator.route, simulator.lane_layout(), simulator.speed_limit_at
        )
        self.last_seen = ExpertObservation(gt, view, self.planner.plan(view, gt.time_s))
        return self.last_seen

    def step(self, simulator) -> VehicleControl:
        seen = self.observe(simulator)
        return self.tracker.control(seen.plan.trajectory, seen.view.speed_mps)


class ExpertAgent(AutonomousAgent):
    """Leaderboard agent with privileged access (see the module docstring)."""

    def setup(self, path_to_conf_file: str) -> None:
        self.track = Track.SENSORS
        config: dict = {}
        if path_to_conf_file and Path(path_to_conf_file).is_file():
            loaded = yaml.safe_load(Path(path_to_conf_file).read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{path_to_conf_file}: the expert config must be a mapping")
            unknown = sorted(set(loaded) - {"rules", "cameras"})
            if unknown:
                raise ValueError(
                    f"{path_to_conf_file}: unknown key(s) {unknown}; valid: cameras, rules"
                )
            config = loaded
        self._cameras = bool(config.get("cameras", False))
        self.driver = ExpertDriver(RulesConfig.from_dict(config.get("rules") or {}))
        self.planned_trajectory: np.ndarray | None = None

    def sensors(self) -> list[dict]:
        suite = default_sensor_suite()
        if self._cameras:
            return suite
        return [s for s in suite if s["type"] != "sensor.camera.rgb"]

    def run_step(self, input_data: dict, timestamp: float):
        control = self.driver.step(DataProvider.simulator())
        plan = self.driver.last_plan
        self.planned_trajectory = None if plan is None else plan.trajectory
        return control

    def destroy(self) -> None:
        self.driver.reset()
