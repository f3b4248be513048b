"""The CARLA backend (sim/carla/) without a server: every pure conversion with the real
`carla` client types, the connection errors (a refusing client stand-in, a closed local
port, a local non-CARLA server), the cleanup path on errors, and the CLI's error. Tests
that need a server run only when $CARLA_HOST names one that answers."""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sim.carla.actors import DESTROY_ORDER, ActorRegistry, WorldSession
from sim.carla.connection import CarlaConnectionError, ProbeResult, connect, probe_rpc
from sim.carla.maps import (
    ALLOWED_OUT_DISTANCE_M,
    carla_town_for,
    crosswalk_centres,
    geo_reference_from_opendrive,
    lane_query,
    map_base_name,
    same_town,
    side_lanes,
    stop_line,
)
from sim.carla.props import (
    PARKED_VEHICLE_BLUEPRINTS,
    PROP_BLUEPRINTS,
    PROP_FALLBACK_SIZES,
    PROP_Z_OFFSET_M,
    crossing_plan,
    nearest_crosswalk_s,
    prop_placements,
)
from sim.carla.routes import (
    RouteSamples,
    classify_turn,
    dedupe,
    global_plan_with_z,
    route_pose,
    route_transform,
    to_route,
)
from sim.carla.scenario import pace_speed, project_on_route, travel_time_s
from sim.carla.sensors import (
    SensorCollector,
    SensorReceivedNoData,
    forward_speed,
    gnss_to_array,
    image_to_bgra,
    imu_to_array,
    lidar_to_array,
    radar_to_array,
    sensor_blueprint,
)
from sim.carla.world import CarlaSimulator, collision_from, weather_at_progress
from sim.carla_compat import to_carla_control, to_carla_weather
from sim.control import RoadOption, VehicleControl
from sim.criteria import collision_kind
from sim.evaluate import EvaluationError, evaluate, make_simulator
from sim.geometry import GeoReference
from sim.lite.town import TownSpec
from sim.route import Route
from sim.sensors import default_sensor_suite, parse_sensor_specs
from sim.spec import (
    PedestrianSpec,
    PropSpec,
    RouteSpec,
    WeatherKeyframe,
    WorldSpec,
    WorldSpecError,
)
from sim.weather import Weather
from vlmdrive.cli_eval import register

carla = pytest.importorskip("carla")

GEO = GeoReference(lat_ref=42.0, lon_ref=2.0)
TINY_SCENARIO = """\
name: carla_tiny
tags: [smoke]
seed: 3
map:
  town: {blocks_x: 2, blocks_y: 2}
route:
  length_m: 100
traffic: {vehicles: 3, pedestrians: 0}
"""


def _free_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _straight_route(length_m: float = 100.0, yaw_deg: float = 0.0) -> tuple[Route, np.ndarray]:
    """A straight 1 m-spaced route from the origin heading `yaw_deg`, rising 1 m per 100 m."""
    s = np.arange(0.0, length_m + 0.5, 1.0)
    yaw = math.radians(yaw_deg)
    points = np.stack([s * math.cos(yaw), s * math.sin(yaw)], axis=1)
    route = Route(
        points=points,
        yaw=np.full(len(s), yaw),
        options=np.full(len(s), int(RoadOption.LANEFOLLOW)),
        geo=GEO,
        lane_ids=np.zeros(len(s), np.int64),
    )
    return route, s / 100.0


# ------------------------------------------------------------------ sensors
def test_camera_blueprint_follows_the_leaderboard() -> None:
    spec = parse_sensor_specs([default_sensor_suite()[0]])[0]
    bp = sensor_blueprint(spec, 0.05)
    assert bp.type_id == "sensor.camera.rgb" and not bp.is_pseudo
    assert bp.attributes == {"image_size_x": "256", "image_size_y": "128", "fov": "100"}
    transform = bp.transform()
    assert isinstance(transform, carla.Transform)
    assert (transform.location.x, transform.location.y, transform.location.z) == pytest.approx(
        (1.3, 0.0, 2.3)
    )


def test_sensor_rotation_maps_roll_pitch_yaw_to_carla_rotation() -> None:
    raw = {"type": "sensor.other.imu", "id": "imu", "x": 0.5, "y": -0.2, "z": 1.0}
    spec = parse_sensor_specs([{**raw, "roll": 1.0, "pitch": -5.0, "yaw": 30.0}])[0]
    rot = sensor_blueprint(spec, 0.05).transform().rotation
    assert (rot.roll, rot.pitch, rot.yaw) == pytest.approx((1.0, -5.0, 30.0))


