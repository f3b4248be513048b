"""Leaderboard sensor-spec validation and the lite backend's sensor support."""

from __future__ import annotations

import copy

import pytest

from sim.sensors import (
    CAMERA,
    GNSS,
    IMU,
    LIDAR,
    OPENDRIVE_MAP,
    SPEEDOMETER,
    SensorSpecError,
    default_front_camera,
    default_sensor_suite,
    parse_sensor_specs,
)


def _camera(sensor_id: str = "rgb_front", **over) -> dict:
    d = default_front_camera()
    d["id"] = sensor_id
    d.update(over)
    return d


def test_default_suite_parses() -> None:
    specs = parse_sensor_specs(default_sensor_suite())
    assert [s.type for s in specs] == [CAMERA, GNSS, IMU, SPEEDOMETER]
    cam = specs[0]
    assert (cam.width, cam.height, cam.fov) == (256, 128, 100.0)
    assert isinstance(cam.width, int)
    assert (cam.x, cam.y, cam.z) == (1.3, 0.0, 2.3)
    assert specs[3].reading_frequency == 20.0


def test_to_dict_round_trip() -> None:
    specs = parse_sensor_specs(default_sensor_suite())
    assert parse_sensor_specs([s.to_dict() for s in specs]) == specs


def test_unknown_type_names_sensor_and_rule() -> None:
    suite = default_sensor_suite() + [
        {"type": "sensor.camera.depth", "id": "depth", "x": 0, "y": 0, "z": 0}
    ]
    with pytest.raises(SensorSpecError) as exc:
        parse_sensor_specs(suite)
    msg = str(exc.value)
    assert "depth" in msg and "sensor #4" in msg
    assert "illegal sensor type" in msg and "sensor.camera.depth" in msg


def test_duplicate_id() -> None:
    suite = [_camera("cam"), _camera("cam", yaw=90.0)]
    with pytest.raises(SensorSpecError, match=r"sensor #1 \(id='cam'\).*duplicated sensor id"):
        parse_sensor_specs(suite)


def test_mount_radius_over_3m() -> None:
    with pytest.raises(SensorSpecError) as exc:
        parse_sensor_specs([_camera("far_cam", x=2.5, z=2.0)])  # radius 3.2 m
    msg = str(exc.value)
    assert "far_cam" in msg and "mount radius" in msg and "3.20" in msg


def test_mount_radius_exactly_3m_is_allowed() -> None:
    specs = parse_sensor_specs([_camera("cam", x=3.0, y=0.0, z=0.0)])
    assert specs[0].mount_radius_m == pytest.approx(3.0)


def test_mount_radius_applies_to_gnss() -> None:
    with pytest.raises(SensorSpecError, match="gps"):
        parse_sensor_specs([{"type": GNSS, "id": "gps", "x": 0.0, "y": 4.0, "z": 0.0}])


def test_missing_key() -> None:
    cam = _camera("cam")
    del cam["fov"]
    with pytest.raises(SensorSpecError) as exc:
        parse_sensor_specs([cam])
    msg = str(exc.value)
    assert "cam" in msg and "missing" in msg and "fov" in msg


def test_missing_id() -> None:
    cam = _camera()
    del cam["id"]
    with pytest.raises(SensorSpecError, match="'id'"):
        parse_sensor_specs([cam])


def test_too_many_cameras() -> None:
    cams = [_camera(f"cam{i}") for i in range(9)]
    with pytest.raises(SensorSpecError) as exc:
        parse_sensor_specs(cams)
    msg = str(exc.value)
    assert CAMERA in msg and "9 > " in msg and "8" in msg
    # Eight is fine.
    assert len(parse_sensor_specs(cams[:8])) == 8


def test_two_gnss() -> None:
    suite = [
        {"type": GNSS, "id": "gps1", "x": 0.0, "y": 0.0, "z": 0.0},
        {"type": GNSS, "id": "gps2", "x": 0.0, "y": 0.0, "z": 1.0},
    ]
    with pytest.raises(SensorSpecError, match=rf"too many {GNSS}.*2 > .*1"):
        parse_sensor_specs(suite)


@pytest.mark.parametrize("bad", ["wide", None, True, float("nan")])
def test_non_numeric_value(bad) -> None:
    with pytest.raises(SensorSpecError) as exc:
        parse_sensor_specs([_camera("cam", fov=bad)])
    msg = str(exc.value)
    assert "cam" in msg and "'fov'" in msg


def test_camera_resolution_must_be_integer() -> None:
    with pytest.raises(SensorSpecError, match="width"):
        parse_sensor_specs([_camera("cam", width=100.5)])
    with pytest.raises(SensorSpecError, match="height"):
        parse_sensor_specs([_camera("cam", height=0)])


def test_opendrive_map_only_on_map_track() -> None:
    hd = {"type": OPENDRIVE_MAP, "id": "hd_map", "reading_frequency": 1}
    with pytest.raises(SensorSpecError) as exc:
        parse_sensor_specs(default_sensor_suite() + [hd], track="SENSORS")
    msg = str(exc.value)
    assert "hd_map" in msg and "SENSORS" in msg and OPENDRIVE_MAP in msg
    specs = parse_sensor_specs(default_sensor_suite() + [copy.deepcopy(hd)], track="MAP")
    assert specs[-1].type == OPENDRIVE_MAP and specs[-1].reading_frequency == 1.0


def test_unknown_track() -> None:
    with pytest.raises(SensorSpecError, match="track"):
        parse_sensor_specs(default_sensor_suite(), track="QUALIFIER")


def test_not_a_list() -> None:
    with pytest.raises(SensorSpecError, match="list"):
        parse_sensor_specs(_camera())


def test_lite_simulator_rejects_lidar(lite_small_sim) -> None:
    lidar = {
        "type": LIDAR,
        "id": "lidar_top",
        "x": 0.0,
        "y": 0.0,
        "z": 2.5,
        "roll": 0.0,
        "pitch": 0.0,
        "yaw": 0.0,
    }
    # Valid for the Leaderboard ...
    assert parse_sensor_specs([lidar])[0].type == LIDAR
    # ... but the embedded simulator refuses it, naming the sensor and what it supports.
    with pytest.raises(SensorSpecError) as exc:
        lite_small_sim.setup_sensors(
            [
                lidar,
                {"type": IMU, "id": "imu", "x": 0, "y": 0, "z": 0, "roll": 0, "pitch": 0, "yaw": 0},
            ]
        )
    msg = str(exc.value)
    assert "lidar_top" in msg and LIDAR in msg and "carla" in msg
