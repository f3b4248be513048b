"""Poses, frames and CARLA's GPS / compass conventions, shared by every backend.

World frame (CARLA's, left-handed): x east, y south, z up; yaw in degrees, 0 = +x,
positive turning toward +y (clockwise seen from above). Seen on a north-up map drawn
with image rows going down, this is ordinary 2-D math: heading (cos yaw, sin yaw).

Ego frame (our trajectories): x forward, y LEFT, metres. The left vector of a heading
in CARLA's world is (sin yaw, -cos yaw), so converting flips the sign of y. These
conversions happen here and only here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EARTH_RADIUS_M = 6378137.0  # equatorial radius used by CARLA's leaderboard [m]


@dataclass(frozen=True)
class Location:
    x: float = 0.0  # [m] east
    y: float = 0.0  # [m] south
    z: float = 0.0  # [m] up

    def distance(self, other: Location) -> float:
        return math.dist((self.x, self.y, self.z), (other.x, other.y, other.z))


@dataclass(frozen=True)
class Rotation:
    pitch: float = 0.0  # [deg]
    yaw: float = 0.0  # [deg], 0 = +x, positive toward +y
    roll: float = 0.0  # [deg]


@dataclass(frozen=True)
class Transform:
    location: Location = Location()
    rotation: Rotation = Rotation()

    @staticmethod
    def from_xy_yaw(x: float, y: float, yaw_deg: float, z: float = 0.0) -> Transform:
        return Transform(Location(float(x), float(y), float(z)), Rotation(yaw=float(yaw_deg)))


def wrap_angle(angle_rad: np.ndarray | float) -> np.ndarray | float:
    """Wrap radians to [-pi, pi)."""
    return (np.asarray(angle_rad) + np.pi) % (2.0 * np.pi) - np.pi


def world_to_ego(points_xy: np.ndarray, ego_xy: np.ndarray, ego_yaw_rad: float) -> np.ndarray:
    """World points (N, 2) -> ego frame (N, 2): x forward, y left."""
    d = np.asarray(points_xy, dtype=np.float64) - np.asarray(ego_xy, dtype=np.float64)
    c, s = math.cos(ego_yaw_rad), math.sin(ego_yaw_rad)
    forward = d[..., 0] * c + d[..., 1] * s
    left = d[..., 0] * s - d[..., 1] * c
    return np.stack([forward, left], axis=-1)


def ego_to_world(points_ego: np.ndarray, ego_xy: np.ndarray, ego_yaw_rad: float) -> np.ndarray:
    """Ego-frame points (N, 2) (x forward, y left) -> world (N, 2)."""
    p = np.asarray(points_ego, dtype=np.float64)
    c, s = math.cos(ego_yaw_rad), math.sin(ego_yaw_rad)
    x = ego_xy[0] + p[..., 0] * c + p[..., 1] * s
    y = ego_xy[1] + p[..., 0] * s - p[..., 1] * c
    return np.stack([x, y], axis=-1)


@dataclass(frozen=True)
class GeoReference:
    """The map's geo origin; CARLA towns without a geoReference use (0, 0)."""

    lat_ref: float = 0.0  # [deg]
    lon_ref: float = 0.0  # [deg]

    def to_gps(self, x: float, y: float, z: float = 0.0) -> tuple[float, float, float]:
        """World location -> (lat, lon, alt), the leaderboard's `_location_to_gps`."""
        scale = math.cos(self.lat_ref * math.pi / 180.0)
        mx = scale * self.lon_ref * math.pi * EARTH_RADIUS_M / 180.0 + x
        my = (
            scale * EARTH_RADIUS_M * math.log(math.tan((90.0 + self.lat_ref) * math.pi / 360.0)) - y
        )
        lon = mx * 180.0 / (math.pi * EARTH_RADIUS_M * scale)
        lat = 360.0 * math.atan(math.exp(my / (EARTH_RADIUS_M * scale))) / math.pi - 90.0
        return lat, lon, z

    def from_gps(self, lat: float, lon: float, alt: float = 0.0) -> tuple[float, float, float]:
        """(lat, lon, alt) -> world location; the exact inverse of `to_gps`."""
        scale = math.cos(self.lat_ref * math.pi / 180.0)
        mx = lon * math.pi * EARTH_RADIUS_M * scale / 180.0
        my = EARTH_RADIUS_M * scale * math.log(math.tan((90.0 + lat) * math.pi / 360.0))
        x = mx - scale * self.lon_ref * math.pi * EARTH_RADIUS_M / 180.0
        y = (
            scale * EARTH_RADIUS_M * math.log(math.tan((90.0 + self.lat_ref) * math.pi / 360.0))
            - my
        )
        return x, y, alt


def yaw_to_compass(yaw_rad: float) -> float:
    """CARLA IMU compass [rad]: 0 = north (-y), pi/2 = east (+x)."""
    return float((yaw_rad + math.pi / 2.0) % (2.0 * math.pi))


def compass_to_yaw(compass_rad: float) -> float:
    return float(wrap_angle(compass_rad - math.pi / 2.0))