def test_other_sensor_blueprints() -> None:
    specs = parse_sensor_specs(
        [
            {"type": "sensor.lidar.ray_cast", "id": "lidar", "x": 0, "y": 0, "z": 2.5}
            | {"roll": 0, "pitch": 0, "yaw": 0},
            {"type": "sensor.other.radar", "id": "radar", "x": 2, "y": 0, "z": 1}
            | {"roll": 0, "pitch": 0, "yaw": 0, "horizontal_fov": 35, "vertical_fov": 20},
            {"type": "sensor.other.gnss", "id": "gps", "x": 0, "y": 0, "z": 0},
            {"type": "sensor.speedometer", "id": "speed", "reading_frequency": 20},
        ]
    )
    lidar, radar, gnss, speed = (sensor_blueprint(s, 0.05) for s in specs)
    assert lidar.attributes["range"] == "85" and lidar.attributes["channels"] == "64"
    assert lidar.attributes["upper_fov"] == "10" and lidar.attributes["lower_fov"] == "-30"
    assert radar.attributes == {
        "horizontal_fov": "35",
        "vertical_fov": "20",
        "points_per_second": "1500",
        "range": "100",
    }
    assert float(gnss.attributes["noise_lat_stddev"]) == pytest.approx(5e-6)
    assert gnss.rotation == (0.0, 0.0, 0.0)
    assert speed.is_pseudo and speed.attributes == {"reading_frequency": "20"}


def test_camera_buffer_becomes_an_owned_bgra_array() -> None:
    h, w = 2, 3
    raw = bytes(range(h * w * 4))  # CARLA's row-major BGRA bytes
    img = image_to_bgra(memoryview(raw), w, h)
    assert img.shape == (h, w, 4) and img.dtype == np.uint8
    assert img[0, 0].tolist() == [0, 1, 2, 3]  # B, G, R, A of the first pixel
    assert img[1, 2].tolist() == [20, 21, 22, 23]
    img[0, 0, 0] = 99  # owned and writable, not a view of the sensor's buffer
    with pytest.raises(ValueError, match="expected 3x2x4"):
        image_to_bgra(raw[:-1], w, h)


def test_lidar_and_radar_buffers() -> None:
    points = np.arange(8, dtype=np.float32)
    assert lidar_to_array(points.tobytes()).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # CARLA radar: depth, azimuth, altitude, velocity -> the Leaderboard flips the order.
    radar = radar_to_array(np.array([10.0, 0.1, 0.2, -3.0], np.float32).tobytes())
    assert radar.dtype == np.float32 and radar.shape == (1, 4)
    assert radar[0].tolist() == pytest.approx([-3.0, 0.2, 0.1, 10.0])


def test_gnss_and_imu_arrays() -> None:
    gnss = gnss_to_array(42.0001, 2.0002, 1.5)
    assert gnss.dtype == np.float64 and gnss.tolist() == [42.0001, 2.0002, 1.5]
    imu = imu_to_array(carla.Vector3D(0.5, -0.1, 9.81), carla.Vector3D(0.0, 0.01, 0.2), 1.57)
    assert imu.dtype == np.float64 and imu.shape == (7,)
    assert imu.tolist() == pytest.approx([0.5, -0.1, 9.81, 0.0, 0.01, 0.2, 1.57])


def test_speedometer_is_the_forward_speed() -> None:
    south = carla.Rotation(yaw=90.0)  # +y is south in CARLA's frame
    assert forward_speed(carla.Vector3D(0.0, 5.0, 0.0), south) == pytest.approx(5.0)
    assert forward_speed(carla.Vector3D(0.0, -2.0, 0.0), south) == pytest.approx(-2.0)
    uphill = carla.Rotation(pitch=30.0, yaw=0.0)
    v = carla.Vector3D(math.cos(math.radians(30)) * 4, 0.0, math.sin(math.radians(30)) * 4)
    assert forward_speed(v, uphill) == pytest.approx(4.0, abs=1e-5)


