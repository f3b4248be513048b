"""A Leaderboard test agent that misbehaves on purpose; the JSON config's "mode" says how:
crash_after (raise in run_step after `steps` steps), nan (NaN controls for `steps` steps,
then drive), wrong_type (run_step returns a dict), nine_cameras / far_sensor (sensor
suites the Leaderboard rejects), setup_error (setup raises)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from sim.agent_loading import AutonomousAgent
from sim.data_provider import DataProvider
from sim.lite.autopilot import RouteFollower
from sim.sensors import SPEEDOMETER, default_front_camera


def get_entry_point() -> str:
    return "FaultyAgent"


@dataclass
class NanControl:
    """Looks like a carla.VehicleControl, holds NaN."""

    throttle: float = math.nan
    steer: float = math.nan
    brake: float = math.nan


class FaultyAgent(AutonomousAgent):
    def setup(self, path_to_conf_file: str) -> None:
        config = json.loads(Path(path_to_conf_file).read_text())
        self.mode = config["mode"]
        self.limit = int(config.get("steps", 0))
        if self.mode == "setup_error":
            raise RuntimeError("cannot load the model weights")
        self.driver = RouteFollower(DataProvider.simulator())
        self.steps = 0

    def sensors(self) -> list[dict]:
        if self.mode == "nine_cameras":
            return [{**default_front_camera(32, 16), "id": f"cam{i}"} for i in range(9)]
        if self.mode == "far_sensor":
            return [{**default_front_camera(32, 16), "x": 4.0, "z": 0.0}]
        return [{"type": SPEEDOMETER, "id": "speed", "reading_frequency": 20}]

    def run_step(self, input_data: dict, timestamp: float):
        self.steps += 1
        if self.mode == "crash_after" and self.steps > self.limit:
            raise ValueError("tensor shape mismatch")
        if self.mode == "wrong_type":
            return {"throttle": 1.0, "steer": 0.0, "brake": 0.0}
        if self.mode == "nan" and self.steps <= self.limit:
            return NanControl()
        return self.driver()
