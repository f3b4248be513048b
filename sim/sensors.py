"""Sensor specs in the Leaderboard's dict format, validated against its limits.

An agent's `sensors()` returns a list of dicts such as
`{"type": "sensor.camera.rgb", "id": "rgb_front", "x": 1.3, "y": 0.0, "z": 2.3,
"roll": 0.0, "pitch": 0.0, "yaw": 0.0, "width": 256, "height": 128, "fov": 100}`.
`parse_sensor_specs` turns that into typed specs, or raises `SensorSpecError` naming the
sensor (its index and id) and the rule it breaks. Mount poses use CARLA's vehicle frame:
x forward, y right, z up [m]; roll/pitch/yaw [deg].
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

CAMERA = "sensor.camera.rgb"
LIDAR = "sensor.lidar.ray_cast"
RADAR = "sensor.other.radar"
GNSS = "sensor.other.gnss"
IMU = "sensor.other.imu"
SPEEDOMETER = "sensor.speedometer"
OPENDRIVE_MAP = "sensor.opendrive_map"

MAX_ALLOWED_RADIUS_SENSOR_M = 3.0  # [m] mount distance from the vehicle origin
# The Leaderboard's per-type limits (SENSORS_LIMITS in leaderboard_evaluator / agent_wrapper).
SENSORS_LIMITS: dict[str, int] = {
    CAMERA: 8,
    LIDAR: 2,
    RADAR: 4,
    GNSS: 1,
    IMU: 1,
    OPENDRIVE_MAP: 1,
    SPEEDOMETER: 1,
}
_REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    CAMERA: ("x", "y", "z", "roll", "pitch", "yaw", "width", "height", "fov"),
    LIDAR: ("x", "y", "z", "roll", "pitch", "yaw"),
    RADAR: ("x", "y", "z", "roll", "pitch", "yaw", "horizontal_fov", "vertical_fov"),
    GNSS: ("x", "y", "z"),
    IMU: ("x", "y", "z", "roll", "pitch", "yaw"),
    SPEEDOMETER: (),
    OPENDRIVE_MAP: (),
}
_MOUNTED = (CAMERA, LIDAR, RADAR, GNSS, IMU)


class SensorSpecError(ValueError):
    """A sensor spec breaks one of the Leaderboard's rules."""


@dataclass(frozen=True)
class SensorSpec:
    """One validated sensor. `pose` = (x, y, z, roll, pitch, yaw) in the vehicle frame."""

    type: str
    id: str
    x: float = 0.0  # [m] forward
    y: float = 0.0  # [m] right
    z: float = 0.0  # [m] up
    roll: float = 0.0  # [deg]
    pitch: float = 0.0  # [deg]
    yaw: float = 0.0  # [deg]
    width: int = 0  # [px], cameras
    height: int = 0  # [px], cameras
    fov: float = 0.0  # [deg] horizontal, cameras
    horizontal_fov: float = 0.0  # [deg], radar
    vertical_fov: float = 0.0  # [deg], radar
    reading_frequency: float = 20.0  # [Hz], speedometer / opendrive map

    @property
    def mount_radius_m(self) -> float:
        return math.sqrt(self.x**2 + self.y**2 + self.z**2)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "id": self.id}
        for key in _REQUIRED_KEYS[self.type]:
            out[key] = getattr(self, key)
        if self.type in (SPEEDOMETER, OPENDRIVE_MAP):
            out["reading_frequency"] = self.reading_frequency
        return out