def test_sensor_collector_returns_the_frame_asked_for() -> None:
    collector = SensorCollector(timeout_s=0.05)
    collector.register("rgb", "sensor.camera.rgb")
    collector.register("gps", "sensor.other.gnss")
    collector.put("rgb", 7, "old")
    collector.put("rgb", 8, "image8")
    collector.put("gps", 8, "fix8")
    assert collector.collect(8) == {"rgb": "image8", "gps": "fix8"}
    with pytest.raises(SensorReceivedNoData, match="'rgb' sent no data for frame 9"):
        collector.collect(9)


# ------------------------------------------------------------------ routes
@pytest.mark.parametrize(
    ("entry", "exit_", "option"),
    [
        (0.0, 10.0, RoadOption.STRAIGHT),
        (0.0, 90.0, RoadOption.RIGHT),  # yaw grows clockwise: east -> south is a right turn
        (0.0, -90.0, RoadOption.LEFT),
        (350.0, 80.0, RoadOption.RIGHT),  # across the 0/360 seam
        (-170.0, 170.0, RoadOption.STRAIGHT),
    ],
)
def test_classify_turn(entry: float, exit_: float, option: RoadOption) -> None:
    assert classify_turn(entry, exit_) == option


def test_route_pose_offsets_to_the_left_in_carlas_frame() -> None:
    route, z = _straight_route(yaw_deg=0.0)  # heading east
    x, y, height, yaw = route_pose(route, z, 10.0, lateral_m=2.0)
    assert (x, y, height, yaw) == pytest.approx((10.0, -2.0, 0.1, 0.0))  # left of east: -y
    north, zn = _straight_route(yaw_deg=-90.0)
    x, y, _, _ = route_pose(north, zn, 10.0, lateral_m=2.0)
    assert (x, y) == pytest.approx((-2.0, -10.0))  # left of north: west
    with pytest.raises(WorldSpecError, match="outside the route"):
        route_pose(route, z, 150.0)


def test_route_transform_is_a_carla_transform() -> None:
    route, z = _straight_route(yaw_deg=90.0)
    t = route_transform(route, z, 50.0, lateral_m=-1.0, yaw_offset_deg=90.0, z_offset_m=0.5)
    assert isinstance(t, carla.Transform)
    assert (t.location.x, t.location.y, t.location.z) == pytest.approx((-1.0, 50.0, 1.0))
    assert t.rotation.yaw == pytest.approx(180.0)


def test_samples_become_a_route_with_lane_ids_and_heights() -> None:
    xyz = np.array([[0, 0, 1], [1, 0, 1], [1.01, 0, 1], [2, 0, 1.5], [2, 1, 2]], float)
    samples = RouteSamples(
        xyz,
        np.array([0.0, 0.0, 0.0, 0.0, 90.0]),
        np.array([4, 4, 4, 4, 2]),
        ((1, 0, -1), (1, 0, -1), (1, 0, -1), (5, 0, 2), (7, 1, 2)),
    )
    assert len(dedupe(samples, min_step_m=0.05).xyz) == 4
    route, z = to_route(samples, GEO)
    assert route.points.shape == (4, 2) and z.tolist() == [1.0, 1.0, 1.5, 2.0]
    assert route.lane_ids.tolist() == [0, 0, 1, 2]
    assert route.yaw[-1] == pytest.approx(math.pi / 2)
    assert RoadOption(int(route.options[-1])) == RoadOption.RIGHT
    with pytest.raises(ValueError, match="RouteSamples.yaw_deg"):
        RouteSamples(xyz, np.zeros(3), np.zeros(5), samples.lane_keys)


def test_global_plan_is_the_leaderboards_with_gps_and_heights() -> None:
    route, z = _straight_route(length_m=450.0)
    gps, world = global_plan_with_z(route, z)
    flat_gps, flat_world = route.global_plan()
    assert len(gps) == len(flat_gps) >= 3  # first, one every > 200 m, last
    for (fix, option), (flat_fix, flat_option), (tf, _) in zip(gps, flat_gps, world, strict=True):
        assert option == flat_option
        assert (fix["lat"], fix["lon"]) == pytest.approx((flat_fix["lat"], flat_fix["lon"]))
        assert fix["z"] == pytest.approx(tf.location.z)
    assert gps[0][0]["lat"] == pytest.approx(42.0) and gps[0][0]["lon"] == pytest.approx(2.0)
    assert gps[-1][0]["lon"] > 2.0  # +x is east
    assert world[-1][0].location.z == pytest.approx(4.5)
    assert GEO.to_gps(0.0, 100.0)[0] < 42.0  # +y is south


