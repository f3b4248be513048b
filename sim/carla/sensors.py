"""Leaderboard sensors on a CARLA ego: blueprint attributes, mounting, and the data
conversions of the Leaderboard's `sensor_interface.CallBack`.

Attributes are those `AgentWrapper._preprocess_sensor_spec` sets (leaderboard 2.0):
cameras `image_size_x/y` and `fov` from the spec; lidar range 85 m, 10 Hz, 64 channels,
+10/-30 deg, 600 000 points/s and its drop-off values; radar fov from the spec, 1500
points/s, 100 m; GNSS noise stddev 5e-6 deg with zero bias; IMU accelerometer noise
0.001/0.001/0.015 and gyroscope 0.001. GNSS keeps a zero rotation. The speedometer is not
a CARLA sensor: it reads the ego's forward speed every tick (`SpeedometerReader`).

Data, as `input_data[id] = (frame, data)`:
camera `uint8 (H, W, 4)` BGRA (CARLA's raw layout, copied); lidar `float32 (N, 4)`
x, y, z, intensity; radar `float32 (N, 4)` velocity, altitude, azimuth, depth (the
Leaderboard flips CARLA's depth-first order); gnss `float64 [lat, lon, alt]`; imu
`float64 [ax, ay, az, gx, gy, gz, compass]`; speedometer `{"speed": m/s}`.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.sensors import CAMERA, GNSS, IMU, LIDAR, OPENDRIVE_MAP, RADAR, SPEEDOMETER, SensorSpec

SENSOR_TIMEOUT_S = 10.0  # [s] wait for a sensor's data (SensorInterface._queue_timeout)
PSEUDO_SENSORS = (SPEEDOMETER, OPENDRIVE_MAP)  # read from the world, not spawned
COLLISION_SENSOR = "sensor.other.collision"
LANE_INVASION_SENSOR = "sensor.other.lane_invasion"

_LIDAR_ATTRIBUTES = {
    "range": "85",  # [m]
    "rotation_frequency": "10",  # [Hz]
    "channels": "64",
    "upper_fov": "10",  # [deg]
    "lower_fov": "-30",  # [deg]
    "points_per_second": "600000",
    "atmosphere_attenuation_rate": "0.004",
    "dropoff_general_rate": "0.45",
    "dropoff_intensity_limit": "0.8",
    "dropoff_zero_intensity": "0.4",
}
_GNSS_ATTRIBUTES = {
    "noise_alt_stddev": "5e-06",  # [m]
    "noise_lat_stddev": "5e-06",  # [deg]
    "noise_lon_stddev": "5e-06",  # [deg]
    "noise_alt_bias": "0.0",
    "noise_lat_bias": "0.0",
    "noise_lon_bias": "0.0",
}
_IMU_ATTRIBUTES = {
    "noise_accel_stddev_x": "0.001",  # [m/s^2]
    "noise_accel_stddev_y": "0.001",
    "noise_accel_stddev_z": "0.015",
    "noise_gyro_stddev_x": "0.001",  # [rad/s]
    "noise_gyro_stddev_y": "0.001",
    "noise_gyro_stddev_z": "0.001",
}


@dataclass(frozen=True)
class SensorBlueprint:
    """How to spawn one Leaderboard sensor: blueprint id, attributes (strings, as
    `ActorBlueprint.set_attribute` takes them) and mount pose in the vehicle frame
    (x forward, y right, z up [m]; pitch, yaw, roll [deg])."""

    sensor_id: str
    type_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    location: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)  # pitch, yaw, roll

    @property
    def is_pseudo(self) -> bool:
        return self.type_id in PSEUDO_SENSORS

    def transform(self) -> Any:
        """The mount pose as a `carla.Transform`."""
        from sim.carla_compat import require_carla

        carla = require_carla()
        pitch, yaw, roll = self.rotation
        return carla.Transform(
            carla.Location(x=self.location[0], y=self.location[1], z=self.location[2]),
            carla.Rotation(pitch=pitch, yaw=yaw, roll=roll),
        )


def sensor_blueprint(spec: SensorSpec, fixed_delta_seconds: float) -> SensorBlueprint:
    """The Leaderboard's blueprint choices for one validated sensor spec."""
    pose = ((spec.x, spec.y, spec.z), (spec.pitch, spec.yaw, spec.roll))
    if spec.type == CAMERA:
        attrs = {
            "image_size_x": str(spec.width),
            "image_size_y": str(spec.height),
            "fov": f"{spec.fov:g}",
        }
        return SensorBlueprint(spec.id, spec.type, attrs, *pose)
    if spec.type == LIDAR:
        return SensorBlueprint(spec.id, spec.type, dict(_LIDAR_ATTRIBUTES), *pose)
    if spec.type == RADAR:
        attrs = {
            "horizontal_fov": f"{spec.horizontal_fov:g}",  # [deg]
            "vertical_fov": f"{spec.vertical_fov:g}",  # [deg]
            "points_per_second": "1500",
            "range": "100",  # [m]
        }
        return SensorBlueprint(spec.id, spec.type, attrs, *pose)
    if spec.type == GNSS:
        return SensorBlueprint(spec.id, spec.type, dict(_GNSS_ATTRIBUTES), pose[0])
    if spec.type == IMU:
        return SensorBlueprint(spec.id, spec.type, dict(_IMU_ATTRIBUTES), *pose)
    if spec.type == SPEEDOMETER:
        # The Leaderboard reads the speedometer once per world step.
        attrs = {"reading_frequency": f"{1.0 / fixed_delta_seconds:g}"}
        return SensorBlueprint(spec.id, spec.type, attrs)
    if spec.type == OPENDRIVE_MAP:
        attrs = {"reading_frequency": f"{spec.reading_frequency:g}"}
        return SensorBlueprint(spec.id, spec.type, attrs)
    raise ValueError(f"sensor {spec.id!r}: no CARLA blueprint for type {spec.type!r}")


