"""LiteSimulator as a whole: determinism, sensor formats, frames, plan, ground truth."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from sim.control import RoadOption, VehicleControl
from sim.geometry import Transform, yaw_to_compass
from sim.lite.town import TownSpec
from sim.lite.world import EGO_TYPE_ID, GEO_REFERENCE, LiteSimulator
from sim.protocol import Simulator
from sim.sensors import GNSS, IMU, SPEEDOMETER
from sim.spec import RouteSpec, WeatherKeyframe, WorldSpec
from sim.weather import GRAVITY_MPS2, Weather

SMALL = TownSpec(blocks_x=2, blocks_y=2)
SPEC = WorldSpec(town=SMALL, route=RouteSpec(length_m=200.0), num_vehicles=12, num_pedestrians=6)
NON_CAMERA_SENSORS = [
    {"type": GNSS, "id": "gps", "x": 0.0, "y": 0.0, "z": 0.0},
    {"type": IMU, "id": "imu", "x": 0.0, "y": 0.0, "z": 0.0, "roll": 0.0, "pitch": 0.0, "yaw": 0.0},
    {"type": SPEEDOMETER, "id": "speed", "reading_frequency": 20},
]


def _controls(n: int) -> list[VehicleControl]:
    rng = np.random.default_rng(123)
    return [
        VehicleControl(throttle=float(rng.uniform(0.2, 0.8)), steer=float(rng.uniform(-0.05, 0.05)))
        for _ in range(n)
    ]


def _record(seed: int, ticks: int = 400) -> dict:
    sim = LiteSimulator()
    sim.reset(SPEC, seed)
    sim.setup_sensors(NON_CAMERA_SENSORS)
    out: dict = {"ego": [], "npc": [], "ped": [], "events": [], "sensors": []}
    for c in _controls(ticks):
        data = sim.tick(c)
        e = sim.ego
        out["ego"].append((e.x, e.y, e.yaw, e.speed))
        out["npc"].append(sim.traffic.positions()[0].copy())
        out["ped"].append(sim.pedestrians.positions()[0].copy())
        out["events"] += [(ev.kind, ev.frame, ev.message) for ev in sim.events]
        out["sensors"].append(data)
    return out


@pytest.fixture(scope="module")
def runs() -> tuple[dict, dict, dict]:
    return _record(3), _record(3), _record(4)


def test_same_seed_is_deterministic(runs) -> None:
    a, b, _ = runs
    assert a["ego"] == b["ego"]
    assert all(np.array_equal(x, y) for x, y in zip(a["npc"], b["npc"], strict=True))
    assert all(np.array_equal(x, y) for x, y in zip(a["ped"], b["ped"], strict=True))
    assert a["events"] == b["events"]
    for da, db in zip(a["sensors"], b["sensors"], strict=True):
        assert da.keys() == db.keys() == {"gps", "imu", "speed"}
        assert da["gps"][0] == db["gps"][0]
        assert np.array_equal(da["gps"][1], db["gps"][1])
        assert np.array_equal(da["imu"][1], db["imu"][1])
        assert da["speed"][1] == db["speed"][1]
    # Something actually happened.
    assert a["npc"][0].shape == (12, 2)
    assert not np.array_equal(a["npc"][0], a["npc"][-1])
    assert a["ego"][-1][3] > 5.0


def test_different_seeds_differ(runs) -> None:
    a, _, c = runs
    assert a["ego"][0][:2] != c["ego"][0][:2] or not np.array_equal(a["npc"][0], c["npc"][0])


def test_reset_reproduces_after_other_runs() -> None:
    sim = LiteSimulator()
    sim.reset(SPEC, 3)
    first = [(sim.tick(c), sim.ego.x)[1] for c in _controls(50)]
    sim.reset(SPEC, 9)
    for c in _controls(20):
        sim.tick(c)
    sim.reset(SPEC, 3)
    assert sim.frame == 0
    again = [(sim.tick(c), sim.ego.x)[1] for c in _controls(50)]
    assert first == again


@pytest.fixture(scope="module")
def sensor_sim() -> tuple[LiteSimulator, list[dict]]:
    sim = LiteSimulator()
    sim.reset(
        WorldSpec(town=SMALL, route=RouteSpec(length_m=150.0), num_vehicles=0, num_pedestrians=0), 2
    )
    sim.setup_sensors(NON_CAMERA_SENSORS)
    datas = [sim.tick(VehicleControl(brake=1.0)) for _ in range(5)]
    return sim, datas


def test_protocol_conformance(sensor_sim) -> None:
    sim, _ = sensor_sim
    assert isinstance(sim, Simulator)
    assert sim.backend == "lite"


def test_sensor_formats_at_rest(sensor_sim) -> None:
    sim, datas = sensor_sim
    data = datas[-1]
    frame, gps = data["gps"]
    assert frame == sim.frame
    assert gps.dtype == np.float64 and gps.shape == (3,)
    lat, lon, _ = GEO_REFERENCE.to_gps(sim.ego.x, sim.ego.y)
    assert gps[:2] == pytest.approx([lat, lon], abs=1e-12)
    _, imu = data["imu"]
    assert imu.dtype == np.float64 and imu.shape == (7,)
    assert imu[2] == pytest.approx(GRAVITY_MPS2, abs=0.01)  # az at rest
    assert imu[0] == pytest.approx(0.0, abs=1e-9) and imu[5] == pytest.approx(0.0, abs=1e-9)
    assert imu[6] == pytest.approx(yaw_to_compass(sim.ego.yaw))
    assert 0.0 <= imu[6] < 2 * math.pi
    _, speed = data["speed"]
    assert isinstance(speed, dict) and set(speed) == {"speed"}
    assert isinstance(speed["speed"], float) and speed["speed"] == 0.0


def test_compass_consistent_with_driving_direction() -> None:
    sim = LiteSimulator()
    sim.reset(
        WorldSpec(town=SMALL, route=RouteSpec(length_m=150.0), num_vehicles=0, num_pedestrians=0), 2
    )
    sim.setup_sensors(NON_CAMERA_SENSORS)
    gps0 = sim.tick(VehicleControl(brake=1.0))["gps"][1]
    for _ in range(40):
        data = sim.tick(VehicleControl(throttle=0.6))
    gps1, compass = data["gps"][1], data["imu"][1][6]
    # Heading from the GNSS track: north = +lat, east = +lon; compass 0 = north, pi/2 = east.
    dlat, dlon = gps1[0] - gps0[0], (gps1[1] - gps0[1]) * math.cos(math.radians(gps0[0]))
    track = math.atan2(dlon, dlat) % (2 * math.pi)
    assert math.cos(track - compass) > 0.99
    assert data["speed"][1]["speed"] == pytest.approx(sim.ego.speed) and sim.ego.speed > 3.0
    assert data["imu"][1][0] > 0.5  # accelerating forward


def test_frames_increase_by_one(sensor_sim) -> None:
    sim, datas = sensor_sim
    frames = [d["gps"][0] for d in datas]
    assert frames == list(range(frames[0], frames[0] + len(frames)))
    assert all(d["imu"][0] == d["speed"][0] == d["gps"][0] for d in datas)
    assert sim.time_s == pytest.approx(sim.frame * 0.05)


def test_global_plan_shapes(sensor_sim) -> None:
    sim, _ = sensor_sim
    gps, world = sim.global_plan()
    assert len(gps) == len(world) >= 2
    for (g, o1), (t, o2) in zip(gps, world, strict=True):
        assert set(g) == {"lat", "lon", "z"}
        assert isinstance(t, Transform)
        assert isinstance(o1, RoadOption) and o1 == o2
    first = world[0][0]
    assert (first.location.x, first.location.y) == pytest.approx(tuple(sim.route.points[0]))
    last = world[-1][0]
    assert (last.location.x, last.location.y) == pytest.approx(tuple(sim.route.points[-1]))


def test_ground_truth(sensor_sim) -> None:
    sim, _ = sensor_sim
    gt = sim.ground_truth()
    assert gt.ego.type_id == EGO_TYPE_ID == "vehicle.lincoln.mkz_2020"
    assert gt.ego.role == "hero" and gt.ego.kind == "vehicle"
    assert (gt.ego.x, gt.ego.y) == (sim.ego.x, sim.ego.y)
    assert gt.frame == sim.frame and gt.time_s == sim.time_s
    assert gt.friction == pytest.approx(Weather().friction)
    assert gt.route_completion == sim.route_status.completion
    assert gt.speed_limit_mps == pytest.approx(50 / 3.6)
    assert len(gt.traffic_lights) == len(sim.town.lights)


def test_ground_truth_lists_actors() -> None:
    sim = LiteSimulator()
    sim.reset(SPEC, 3)
    sim.tick(VehicleControl())
    gt = sim.ground_truth()
    kinds = [a.kind for a in gt.actors]
    assert kinds.count("vehicle") == 12 and kinds.count("pedestrian") == 6
    assert len({a.id for a in gt.actors} | {gt.ego.id}) == 19  # unique ids
    assert all(a.role == "background" for a in gt.actors)


def test_nan_control_is_safe_stop() -> None:
    sim = LiteSimulator()
    sim.reset(
        WorldSpec(town=SMALL, route=RouteSpec(length_m=150.0), num_vehicles=0, num_pedestrians=0), 2
    )
    for _ in range(60):
        sim.tick(VehicleControl(throttle=0.7))
    v0, yaw0 = sim.ego.speed, sim.ego.yaw
    assert v0 > 5.0

    class Broken:
        throttle, steer, brake = math.nan, 0.8, 0.0

    speeds = []
    for _ in range(10):
        sim.tick(Broken())
        speeds.append(sim.ego.speed)
    assert sim._control.is_safe_stop and sim._control.steer == 0.0
    assert all(b < a for a, b in zip([v0] + speeds, speeds, strict=False) if a > 0)
    assert speeds[-1] < v0 - 3.0
    assert abs(sim.ego.yaw - yaw0) < 0.05  # the NaN's steer of 0.8 was not applied


def test_tick_before_reset_and_bad_spec() -> None:
    with pytest.raises(RuntimeError):
        LiteSimulator().tick(VehicleControl())
    with pytest.raises(TypeError):
        LiteSimulator().reset({"town": "x"}, 0)  # type: ignore[arg-type]


def test_weather_keyframes_change_along_the_route() -> None:
    clear, rain = Weather.preset("ClearNoon"), Weather.preset("HardRainNoon")
    spec = WorldSpec(
        town=SMALL,
        route=RouteSpec(length_m=150.0),
        num_vehicles=0,
        num_pedestrians=0,
        weather_keyframes=(WeatherKeyframe(0.0, clear), WeatherKeyframe(100.0, rain)),
    )
    sim = LiteSimulator()
    sim.reset(spec, 2)
    sim.tick(VehicleControl(brake=1.0))
    assert sim.ground_truth().weather == clear
    frictions = [sim.ground_truth().friction]
    for _ in range(120):
        sim.tick(VehicleControl(throttle=0.6))
        frictions.append(sim.ground_truth().friction)
    frac = sim.route_status.progress_m / sim.route.length_m
    assert 0.2 < frac < 1.0
    w = sim.ground_truth().weather
    assert w.precipitation == pytest.approx(100.0 * frac, abs=5.0)
    assert frictions[-1] < frictions[0]
    assert all(b <= a + 1e-12 for a, b in zip(frictions, frictions[1:], strict=False))
    assert spec.weather_at(1.0) == rain and spec.weather_at(0.5) == clear.lerp(rain, 0.5)


@pytest.mark.skipif(importlib.util.find_spec("sim.lite.camera") is None, reason="no camera module")
def test_camera_frames_deterministic() -> None:
    from sim.sensors import default_front_camera

    frames = []
    for _ in range(2):
        sim = LiteSimulator()
        sim.reset(
            WorldSpec(
                town=SMALL, route=RouteSpec(length_m=150.0), num_vehicles=3, num_pedestrians=2
            ),
            2,
        )
        sim.setup_sensors([default_front_camera(96, 48)] + NON_CAMERA_SENSORS)
        data = [sim.tick(VehicleControl(throttle=0.5)) for _ in range(3)][-1]
        frame, img = data["rgb_front"]
        assert frame == sim.frame
        assert img.shape[:2] == (48, 96) and img.dtype == np.uint8
        frames.append(img)
    assert frames[0].tobytes() == frames[1].tobytes()
    assert frames[0].std() > 1.0  # not a blank image


def test_a_tick_without_render_leaves_out_only_the_camera_and_sensor_data_renders_it() -> None:
    """`tick(render=False)` then `sensor_data()` gives the images an ordinary tick gives."""
    from sim.sensors import default_front_camera

    spec = WorldSpec(town=SMALL, route=RouteSpec(length_m=150.0), num_vehicles=3, num_pedestrians=2)
    sensors = [default_front_camera(96, 48)] + NON_CAMERA_SENSORS
    rendered, skipped = LiteSimulator(), LiteSimulator()
    for sim in (rendered, skipped):
        sim.reset(spec, 2)
        sim.setup_sensors(sensors)
    for i, control in enumerate(_controls(12)):
        full = rendered.tick(control)
        partial = skipped.tick(control, render=i % 3 == 2)
        if i % 3 != 2:
            assert set(partial) == {"gps", "imu", "speed"}  # no camera this tick
        later = skipped.sensor_data()
        assert set(full) == set(partial) | {"rgb_front"} == set(later)
        assert later["rgb_front"][0] == full["rgb_front"][0] == skipped.frame
        assert later["rgb_front"][1].tobytes() == full["rgb_front"][1].tobytes()
        np.testing.assert_array_equal(partial["gps"][1], full["gps"][1])
        assert partial["speed"][1] == full["speed"][1]
    with pytest.raises(RuntimeError, match="before reset"):
        LiteSimulator().sensor_data()
