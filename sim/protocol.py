"""The `Simulator` seam: every backend (embedded `lite`, real `carla`) implements it.

Lifecycle: `reset(spec, seed)` -> `setup_sensors(specs)` -> `tick(control)` at 20 Hz
(0.05 s of game time each) -> `close()`. Sensor data comes back in the Leaderboard's
`input_data` format `{sensor_id: (frame, data)}`; the route in the Leaderboard's shapes;
ground truth and infraction events for experts, labels, rewards and scoring.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from sim.control import RoadOption, VehicleControl
from sim.criteria import RouteStatus
from sim.geometry import Transform
from sim.ground_truth import GroundTruth, InfractionEvent
from sim.route import LaneLayout, Route
from sim.sensors import SensorSpec
from sim.spec import WorldSpec

FIXED_DELTA_SECONDS = 0.05  # [s] the Leaderboard's synchronous-mode step (20 Hz)

SensorData = dict[str, tuple[int, Any]]


@runtime_checkable
class Simulator(Protocol):
    backend: str

    def reset(self, spec: WorldSpec, seed: int) -> None:
        """Build the world for `spec`, deterministically for `seed`; ego at the route start."""

    def setup_sensors(self, sensor_specs: list[dict], track: str = "SENSORS") -> list[SensorSpec]:
        """Validate Leaderboard sensor specs (raises SensorSpecError) and attach them."""

    def tick(self, control: VehicleControl, render: bool = True) -> SensorData:
        """Apply `control`, advance 0.05 s, return `{id: (frame, data)}`.

        `render=False` says the caller will not look at this tick's camera images (a
        policy acting at 10 Hz, an expert that stores every 10th frame): a backend may
        leave the cameras out of the returned data (the embedded one does, and saves the
        render); every other sensor reports as usual. `sensor_data()` still gives the
        frame's images afterwards."""

    def sensor_data(self) -> SensorData:
        """The current frame's `{id: (frame, data)}`, cameras included, as `tick` returns
        it with `render=True`; for a caller that ticked with `render=False`."""

    @property
    def frame(self) -> int: ...

    @property
    def time_s(self) -> float: ...

    @property
    def route(self) -> Route: ...

    def global_plan(
        self,
    ) -> tuple[list[tuple[dict, RoadOption]], list[tuple[Transform, RoadOption]]]:
        """(`global_plan_gps`, `global_plan_world_coord`), downsampled like the Leaderboard."""

    def lane_layout(self) -> LaneLayout:
        """Lateral room beside the route (same-direction and oncoming lanes) per route point."""

    def speed_limit_at(self, route_s_m: float) -> float:
        """[m/s] the speed limit at a route distance (scenario speed zones included)."""

    def ground_truth(self) -> GroundTruth: ...

    @property
    def events(self) -> list[InfractionEvent]:
        """Infraction events of the last tick."""

    @property
    def route_status(self) -> RouteStatus: ...

    def close(self) -> None: ...