def test_geo_reference_from_the_opendrive_header() -> None:
    xodr = (
        '<?xml version="1.0"?><OpenDRIVE><header name="Town05"><geoReference>'
        "<![CDATA[+proj=tmerc +lat_0=49.0 +lon_0=8.0 +k=1 +x_0=0 +y_0=0 +datum=WGS84]]>"
        "</geoReference></header></OpenDRIVE>"
    )
    assert geo_reference_from_opendrive(xodr) == GeoReference(49.0, 8.0)
    assert geo_reference_from_opendrive("<OpenDRIVE><header/></OpenDRIVE>") == GeoReference(
        42.0, 2.0
    )
    assert geo_reference_from_opendrive("not xml") == GeoReference(42.0, 2.0)


# ------------------------------------------------------------------ maps
def test_town_mapping() -> None:
    assert carla_town_for(TownSpec.for_highway()) == "Town04"
    assert carla_town_for(TownSpec(lanes_per_direction=2)) == "Town05"
    assert carla_town_for(TownSpec(lanes_per_direction=1)) == "Town10HD"
    assert map_base_name("/Game/Carla/Maps/Town10HD_Opt") == "Town10HD"
    assert same_town("Carla/Maps/Town05", "Town05") and not same_town("Town05", "Town04")


def test_lane_query_follows_outside_route_lanes_test() -> None:
    edge = 3.5 / 2 + ALLOWED_OUT_DISTANCE_M
    assert lane_query(edge - 0.01, 3.5, None, None, False, 90.0).on_driving_lane
    off = lane_query(edge + 0.01, 3.5, None, None, False, 90.0)
    assert not off.on_driving_lane and off.lane_heading == pytest.approx(math.pi / 2)
    assert lane_query(4.0, 3.5, 1.0, 2.5, False, 0.0).on_driving_lane  # on a parking lane
    assert lane_query(0.0, 3.5, None, None, True, 0.0).in_junction


def test_side_lanes_from_opendrive_lane_ids() -> None:
    # Lane -2 of a road with lanes -1, -2, -3 on its side and +1 beyond the centre line.
    assert side_lanes(-2, [-1, 1], [-3]) == (1, 1, True)
    assert side_lanes(-1, [1], []) == (0, 0, True)
    assert side_lanes(-1, [], [-2]) == (0, 1, False)  # one-way road


def test_stop_line_spans_every_controlled_lane() -> None:
    # Two east-bound lanes, centres 3.5 m apart: the line runs across both (north-south).
    (a, b), heading = stop_line([(10.0, 1.75, 0.0, 3.5), (10.0, 5.25, 0.0, 3.5)])
    assert heading == pytest.approx(0.0)
    assert sorted([a, b]) == [pytest.approx((10.0, 0.0)), pytest.approx((10.0, 7.0))]
    with pytest.raises(ValueError):
        stop_line([])


def test_crosswalk_centres_split_closed_polygons() -> None:
    square = [(0.0, 0.0), (2.0, 0.0), (2.0, 2.0), (0.0, 2.0), (0.0, 0.0)]
    other = [(10.0, 10.0), (12.0, 10.0), (12.0, 14.0), (10.0, 10.0)]
    centres = crosswalk_centres(square + other)
    assert centres == [pytest.approx((1.0, 1.0)), pytest.approx((34 / 3, 34 / 3))]
    route, _ = _straight_route()
    assert nearest_crosswalk_s(route, [(52.0, 3.0)], 40.0) == pytest.approx(52.0)
    assert nearest_crosswalk_s(route, [(52.0, 30.0)], 40.0) == 40.0  # off the road


# ------------------------------------------------------------------ scenario objects
def test_prop_blueprints_match_the_embedded_simulator() -> None:
    from sim.lite.world import PROP_TYPES

    for kind, blueprint in PROP_BLUEPRINTS.items():
        assert PROP_TYPES[kind][0] == blueprint
    assert set(PROP_BLUEPRINTS) | {"parked_vehicle"} == set(PROP_TYPES)
    assert {kind: PROP_TYPES[kind][1] for kind in PROP_TYPES} == PROP_FALLBACK_SIZES