def _number(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise SensorSpecError(f"{where}: '{key}' must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SensorSpecError(f"{where}: '{key}' must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise SensorSpecError(f"{where}: '{key}' must be finite, got {value!r}")
    return number


def parse_sensor_spec(raw: Any, index: int = 0, track: str = "SENSORS") -> SensorSpec:
    if not isinstance(raw, dict):
        raise SensorSpecError(f"sensor #{index}: a sensor spec must be a dict, got {raw!r}")
    sensor_id = raw.get("id")
    where = f"sensor #{index} (id={sensor_id!r})"
    if not isinstance(sensor_id, str) or not sensor_id:
        raise SensorSpecError(f"{where}: 'id' must be a non-empty string")
    sensor_type = raw.get("type")
    allowed = [t for t in SENSORS_LIMITS if track == "MAP" or t != OPENDRIVE_MAP]
    if sensor_type not in allowed:
        raise SensorSpecError(
            f"{where}: illegal sensor type {sensor_type!r} for track {track}; "
            f"allowed types: {', '.join(allowed)}"
        )
    missing = [k for k in _REQUIRED_KEYS[sensor_type] if k not in raw]
    if missing:
        raise SensorSpecError(f"{where}: {sensor_type} is missing key(s) {missing}")
    values: dict[str, Any] = {}
    for key in _REQUIRED_KEYS[sensor_type]:
        values[key] = _number(where, key, raw[key])
    if "reading_frequency" in raw:
        values["reading_frequency"] = _number(where, "reading_frequency", raw["reading_frequency"])
    if sensor_type == CAMERA:
        for key in ("width", "height"):
            if values[key] != int(values[key]) or not 1 <= values[key] <= 4096:
                raise SensorSpecError(f"{where}: '{key}' must be an integer in [1, 4096]")
            values[key] = int(values[key])
        if not 1.0 <= values["fov"] <= 179.0:
            raise SensorSpecError(f"{where}: 'fov' = {values['fov']} must be in [1, 179] deg")
    spec = SensorSpec(type=sensor_type, id=sensor_id, **values)
    if sensor_type in _MOUNTED and spec.mount_radius_m > MAX_ALLOWED_RADIUS_SENSOR_M:
        raise SensorSpecError(
            f"{where}: illegal sensor position, mount radius {spec.mount_radius_m:.2f} m "
            f"exceeds the Leaderboard's {MAX_ALLOWED_RADIUS_SENSOR_M} m"
        )
    return spec


def parse_sensor_specs(raw_specs: Any, track: str = "SENSORS") -> list[SensorSpec]:
    """Validate a whole `sensors()` list: each spec, unique ids and per-type counts."""
    if track not in ("SENSORS", "MAP"):
        raise SensorSpecError(f"unknown track {track!r}; valid tracks: SENSORS, MAP")
    if not isinstance(raw_specs, list | tuple):
        raise SensorSpecError(f"sensors() must return a list of dicts, got {type(raw_specs)}")
    specs = [parse_sensor_spec(raw, i, track) for i, raw in enumerate(raw_specs)]
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.id in seen:
            raise SensorSpecError(f"sensor #{i} (id={spec.id!r}): duplicated sensor id")
        seen.add(spec.id)
    for sensor_type, count in Counter(s.type for s in specs).items():
        if count > SENSORS_LIMITS[sensor_type]:
            raise SensorSpecError(
                f"too many {sensor_type} sensors: {count} > the Leaderboard's limit of "
                f"{SENSORS_LIMITS[sensor_type]}"
            )
    return specs


def default_front_camera(width: int = 256, height: int = 128, fov: float = 100.0) -> dict:
    """A front RGB camera mounted where TransFuser-style agents put it."""
    return {
        "type": CAMERA,
        "id": "rgb_front",
        "x": 1.3,
        "y": 0.0,
        "z": 2.3,
        "roll": 0.0,
        "pitch": 0.0,
        "yaw": 0.0,
        "width": width,
        "height": height,
        "fov": fov,
    }


def default_sensor_suite(width: int = 256, height: int = 128) -> list[dict]:
    """Front camera + GNSS + IMU + speedometer: the usual SENSORS-track set."""
    return [
        default_front_camera(width, height),
        {"type": GNSS, "id": "gps", "x": 0.0, "y": 0.0, "z": 0.0},
        {
            "type": IMU,
            "id": "imu",
            "x": 0.0,
            "y": 0.0,
            "z": 0.0,
            "roll": 0.0,
            "pitch": 0.0,
            "yaw": 0.0,
        },
        {"type": SPEEDOMETER, "id": "speedometer", "reading_frequency": 20},
    ]
