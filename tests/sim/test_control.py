"""VehicleControl clamping / sanitising and RoadOption values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from sim.control import RoadOption, VehicleControl


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({"throttle": 1.7}, (1.0, 0.0, 0.0)),
        ({"throttle": -0.3}, (0.0, 0.0, 0.0)),
        ({"steer": 2.5}, (0.0, 1.0, 0.0)),
        ({"steer": -4.0}, (0.0, -1.0, 0.0)),
        ({"brake": 3.0}, (0.0, 0.0, 1.0)),
        ({"brake": -1.0}, (0.0, 0.0, 0.0)),
        ({"throttle": 0.4, "steer": -0.25, "brake": 0.1}, (0.4, -0.25, 0.1)),
        ({"steer": math.inf}, (0.0, 1.0, 0.0)),
    ],
)
def test_clamping(kwargs: dict, expected: tuple[float, float, float]) -> None:
    c = VehicleControl(**kwargs)
    assert (c.throttle, c.steer, c.brake) == pytest.approx(expected)


@pytest.mark.parametrize("field", ["throttle", "steer", "brake"])
def test_nan_in_constructor_names_the_field(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        VehicleControl(**{field: math.nan})


@pytest.mark.parametrize("field", ["throttle", "steer", "brake"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_sanitized_maps_non_finite_to_safe_stop(field: str, bad: float) -> None:
    raw = SimpleNamespace(throttle=0.8, steer=0.3, brake=0.0)
    setattr(raw, field, bad)
    c = VehicleControl.sanitized(raw)
    assert (c.throttle, c.steer, c.brake) == (0.0, 0.0, 1.0)
    assert c.is_safe_stop


def test_sanitized_clamps_and_keeps_flags() -> None:
    raw = SimpleNamespace(throttle=2.0, steer=-3.0, brake=0.2, hand_brake=1, reverse=True)
    c = VehicleControl.sanitized(raw)
    assert (c.throttle, c.steer, c.brake) == (1.0, -1.0, 0.2)
    assert c.hand_brake is True and c.reverse is True


def test_sanitized_missing_fields_default_to_zero() -> None:
    c = VehicleControl.sanitized(SimpleNamespace(throttle=0.5))
    assert (c.throttle, c.steer, c.brake) == (0.5, 0.0, 0.0)


def test_sanitized_non_numeric_raises_naming_field() -> None:
    with pytest.raises(ValueError, match="steer"):
        VehicleControl.sanitized(SimpleNamespace(throttle=0.1, steer="left", brake=0.0))


def test_sanitized_accepts_our_control_unchanged() -> None:
    c = VehicleControl(throttle=0.3, steer=0.1, brake=0.0, hand_brake=True)
    assert VehicleControl.sanitized(c) == c


def test_sanitized_accepts_carla_vehicle_control() -> None:
    carla = pytest.importorskip("carla")
    cc = carla.VehicleControl(throttle=0.6, steer=-0.4, brake=0.1, hand_brake=True, reverse=False)
    c = VehicleControl.sanitized(cc)
    assert isinstance(c, VehicleControl)
    assert (c.throttle, c.steer, c.brake) == pytest.approx((0.6, -0.4, 0.1))
    assert c.hand_brake is True and c.reverse is False


def test_sanitized_carla_control_with_nan_is_safe_stop() -> None:
    carla = pytest.importorskip("carla")
    cc = carla.VehicleControl()
    cc.throttle = math.nan
    cc.steer = 0.5
    c = VehicleControl.sanitized(cc)
    assert (c.throttle, c.steer, c.brake) == (0.0, 0.0, 1.0)


def test_is_safe_stop() -> None:
    assert VehicleControl(brake=1.0).is_safe_stop
    assert not VehicleControl(throttle=0.2, brake=1.0).is_safe_stop
    assert not VehicleControl().is_safe_stop


def test_road_option_values_match_carla() -> None:
    expected = {
        "VOID": -1,
        "LEFT": 1,
        "RIGHT": 2,
        "STRAIGHT": 3,
        "LANEFOLLOW": 4,
        "CHANGELANELEFT": 5,
        "CHANGELANERIGHT": 6,
    }
    assert {o.name: int(o.value) for o in RoadOption} == expected