def test_prop_placements_on_the_route() -> None:
    route, z = _straight_route()
    props = (
        PropSpec("cone", 20.0, lateral_m=1.0),
        PropSpec("warning_sign", 16.0, 0.0, 90.0),
        PropSpec("parked_vehicle", 40.0, -2.0),
    )
    placed = prop_placements(props, route, z, np.random.default_rng(0))
    cone, sign, car = placed
    assert cone.blueprint == "static.prop.constructioncone" and not cone.simulate_physics
    loc = cone.transform.location
    assert (loc.x, loc.y, loc.z) == pytest.approx((20.0, -1.0, 0.2 + PROP_Z_OFFSET_M))
    assert sign.blueprint == "static.prop.trafficwarning"
    assert sign.transform.rotation.yaw == pytest.approx(90.0)
    assert car.blueprint in PARKED_VEHICLE_BLUEPRINTS and car.simulate_physics
    again = prop_placements(props, route, z, np.random.default_rng(0))
    assert again[2].blueprint == car.blueprint  # seeded
    assert collision_kind(cone.blueprint) == "collisions_layout"
    assert collision_kind(car.blueprint) == "collisions_vehicle"


def test_crossing_plan_walks_across_the_route() -> None:
    route, z = _straight_route()  # heading east; right = +y (south)
    plan = crossing_plan(PedestrianSpec(30.0, side="right", start_lateral_m=6.0), route, z, 30.0)
    assert plan.start[:2] == pytest.approx((30.0, 6.0))
    assert plan.direction == pytest.approx((0.0, -1.0))  # toward the left (north)
    left = crossing_plan(PedestrianSpec(30.0, side="left", start_lateral_m=5.0), route, z, 30.0)
    assert left.start[:2] == pytest.approx((30.0, -5.0)) and left.direction == pytest.approx(
        (0.0, 1.0)
    )


def test_pacing_and_runner_timing() -> None:
    assert pace_speed(20.0, 20.0, 8.0, 10.0) == pytest.approx(8.0)  # on the gap: ego speed
    assert pace_speed(40.0, 20.0, 8.0, 10.0) == 0.0  # far ahead: wait
    assert pace_speed(10.0, 20.0, 8.0, 10.0) == pytest.approx(11.0)  # behind: catch up (cap)
    assert travel_time_s(0.0, 10.0) == 0.0
    assert travel_time_s(4.0, 10.0, 2.0) == pytest.approx(2.0)  # still accelerating
    assert travel_time_s(45.0, 10.0, 2.0) == pytest.approx(5.0 + 20.0 / 10.0)
    route, _ = _straight_route()
    assert project_on_route(route, (42.2, 1.0), hint=30) == (42.0, 42)


def test_weather_keyframes_along_the_route_as_carla_weather() -> None:
    clear, storm = Weather.preset("ClearNoon"), Weather.preset("HardRainNoon")
    spec = WorldSpec(
        weather=clear,
        weather_keyframes=(WeatherKeyframe(0.0, clear), WeatherKeyframe(100.0, storm)),
    )
    assert weather_at_progress(spec, 0.0, 400.0) == clear
    mid = weather_at_progress(spec, 200.0, 400.0)
    params = to_carla_weather(mid)
    assert isinstance(params, carla.WeatherParameters)
    assert params.precipitation == pytest.approx(50.0)
    assert params.cloudiness == pytest.approx((5.0 + 100.0) / 2)
    # 1 % steps: 201 m of 400 m (50.25 %) is still the 50 % weather.
    assert weather_at_progress(spec, 201.0, 400.0) == mid
    assert weather_at_progress(spec, 999.0, 400.0) == storm


def test_controls_reach_carla_sanitized() -> None:
    nan = VehicleControl.sanitized(carla.VehicleControl(throttle=float("nan"), steer=0.3))
    sent = to_carla_control(nan)
    assert isinstance(sent, carla.VehicleControl)
    assert (sent.throttle, sent.steer, sent.brake) == (0.0, 0.0, 1.0)


def test_collision_with_map_geometry_is_a_layout_collision() -> None:
    hit = collision_from(None, (3.0, 4.0))
    assert hit.other_id == 0 and collision_kind(hit.other_type_id) == "collisions_layout"


# ------------------------------------------------------------------ cleanup
class _Stoppable:
    """Stand-in for a sensor / walker-controller handle: records stop()."""

    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


class _Response:
    def __init__(self, error: str = "") -> None:
        self.error = error


