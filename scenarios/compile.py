"""Compile a concrete scenario into the simulator's `WorldSpec`.

Events become props, scripted actors and triggers placed relative to the route (metres
along it, metres to its left), so the same compiled spec runs on any town. Each event type
has one compile function in `EVENT_COMPILERS` (a registry keyed by the YAML `type`).
Layouts follow the Leaderboard 2.0 scenarios where one exists (ConstructionObstacle: a
warning sign, a cone taper closing the lane, cones along the work zone, debris; Accident:
crashed cars behind a warning sign; ParkedObstacle; PedestrianCrossing and
DynamicObjectCrossing; HighwayCutIn; HardBreakRoute; OppositeVehicleRunningRedLight).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from scenarios.loader import Problem, ScenarioError
from scenarios.sampler import is_concrete
from scenarios.schema import (
    Accident,
    ConstructionZone,
    CutIn,
    EventBase,
    LeadVehicleHardBrake,
    ParkedObstacle,
    PedestrianCrossing,
    RedLightRunner,
    Scenario,
    StalledVehicle,
    WeatherFields,
)
from sim.lite.town import TownSpec, TownSpecError
from sim.spec import (
    PedestrianSpec,
    PropSpec,
    RouteSpec,
    SpeedZone,
    VehicleSpec,
    WeatherKeyframe,
    WorldSpec,
    WorldSpecError,
)
from sim.weather import Weather, WeatherError

CONE_SPACING_M = 3.0  # [m] between cones along a work zone
NPC_HALF_WIDTH_M = 0.95  # [m] parked and crashed cars
CUT_IN_PACE_GAP_M = 8.0  # [m] a cutter waits/paces this far ahead of the ego in its lane
ONCOMING_BEFORE_M = 40.0  # [m] two-way events open the oncoming lane this far before...
ONCOMING_AFTER_M = 30.0  # [m] ...and this far after their extent


@dataclass
class Built:
    """What events contribute to a world, plus constraints they put on the route."""

    lane_width: float
    lanes_per_direction: int
    props: list[PropSpec] = field(default_factory=list)
    pedestrians: list[PedestrianSpec] = field(default_factory=list)
    vehicles: list[VehicleSpec] = field(default_factory=list)
    speed_zones: list[SpeedZone] = field(default_factory=list)
    start_lane: int | None = None  # lane index the route must start on
    needs_single_lane: bool = False  # two-way variants: one lane per direction
    # Route stretches where the oncoming lane may be used (the Leaderboard's *TwoWays
    # scenarios switch its wrong-direction check off while they run).
    oncoming_zones: list[tuple[float, float]] = field(default_factory=list)


def num(value: object) -> float:
    """A concrete numeric field (sampling replaced every distribution)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r} (sample the scenario first)")
    return float(value)


def integer(value: object) -> int:
    return int(round(num(value)))


def _sign(side: str) -> float:
    """+1 for left, -1 for right: the sign of `lateral_m` (positive to the left)."""
    return 1.0 if side == "left" else -1.0


def _construction(ev: ConstructionZone, b: Built) -> None:
    s, w = num(ev.at_m), b.lane_width
    sg = _sign(str(ev.side))
    inner = -sg * (w / 2 - 0.3)  # cone line on the free side of the closed (ego) lane
    outer = sg * (w / 2 - 0.3)
    b.props.append(PropSpec("warning_sign", s - 4.0, 0.0, 90.0))
    taper = max(num(ev.taper_m), 3.0)
    n_taper = max(int(taper / CONE_SPACING_M), 2)
    for k in range(n_taper + 1):  # taper from the lane's closed edge across to its free edge
        t = k / n_taper
        b.props.append(PropSpec("cone", s + t * taper, outer + t * (inner - outer)))
    length = num(ev.length_m)
    n_zone = max(int(length / CONE_SPACING_M), 1)
    for k in range(1, n_zone + 1):
        b.props.append(PropSpec("cone", s + taper + k * length / n_zone, inner))
    b.props.append(PropSpec("barrier", s + taper + 2.0, 0.0, 90.0))
    b.props.append(PropSpec("debris", s + taper + length * 0.5, 0.3 * sg))
    b.speed_zones.append(
        SpeedZone(s - 30.0, s + taper + length + 10.0, num(ev.speed_cap_kmh) / 3.6)
    )
    _lane_for(ev, b, bool(ev.two_way))


