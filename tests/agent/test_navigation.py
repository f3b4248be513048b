"""RoutePlanner: the target point from GNSS + compass, as a Leaderboard agent computes it."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path

import numpy as np
import pytest

from agent.expert import ExpertDriver
from agent.navigation import RoutePlanner, road_option_value
from sim.control import RoadOption
from sim.geometry import GeoReference, world_to_ego, yaw_to_compass

GEO = GeoReference(lat_ref=42.0, lon_ref=2.0)

SCENARIO = """
name: nav_turn
seed: 1
map:
  town: {road_type: urban, lanes_per_direction: 1, curvature: 0.2, block_m: 120}
route: {length_m: 220, manoeuvres: [left]}
traffic: {vehicles: 0, pedestrians: 0, speed_limit_kmh: 40}
"""


class CarlaLikeOption(Enum):  # carla's agents RoadOption is a plain Enum in older releases
    LEFT = 1
    LANEFOLLOW = 4


def plan_of(points: list[tuple[float, float]], options: list) -> list[tuple[dict, object]]:
    out = []
    for (x, y), option in zip(points, options, strict=True):
        lat, lon, z = GEO.to_gps(x, y)
        out.append(({"lat": lat, "lon": lon, "z": z}, option))
    return out


def gnss(x: float, y: float) -> np.ndarray:
    return np.array(GEO.to_gps(x, y))


def test_road_option_values_of_every_flavour() -> None:
    assert road_option_value(RoadOption.LEFT) == 1
    assert road_option_value(3) == 3
    assert road_option_value(CarlaLikeOption.LANEFOLLOW) == 4
    with pytest.raises(ValueError, match="RoadOption"):
        road_option_value("left")


def test_pops_reached_waypoints_and_targets_the_next() -> None:
    planner = RoutePlanner(min_distance_m=7.5, max_distance_m=50.0)
    planner.set_route(
        plan_of(
            [(0.0, 0.0), (30.0, 0.0), (60.0, 0.0), (60.0, 40.0)],
            [RoadOption.LANEFOLLOW, 3, CarlaLikeOption.LEFT, RoadOption.VOID],
        )
    )
    # Heading east (+x, yaw 0): the first waypoint is reached, the target 30 m ahead.
    nav = planner.update(gnss(0.0, 0.0), yaw_to_compass(0.0))
    assert nav.target_point == pytest.approx([30.0, 0.0], abs=0.02)
    assert nav.command == 3
    assert nav.next_target_point == pytest.approx([60.0, 0.0], abs=0.02)
    assert nav.target_point.dtype == np.float32
    # At (25, 0) the target (30, 0) is reached (5 m < 7.5 m): the next is (60, 0), which
    # lies to the left of an ego facing south (+y, yaw +90 deg).
    nav = planner.update(gnss(25.0, 0.0), yaw_to_compass(math.pi / 2))
    assert nav.target_point == pytest.approx([0.0, 35.0], abs=0.02)
    assert nav.command == int(RoadOption.LEFT)  # the carla-like option, read by value
    # Past it: the last waypoint (VOID -> command 0) is kept for good.
    nav = planner.update(gnss(55.0, 0.0), yaw_to_compass(0.0))
    assert nav.target_point == pytest.approx([5.0, -40.0], abs=0.02)
    assert nav.command == 0
    nav = planner.update(gnss(60.0, 38.0), yaw_to_compass(math.pi / 2))
    assert planner.remaining == 1
    assert nav.next_target_point == pytest.approx(nav.target_point)


def test_nan_compass_keeps_the_last_heading() -> None:
    planner = RoutePlanner()
    planner.set_route(plan_of([(0.0, 0.0), (40.0, 0.0)], [4, 4]))
    planner.update(gnss(0.0, 0.0), yaw_to_compass(0.0))
    nav = planner.update(gnss(1.0, 0.0), float("nan"))
    assert nav.target_point == pytest.approx([39.0, 0.0], abs=0.02)


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ValueError, match="min_distance_m"):
        RoutePlanner(min_distance_m=0.0)
    with pytest.raises(ValueError, match="global_plan_gps"):
        RoutePlanner().set_route([])
    with pytest.raises(RuntimeError, match="set_route"):
        RoutePlanner().update(gnss(0.0, 0.0), 0.0)


def test_target_matches_the_ground_truth_pose_in_the_lite_sim(tmp_path: Path) -> None:
    from scenarios.compile import compile_scenario
    from scenarios.loader import load_scenario
    from sim.control import VehicleControl
    from sim.lite.world import LiteSimulator
    from sim.sensors import default_sensor_suite

    path = tmp_path / "nav.yaml"
    path.write_text(SCENARIO)
    sim = LiteSimulator()
    sim.reset(compile_scenario(load_scenario(path), str(path)), 3)
    sim.setup_sensors([s for s in default_sensor_suite() if s["type"] != "sensor.camera.rgb"])
    gps_plan, world_plan = sim.global_plan()
    planner = RoutePlanner()
    planner.set_route(gps_plan)
    expert = ExpertDriver()
    control = VehicleControl()
    errors, commands = [], set()
    for _ in range(500):
        data = sim.tick(control)
        if sim.route_status.ended:
            break
        nav = planner.update(data["gps"][1], float(data["imu"][1][6]))
        gt = sim.ground_truth()
        k = len(world_plan) - planner.remaining
        loc = world_plan[k][0].location
        truth = world_to_ego(np.array([loc.x, loc.y]), np.array([gt.ego.x, gt.ego.y]), gt.ego.yaw)
        errors.append(float(np.linalg.norm(nav.target_point - truth)))
        commands.add(nav.command)
        control = expert.step(sim)
    assert len(errors) > 100
    assert max(errors) < 0.2
    assert planner.remaining < len(world_plan)  # it advanced along the plan
    assert int(RoadOption.LEFT) in commands
