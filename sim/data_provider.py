"""Privileged access for experts, the way CARLA's `CarlaDataProvider` gives it.

A Leaderboard agent only receives sensor data through `run_step`. Privileged agents
(the expert, data collectors, the RL shield) reach the simulator the same way they do in
CARLA: through a process-wide provider the evaluation harness (or env) sets before the
route starts and clears after it. Nothing on the model's inference path may call this
(the one opt-in exception is an ablation, the guard's ground-truth perception:
agent/safety/ground_truth_perception.py).
"""

from __future__ import annotations

from sim.ground_truth import GroundTruth
from sim.protocol import Simulator


class DataProvider:
    _simulator: Simulator | None = None

    @classmethod
    def set_simulator(cls, simulator: Simulator | None) -> None:
        cls._simulator = simulator

    @classmethod
    def registered(cls) -> bool:
        """Whether a harness has registered a simulator (only the embedded one does)."""
        return cls._simulator is not None

    @classmethod
    def simulator(cls) -> Simulator:
        if cls._simulator is None:
            raise RuntimeError(
                "no simulator is registered: privileged agents run inside `vlmdrive eval` or "
                "a DrivingEnv, which register theirs with DataProvider.set_simulator()"
            )
        return cls._simulator

    @classmethod
    def ground_truth(cls) -> GroundTruth:
        return cls.simulator().ground_truth()
