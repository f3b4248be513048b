"""CARLA frame conventions: GPS, compass, world <-> ego."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.geometry import (
    GeoReference,
    Location,
    Transform,
    compass_to_yaw,
    ego_to_world,
    world_to_ego,
    wrap_angle,
    yaw_to_compass,
)

GEO = GeoReference(lat_ref=42.0, lon_ref=2.0)


@pytest.mark.parametrize("geo", [GeoReference(), GEO, GeoReference(-33.9, 151.2)])
@pytest.mark.parametrize("xy", [(0.0, 0.0), (123.4, -56.7), (-2500.0, 3100.0)])
def test_gps_round_trip(geo: GeoReference, xy: tuple[float, float]) -> None:
    lat, lon, alt = geo.to_gps(xy[0], xy[1], 1.5)
    x, y, z = geo.from_gps(lat, lon, alt)
    assert (x, y, z) == pytest.approx((xy[0], xy[1], 1.5), abs=1e-6)


def test_origin_maps_to_reference() -> None:
    lat, lon, _ = GEO.to_gps(0.0, 0.0)
    assert (lat, lon) == pytest.approx((42.0, 2.0), abs=1e-9)


def test_leaderboard_location_to_gps_formula() -> None:
    """The leaderboard's `_location_to_gps` with lat_ref=42, lon_ref=2, written out."""
    x, y = 350.0, -120.0
    r = 6378137.0
    scale = math.cos(42.0 * math.pi / 180.0)
    mx = scale * 2.0 * math.pi * r / 180.0 + x
    my = scale * r * math.log(math.tan((90.0 + 42.0) * math.pi / 360.0)) - y
    lon = mx * 180.0 / (math.pi * r * scale)
    lat = 360.0 * math.atan(math.exp(my / (r * scale))) / math.pi - 90.0
    assert GEO.to_gps(x, y)[:2] == pytest.approx((lat, lon), abs=1e-12)


def test_x_is_east_y_is_south() -> None:
    lat0, lon0, _ = GEO.to_gps(0.0, 0.0)
    lat_e, lon_e, _ = GEO.to_gps(100.0, 0.0)
    lat_s, lon_s, _ = GEO.to_gps(0.0, 100.0)
    assert lon_e > lon0 and lat_e == pytest.approx(lat0, abs=1e-12)
    assert lat_s < lat0 and lon_s == pytest.approx(lon0, abs=1e-12)
    # Near the reference the Mercator scale cancels: 100 m is 100 / R radians of latitude.
    assert lat0 - lat_s == pytest.approx(math.degrees(100.0 / 6378137.0), rel=1e-3)


@pytest.mark.parametrize(
    "yaw_deg,compass",
    [
        (0.0, math.pi / 2),
        (-90.0, 0.0),
        (180.0, 3 * math.pi / 2),
        (90.0, math.pi),
        (-180.0, 3 * math.pi / 2),
        (270.0, 0.0),
    ],
)
def test_compass(yaw_deg: float, compass: float) -> None:
    got = yaw_to_compass(math.radians(yaw_deg))
    assert 0.0 <= got < 2 * math.pi
    # Compare on the circle (0 and 2 pi are the same heading).
    assert math.cos(got - compass) == pytest.approx(1.0, abs=1e-12)
    assert got == pytest.approx(compass % (2 * math.pi), abs=1e-9) or abs(got - 2 * math.pi) < 1e-9


@pytest.mark.parametrize("yaw", np.linspace(-3.0, 3.0, 7))
def test_compass_to_yaw_inverse(yaw: float) -> None:
    assert compass_to_yaw(yaw_to_compass(yaw)) == pytest.approx(yaw, abs=1e-9)


def test_wrap_angle() -> None:
    assert float(wrap_angle(3 * math.pi / 2)) == pytest.approx(-math.pi / 2)
    assert float(wrap_angle(-3 * math.pi / 2)) == pytest.approx(math.pi / 2)
    w = wrap_angle(np.linspace(-20, 20, 101))
    assert np.all(w >= -math.pi) and np.all(w < math.pi)


def test_world_ego_round_trip() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(-50, 50, (20, 2))
    ego = np.array([12.0, -7.0])
    for yaw in (0.0, 0.7, -2.4, math.pi):
        local = world_to_ego(pts, ego, yaw)
        assert np.allclose(ego_to_world(local, ego, yaw), pts, atol=1e-9)
        # Distances are preserved.
        assert np.allclose(np.linalg.norm(local, axis=1), np.linalg.norm(pts - ego, axis=1))


def test_ego_frame_is_forward_left() -> None:
    ego = np.array([10.0, 20.0])
    # Facing east (yaw 0): north (-y) is to the left.
    north = world_to_ego(np.array([[10.0, 15.0]]), ego, 0.0)[0]
    assert north == pytest.approx([0.0, 5.0])
    ahead = world_to_ego(np.array([[13.0, 20.0]]), ego, 0.0)[0]
    assert ahead == pytest.approx([3.0, 0.0])
    # Facing south (yaw +90 deg): east (+x) is to the left.
    east = world_to_ego(np.array([[14.0, 20.0]]), ego, math.pi / 2)[0]
    assert east == pytest.approx([0.0, 4.0])
    # And back: 2 m ahead and 1 m left of an east-facing ego is north-east of it.
    assert ego_to_world(np.array([[2.0, 1.0]]), ego, 0.0)[0] == pytest.approx([12.0, 19.0])


def test_transform_and_location() -> None:
    t = Transform.from_xy_yaw(1, 2, 30.0, z=0.5)
    assert (t.location.x, t.location.y, t.location.z, t.rotation.yaw) == (1.0, 2.0, 0.5, 30.0)
    assert Location(0, 0, 0).distance(Location(3, 4, 12)) == pytest.approx(13.0)