# ----------------------------------------------------------------- data
def image_to_bgra(raw: bytes | bytearray | memoryview, width: int, height: int) -> np.ndarray:
    """CARLA's camera buffer (BGRA, row-major) -> an owned `uint8 (H, W, 4)` array."""
    flat = np.frombuffer(raw, dtype=np.uint8)
    if flat.size != width * height * 4:
        raise ValueError(
            f"camera buffer has {flat.size} bytes, expected {width}x{height}x4 = "
            f"{width * height * 4}"
        )
    return flat.reshape(height, width, 4).copy()


def lidar_to_array(raw: bytes | bytearray | memoryview) -> np.ndarray:
    """Lidar buffer -> `float32 (N, 4)` x, y, z [m], intensity."""
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, 4).copy()


def radar_to_array(raw: bytes | bytearray | memoryview) -> np.ndarray:
    """Radar buffer (depth, azimuth, altitude, velocity per detection) -> `float32 (N, 4)`
    flipped to velocity, altitude, azimuth, depth, as the Leaderboard hands it over."""
    return np.flip(np.frombuffer(raw, dtype=np.float32).reshape(-1, 4), 1).copy()


def gnss_to_array(latitude: float, longitude: float, altitude: float) -> np.ndarray:
    """`float64 [lat, lon, alt]` (deg, deg, m)."""
    return np.array([latitude, longitude, altitude], dtype=np.float64)


def imu_to_array(accelerometer: Any, gyroscope: Any, compass: float) -> np.ndarray:
    """`float64 [ax, ay, az, gx, gy, gz, compass]` from two `carla.Vector3D`s
    (m/s^2, rad/s) and the compass [rad] (0 = north, pi/2 = east)."""
    return np.array(
        [
            accelerometer.x,
            accelerometer.y,
            accelerometer.z,
            gyroscope.x,
            gyroscope.y,
            gyroscope.z,
            compass,
        ],
        dtype=np.float64,
    )


def forward_speed(velocity: Any, rotation: Any) -> float:
    """[m/s] velocity along the vehicle's heading, pitch included (the Leaderboard's
    `SpeedometerReader._get_forward_speed`); negative when reversing."""
    pitch, yaw = np.radians(rotation.pitch), np.radians(rotation.yaw)
    heading = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    return float(np.dot([velocity.x, velocity.y, velocity.z], heading))


def convert_measurement(type_id: str, data: Any) -> Any:
    """A CARLA sensor measurement -> the Leaderboard's data for that sensor type."""
    if type_id == CAMERA:
        return image_to_bgra(data.raw_data, data.width, data.height)
    if type_id == LIDAR:
        return lidar_to_array(data.raw_data)
    if type_id == RADAR:
        return radar_to_array(data.raw_data)
    if type_id == GNSS:
        return gnss_to_array(data.latitude, data.longitude, data.altitude)
    if type_id == IMU:
        return imu_to_array(data.accelerometer, data.gyroscope, data.compass)
    raise ValueError(f"no conversion for sensor type {type_id!r}")


class SensorReceivedNoData(RuntimeError):
    """A sensor sent nothing for the current frame within SENSOR_TIMEOUT_S."""


class SensorCollector:
    """Per-sensor queues filled by CARLA's listener threads; `collect(frame)` returns the
    data of every sensor for that world frame (older frames are dropped), like the
    Leaderboard's `SensorInterface.get_data` with its 10 s queue timeout."""

    def __init__(self, timeout_s: float = SENSOR_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._queues: dict[str, queue.Queue[tuple[int, Any]]] = {}
        self._types: dict[str, str] = {}

    def register(self, sensor_id: str, type_id: str) -> Callable[[Any], None]:
        """Make a queue for `sensor_id`; returns the callback to `listen()` with."""
        self._queues[sensor_id] = queue.Queue()
        self._types[sensor_id] = type_id

        def callback(measurement: Any) -> None:
            self.put(sensor_id, int(measurement.frame), convert_measurement(type_id, measurement))

        return callback

    def put(self, sensor_id: str, frame: int, data: Any) -> None:
        self._queues[sensor_id].put((frame, data))

    @property
    def sensor_ids(self) -> list[str]:
        return list(self._queues)

    def collect(self, frame: int) -> dict[str, Any]:
        """{sensor_id: data} for world `frame`; raises SensorReceivedNoData naming the
        sensor that stayed silent."""
        out: dict[str, Any] = {}
        for sensor_id, q in self._queues.items():
            while True:
                try:
                    got_frame, data = q.get(timeout=self.timeout_s)
                except queue.Empty:
                    raise SensorReceivedNoData(
                        f"sensor {sensor_id!r} sent no data for frame {frame} within "
                        f"{self.timeout_s:g} s"
                    ) from None
                if got_frame >= frame:
                    out[sensor_id] = data
                    break
        return out

    def drain(self) -> None:
        """Forget everything queued (after warm-up ticks)."""
        for q in self._queues.values():
            while not q.empty():
                q.get_nowait()

    def clear(self) -> None:
        self._queues = {}
        self._types = {}