class _StandInWorld:
    """A minimal world: settings (real carla.WorldSettings), apply_settings, tick."""

    def __init__(self) -> None:
        self.synchronous_mode = False
        self.fixed_delta_seconds: float | None = None
        self.ticks = 0

    def get_settings(self):
        return carla.WorldSettings(
            synchronous_mode=self.synchronous_mode,
            fixed_delta_seconds=self.fixed_delta_seconds or 0.0,
        )

    def apply_settings(self, settings) -> int:
        self.synchronous_mode = bool(settings.synchronous_mode)
        self.fixed_delta_seconds = settings.fixed_delta_seconds or None
        return 0

    def tick(self, seconds: float = 10.0) -> int:
        self.ticks += 1
        return self.ticks


class _StandInTrafficManager:
    def __init__(self) -> None:
        self.synchronous: list[bool] = []

    def set_synchronous_mode(self, on: bool = True) -> None:
        self.synchronous.append(on)


class _StandInClient:
    """Records the destroy batches it is sent (as real carla.command.DestroyActor)."""

    def __init__(self, fail_ids: tuple[int, ...] = ()) -> None:
        self.world = _StandInWorld()
        self.tm = _StandInTrafficManager()
        self.batches: list[list[int]] = []
        self.fail_ids = fail_ids

    def get_world(self) -> _StandInWorld:
        return self.world

    def get_trafficmanager(self, port: int = 8000) -> _StandInTrafficManager:
        return self.tm

    def apply_batch_sync(self, commands, do_tick: bool = False) -> list[_Response]:
        assert all(isinstance(c, carla.command.DestroyActor) for c in commands)
        self.batches.append([c.actor_id for c in commands])
        return [_Response("not found" if c.actor_id in self.fail_ids else "") for c in commands]


def _register_one_of_each(registry: ActorRegistry) -> tuple[_Stoppable, _Stoppable]:
    sensor, controller = _Stoppable(), _Stoppable()
    registry.add(10, "ego")
    registry.add(11, "sensor", sensor)
    registry.add(12, "vehicle")
    registry.add(13, "controller", controller)
    registry.add(14, "walker")
    registry.add(15, "prop")
    registry.add(16, "sensor", _Stoppable())
    return sensor, controller


def test_registry_destroys_in_order_and_forgets_everything() -> None:
    registry = ActorRegistry()
    sensor, controller = _register_one_of_each(registry)
    assert DESTROY_ORDER[0] == "sensor" and DESTROY_ORDER[-1] == "ego"
    assert registry.destroy_order() == [11, 16, 13, 14, 12, 15, 10]
    client = _StandInClient(fail_ids=(14,))
    errors = registry.destroy_all(client)
    assert client.batches == [[11, 16, 13, 14, 12, 15, 10]]
    assert sensor.stopped and controller.stopped
    assert errors == ["destroying actor 14: not found"]
    assert len(registry) == 0 and registry.destroy_all(client) == [] and len(client.batches) == 1
    with pytest.raises(ValueError, match="unknown actor kind"):
        registry.add(1, "building")  # type: ignore[arg-type]


def test_session_release_restores_the_original_settings() -> None:
    client = _StandInClient()
    session = WorldSession(client, tm_port=8000)
    session.adopt_world(client.world)
    session.apply_synchronous(0.05)
    assert client.world.synchronous_mode and client.world.fixed_delta_seconds == pytest.approx(0.05)
    session.registry.add(5, "vehicle")
    session.release()
    assert client.batches == [[5]]
    assert not client.world.synchronous_mode and client.world.fixed_delta_seconds is None
    assert client.tm.synchronous == [True, False]
    session.release()  # idempotent
    assert client.batches == [[5]] and client.tm.synchronous == [True, False]


