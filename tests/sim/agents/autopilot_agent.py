"""A privileged Leaderboard test agent: drives with the simulator's RouteFollower, reached
through DataProvider like a CARLA expert reaches CarlaDataProvider.

Config (optional JSON file): {"interrupt_at_setup": n} raises KeyboardInterrupt in the n-th
`setup()` of this process (a simulated Ctrl-C / kill); reset `AutopilotAgent.setups` first.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sim.agent_loading import AutonomousAgent, Track
from sim.data_provider import DataProvider
from sim.lite.autopilot import RouteFollower
from sim.sensors import GNSS, IMU, SPEEDOMETER


def get_entry_point() -> str:
    return "AutopilotAgent"


class AutopilotAgent(AutonomousAgent):
    setups = 0  # setup() calls in this process

    def setup(self, path_to_conf_file: str) -> None:
        self.track = Track.SENSORS
        config = json.loads(Path(path_to_conf_file).read_text()) if path_to_conf_file else {}
        AutopilotAgent.setups += 1
        if config.get("interrupt_at_setup") == AutopilotAgent.setups:
            raise KeyboardInterrupt
        self.driver = RouteFollower(DataProvider.simulator())
        self.interventions = {"standstill_steps": 0}
        self.planned_trajectory: np.ndarray | None = None
        self.plan_points = len(self._global_plan_world_coord or [])

    def sensors(self) -> list[dict]:
        return [
            {"type": SPEEDOMETER, "id": "speed", "reading_frequency": 20},
            {"type": GNSS, "id": "gps", "x": 0.0, "y": 0.0, "z": 0.0},
            {
                "type": IMU,
                "id": "imu",
                "x": 0.0,
                "y": 0.0,
                "z": 0.0,
                "roll": 0.0,
                "pitch": 0.0,
                "yaw": 0.0,
            },
        ]

    def run_step(self, input_data: dict, timestamp: float):
        speed = input_data["speed"][1]["speed"]
        if speed < 0.1:
            self.interventions["standstill_steps"] += 1
        self.planned_trajectory = np.stack(
            [np.arange(1, 9) * max(speed, 1.0) * 0.5, np.zeros(8)], 1
        )
        return self.driver()