def _lane_for(ev: EventBase, b: Built, two_way: bool, extent_m: float = 20.0) -> None:
    """Put the ego on the lane the event closes, with a free lane beside it when the
    road has one (one-way variants) or alone in its direction (two-way variants, which
    open the oncoming lane from ONCOMING_BEFORE_M before the event to ONCOMING_AFTER_M
    after its `extent_m`)."""
    side = str(getattr(ev, "side", "right"))
    if two_way:
        b.needs_single_lane = True
        b.start_lane = 0
        s = num(ev.at_m)
        b.oncoming_zones.append((max(s - ONCOMING_BEFORE_M, 0.0), s + extent_m + ONCOMING_AFTER_M))
    elif b.lanes_per_direction >= 2:
        b.start_lane = b.lanes_per_direction - 1 if side == "right" else 0


def _accident(ev: Accident, b: Built) -> None:
    s, sg = num(ev.at_m), _sign(str(ev.side))
    b.props.append(PropSpec("warning_sign", s - 12.0, 0.0, 90.0))
    b.props.append(PropSpec("cone", s - 8.0, -sg * 0.8))
    for k in range(integer(ev.vehicles)):
        yaw = 25.0 if k % 2 == 0 else -35.0
        b.props.append(
            PropSpec("parked_vehicle", s + 6.5 * k, 0.4 * sg * (k % 2), yaw, bgr=(40, 40, 150))
        )
    _lane_for(ev, b, bool(ev.two_way), 6.5 * integer(ev.vehicles))


def _parked(ev: ParkedObstacle, b: Built) -> None:
    sg = _sign(str(ev.side))
    # The car's inner edge sticks `intrusion_m` into the ego lane from its side.
    centre = sg * (b.lane_width / 2 - num(ev.intrusion_m) + NPC_HALF_WIDTH_M)
    b.props.append(PropSpec("parked_vehicle", num(ev.at_m), centre))
    _lane_for(ev, b, bool(ev.two_way))


def _pedestrian(ev: PedestrianCrossing, b: Built) -> None:
    s, sg = num(ev.at_m), _sign(str(ev.side))
    start = b.lane_width * (b.lanes_per_direction - 0.5) + 3.0  # on the kerb
    if ev.occluded:  # parked car between the walker and the ego's view
        b.props.append(PropSpec("parked_vehicle", s - 5.0, sg * (start - 1.8)))
    b.pedestrians.append(
        PedestrianSpec(
            route_s_m=s,
            side=str(ev.side),  # type: ignore[arg-type]
            start_lateral_m=start,
            walk_m=2 * start,
            speed_mps=num(ev.speed_mps),
            trigger_s_m=max(s - num(ev.trigger_distance_m), 0.0),
            snap_to_crosswalk=ev.mode == "crosswalk",
        )
    )


def _cut_in(ev: CutIn, b: Built) -> None:
    if b.lanes_per_direction < 2:
        raise ValueError("cut_in needs a road with lanes_per_direction >= 2")
    left = ev.side == "left"
    b.start_lane = b.lanes_per_direction - 1 if left else 0
    b.vehicles.append(
        VehicleSpec(
            route_s_m=num(ev.at_m),
            behaviour="cut_in",
            lane_offset=1 if left else -1,
            speed_mps=num(ev.speed_mps),
            trigger_s_m=max(num(ev.at_m) - num(ev.trigger_distance_m), 0.0),
            pace_gap_m=CUT_IN_PACE_GAP_M,
        )
    )


def _hard_brake(ev: LeadVehicleHardBrake, b: Built) -> None:
    b.vehicles.append(
        VehicleSpec(
            route_s_m=num(ev.at_m),
            behaviour="hard_brake",
            speed_mps=num(ev.speed_mps),
            brake_decel_mps2=num(ev.decel_mps2),
            # The lead paces `trigger_distance_m` ahead of the ego and brakes when the ego
            # reaches `at_m`.
            trigger_s_m=num(ev.at_m),
            pace_gap_m=num(ev.trigger_distance_m),
        )
    )


def _red_light_runner(ev: RedLightRunner, b: Built) -> None:
    b.vehicles.append(
        VehicleSpec(
            route_s_m=num(ev.at_m),
            behaviour="run_red_light",
            speed_mps=num(ev.speed_mps),
        )
    )


def _stalled(ev: StalledVehicle, b: Built) -> None:
    b.vehicles.append(VehicleSpec(route_s_m=num(ev.at_m), behaviour="stopped", speed_mps=0.0))


EVENT_COMPILERS: dict[str, Callable] = {
    "construction_zone": _construction,
    "accident": _accident,
    "parked_obstacle": _parked,
    "pedestrian_crossing": _pedestrian,
    "cut_in": _cut_in,
    "lead_vehicle_hard_brake": _hard_brake,
    "red_light_runner": _red_light_runner,
    "stalled_vehicle": _stalled,
}