@pytest.mark.parametrize("error", [RuntimeError("spawn failed"), KeyboardInterrupt()])
def test_reset_cleans_up_when_building_fails(
    monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    client = _StandInClient()
    sim = CarlaSimulator(client=client)
    handles: list[_Stoppable] = []

    def prepare(spec: WorldSpec, seed: int) -> None:
        sim.session.adopt_world(client.world)
        sim.session.apply_synchronous(0.05)

    def build(spec: WorldSpec, seed: int) -> None:
        handles.extend(_register_one_of_each(sim.session.registry))
        raise error

    monkeypatch.setattr(sim, "_prepare_world", prepare)
    monkeypatch.setattr(sim, "_build_route", build)
    with pytest.raises(type(error)):
        sim.reset(WorldSpec(), seed=1)
    assert client.batches == [[11, 16, 13, 14, 12, 15, 10]]
    assert all(h.stopped for h in handles)
    assert not client.world.synchronous_mode and client.tm.synchronous == [True, False]
    sim.close()  # nothing left to do
    assert len(client.batches) == 1
    with pytest.raises(RuntimeError, match="before reset"):
        sim.tick(VehicleControl())
    with pytest.raises(RuntimeError, match="before the first tick"):
        sim.sensor_data()


def test_close_releases_the_server() -> None:
    client = _StandInClient()
    with CarlaSimulator(client=client) as sim:
        sim.session.adopt_world(client.world)
        sim.session.apply_synchronous(0.05)
        sim.session.registry.add(42, "ego")
    assert client.batches == [[42]] and not client.world.synchronous_mode


# ------------------------------------------------------------------ connection
class _RefusingClient:
    """A carla.Client-like object whose server never answers (the only way to test the
    retry logic without a server; a real closed port is tested below)."""

    made = 0

    def __init__(self, host: str, port: int) -> None:
        type(self).made += 1
        self.address = f"{host}:{port}"

    def set_timeout(self, seconds: float) -> None:
        self.timeout = seconds

    def get_server_version(self) -> str:
        raise RuntimeError(
            f"time-out of {int(self.timeout * 1000)}ms while waiting for the simulator, "
            f"make sure the simulator is ready and connected to {self.address}"
        )


def test_refused_connection_gives_a_clear_error_after_the_retries() -> None:
    _RefusingClient.made = 0
    waits: list[float] = []
    with pytest.raises(CarlaConnectionError) as info:
        connect(
            "carla-box",
            2345,
            timeout_s=0.25,
            attempts=3,
            backoff_s=0.5,
            client_factory=_RefusingClient,
            probe=None,
            sleep=waits.append,
        )
    message = str(info.value)
    assert "carla-box:2345" in message and "after 3 attempt(s)" in message
    assert "time-out of 250ms" in message  # the last error is kept
    assert _RefusingClient.made == 3 and waits == [0.5, 1.0]
    with pytest.raises(ValueError, match="attempts"):
        connect("h", 1, attempts=0, client_factory=_RefusingClient, probe=None)


def test_closed_local_port_fails_fast_without_a_carla_client() -> None:
    port = _free_port()
    assert probe_rpc("127.0.0.1", port, 0.5).status == "unreachable"

    def no_client(host: str, port: int) -> None:
        raise AssertionError("no carla.Client may be built for a closed port")

    t0 = time.monotonic()
    with pytest.raises(CarlaConnectionError, match=f"127.0.0.1:{port} after 2 attempt"):
        connect(
            "127.0.0.1", port, timeout_s=0.5, attempts=2, backoff_s=0.05, client_factory=no_client
        )
    assert time.monotonic() - t0 < 3.0


@pytest.fixture
def local_server() -> Iterator[tuple[int, list[bytes]]]:
    """A local TCP server answering every connection with the bytes in `replies[0]`."""
    replies: list[bytes] = [b""]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    conn.recv(64)
                    conn.sendall(replies[0])
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1]), replies
    stop.set()
    thread.join(timeout=2.0)
    listener.close()


def test_probe_tells_carla_rpc_from_other_servers(local_server: tuple[int, list[bytes]]) -> None:
    port, replies = local_server
    replies[0] = b"\x94\x01\x01\xc0\xa60.9.16"  # msgpack-rpc response [1, 1, nil, "0.9.16"]
    assert probe_rpc("127.0.0.1", port, 1.0) == ProbeResult("rpc")
    replies[0] = b"HTTP/1.1 400 Bad Request\r\n\r\n"
    found = probe_rpc("127.0.0.1", port, 1.0)
    assert found.status == "foreign" and "HTTP/1.1 400" in found.detail


def test_a_non_carla_server_is_refused_before_libcarla_sees_it(
    local_server: tuple[int, list[bytes]],
) -> None:
    # libcarla aborts the whole process on such a reply; the probe must stop it first.
    port, replies = local_server
    replies[0] = b"HTTP/1.1 400 Bad Request\r\n\r\n"
    with pytest.raises(CarlaConnectionError, match=f"127.0.0.1:{port}, but not CARLA's RPC"):
        connect("127.0.0.1", port, timeout_s=1.0, attempts=3)


