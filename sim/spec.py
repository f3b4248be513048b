"""The world a simulator is reset with: town, route, weather, traffic, props, scripted actors.

This is what the YAML scenario language compiles to (scenarios/), and what every backend
accepts. Objects are placed along the route (`route_s_m`, metres from the route start,
and `lateral_m`, metres to the LEFT of the route, ego-frame convention) so one spec runs
on any town; the backend resolves them to world poses once the route exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sim.lite.town import TownSpec
from sim.weather import Weather

PropKind = Literal["cone", "barrier", "warning_sign", "debris", "parked_vehicle"]
ManoeuvreName = Literal["straight", "left", "right"]


class WorldSpecError(ValueError):
    """A world spec field is invalid."""


@dataclass(frozen=True)
class RouteSpec:
    """How to choose the ego route. Exactly one way applies, in this order:
    `waypoints` (world xy, joined by shortest lane paths), `start`+`end`, `manoeuvres`
    (turns at successive junctions from a seeded start), else a seeded random route."""

    waypoints: tuple[tuple[float, float], ...] = ()
    start: tuple[float, float] | None = None  # [m] world
    end: tuple[float, float] | None = None  # [m] world
    manoeuvres: tuple[ManoeuvreName, ...] = ()
    length_m: float = 400.0  # [m] target length of seeded routes
    start_lane_index: int | None = None  # lane index (0 = innermost) for seeded starts

    def __post_init__(self) -> None:
        if not 30.0 <= self.length_m <= 20_000.0:
            raise WorldSpecError(f"route.length_m = {self.length_m} must be in [30, 20000] m")
        if (self.start is None) != (self.end is None):
            raise WorldSpecError("route.start and route.end must be given together")
        for m in self.manoeuvres:
            if m not in ("straight", "left", "right"):
                raise WorldSpecError(
                    f"route.manoeuvres: unknown manoeuvre {m!r}; valid: straight, left, right"
                )


@dataclass(frozen=True)
class PropSpec:
    """A static object placed relative to the route."""

    kind: PropKind
    route_s_m: float  # [m] along the route
    lateral_m: float = 0.0  # [m] left of the route centre line
    yaw_offset_deg: float = 0.0  # [deg] relative to the route direction
    bgr: tuple[int, int, int] | None = None  # colour override

    def __post_init__(self) -> None:
        if self.kind not in ("cone", "barrier", "warning_sign", "debris", "parked_vehicle"):
            raise WorldSpecError(
                f"prop.kind: unknown kind {self.kind!r}; valid: cone, barrier, warning_sign, "
                "debris, parked_vehicle"
            )


@dataclass(frozen=True)
class PedestrianSpec:
    """A scripted pedestrian that walks `walk_m` across the route once the ego's route
    progress reaches `trigger_s_m` (immediately if None)."""

    route_s_m: float  # [m] where it crosses
    side: Literal["left", "right"] = "right"  # where it starts
    start_lateral_m: float = 6.0  # [m] distance from the route centre at the start
    walk_m: float = 12.0  # [m] how far it walks across
    speed_mps: float = 1.4  # [m/s]
    trigger_s_m: float | None = None  # [m] ego route progress that starts the walk
    snap_to_crosswalk: bool = False  # cross at the crosswalk nearest to route_s_m (40 m)


@dataclass(frozen=True)
class VehicleSpec:
    """A scripted vehicle placed on the route's lanes.

    behaviour: `stopped` (stalled/parked on the lane), `cruise` (IDM along its lane at
    `speed_mps`), `hard_brake` (cruise, then brake at `brake_decel_mps2` once the ego's
    route progress reaches `trigger_s_m`), `cut_in` (drive in the adjacent lane
    `lane_offset`, then merge into the route lane when triggered), `run_red_light`
    (ignores traffic lights)."""

    route_s_m: float  # [m] along the route (on the route's lane or an adjacent one)
    behaviour: Literal["stopped", "cruise", "hard_brake", "cut_in", "run_red_light"] = "cruise"
    lane_offset: int = 0  # lanes to the left (+) / right (-) of the route lane
    speed_mps: float = 8.0  # [m/s]
    trigger_s_m: float | None = None  # [m] ego route progress that fires the behaviour
    brake_decel_mps2: float = 7.0  # [m/s^2]
    # Before its trigger the vehicle keeps this gap [m] ahead of the ego along the route
    # (waiting, or matching the ego's speed), so the event happens near the ego.
    # None: it drives on its own. `run_red_light` vehicles are instead timed to reach
    # their junction together with the ego.
    pace_gap_m: float | None = None


@dataclass(frozen=True)
class SpeedZone:
    """A lower speed limit between two route distances (e.g. a construction zone)."""

    start_m: float  # [m] along the route
    end_m: float  # [m]
    limit_mps: float  # [m/s]


@dataclass(frozen=True)
class WeatherKeyframe:
    """Weather at a route percentage; the Leaderboard interpolates between keyframes."""

    route_percentage: float  # [%] 0..100
    weather: Weather


@dataclass(frozen=True)
class WorldSpec:
    town: TownSpec = field(default_factory=TownSpec)
    route: RouteSpec = field(default_factory=RouteSpec)
    weather: Weather = field(default_factory=Weather)
    weather_keyframes: tuple[WeatherKeyframe, ...] = ()
    num_vehicles: int = 20
    num_pedestrians: int = 10
    props: tuple[PropSpec, ...] = ()
    pedestrians: tuple[PedestrianSpec, ...] = ()
    vehicles: tuple[VehicleSpec, ...] = ()
    speed_zones: tuple[SpeedZone, ...] = ()
    # [m] (start, end) route stretches where driving in the oncoming lane is no infraction:
    # the Leaderboard's *TwoWays scenarios run `SwitchWrongDirectionTest(False)`.
    oncoming_zones: tuple[tuple[float, float], ...] = ()
    timeout_s: float | None = None  # None: the Leaderboard's route timeout rule
    name: str = "world"

    def __post_init__(self) -> None:
        if not 0 <= self.num_vehicles <= 200:
            raise WorldSpecError(f"num_vehicles = {self.num_vehicles} must be in [0, 200]")
        if not 0 <= self.num_pedestrians <= 200:
            raise WorldSpecError(f"num_pedestrians = {self.num_pedestrians} must be in [0, 200]")
        pcts = [k.route_percentage for k in self.weather_keyframes]
        if any(not 0.0 <= p <= 100.0 for p in pcts) or pcts != sorted(pcts):
            raise WorldSpecError(
                f"weather_keyframes route_percentage values {pcts} must be sorted within [0, 100]"
            )

    def speed_limit_at(self, route_s_m: float) -> float:
        """[m/s] the town's limit, lowered inside any speed zone covering `route_s_m`."""
        limit = self.town.speed_limit_kmh / 3.6
        for zone in self.speed_zones:
            if zone.start_m <= route_s_m <= zone.end_m:
                limit = min(limit, zone.limit_mps)
        return limit

    def weather_at(self, route_fraction: float) -> Weather:
        """Weather at a route fraction (0..1), interpolating keyframes like Leaderboard 2.0."""
        if not self.weather_keyframes:
            return self.weather
        pct = 100.0 * route_fraction
        frames = self.weather_keyframes
        if pct <= frames[0].route_percentage:
            return frames[0].weather
        for a, b in zip(frames, frames[1:], strict=False):
            if pct <= b.route_percentage:
                span = max(b.route_percentage - a.route_percentage, 1e-9)
                return a.weather.lerp(b.weather, (pct - a.route_percentage) / span)
        return frames[-1].weather
