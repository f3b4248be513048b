"""Automatic labels on scripted scenes: a straight road along +x (world), ego at the origin."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.data.labels import LabelMemory, label_frame, lane_labels
from agent.data.schema import (
    FLAGS,
    INTENTS,
    LANE_COLUMNS,
    LANE_STATIONS_M,
    LIGHT_STATES,
    MAX_OBSTACLES,
)
from agent.rules import Plan, RulePlanner, view_from_ground_truth
from sim.geometry import GeoReference
from sim.ground_truth import ActorState, GroundTruth, TrafficLightInfo, TrafficLightState
from sim.route import LaneLayout, Route
from sim.weather import Weather

LANE_M = 3.5
LIMIT_MPS = 50 / 3.6
EGO_SIZE = (4.89, 2.12, 1.5)
CAR = (4.6, 1.9, 1.5)
CONE = (0.45, 0.45, 0.75)
NO_FOG = {"fog_density": 0.0}


def route_and_layout() -> tuple[Route, LaneLayout]:
    x = np.arange(-20.0, 201.0, 1.0)
    n = len(x)
    route = Route(
        points=np.stack([x, np.zeros(n)], axis=1),
        yaw=np.zeros(n),
        options=np.full(n, 4),
        geo=GeoReference(42.0, 2.0),
        lane_ids=np.zeros(n, np.int64),
    )
    # The ego drives the right lane of two in its direction.
    layout = LaneLayout(
        np.full(n, LANE_M), np.ones(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool)
    )
    return route, layout


def actor(
    i: int,
    type_id: str,
    along: float,
    left: float,
    yaw: float = 0.0,
    speed: float = 0.0,
    size=CAR,
    role: str = "background",
) -> ActorState:
    # World y points right of the ego (south), so `left` metres to the left is y = -left.
    return ActorState(i, type_id, along, -left, yaw, speed, size, role)


def scene(
    speed: float = 10.0,
    actors: tuple = (),
    props: tuple = (),
    weather: dict | None = None,
    lights: tuple = (),
    time_s: float = 10.0,
    ego_yaw: float = 0.0,
    events: tuple = (),
):
    route, layout = route_and_layout()
    gt = GroundTruth(
        frame=int(time_s * 20),
        time_s=time_s,
        ego=ActorState(1, "vehicle.lincoln.mkz_2020", 0.0, 0.0, ego_yaw, speed, EGO_SIZE, "hero"),
        actors=tuple(actors),
        props=tuple(props),
        traffic_lights=tuple(lights),
        weather=Weather.from_dict(weather or {"preset": "ClearNoon"}),
        friction=0.9,
        route_progress_m=20.0,
        route_completion=10.0,
        active_events=tuple(events),
        speed_limit_mps=LIMIT_MPS,
    )
    return gt, view_from_ground_truth(gt, route, layout)


def expert_plan(view, time_s: float = 10.0) -> Plan:
    return RulePlanner().plan(view, time_s)


def flags_of(labels) -> set[str]:
    return set(labels.active_flags)


def test_cones_closing_the_right_lane_in_rain_at_night() -> None:
    # A cone taper from the right edge across the ego lane from 35 m, then cones along it.
    cones = [
        actor(
            100 + k,
            "static.prop.constructioncone",
            35.0 + 3.0 * k,
            -1.45 + 0.97 * k,
            size=CONE,
            role="scenario",
        )
        for k in range(4)
    ] + [
        actor(
            110 + k,
            "static.prop.constructioncone",
            47.0 + 3.0 * k,
            1.45,
            size=CONE,
            role="scenario",
        )
        for k in range(5)
    ]
    gt, view = scene(speed=8.0, props=tuple(cones), weather={"preset": "HardRainNight", **NO_FOG})
    # The expert moves over to the left lane and slows to the work zone's 20 km/h.
    path = (
        view.route_xy + np.array([0.0, 1.0]) * np.clip(view.route_s / 20.0, 0, 1)[:, None] * LANE_M
    )
    plan = Plan(
        trajectory=path[[4, 8, 12, 16, 20, 24, 28, 32]],
        path=path,
        target_speed_mps=20 / 3.6,
        lane_offset_m=LANE_M,
        reason="pass left",
        hazards=("blocked_lane",),
    )
    labels = label_frame(view, plan, gt)
    assert flags_of(labels) == {"construction", "lane_closed", "rain", "night"}
    assert labels.intent_name == "change_left"
    assert labels.text == (
        "Heavy rain at night. Construction closes the right lane 35 m ahead; "
        "change to the left lane and slow to 20 km/h."
    )
    # Each flag that is on carries its nearest hazard's distance: the first cone (35 m)
    # both for the construction and for the lane it closes; weather is here (0 m).
    distance = dict(zip(FLAGS, labels.flag_distance_m.tolist(), strict=True))
    assert distance["construction"] == pytest.approx(35.0, abs=0.5)
    assert distance["lane_closed"] == pytest.approx(35.0, abs=0.5)
    assert distance["rain"] == distance["night"] == 0.0
    off = [name for name in FLAGS if name not in flags_of(labels)]
    assert np.isnan([distance[name] for name in off]).all()


def test_pedestrian_walking_into_the_lane_is_yielded_to() -> None:
    walker = actor(
        50,
        "walker.pedestrian.0001",
        20.0,
        -4.0,
        yaw=-math.pi / 2,
        speed=1.4,
        size=(0.5, 0.5, 1.8),
        role="scenario",
    )
    gt, view = scene(speed=8.0, actors=(walker,))
    labels = label_frame(view, expert_plan(view), gt)
    assert flags_of(labels) == {"pedestrian_crossing"}
    assert labels.intent_name in ("yield", "stop")
    assert "A pedestrian crosses 20 m ahead" in labels.text


def test_pedestrian_walking_along_the_kerb_is_not_crossing() -> None:
    walker = actor(
        50, "walker.pedestrian.0001", 20.0, -4.0, yaw=0.0, speed=1.4, size=(0.5, 0.5, 1.8)
    )
    gt, view = scene(actors=(walker,))
    assert "pedestrian_crossing" not in flags_of(label_frame(view, expert_plan(view), gt))


def test_clear_road_keeps_the_lane_without_flags() -> None:
    gt, view = scene(speed=13.5)
    labels = label_frame(view, expert_plan(view), gt)
    assert not labels.flags.any()
    assert labels.intent_name == "keep_lane"
    assert labels.text == "Clear day. Road ahead is free; keep the lane at 50 km/h."
    assert LIGHT_STATES[labels.light_state] == "none"
    assert not labels.obstacle_mask.any()


def test_lead_braking_needs_its_deceleration() -> None:
    lead = actor(60, "vehicle.npc.sedan", 20.0, 0.0, speed=5.0)
    gt, view = scene(speed=10.0, actors=(lead,))
    plan = expert_plan(view)
    before = LabelMemory(time_s=gt.time_s - 0.5, speeds={60: 8.0})  # -6 m/s^2
    braking = label_frame(view, plan, gt, before)
    assert "lead_braking" in flags_of(braking)
    assert braking.flag_distance_m[FLAGS.index("lead_braking")] == pytest.approx(20.0, abs=0.5)
    steady = LabelMemory(time_s=gt.time_s - 0.5, speeds={60: 5.2})
    assert "lead_braking" not in flags_of(label_frame(view, plan, gt, steady))
    assert "lead_braking" not in flags_of(label_frame(view, plan, gt, None))


def test_cut_in_from_the_left_lane() -> None:
    cutter = actor(70, "vehicle.npc.sedan", 15.0, 3.2, yaw=math.atan2(1.2, 10.0), speed=10.0)
    gt, view = scene(speed=12.0, actors=(cutter,))
    labels = label_frame(view, expert_plan(view), gt)
    assert "cut_in" in flags_of(labels)
    assert "cuts in from the left" in labels.text
    # The same car driving straight on in its lane is no cut-in.
    passing = actor(70, "vehicle.npc.sedan", 15.0, 3.2, speed=10.0)
    gt, view = scene(speed=12.0, actors=(passing,))
    assert "cut_in" not in flags_of(label_frame(view, expert_plan(view), gt))


def test_red_light_ahead_and_its_state() -> None:
    light = TrafficLightInfo(
        7, TrafficLightState.Red, 31.0, 3.0, ((30.0, -4.0), (30.0, 4.0)), 0.0, (0,)
    )
    gt, view = scene(speed=10.0, lights=(light,))
    labels = label_frame(view, expert_plan(view), gt)
    assert "red_light" in flags_of(labels)
    assert LIGHT_STATES[labels.light_state] == "red"
    assert "The light 30 m ahead is red" in labels.text
    assert labels.intent_name in ("slow_down", "stop")


def test_stalled_vehicle_is_an_obstacle_a_queue_is_not() -> None:
    stalled = actor(80, "vehicle.npc.sedan", 40.0, 0.0, role="scenario")
    gt, view = scene(speed=10.0, actors=(stalled,))
    plan = expert_plan(view)
    memory = LabelMemory(time_s=gt.time_s - 0.5, speeds={80: 0.0}, standing_since={80: 2.0})
    labels = label_frame(view, plan, gt, memory)
    assert {"obstacle", "lane_closed"} <= flags_of(labels)
    assert "A stopped vehicle blocks the lane 40 m ahead" in labels.text
    queued = actor(80, "vehicle.npc.sedan", 40.0, 0.0, role="background")
    gt, view = scene(speed=10.0, actors=(queued,))
    labels = label_frame(view, expert_plan(view), gt, memory)
    assert not {"obstacle", "lane_closed"} & flags_of(labels)


@pytest.mark.parametrize(
    ("weather", "ego_yaw", "expected"),
    [
        ({"preset": "ClearSunset"}, 0.0, {"glare"}),  # sun at azimuth -1 deg, low, in front
        ({"preset": "ClearSunset"}, math.pi, set()),  # sun behind
        ({"preset": "ClearNight"}, 0.0, {"night"}),  # CARLA's night fog starts at 75 m
        ({"preset": "CloudyNight"}, 0.0, {"night", "fog"}),
        ({"preset": "SoftRainNoon"}, 0.0, {"rain"}),
        ({"preset": "ClearNoon", "fog_density": 80.0, "fog_distance": 5.0}, 0.0, {"fog"}),
    ],
)
def test_weather_flags(weather: dict, ego_yaw: float, expected: set[str]) -> None:
    gt, view = scene(speed=10.0, weather=weather, ego_yaw=ego_yaw)
    labels = label_frame(view, expert_plan(view), gt)
    assert flags_of(labels) == expected


def test_obstacle_rows_nearest_first_in_the_ego_frame() -> None:
    cars = tuple(
        actor(200 + k, "vehicle.npc.sedan", 10.0 + 1.5 * k, 7.0, speed=3.0) for k in range(40)
    )
    far = actor(300, "vehicle.npc.sedan", 90.0, 0.0)
    gt, view = scene(actors=(*cars, far))
    labels = label_frame(view, expert_plan(view), gt)
    assert labels.obstacles.shape == (MAX_OBSTACLES, 8)
    assert labels.obstacle_mask.all()  # 40 within range, 32 kept
    assert labels.obstacles[0, :2] == pytest.approx([10.0, 7.0])
    assert labels.obstacles[0, 3] == pytest.approx(3.0)  # vx
    assert np.all(np.diff(np.hypot(labels.obstacles[:, 0], labels.obstacles[:, 1])) >= 0)
    assert 90.0 not in labels.obstacles[:, 0]
    assert len(labels.text) <= 200
    assert labels.flags.shape == (len(FLAGS),)
    assert 0 <= labels.intent < len(INTENTS)


def test_lane_labels_follow_the_layout_along_the_route() -> None:
    """The lanes beside the route at 0 / 20 / 40 m (LANE_STATIONS_M): here the ego's road
    has a same-direction lane to the left up to x = 30 m, then an oncoming one."""
    gt, _ = scene()
    route, layout = route_and_layout()
    x = route.points[:, 0]
    two_way = x > 30.0
    layout = LaneLayout(
        layout.width_m,
        np.where(two_way, 0, 1).astype(np.int64),
        np.zeros(len(x), np.int64),
        two_way,
    )
    view = view_from_ground_truth(gt, route, layout)
    labels = label_frame(view, expert_plan(view), gt)
    assert LANE_STATIONS_M == (0.0, 20.0, 40.0)
    assert LANE_COLUMNS == ("left_same", "right_same", "left_opposite")
    expected = np.array([[True, False, False], [True, False, False], [False, False, True]])
    np.testing.assert_array_equal(labels.lanes, expected)
    np.testing.assert_array_equal(lane_labels(view), expected)