def _weather(fields: WeatherFields, base: dict | None = None) -> Weather:
    values = fields.values()
    values.pop("keyframes", None)
    values.pop("route_percentage", None)
    if base is not None and "preset" not in values:
        values = {**base, **values}
    return Weather.from_dict(values)


def compile_scenario(scenario: Scenario, file: str = "<scenario>") -> WorldSpec:
    """A concrete scenario (see `sampler.sample`) -> WorldSpec. Problems raise ScenarioError."""
    if not is_concrete(scenario):
        raise ScenarioError(
            [Problem(file, 1, 1, "", "sample the scenario first: it still holds distributions")]
        )

    def fail(field_name: str, message: str) -> ScenarioError:
        return ScenarioError([Problem(file, 1, 1, field_name, message)])

    town_p = scenario.map.town
    lanes = integer(town_p.lanes_per_direction)
    built = Built(lane_width=num(town_p.lane_width_m), lanes_per_direction=lanes)
    for i, ev in enumerate(scenario.events):
        try:
            EVENT_COMPILERS[ev.type](ev, built)  # type: ignore[attr-defined]
        except (ValueError, WorldSpecError) as exc:
            raise fail(f"events[{i}]", str(exc)) from None
    try:
        written = town_p.model_dump(include=town_p.model_fields_set)
        if written.get("road_type") == "highway":
            base = TownSpec.for_highway()
            # Unwritten fields take the highway's defaults, not the urban ones.
            kwargs = {f: getattr(base, f) for f in TownSpec.__dataclass_fields__}
            kwargs.update(written)
        else:
            kwargs = town_p.model_dump()
        kwargs["lanes_per_direction"] = (
            integer(kwargs["lanes_per_direction"]) if not built.needs_single_lane else 1
        )
        if (
            "speed_limit_kmh" in scenario.traffic.model_fields_set
            or written.get("road_type") != "highway"
        ):
            kwargs["speed_limit_kmh"] = num(scenario.traffic.speed_limit_kmh)
        town = TownSpec(**kwargs)
    except (TownSpecError, TypeError) as exc:
        raise fail("map.town", str(exc)) from None
    r = scenario.route
    start_lane = r.start_lane if r.start_lane is not None else built.start_lane
    try:
        route = RouteSpec(
            waypoints=tuple(tuple(p) for p in r.waypoints),  # type: ignore[misc]
            start=tuple(r.start) if r.start else None,  # type: ignore[arg-type]
            end=tuple(r.end) if r.end else None,  # type: ignore[arg-type]
            manoeuvres=tuple(r.manoeuvres),  # type: ignore[arg-type]
            length_m=num(r.length_m),
            start_lane_index=None if start_lane is None else integer(start_lane),
        )
    except (WorldSpecError, ValueError) as exc:
        raise fail("route", str(exc)) from None
    try:
        weather = _weather(scenario.weather)
        base_values = weather.to_dict()
        keyframes = [
            WeatherKeyframe(num(k.route_percentage), _weather(k, base_values))
            for k in scenario.weather.keyframes
        ]
    except WeatherError as exc:
        raise fail("weather", str(exc)) from None
    keyframes.sort(key=lambda k: k.route_percentage)
    if keyframes and keyframes[0].route_percentage > 0.0:
        keyframes.insert(0, WeatherKeyframe(0.0, weather))
    try:
        return WorldSpec(
            town=town,
            route=route,
            weather=weather,
            weather_keyframes=tuple(keyframes),
            num_vehicles=integer(scenario.traffic.vehicles),
            num_pedestrians=integer(scenario.traffic.pedestrians),
            props=tuple(built.props),
            pedestrians=tuple(built.pedestrians),
            vehicles=tuple(built.vehicles),
            speed_zones=tuple(built.speed_zones),
            oncoming_zones=tuple(built.oncoming_zones),
            timeout_s=None
            if scenario.criteria.timeout_s is None
            else num(scenario.criteria.timeout_s),
            name=scenario.name,
        )
    except WorldSpecError as exc:
        raise fail("", str(exc)) from None


def first_event_s(spec: WorldSpec) -> float:
    """[m] route distance of the first thing a scenario placed (for previews)."""
    candidates = [p.route_s_m for p in spec.props] + [p.route_s_m for p in spec.pedestrians]
    candidates += [v.route_s_m for v in spec.vehicles]
    return float(np.min(candidates)) if candidates else 0.0
