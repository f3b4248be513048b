"""Leaderboard 2.0 route XML export: structure, weather and scenario round trip, errors."""

from __future__ import annotations

import math
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scenarios.compile import compile_scenario
from scenarios.export import (
    OBSTACLE_LEAD_M,
    WEATHER_ATTRIBUTES,
    ExportError,
    Polyline,
    export_file,
    export_leaderboard_xml,
    parse_leaderboard_xml,
)
from scenarios.loader import ScenarioError, load_scenario
from scenarios.sampler import sample

WAYPOINTS = [[0.0, 0.0, 1.0], [100.0, 0.0, 2.0], [100.0, 200.0, 4.0], [-50.0, 200.0, 4.0]]

SCENARIO = """\
name: export_demo
seed: 3
variations: 3
map:
  town: {road_type: urban, lanes_per_direction: 2}
  carla:
    town: Town13
    waypoints: [[0, 0, 1], [100, 0, 2], [100, 200, 4], [-50, 200, 4]]
weather:
  preset: HardRainNight
  fog_density: {uniform: [30, 70]}
  keyframes:
    - {route_percentage: 40, fog_density: 90, cloudiness: 10}
    - {route_percentage: 80, preset: ClearNoon}
events:
  - type: construction_zone
    at_m: {uniform: [100, 140]}
    side: right
    length_m: 40
    speed_cap_kmh: 30
  - type: construction_zone
    at_m: 180
    side: left
    two_way: true
    speed_cap_kmh: 27.6
  - type: accident
    at_m: 30
    side: left
  - type: parked_obstacle
    at_m: 220
    two_way: true
  - type: pedestrian_crossing
    at_m: 260
    mode: jaywalk
    occluded: true
    side: left
    trigger_distance_m: 20
  - type: pedestrian_crossing
    at_m: 280
    mode: crosswalk
  - type: cut_in
    at_m: 300
    side: right
  - type: lead_vehicle_hard_brake
    at_m: 320
  - type: red_light_runner
    at_m: 340
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def concrete(tmp_path: Path, text: str = SCENARIO, n: int | None = None):
    path = write(tmp_path, text)
    return sample(load_scenario(path), n, file=path)


def point_at(s: float, points=WAYPOINTS) -> tuple[float, float, float, float]:
    """Independent reference: walk the polyline to arc length s."""
    for a, b in zip(points, points[1:], strict=False):
        seg = math.dist(a[:2], b[:2])
        if s <= seg:
            t = s / seg
            return (
                a[0] + t * (b[0] - a[0]),
                a[1] + t * (b[1] - a[1]),
                a[2] + t * (b[2] - a[2]),
                math.degrees(math.atan2(b[1] - a[1], b[0] - a[0])),
            )
        s -= seg
    raise ValueError("beyond the route")


# ------------------------------------------------------------------ structure
def test_xml_is_well_formed_with_leaderboard_structure(tmp_path: Path) -> None:
    scenarios = concrete(tmp_path)
    text = export_leaderboard_xml(scenarios, None, None)
    root = ET.fromstring(text)
    assert root.tag == "routes"
    routes = root.findall("route")
    assert [r.get("id") for r in routes] == ["0", "1", "2"]
    for route in routes:
        assert route.get("town") == "Town13"
        assert [child.tag for child in route] == ["weathers", "waypoints", "scenarios"]
        for weather in route.find("weathers"):
            assert weather.tag == "weather"
            assert set(weather.attrib) == {"route_percentage", *WEATHER_ATTRIBUTES}
        positions = route.find("waypoints").findall("position")
        assert [[float(p.get(k)) for k in "xyz"] for p in positions] == WAYPOINTS
        for scen in route.find("scenarios"):
            assert scen.tag == "scenario"
            assert scen[0].tag == "trigger_point"
            assert set(scen[0].attrib) == {"x", "y", "z", "yaw"}
            assert scen.get("name").startswith(scen.get("type") + "_")
    assert "\n   <route" in text  # pretty-printed


def test_weather_has_all_fourteen_weather_parameters() -> None:
    assert len(WEATHER_ATTRIBUTES) == 14
    assert "rayleigh_scattering_scale" in WEATHER_ATTRIBUTES
    assert "dust_storm" in WEATHER_ATTRIBUTES


# ------------------------------------------------------------------ round trip
def test_round_trip_weather_matches_compiled_keyframes(tmp_path: Path) -> None:
    scenarios = concrete(tmp_path)
    routes = parse_leaderboard_xml(export_leaderboard_xml(scenarios, None, None))
    assert len(routes) == len(scenarios)
    for route, scenario in zip(routes, scenarios, strict=True):
        spec = compile_scenario(scenario)
        expected = [(0.0, spec.weather)] + [
            (k.route_percentage, k.weather) for k in spec.weather_keyframes[1:]
        ]
        assert spec.weather_keyframes[0].route_percentage == 0.0
        assert len(route["weathers"]) == len(expected) == 3
        for got, (percentage, weather) in zip(route["weathers"], expected, strict=True):
            assert got["route_percentage"] == pytest.approx(percentage)
            for name, value in weather.to_dict().items():
                assert got[name] == pytest.approx(value, abs=1e-6), name
    # the sampled fog differs per variation and survives the trip
    fogs = {round(r["weathers"][0]["fog_density"], 6) for r in routes}
    assert len(fogs) == 3
    assert routes[0]["weathers"][2]["sun_altitude_angle"] == pytest.approx(45.0)  # ClearNoon


def test_weather_without_keyframes_is_base_at_zero(tmp_path: Path) -> None:
    text = """\
    name: plain
    map: {carla: {waypoints: [[0, 0, 0], [50, 0, 0]]}}
    weather: {preset: WetSunset, wind_intensity: 33}
    """
    (route,) = parse_leaderboard_xml(export_leaderboard_xml(concrete(tmp_path, text), None, None))
    assert route["town"] == "Town12"  # CarlaMap default
    (weather,) = route["weathers"]
    assert weather["route_percentage"] == 0.0
    assert weather["wind_intensity"] == pytest.approx(33.0)
    assert weather["precipitation_deposits"] == pytest.approx(50.0)
    assert route["scenarios"] == []


def test_round_trip_types_and_parameters(tmp_path: Path) -> None:
    (scenario,) = concrete(tmp_path, n=1)
    (route,) = parse_leaderboard_xml(export_leaderboard_xml([scenario], None, None))
    got = [(s["name"], s["type"]) for s in route["scenarios"]]
    assert got == [
        ("ConstructionObstacle_1", "ConstructionObstacle"),
        ("ConstructionObstacleTwoWays_1", "ConstructionObstacleTwoWays"),
        ("Accident_1", "Accident"),
        ("ParkedObstacleTwoWays_1", "ParkedObstacleTwoWays"),
        ("DynamicObjectCrossing_1", "DynamicObjectCrossing"),
        ("PedestrianCrossing_1", "PedestrianCrossing"),
        ("ParkingCutIn_1", "ParkingCutIn"),
        ("HardBreakRoute_1", "HardBreakRoute"),
        ("OppositeVehicleRunningRedLight_1", "OppositeVehicleRunningRedLight"),
    ]
    p = [s["params"] for s in route["scenarios"]]
    assert p[0] == {"distance": 50, "direction": "right", "speed": 30}
    assert p[1] == {"distance": 50, "direction": "left", "speed": 28}  # km/h, rounded
    assert p[2] == {"distance": 30, "direction": "left"}  # at_m 30 < lead: trigger at 0
    assert p[3] == {"distance": 50, "direction": "right"}
    assert p[4] == {
        "distance": 20,
        "direction": "left",
        "blocker_model": "static.prop.vendingmachine",
    }
    assert p[5] == p[7] == p[8] == {}
    assert p[6] == {"direction": "right"}


def test_trigger_points_lie_on_the_polyline(tmp_path: Path) -> None:
    scenarios = concrete(tmp_path)
    routes = parse_leaderboard_xml(export_leaderboard_xml(scenarios, None, None))
    for route, scenario in zip(routes, scenarios, strict=True):
        assert len(route["scenarios"]) == len(scenario.events)
        for exported, event in zip(route["scenarios"], scenario.events, strict=True):
            # types with a `distance` have their trigger that far before the event, so the
            # Leaderboard puts the obstacle at at_m; the others trigger at at_m itself
            distance = exported["params"].get("distance", 0.0)
            x, y, z, yaw = point_at(float(event.at_m) - distance)
            tp = exported["trigger_point"]
            assert (tp["x"], tp["y"], tp["z"], tp["yaw"]) == pytest.approx((x, y, z, yaw), abs=2e-3)
    # the sampled construction zone moves with the variation
    xs = {r["scenarios"][0]["trigger_point"]["x"] for r in routes}
    assert len(xs) == 3


def test_trigger_at_at_m_interpolates_z_and_yaw(tmp_path: Path) -> None:
    text = """\
    name: turn
    map: {carla: {town: Town15, waypoints: [[0, 0, 0], [10, 0, 10], [10, -20, 0]]}}
    events:
      - {type: lead_vehicle_hard_brake, at_m: 5}
      - {type: red_light_runner, at_m: 20}
      - {type: pedestrian_crossing, at_m: 25, mode: crosswalk}
    """
    (route,) = parse_leaderboard_xml(export_leaderboard_xml(concrete(tmp_path, text), None, None))
    tps = [s["trigger_point"] for s in route["scenarios"]]
    assert tps[0] == pytest.approx({"x": 5.0, "y": 0.0, "z": 5.0, "yaw": 0.0})
    assert tps[1] == pytest.approx({"x": 10.0, "y": -10.0, "z": 5.0, "yaw": -90.0})
    assert tps[2] == pytest.approx({"x": 10.0, "y": -15.0, "z": 2.5, "yaw": -90.0})


def test_highway_cut_in_and_arguments_override_map_carla(tmp_path: Path) -> None:
    text = """\
    name: hw
    map:
      town: {road_type: highway, lanes_per_direction: 3, lane_width_m: 3.5}
      carla: {town: Town12, waypoints: [[0, 0, 0], [1, 0, 0]]}
    events:
      - {type: cut_in, at_m: 40, side: left}
      - {type: cut_in, at_m: 60, side: right}
    """
    wps = [(0.0, 0.0, 0.0), (0.0, 100.0, 0.0)]  # heading +y: yaw 90
    xml = export_leaderboard_xml(concrete(tmp_path, text), "Town06", wps)
    (route,) = parse_leaderboard_xml(xml)
    assert route["town"] == "Town06"
    assert route["waypoints"] == wps
    left, right = route["scenarios"]
    assert (left["type"], right["type"]) == ("HighwayCutIn", "HighwayCutIn")
    assert [left["name"], right["name"]] == ["HighwayCutIn_1", "HighwayCutIn_2"]
    assert left["trigger_point"] == pytest.approx({"x": 0.0, "y": 40.0, "z": 0.0, "yaw": 90.0})
    # CARLA: x east, y south (left-handed); heading +y, the right-hand side is -x
    assert left["params"]["other_actor_location"] == pytest.approx({"x": 3.5, "y": 40, "z": 0})
    assert right["params"]["other_actor_location"] == pytest.approx({"x": -3.5, "y": 60, "z": 0})


def test_obstacle_lead_is_configurable(tmp_path: Path) -> None:
    text = """\
    name: lead
    map: {carla: {waypoints: [[0, 0, 0], [300, 0, 0]]}}
    events:
      - {type: accident, at_m: 150}
    """
    scenarios = concrete(tmp_path, text)
    default = parse_leaderboard_xml(export_leaderboard_xml(scenarios))[0]["scenarios"][0]
    assert default["params"]["distance"] == OBSTACLE_LEAD_M
    assert default["trigger_point"]["x"] == pytest.approx(150 - OBSTACLE_LEAD_M)
    near = parse_leaderboard_xml(export_leaderboard_xml(scenarios, obstacle_lead_m=80))[0]
    assert near["scenarios"][0]["params"]["distance"] == 80
    assert near["scenarios"][0]["trigger_point"]["x"] == pytest.approx(70.0)


def test_export_file_samples_variations(tmp_path: Path) -> None:
    path = write(tmp_path, SCENARIO)
    assert len(parse_leaderboard_xml(export_file(path))) == 3
    assert len(parse_leaderboard_xml(export_file(path, n_variations=5))) == 5
    one = parse_leaderboard_xml(export_file(path, 1, town="Town05", waypoints=WAYPOINTS))
    assert one[0]["town"] == "Town05"


def test_library_scenario_exports_with_given_waypoints() -> None:
    path = Path(__file__).parents[2] / "scenarios/library/train/construction_right_rain_night.yaml"
    wps = [(0.0, 0.0, 0.0), (400.0, 0.0, 0.0)]
    routes = parse_leaderboard_xml(export_file(path, town="Town12", waypoints=wps))
    assert [r["scenarios"][0]["type"] for r in routes] == ["ConstructionObstacle"] * 3


# ------------------------------------------------------------------ errors
def test_stalled_vehicle_is_a_clear_error(tmp_path: Path) -> None:
    text = """\
    name: stalled
    map: {carla: {waypoints: [[0, 0, 0], [100, 0, 0]]}}
    events:
      - {type: accident, at_m: 20}
      - {type: stalled_vehicle, at_m: 50}
    """
    with pytest.raises(ExportError) as info:
        export_leaderboard_xml(concrete(tmp_path, text), None, None)
    assert isinstance(info.value, ScenarioError)
    (problem,) = info.value.problems
    assert problem.field == "events[1]"
    assert "event 1" in problem.message and "stalled_vehicle" in problem.message
    assert "no Leaderboard 2.0 scenario type" in problem.message
    path = write(tmp_path, text, "stalled.yaml")
    with pytest.raises(ExportError, match="stalled_vehicle") as info:
        export_file(path)
    assert info.value.problems[0].file == str(path)


def test_missing_waypoints_is_a_clear_error(tmp_path: Path) -> None:
    scenarios = concrete(tmp_path, "name: nowp\nmap: {carla: {town: Town12}}\n")
    with pytest.raises(ExportError, match="no CARLA waypoints") as info:
        export_leaderboard_xml(scenarios, None, None)
    assert info.value.problems[0].field == "map.carla.waypoints"
    scenarios = concrete(tmp_path, "name: nocarla\n")
    with pytest.raises(ExportError, match="waypoints"):
        export_leaderboard_xml(scenarios, "Town12", None)
    with pytest.raises(ExportError, match="no CARLA town"):
        export_leaderboard_xml(scenarios, None, WAYPOINTS)
    # given as arguments, they are enough
    assert parse_leaderboard_xml(export_leaderboard_xml(scenarios, "Town12", WAYPOINTS))


@pytest.mark.parametrize(
    "waypoints", [[(0.0, 0.0, 0.0)], [(1.0, 1.0, 0.0), (1.0, 1.0, 5.0)]], ids=["one", "same"]
)
def test_degenerate_waypoints_are_refused(tmp_path: Path, waypoints) -> None:
    with pytest.raises(ExportError, match="bad waypoints"):
        export_leaderboard_xml(concrete(tmp_path, "name: x\n"), "Town12", waypoints)


def test_event_beyond_the_route_is_refused(tmp_path: Path) -> None:
    text = """\
    name: far
    map: {carla: {waypoints: [[0, 0, 0], [100, 0, 0]]}}
    events:
      - {type: red_light_runner, at_m: 150}
    """
    with pytest.raises(ExportError, match="beyond the CARLA waypoint route") as info:
        export_leaderboard_xml(concrete(tmp_path, text), None, None)
    assert info.value.problems[0].field == "events[0].at_m"


def test_unsampled_scenario_is_refused(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, SCENARIO))
    with pytest.raises(ExportError, match="sample it first"):
        export_leaderboard_xml([scenario], None, None)


def test_polyline_repeated_points_and_bounds() -> None:
    line = Polyline([(0, 0, 0), (0, 0, 0), (3, 4, 1)])
    assert line.length == pytest.approx(5.0)
    assert line.at(5.0) == pytest.approx((3.0, 4.0, 1.0, math.degrees(math.atan2(4, 3))))
    with pytest.raises(ValueError, match="outside the route"):
        line.at(5.5)