def test_make_simulator_names_the_server_it_could_not_reach() -> None:
    port = _free_port()
    with pytest.raises(EvaluationError, match=f"no CARLA server answered at 127.0.0.1:{port}"):
        make_simulator("carla", "127.0.0.1", port, timeout_s=0.5)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """vlmdrive (test app)."""

    register(app)
    return app


def test_cli_eval_on_carla_without_a_server_names_host_and_port(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY_SCENARIO)
    out = tmp_path / "results.json"
    port = _free_port()
    args = ["eval", "--backend", "carla", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--timeout", "0.5", "--agent", "expert", "--suite", str(tmp_path / "tiny.yaml")]
    t0 = time.monotonic()
    result = CliRunner().invoke(_app(), [*args, "--out", str(out), "--quiet"])
    assert time.monotonic() - t0 < 10.0
    assert result.exit_code == 2, result.output
    assert f"no CARLA server answered at 127.0.0.1:{port}" in result.output
    assert not out.exists()


def test_carla_backend_refuses_parallel_workers(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY_SCENARIO)
    with pytest.raises(EvaluationError, match="one at a time on one server"):
        evaluate("expert", "", tmp_path / "tiny.yaml", backend="carla", workers=2, progress=False)


# ------------------------------------------------------------------ with a server
CARLA_HOST = os.environ.get("CARLA_HOST", "")
CARLA_PORT = int(os.environ.get("CARLA_PORT", "2000"))


def _server_answers() -> bool:
    if not CARLA_HOST:
        return False
    try:
        connect(CARLA_HOST, CARLA_PORT, timeout_s=5.0, attempts=1)
    except CarlaConnectionError:
        return False
    return True


needs_server = pytest.mark.skipif(
    not _server_answers(),
    reason=f"no CARLA server at {CARLA_HOST or '$CARLA_HOST'}:{CARLA_PORT}",
)


@needs_server
def test_server_reset_sensors_tick_and_close() -> None:
    spec = WorldSpec(route=RouteSpec(length_m=120.0), num_vehicles=2, num_pedestrians=2)
    sim = CarlaSimulator(CARLA_HOST, CARLA_PORT, timeout_s=20.0)
    world = sim.client.get_world()
    was_synchronous = world.get_settings().synchronous_mode
    try:
        sim.reset(spec, seed=0)
        sim.setup_sensors(default_sensor_suite())
        gps, plan = sim.global_plan()
        assert len(gps) == len(plan) >= 2 and set(gps[0][0]) == {"lat", "lon", "z"}
        assert sim.route.length_m >= 0.9 * 120.0
        for _ in range(5):
            data = sim.tick(VehicleControl(throttle=0.3), render=False)
        assert sim.sensor_data() is data  # the server renders anyway: the data is the tick's
        assert sim.frame == 5 and sim.time_s == pytest.approx(0.25)
        frame, image = data["rgb_front"]
        assert frame == 5 and image.dtype == np.uint8 and image.shape == (128, 256, 4)
        assert data["gps"][1].shape == (3,) and data["imu"][1].shape == (7,)
        assert set(data["speedometer"][1]) == {"speed"}
        gt = sim.ground_truth()
        assert gt.ego.role == "hero" and gt.ego.type_id == "vehicle.lincoln.mkz_2020"
        assert len(sim.lane_layout().width_m) == len(sim.route.points)
    finally:
        sim.close()
    assert world.get_settings().synchronous_mode == was_synchronous
    heroes = [
        a
        for a in sim.client.get_world().get_actors().filter("vehicle.*")
        if a.attributes.get("role_name") == "hero"
    ]
    assert heroes == []


@needs_server
def test_server_short_route_end_to_end_through_evaluate(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY_SCENARIO)
    out = tmp_path / "results.json"
    results = evaluate(
        "expert",
        "",
        tmp_path / "tiny.yaml",
        backend="carla",
        out=out,
        progress=False,
        host=CARLA_HOST,
        port=CARLA_PORT,
        timeout_s=20.0,
    )
    records = results["_checkpoint"]["records"]
    assert len(records) == 1 and records[0]["meta"]["route_length"] > 0
    assert results["entry_status"] == "Finished", records[0]["status"]
