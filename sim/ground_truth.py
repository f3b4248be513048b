"""Ground truth and infraction events: backend-neutral types.

Ground truth is for experts, labels and reward shaping only; the agent's inference path
never sees it. Actor `type_id`s follow CARLA blueprint names so the Leaderboard's
classification of collisions (by type_id) applies unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from sim.weather import Weather


class TrafficLightState(IntEnum):
    """carla.TrafficLightState values."""

    Red = 0
    Yellow = 1
    Green = 2
    Off = 3
    Unknown = 4


# The Leaderboard's infraction keys (statistics_manager PENALTY_NAME_DICT order + route_timeout).
INFRACTION_KEYS: tuple[str, ...] = (
    "collisions_layout",
    "collisions_pedestrian",
    "collisions_vehicle",
    "red_light",
    "stop_infraction",
    "outside_route_lanes",
    "min_speed_infractions",
    "yield_emergency_vehicle_infractions",
    "scenario_timeouts",
    "route_dev",
    "vehicle_blocked",
    "route_timeout",
)


@dataclass(frozen=True)
class ActorState:
    """One actor. Pose in CARLA's world frame; `size` = (length, width, height) [m]."""

    id: int
    type_id: str  # CARLA blueprint, e.g. "vehicle.lincoln.mkz_2020", "walker.pedestrian.0001"
    x: float  # [m]
    y: float  # [m]
    yaw: float  # [rad]
    speed: float  # [m/s] along its heading
    size: tuple[float, float, float]  # [m]
    role: str = "background"  # "hero", "background", "scenario"

    @property
    def kind(self) -> str:
        if self.type_id.startswith("vehicle."):
            return "vehicle"
        if self.type_id.startswith("walker."):
            return "pedestrian"
        return "static"

    @property
    def velocity(self) -> tuple[float, float]:
        return (self.speed * float(np.cos(self.yaw)), self.speed * float(np.sin(self.yaw)))


@dataclass(frozen=True)
class TrafficLightInfo:
    id: int
    state: TrafficLightState
    x: float  # [m] pole position
    y: float  # [m]
    stop_line: tuple[tuple[float, float], tuple[float, float]]  # [m] segment across the lanes
    heading: float  # [rad] driving direction of the lanes it controls
    lane_ids: tuple[int, ...]


@dataclass(frozen=True)
class InfractionEvent:
    """One Leaderboard event. `kind` is one of INFRACTION_KEYS; `message` is the
    Leaderboard's text for it (what lands in the results JSON)."""

    kind: str
    message: str
    frame: int
    time_s: float
    # None for an event that sums up the whole route and happens nowhere in particular (the
    # Leaderboard's single outside-route-lanes event, emitted at the route's end)
    location: tuple[float, float, float] | None
    actor_id: int | None = None
    data: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in INFRACTION_KEYS:
            raise ValueError(f"InfractionEvent.kind {self.kind!r} is not one of {INFRACTION_KEYS}")


@dataclass(frozen=True)
class GroundTruth:
    frame: int
    time_s: float  # [s] game time
    ego: ActorState
    actors: tuple[ActorState, ...]  # vehicles and pedestrians other than the ego
    props: tuple[ActorState, ...]  # static objects
    traffic_lights: tuple[TrafficLightInfo, ...]
    weather: Weather
    friction: float  # [-] current tyre-road friction coefficient
    route_progress_m: float  # [m] along the route
    route_completion: float  # [%]
    active_events: tuple[str, ...]  # names of scripted events that have fired
    speed_limit_mps: float  # [m/s] at the ego
