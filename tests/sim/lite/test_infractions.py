"""Scripted drives that trigger each Leaderboard infraction exactly once, a clean drive that
triggers none, and the oriented-box overlap test the collision check rests on."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pytest

from sim.control import VehicleControl
from sim.geometry import world_to_ego
from sim.ground_truth import InfractionEvent, TrafficLightState
from sim.lite.autopilot import RouteFollower
from sim.lite.dynamics import MAX_STEER_ANGLE_RAD, MKZ_WHEELBASE_M
from sim.lite.town import TownSpec
from sim.lite.world import LiteSimulator, obb_overlap
from sim.spec import PedestrianSpec, PropSpec, RouteSpec, VehicleSpec, WorldSpec

SMALL = TownSpec(blocks_x=2, blocks_y=2)
STRAIGHT_SEED = 2  # small town: the route's first 72 m are one lane, no junction
SIGNAL_SEED = 0  # small town: the route goes straight through a signalized junction at ~80 m
BRAKE = VehicleControl(brake=1.0)
LOC = r"\(x=-?[\d.]+, y=-?[\d.]+, z=-?[\d.]+\)"


def _world(seed: int = STRAIGHT_SEED, **over) -> LiteSimulator:
    params: dict = dict(
        town=SMALL, route=RouteSpec(length_m=150.0), num_vehicles=0, num_pedestrians=0
    )
    params.update(over)
    sim = LiteSimulator()
    sim.reset(WorldSpec(**params), seed)
    return sim


def _drive(
    sim: LiteSimulator,
    control: Callable[[], VehicleControl],
    ticks: int,
    until: Callable[[], bool] | None = None,
) -> list[InfractionEvent]:
    events: list[InfractionEvent] = []
    for _ in range(ticks):
        sim.tick(control())
        events += sim.events
        if until is not None and until():
            break
    return events


def _full_throttle(sim: LiteSimulator) -> Callable[[], VehicleControl]:
    follower = RouteFollower(sim)
    return lambda: VehicleControl(throttle=1.0, steer=follower().steer)


def _offset_follower(
    sim: LiteSimulator, left_m: float, speed: float
) -> Callable[[], VehicleControl]:
    """Pure pursuit on the route shifted `left_m` to its left, P speed control."""

    def control() -> VehicleControl:
        ego = sim.ego
        s = sim.criteria.progress_m + 6.0 + 0.5 * max(ego.speed, 0.0)
        p = sim.route.point_at(s)
        yaw = sim.route.yaw_at(s)
        target = p + left_m * np.array([math.sin(yaw), -math.cos(yaw)])
        local = world_to_ego(target[None], np.array([ego.x, ego.y]), ego.yaw)[0]
        wheel = math.atan(MKZ_WHEELBASE_M * 2.0 * local[1] / float(local @ local))
        steer = -wheel / MAX_STEER_ANGLE_RAD
        if ego.speed < speed:
            return VehicleControl(throttle=0.5, steer=steer)
        return VehicleControl(brake=0.3, steer=steer)

    return control


def _kinds(events: list[InfractionEvent]) -> list[str]:
    return [e.kind for e in events]


# ------------------------------------------------------------------ collisions
def test_collision_with_stopped_vehicle_counted_once() -> None:
    sim = _world(vehicles=(VehicleSpec(route_s_m=40.0, behaviour="stopped"),))
    npc_id = int(sim.traffic.ids[0])
    events = _drive(sim, _full_throttle(sim), 160)  # drives into and through the car
    assert _kinds(events) == ["collisions_vehicle"]
    ev = events[0]
    assert ev.actor_id == npc_id
    assert re.fullmatch(
        rf"Agent collided against object with type=vehicle\.\S+ and id={npc_id} at {LOC}",
        ev.message,
    ), ev.message
    assert ev.location[:2] == pytest.approx((sim.route.point_at(40.0 - 4.6)), abs=3.0)
    assert sim.route_status.failure is None


def test_collision_ignored_when_ego_not_moving() -> None:
    # The car is placed overlapping the ego's front bumper; the braked ego never moves.
    sim = _world(vehicles=(VehicleSpec(route_s_m=3.0, behaviour="stopped"),))
    assert sim._collisions(np.array([sim.ego.x, sim.ego.y])), "setup: boxes must overlap"
    events = _drive(sim, lambda: BRAKE, 100)
    assert events == []


def test_repeated_contact_within_5s_and_5m_counted_once() -> None:
    sim = _world(vehicles=(VehicleSpec(route_s_m=30.0, behaviour="stopped"),))
    follower = RouteFollower(sim)
    ego_xy = lambda: np.array([sim.ego.x, sim.ego.y])  # noqa: E731
    events: list[InfractionEvent] = []
    contact_ticks, separations = 0, 0

    def step(control: VehicleControl) -> bool:
        nonlocal contact_ticks
        sim.tick(
            VehicleControl(
                throttle=control.throttle,
                brake=control.brake,
                reverse=control.reverse,
                steer=follower().steer,
            )
        )
        events.extend(sim.events)
        touching = bool(sim._collisions(ego_xy()))
        contact_ticks += touching
        return touching

    # Creep into the car, back off until clear, creep in again: all within 5 s and 5 m.
    for _ in range(400):
        if step(VehicleControl(throttle=0.4)):
            break
    t_first = sim.time_s
    for _ in range(5):
        step(VehicleControl(throttle=0.2))
    for _ in range(60):
        if not step(VehicleControl(throttle=0.8, reverse=True)):
            separations += 1
            break
    for _ in range(60):
        if step(VehicleControl(throttle=0.8)):
            break
    for _ in range(5):
        step(VehicleControl(throttle=0.3))
    assert separations == 1 and contact_ticks > 8
    assert sim.time_s - t_first < 5.0
    assert _kinds(events) == ["collisions_vehicle"]


def test_collision_with_cone_is_layout() -> None:
    sim = _world(props=(PropSpec(kind="cone", route_s_m=30.0),))
    events = _drive(sim, _full_throttle(sim), 120)
    assert _kinds(events) == ["collisions_layout"]
    assert "type=static.prop.constructioncone" in events[0].message
    assert events[0].actor_id == int(sim.prop_ids[0])


def test_collision_with_pedestrian() -> None:
    # Ego at full throttle reaches 40 m after ~4.5 s; the walker starts 4 m to the right
    # when the ego has driven 8 m and is in the middle of the lane ~2.5 s later. (Triggers
    # from 4 m to 14 m all give a hit: this is not a knife-edge timing.)
    sim = _world(
        pedestrians=(
            PedestrianSpec(
                route_s_m=40.0,
                side="right",
                start_lateral_m=4.0,
                walk_m=8.0,
                speed_mps=1.6,
                trigger_s_m=8.0,
            ),
        )
    )
    ped_id = int(sim.pedestrians.ids[0])
    events = _drive(sim, _full_throttle(sim), 140)
    assert _kinds(events) == ["collisions_pedestrian"]
    assert events[0].actor_id == ped_id
    assert "type=walker." in events[0].message
    assert "pedestrian_crossing#0" in sim.ground_truth().active_events


# ------------------------------------------------------------------ red light
def test_running_a_red_light() -> None:
    sim = _world(SIGNAL_SEED)
    lane = sim.town.lanes[int(sim.route.lane_ids[0])]
    light = lane.light_id
    assert light >= 0, "setup: the route's first lane must end at a light"
    red, yellow = int(TrafficLightState.Red), int(TrafficLightState.Yellow)
    # Wait (braked) for the light to turn red, then floor it: the red phase (>= 32 s)
    # outlasts the ~7 s drive to the stop line.
    prev = sim._light_states[light]
    for _ in range(2000):
        sim.tick(BRAKE)
        state = sim._light_states[light]
        if prev == yellow and state == red:
            break
        prev = state
    assert sim._light_states[light] == red
    assert sim.events == []
    events = _drive(sim, _full_throttle(sim), 400, until=lambda: sim.criteria.progress_m > 110.0)
    assert _kinds(events) == ["red_light"]
    ev = events[0]
    assert ev.actor_id == light
    assert re.fullmatch(rf"Agent ran a red light {light} at {LOC}", ev.message)
    assert sim._light_states[light] == red  # still red: the ego crossed on red


def test_green_light_is_no_infraction() -> None:
    sim = _world(SIGNAL_SEED)
    light = sim.town.lanes[int(sim.route.lane_ids[0])].light_id
    green = int(TrafficLightState.Green)
    prev = sim._light_states[light]
    for _ in range(2000):
        sim.tick(BRAKE)
        if prev != green and sim._light_states[light] == green:
            break
        prev = sim._light_states[light]
    # 10 s of green: start at 6 m/s.. full throttle reaches the line (~75 m) in ~6 s.
    events = _drive(sim, _full_throttle(sim), 400, until=lambda: sim.criteria.progress_m > 110.0)
    assert events == []


# ------------------------------------------------------------ lanes and route
def test_driving_in_the_opposite_lane() -> None:
    sim = _world()
    lane = sim.town.lanes[int(sim.route.lane_ids[0])]
    # The opposite direction's inner lane lies (index + 1) lane widths left of ours.
    events = _drive(sim, _offset_follower(sim, (lane.index + 1) * lane.width, speed=8.0), 220)
    status = sim.route_status
    assert status.outside_lanes_m > 20.0
    assert status.outside_lanes_pct == pytest.approx(
        100.0 * status.outside_lanes_m / sim.criteria.driven_m
    )
    assert 20.0 < status.outside_lanes_pct <= 100.0
    assert status.failure is None
    assert events == []  # outside-lanes is reported once per route, not per tick
    ev = sim.criteria.outside_lanes_event(sim.frame, sim.time_s)
    assert ev is not None and ev.kind == "outside_route_lanes"
    assert ev.location is None  # a route-wide event: no place (plots and videos skip it)
    assert re.fullmatch(
        r"Agent went outside its route lanes for about [\d.]+ meters \([\d.]+% of the completed route\)",
        ev.message,
    )


def test_staying_in_lane_is_not_outside() -> None:
    sim = _world()
    _drive(sim, _offset_follower(sim, 0.0, speed=8.0), 220)
    assert sim.route_status.outside_lanes_m == 0.0
    assert sim.criteria.outside_lanes_event(sim.frame, sim.time_s) is None


def test_route_deviation_ends_the_route() -> None:
    sim = _world()
    events = _drive(
        sim,
        lambda: VehicleControl(throttle=0.6, steer=0.25),
        600,
        until=lambda: sim.route_status.ended,
    )
    status = sim.route_status
    assert status.ended and not status.completed
    assert status.failure == "Agent deviated from the route"
    assert _kinds(events)[-1] == "route_dev"
    assert _kinds(events) == ["route_dev"]
    ego = np.array([sim.ego.x, sim.ego.y])
    assert np.linalg.norm(sim.route.points - ego, axis=1).min() >= 29.0
    # After the end, nothing more happens.
    assert _drive(sim, lambda: VehicleControl(throttle=1.0), 20) == []


def test_agent_blocked_after_180s() -> None:
    sim = _world()
    events = _drive(sim, lambda: BRAKE, 3700, until=lambda: sim.route_status.ended)
    status = sim.route_status
    assert status.failure == "Agent got blocked"
    assert _kinds(events) == ["vehicle_blocked"]
    assert 180.0 < sim.time_s < 181.0
    assert re.fullmatch(rf"Agent got blocked at {LOC}", events[0].message)


def test_route_timeout() -> None:
    sim = _world(timeout_s=5.0)
    events = _drive(
        sim, lambda: VehicleControl(throttle=0.1), 200, until=lambda: sim.route_status.ended
    )
    assert sim.route_status.failure == "Agent timed out"
    assert _kinds(events) == ["route_timeout"]
    assert 5.0 < sim.time_s <= 5.2
    assert sim.route_status.timeout_s == 5.0


def test_default_timeout_grows_with_progress() -> None:
    sim = _world()
    assert sim.route_status.timeout_s == pytest.approx(300.0)
    _drive(sim, _full_throttle(sim), 60)
    progress = sim.route_status.progress_m
    expected = 300.0 + progress / (0.1 * sim.speed_limit_mps)
    assert sim.route_status.timeout_s == pytest.approx(expected, rel=0.05)


def test_clean_route_completes() -> None:
    sim = _world(SIGNAL_SEED)
    follower = RouteFollower(sim)
    events = _drive(sim, follower, 3000, until=lambda: sim.route_status.ended)
    status = sim.route_status
    assert status.completed and status.completion == 100.0
    assert status.failure is None
    assert events == []
    assert status.outside_lanes_m == 0.0
    assert np.linalg.norm(np.array([sim.ego.x, sim.ego.y]) - sim.route.points[-1]) < 10.0


# ------------------------------------------------------------------- geometry
def _obb(c, yaw_deg, half) -> tuple[np.ndarray, float, np.ndarray]:
    return np.asarray(c, float), math.radians(yaw_deg), np.asarray(half, float)


def test_obb_touching_counts_as_overlap() -> None:
    a = _obb((0, 0), 0, (2, 1))
    hit = obb_overlap(
        *a, np.array([[4.0, 0.0], [0.0, 2.0]]), np.zeros(2), np.array([[2.0, 1.0]] * 2)
    )
    assert hit.tolist() == [True, True]


def test_obb_separated() -> None:
    a = _obb((0, 0), 0, (2, 1))
    centres = np.array([[4.01, 0.0], [0.0, 2.01], [10.0, 10.0], [-4.5, 0.0]])
    hit = obb_overlap(*a, centres, np.zeros(4), np.array([[2.0, 1.0]] * 4))
    assert not hit.any()


def test_obb_rotated_45_degrees() -> None:
    a = _obb((0, 0), 0, (1, 1))
    # Unit square rotated 45 deg reaches sqrt(2) along x: touches/overlaps a box whose
    # edge is at x = 1 when its centre is closer than 1 + sqrt(2).
    half = np.array([[1.0, 1.0]])
    near = obb_overlap(*a, np.array([[2.3, 0.0]]), np.array([math.pi / 4]), half)
    far = obb_overlap(*a, np.array([[2.5, 0.0]]), np.array([math.pi / 4]), half)
    assert near.tolist() == [True] and far.tolist() == [False]
    # Diagonal case where the axis-aligned bounding boxes overlap but the boxes do not
    # (needs the rotated box's own axes as separating axes).
    diag = obb_overlap(
        *_obb((0, 0), 0, (1, 1)), np.array([[2.2, 2.2]]), np.array([math.pi / 4]), half
    )
    assert diag.tolist() == [False]


def test_obb_long_thin_rotated_box() -> None:
    a = _obb((0, 0), 90, (3, 0.2))  # a 6 m pole along y
    hit = obb_overlap(
        *a, np.array([[0.0, 2.8], [1.0, 0.0], [0.0, 3.6]]), np.zeros(3), np.array([[0.5, 0.5]] * 3)
    )
    assert hit.tolist() == [True, False, False]


def test_obb_empty() -> None:
    assert obb_overlap(
        np.zeros(2), 0.0, np.ones(2), np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2))
    ).shape == (0,)


def test_oncoming_lane_inside_a_two_way_zone_is_not_outside_route_lanes() -> None:
    """The Leaderboard's *TwoWays scenarios switch the wrong-direction check off."""
    from sim.criteria import LaneQuery, RouteCriteria
    from sim.geometry import GeoReference
    from sim.route import Route

    n = 201
    pts = np.stack([np.arange(n, dtype=float), np.zeros(n)], axis=1)
    route = Route(pts, np.zeros(n), np.full(n, 4), GeoReference(), np.zeros(n, np.int64))
    wrong_way = LaneQuery(on_driving_lane=True, in_junction=False, lane_heading=np.pi)
    for zones, expected in (((), 100.0), (((0.0, 200.0),), 0.0)):
        crit = RouteCriteria(route, 10.0, 2.4, oncoming_zones=zones)
        for k in range(1, 150):
            crit.update(k, k * 0.05, np.array([k * 0.5, 0.0]), 0.0, 10.0, wrong_way, [], [])
        assert crit.status.outside_lanes_pct == expected
