"""Export concrete YAML scenarios as CARLA Leaderboard 2.0 route XML.

One `<route>` per concrete scenario (id = its index), in the format the Leaderboard's
`leaderboard/utils/route_parser.py` (leaderboard-2.0 branch) reads:

    <routes>
      <route id="0" town="Town12">
        <weathers>
          <weather route_percentage="0" cloudiness=".." ... (all 14 WeatherParameters)/>
        </weathers>
        <waypoints><position x=".." y=".." z=".."/> ...</waypoints>
        <scenarios>
          <scenario name="ConstructionObstacle_1" type="ConstructionObstacle">
            <trigger_point x=".." y=".." z=".." yaw=".."/>
            <distance value="50"/> <direction value="right"/> <speed value="30"/>
          </scenario>
        </scenarios>
      </route>
    </routes>

Weather: the compiled weather keyframes (`compile_scenario(...).weather_keyframes`, which
hold the base weather at 0 % when the first keyframe comes later), or the base weather
alone at 0 %. The Leaderboard interpolates between keyframes, as `Weather.lerp` does.

Event -> Leaderboard scenario type (parameters as the scenario_runner leaderboard-2.0
classes read them from `config.other_parameters`):

| event                          | type                                     | parameters                          |
|--------------------------------|------------------------------------------|-------------------------------------|
| construction_zone              | ConstructionObstacle(TwoWays if two_way) | distance, direction, speed (km/h)   |
| accident                       | Accident(TwoWays)                        | distance, direction                 |
| parked_obstacle                | ParkedObstacle(TwoWays)                  | distance, direction                 |
| pedestrian_crossing, crosswalk | PedestrianCrossing                       | (none: it reads no parameters)      |
| pedestrian_crossing, jaywalk   | DynamicObjectCrossing                    | distance, direction, [blocker_model]|
| cut_in on a highway town       | HighwayCutIn                             | other_actor_location (x, y, z)      |
| cut_in elsewhere               | ParkingCutIn                             | direction                           |
| lead_vehicle_hard_brake        | HardBreakRoute                           | (none)                              |
| red_light_runner               | OppositeVehicleRunningRedLight           | (none: direction left to LB default)|
| stalled_vehicle                | -- ExportError: no Leaderboard type      |                                     |

Trigger points and `distance`. In the Leaderboard, `distance` of the obstacle scenarios
and of DynamicObjectCrossing is how far *beyond the trigger point* the obstacle (or the
crossing point) is placed (`reference_waypoint.next(distance)` / `_move_waypoint_forward`).
Our events put the obstacle itself at `at_m`. So for these types the trigger point is put
`lead` metres earlier on the route, at `max(at_m - lead, 0)`, and `distance = at_m - that`:
the Leaderboard's obstacle lands where ours is. `lead` is `obstacle_lead_m` (default 50 m)
for construction / accident / parked obstacles and the event's `trigger_distance_m` for a
jaywalker (the ego distance at which ours starts walking). All other types have their
trigger point at `at_m` itself (PedestrianCrossing and OppositeVehicleRunningRedLight act
at the first junction after their trigger point, like ours). Positions are interpolated
linearly along the CARLA waypoint polyline (x, y, z); yaw is the segment direction,
`atan2(dy, dx)` in degrees (CARLA's convention).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from scenarios.compile import compile_scenario
from scenarios.loader import Problem, ScenarioError, load_scenario
from scenarios.sampler import is_concrete, sample
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
)
from sim.weather import Weather

WEATHER_ATTRIBUTES: tuple[str, ...] = tuple(f.name for f in fields(Weather))
OBSTACLE_LEAD_M = 50.0  # [m] default trigger-to-obstacle distance of the obstacle types
BLOCKER_MODEL = "static.prop.vendingmachine"  # the Leaderboard's default occluder
Point = tuple[float, float, float]


class ExportError(ScenarioError):
    """A scenario cannot be written as a Leaderboard route."""

    def __init__(self, message: str, field: str = "", file: str = "<scenario>") -> None:
        super().__init__([Problem(file, 1, 1, field, message)])


# ------------------------------------------------------------------ polyline
class Polyline:
    """Arc-length parametrised 3-D polyline (the route's CARLA waypoints)."""

    def __init__(self, points: Sequence[Sequence[float]]) -> None:
        self.points: list[Point] = [(float(p[0]), float(p[1]), float(p[2])) for p in points]
        if not all(math.isfinite(c) for p in self.points for c in p):
            raise ValueError("waypoint coordinates must be finite numbers")
        if len(self.points) < 2:
            raise ValueError("a route needs at least two waypoints")
        self.cumulative = [0.0]
        for a, b in zip(self.points, self.points[1:], strict=False):
            self.cumulative.append(self.cumulative[-1] + math.hypot(b[0] - a[0], b[1] - a[1]))
        if self.length <= 0.0:
            raise ValueError("the route's waypoints are all at the same place")

    @property
    def length(self) -> float:
        """[m] horizontal length."""
        return self.cumulative[-1]

    def at(self, s: float) -> tuple[float, float, float, float]:
        """(x, y, z, yaw_deg) at arc length `s` (0 <= s <= length)."""
        if not 0.0 <= s <= self.length + 1e-9:
            raise ValueError(f"{s:g} m is outside the route (0 .. {self.length:.1f} m)")
        s = min(s, self.length)
        for i in range(len(self.points) - 1):
            s0, s1 = self.cumulative[i], self.cumulative[i + 1]
            if s1 <= s0:  # repeated waypoint
                continue
            if s <= s1 or i == len(self.points) - 2:
                (x0, y0, z0), (x1, y1, z1) = self.points[i], self.points[i + 1]
                t = (s - s0) / (s1 - s0)
                yaw = math.degrees(math.atan2(y1 - y0, x1 - x0))
                return x0 + t * (x1 - x0), y0 + t * (y1 - y0), z0 + t * (z1 - z0), yaw
        raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------------ events
def _lb_type(ev: EventBase, highway: bool) -> str:
    if isinstance(ev, ConstructionZone):
        return "ConstructionObstacleTwoWays" if ev.two_way else "ConstructionObstacle"
    if isinstance(ev, Accident):
        return "AccidentTwoWays" if ev.two_way else "Accident"
    if isinstance(ev, ParkedObstacle):
        return "ParkedObstacleTwoWays" if ev.two_way else "ParkedObstacle"
    if isinstance(ev, PedestrianCrossing):
        return "PedestrianCrossing" if ev.mode == "crosswalk" else "DynamicObjectCrossing"
    if isinstance(ev, CutIn):
        return "HighwayCutIn" if highway else "ParkingCutIn"
    if isinstance(ev, LeadVehicleHardBrake):
        return "HardBreakRoute"
    if isinstance(ev, RedLightRunner):
        return "OppositeVehicleRunningRedLight"
    raise KeyError(type(ev).__name__)


def _lead(ev: EventBase, obstacle_lead_m: float) -> float | None:
    """Metres between trigger point and event for the types with a `distance` parameter."""
    if isinstance(ev, ConstructionZone | Accident | ParkedObstacle):
        return obstacle_lead_m
    if isinstance(ev, PedestrianCrossing) and ev.mode != "crosswalk":
        return float(ev.trigger_distance_m)  # type: ignore[arg-type]  # concrete
    return None


def _num(value: float, decimals: int = 4) -> str:
    text = f"{float(value):.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _finite(value: Any, what: str, field: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ExportError(f"{what} = {number} is not a finite number", field)
    return number


def _scenario_element(
    parent: ET.Element,
    ev: EventBase,
    index: int,
    scenario: Scenario,
    line: Polyline,
    counters: dict[str, int],
    obstacle_lead_m: float,
) -> None:
    field = f"events[{index}]"
    if isinstance(ev, StalledVehicle):
        raise ExportError(
            f"event {index} (stalled_vehicle): no Leaderboard 2.0 scenario type matches a "
            "stalled vehicle; remove it or use lead_vehicle_hard_brake / parked_obstacle",
            field,
        )
    highway = scenario.map.town.road_type == "highway"
    lb_type = _lb_type(ev, highway)
    at = _finite(ev.at_m, f"event {index} ({ev.type}) at_m", f"{field}.at_m")  # type: ignore[attr-defined]
    if not 0.0 <= at <= line.length:
        raise ExportError(
            f"event {index} ({ev.type}) at_m = {at:g} m is beyond the CARLA waypoint route "  # type: ignore[attr-defined]
            f"(length {line.length:.1f} m)",
            f"{field}.at_m",
        )
    lead = _lead(ev, obstacle_lead_m)
    if lead is not None:
        lead = max(_finite(lead, f"event {index} trigger distance", field), 0.0)
    trigger_s = at if lead is None else max(at - lead, 0.0)
    x, y, z, yaw = line.at(trigger_s)
    counters[lb_type] = counters.get(lb_type, 0) + 1
    elem = ET.SubElement(
        parent, "scenario", {"name": f"{lb_type}_{counters[lb_type]}", "type": lb_type}
    )
    ET.SubElement(
        elem, "trigger_point", {"x": _num(x), "y": _num(y), "z": _num(z), "yaw": _num(yaw)}
    )

    def param(tag: str, value: str) -> None:
        ET.SubElement(elem, tag, {"value": value})

    if lead is not None:
        param("distance", _num(at - trigger_s, 2))
    if isinstance(ev, ConstructionZone | Accident | ParkedObstacle):
        param("direction", str(ev.side))
    if isinstance(ev, ConstructionZone):
        speed = _finite(ev.speed_cap_kmh, f"event {index} speed_cap_kmh", f"{field}.speed_cap_kmh")
        param("speed", str(int(round(speed))))
    if isinstance(ev, PedestrianCrossing) and lb_type == "DynamicObjectCrossing":
        param("direction", str(ev.side))
        if ev.occluded:
            param("blocker_model", BLOCKER_MODEL)
    if isinstance(ev, CutIn):
        if lb_type == "ParkingCutIn":
            param("direction", str(ev.side))
        else:  # the cutting car starts beside the ego, one lane towards `side`
            ax, ay, az, ayaw = line.at(at)
            w = float(scenario.map.town.lane_width_m)  # type: ignore[arg-type]  # concrete
            # CARLA's right vector for yaw is (-sin, cos); left is its opposite.
            sign = 1.0 if ev.side == "right" else -1.0
            r = math.radians(ayaw)
            loc = {
                "x": _num(ax - sign * w * math.sin(r)),
                "y": _num(ay + sign * w * math.cos(r)),
                "z": _num(az),
            }
            ET.SubElement(elem, "other_actor_location", loc)


# ------------------------------------------------------------------ weather
def _weather_element(parent: ET.Element, percentage: float, weather: Weather) -> None:
    attrs = {"route_percentage": _num(percentage, 6)}
    values = weather.to_dict()
    attrs.update({name: _num(values[name], 6) for name in WEATHER_ATTRIBUTES})
    ET.SubElement(parent, "weather", attrs)


# ------------------------------------------------------------------ export
def export_leaderboard_xml(
    scenarios: Sequence[Scenario],
    town: str | None = None,
    waypoints: Sequence[Sequence[float]] | None = None,
    *,
    obstacle_lead_m: float = OBSTACLE_LEAD_M,
) -> str:
    """Concrete scenarios (see `sampler.sample`) -> pretty-printed Leaderboard 2.0 routes XML.

    `town` / `waypoints` override each scenario's `map.carla` town / waypoints. Raises
    ExportError (a ScenarioError) for a scenario with distributions, no waypoints, an
    event beyond the route, or an event type the Leaderboard does not have."""
    if not (math.isfinite(obstacle_lead_m) and obstacle_lead_m >= 0):
        raise ValueError("obstacle_lead_m must be a finite number >= 0")
    root = ET.Element("routes")
    for index, scenario in enumerate(scenarios):
        label = f"scenario {index} ({scenario.name})"
        if not is_concrete(scenario):
            raise ExportError(
                f"{label} still holds distributions: sample it first "
                "(scenarios.sampler.sample, or export_file)"
            )
        carla = scenario.map.carla
        route_town = town or (carla.town if carla is not None else None)
        points = waypoints if waypoints is not None else (carla.waypoints if carla else None)
        if not route_town:
            raise ExportError(f"{label}: no CARLA town (give town= or map.carla.town)", "map.carla")
        if not points:
            raise ExportError(
                f"{label}: no CARLA waypoints (give waypoints= or map.carla.waypoints)",
                "map.carla.waypoints",
            )
        try:
            line = Polyline(points)
        except (ValueError, TypeError, IndexError) as exc:
            raise ExportError(f"{label}: bad waypoints: {exc}", "map.carla.waypoints") from None
        spec = compile_scenario(scenario, scenario.name)

        route = ET.SubElement(root, "route", {"id": str(index), "town": route_town})
        weathers = ET.SubElement(route, "weathers")
        keyframes = [(k.route_percentage, k.weather) for k in spec.weather_keyframes]
        for percentage, weather in keyframes or [(0.0, spec.weather)]:
            _weather_element(weathers, percentage, weather)
        wps = ET.SubElement(route, "waypoints")
        for x, y, z in line.points:
            ET.SubElement(wps, "position", {"x": _num(x), "y": _num(y), "z": _num(z)})
        scen = ET.SubElement(route, "scenarios")
        counters: dict[str, int] = {}
        for i, ev in enumerate(scenario.events):
            try:
                _scenario_element(scen, ev, i, scenario, line, counters, obstacle_lead_m)
            except ExportError as exc:
                raise ExportError(
                    f"{label}: {exc.problems[0].message}", exc.problems[0].field
                ) from None
    ET.indent(root, space="   ")
    return ET.tostring(root, encoding="unicode") + "\n"


def export_file(
    path: str | Path,
    n_variations: int | None = None,
    town: str | None = None,
    waypoints: Sequence[Sequence[float]] | None = None,
    *,
    obstacle_lead_m: float = OBSTACLE_LEAD_M,
) -> str:
    """Load a scenario file, sample its variations (or `n_variations`) and export them."""
    scenario = load_scenario(path)
    concrete = sample(scenario, n_variations, file=path)
    try:
        return export_leaderboard_xml(concrete, town, waypoints, obstacle_lead_m=obstacle_lead_m)
    except ExportError as exc:
        problem = exc.problems[0]
        raise ExportError(problem.message, problem.field, str(path)) from None


# ------------------------------------------------------------------ parse
def _scalar(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_leaderboard_xml(text: str) -> list[dict[str, Any]]:
    """Read routes XML back: one dict per route with `id`, `town`, `weathers` (dicts of
    floats, with `route_percentage`), `waypoints` [(x, y, z)] and `scenarios` (dicts with
    `name`, `type`, `trigger_point` {x, y, z, yaw} and `params`: a `<tag value=v/>`
    becomes `tag: v`, any other element a dict of its attributes; numbers are parsed)."""
    root = ET.fromstring(text)
    routes = []
    for route in root.iter("route"):
        weathers_elem = route.find("weathers")
        weathers = [
            {k: float(v) for k, v in w.attrib.items()}
            for w in (weathers_elem.iter("weather") if weathers_elem is not None else [])
        ]
        wps_elem = route.find("waypoints")
        waypoints = [
            (float(p.attrib["x"]), float(p.attrib["y"]), float(p.attrib["z"]))
            for p in (wps_elem.iter("position") if wps_elem is not None else [])
        ]
        scenarios = []
        scen_elem = route.find("scenarios")
        for s in scen_elem.iter("scenario") if scen_elem is not None else []:
            trigger: dict[str, float] = {}
            params: dict[str, Any] = {}
            for child in s:
                if child.tag == "trigger_point":
                    trigger = {k: float(v) for k, v in child.attrib.items()}
                elif set(child.attrib) == {"value"}:
                    params[child.tag] = _scalar(child.attrib["value"])
                else:
                    params[child.tag] = {k: _scalar(v) for k, v in child.attrib.items()}
            scenarios.append(
                {
                    "name": s.attrib.get("name"),
                    "type": s.attrib.get("type"),
                    "trigger_point": trigger,
                    "params": params,
                }
            )
        routes.append(
            {
                "id": route.attrib.get("id"),
                "town": route.attrib.get("town"),
                "weathers": weathers,
                "waypoints": waypoints,
                "scenarios": scenarios,
            }
        )
    return routes
