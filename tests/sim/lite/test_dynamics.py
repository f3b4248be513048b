"""Ego dynamics: acceleration, braking on dry/wet roads, turning circle, understeer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.control import VehicleControl
from sim.lite.dynamics import (
    AIR_DRAG_PER_MPS2,
    MAX_ENGINE_ACCEL_MPS2,
    MAX_STEER_ANGLE_RAD,
    MKZ_WHEELBASE_M,
    ROLLING_RESISTANCE_MPS2,
    TOP_SPEED_MPS,
    EgoState,
    step_ego,
)
from sim.weather import GRAVITY_MPS2, Weather

DT = 0.05
DRY = Weather.preset("ClearNoon").friction
WET = Weather.preset("WetNoon").friction
HEAVY_RAIN = Weather.preset("HardRainNoon").friction


def _run(state: EgoState, control: VehicleControl, friction: float, ticks: int) -> list[EgoState]:
    out = [state]
    for _ in range(ticks):
        state = step_ego(state, control, friction, DT)
        out.append(state)
    return out


def _reference_full_throttle(t_end: float, h: float = 1e-3) -> tuple[float, float]:
    """dv/dt = a_max (1 - v/v_top) - c_rr - k v^2, integrated finely (RK4): (v, distance)."""

    def acc(v: float) -> float:
        return (
            MAX_ENGINE_ACCEL_MPS2 * (1.0 - v / TOP_SPEED_MPS)
            - ROLLING_RESISTANCE_MPS2
            - AIR_DRAG_PER_MPS2 * v * v
        )

    v = x = 0.0
    for _ in range(int(round(t_end / h))):
        k1 = acc(v)
        k2 = acc(v + 0.5 * h * k1)
        k3 = acc(v + 0.5 * h * k2)
        k4 = acc(v + h * k3)
        x += h * (v + h * (k1 + 2 * k2 + 2 * k3) / 6.0 * 0.5)
        v += h * (k1 + 2 * k2 + 2 * k3 + k4) / 6.0
    return v, x


@pytest.mark.parametrize("seconds", [1.0, 5.0, 10.0])
def test_full_throttle_from_rest(seconds: float) -> None:
    states = _run(EgoState(0.0, 0.0, 0.0), VehicleControl(throttle=1.0), DRY, int(seconds / DT))
    end = states[-1]
    v_ref, x_ref = _reference_full_throttle(seconds)
    assert end.speed == pytest.approx(v_ref, rel=0.02)
    assert end.x == pytest.approx(x_ref, rel=0.03)
    assert end.y == pytest.approx(0.0, abs=1e-9) and end.yaw == pytest.approx(0.0, abs=1e-12)
    # Upper bound from the engine alone: v <= a_max t.
    assert end.speed < MAX_ENGINE_ACCEL_MPS2 * seconds


def test_first_tick_acceleration_is_engine_max() -> None:
    s = step_ego(EgoState(0.0, 0.0, 0.0), VehicleControl(throttle=1.0), DRY, DT)
    assert s.accel == pytest.approx(MAX_ENGINE_ACCEL_MPS2)
    assert s.speed == pytest.approx(MAX_ENGINE_ACCEL_MPS2 * DT)


def test_top_speed_is_bounded() -> None:
    states = _run(EgoState(0.0, 0.0, 0.0, speed=40.0), VehicleControl(throttle=1.0), DRY, 2000)
    # Terminal speed where engine force equals resistance, below TOP_SPEED_MPS.
    v = states[-1].speed
    a = (
        MAX_ENGINE_ACCEL_MPS2 * (1 - v / TOP_SPEED_MPS)
        - ROLLING_RESISTANCE_MPS2
        - AIR_DRAG_PER_MPS2 * v * v
    )
    assert a == pytest.approx(0.0, abs=0.02)
    assert v < TOP_SPEED_MPS


def _braking_distance(v0: float, friction: float) -> tuple[float, list[EgoState]]:
    states = _run(EgoState(0.0, 0.0, 0.0, speed=v0), VehicleControl(brake=1.0), friction, 400)
    assert states[-1].speed == 0.0
    return states[-1].x, states


def test_dry_braking_distance_from_20mps() -> None:
    dist, _ = _braking_distance(20.0, DRY)
    # Friction-limited (9 m/s^2 of brakes > mu g = 8.83): d ~ v^2 / (2 mu g) = 22.7 m; rolling
    # resistance and drag shorten it a little. 8 % tolerance covers both and Euler steps.
    assert dist == pytest.approx(20.0**2 / (2 * DRY * GRAVITY_MPS2), rel=0.08)
    assert dist < 20.0**2 / (2 * DRY * GRAVITY_MPS2)


@pytest.mark.parametrize("friction", [WET, HEAVY_RAIN])
def test_wet_braking_scales_with_friction(friction: float) -> None:
    dry, _ = _braking_distance(20.0, DRY)
    wet, _ = _braking_distance(20.0, friction)
    assert wet > dry
    assert wet / dry == pytest.approx(DRY / friction, rel=0.10)


def test_brakes_never_reverse_the_car() -> None:
    for v0 in (0.0, 0.3, 1.0, 15.0):
        _, states = (
            _braking_distance(v0, DRY)
            if v0 > 0
            else (0.0, _run(EgoState(0.0, 0.0, 0.0), VehicleControl(brake=1.0), DRY, 100))
        )
        speeds = np.array([s.speed for s in states])
        xs = np.array([s.x for s in states])
        assert speeds.min() >= 0.0
        assert np.all(np.diff(xs) >= -1e-12)
        assert speeds[-1] == 0.0
        # And it stays stopped.
        assert all(s.speed == 0.0 for s in states[-50:])


def test_brake_beats_throttle_at_standstill() -> None:
    states = _run(EgoState(0.0, 0.0, 0.0), VehicleControl(throttle=0.3, brake=1.0), DRY, 100)
    assert all(s.speed == 0.0 and s.x == 0.0 for s in states)


def test_reverse_gear_goes_backwards_with_limit() -> None:
    states = _run(EgoState(0.0, 0.0, 0.0), VehicleControl(throttle=1.0, reverse=True), DRY, 400)
    assert states[-1].x < -10.0
    assert states[-1].speed < 0.0
    assert min(s.speed for s in states) >= -5.0 - 0.3


def _fit_circle(xy: np.ndarray) -> tuple[np.ndarray, float]:
    """Algebraic least-squares circle fit: (centre, radius)."""
    a = np.column_stack([2 * xy[:, 0], 2 * xy[:, 1], np.ones(len(xy))])
    b = (xy**2).sum(1)
    cx, cy, c = np.linalg.lstsq(a, b, rcond=None)[0]
    return np.array([cx, cy]), math.sqrt(c + cx * cx + cy * cy)


@pytest.mark.parametrize("steer", [0.1, -0.2, 0.35])
def test_constant_steer_circle_radius(steer: float) -> None:
    wheel = steer * MAX_STEER_ANGLE_RAD
    expected = MKZ_WHEELBASE_M / math.tan(abs(wheel))
    v = 4.0
    # Throttle to hold ~4 m/s against rolling resistance.
    throttle = (ROLLING_RESISTANCE_MPS2 + AIR_DRAG_PER_MPS2 * v * v) / (
        MAX_ENGINE_ACCEL_MPS2 * (1 - v / TOP_SPEED_MPS)
    )
    states = _run(
        EgoState(0.0, 0.0, 0.0, speed=v),
        VehicleControl(throttle=throttle, steer=steer),
        DRY,
        int(2 * math.pi * expected / v / DT) + 40,
    )
    xy = np.array([[s.x, s.y] for s in states[20:]])  # after the steering actuator settled
    centre, radius = _fit_circle(xy)
    assert radius == pytest.approx(expected, rel=0.02)
    assert np.abs(np.linalg.norm(xy - centre, axis=1) - radius).max() < 0.05 * expected
    assert states[-1].speed == pytest.approx(v, abs=0.05)
    # Positive steer: the circle's centre is to the right (+y when heading east).
    assert np.sign(centre[1]) == np.sign(steer)


def test_steering_positive_turns_right() -> None:
    states = _run(
        EgoState(0.0, 0.0, 0.0, speed=5.0), VehicleControl(steer=0.3, throttle=0.1), DRY, 20
    )
    assert states[-1].yaw > 0.1  # yaw increases (clockwise from above)
    assert states[-1].y > 0.1  # heading east, moving south = right
    assert states[-1].yaw_rate > 0.0 and states[-1].lateral_accel > 0.0
    assert states[-1].wheel_angle > 0.0
    left = _run(
        EgoState(0.0, 0.0, 0.0, speed=5.0), VehicleControl(steer=-0.3, throttle=0.1), DRY, 20
    )
    assert left[-1].yaw < -0.1 and left[-1].y < -0.1


def test_steering_actuator_lag() -> None:
    s1 = step_ego(EgoState(0.0, 0.0, 0.0, speed=5.0), VehicleControl(steer=1.0), DRY, DT)
    # One tick cannot reach full lock: rate-limited to 360 deg/s.
    assert 0.0 < s1.wheel_angle <= math.radians(360.0) * DT + 1e-12
    states = _run(EgoState(0.0, 0.0, 0.0, speed=5.0), VehicleControl(steer=1.0), DRY, 40)
    assert states[-1].wheel_angle == pytest.approx(MAX_STEER_ANGLE_RAD, rel=0.01)


@pytest.mark.parametrize("friction", [DRY, WET, HEAVY_RAIN])
@pytest.mark.parametrize("speed", [15.0, 25.0])
def test_understeer_lateral_accel_bounded_by_grip(friction: float, speed: float) -> None:
    states = _run(EgoState(0.0, 0.0, 0.0, speed=speed), VehicleControl(steer=0.5), friction, 60)
    lat = np.array([abs(s.lateral_accel) for s in states[1:]])
    grip = friction * GRAVITY_MPS2
    assert lat.max() <= grip + 1e-9
    # The demand (tan(35 deg)/L * v^2 > 100 m/s^2) saturates the tyres: the car uses its grip.
    assert lat[10:].min() > 0.95 * grip
    # So the turn is wider than the kinematic circle.
    radius = states[-1].speed / abs(states[-1].yaw_rate)
    assert radius > MKZ_WHEELBASE_M / math.tan(0.5 * MAX_STEER_ANGLE_RAD) * 2


def test_braking_in_a_turn_shares_the_friction_circle() -> None:
    s = EgoState(0.0, 0.0, 0.0, speed=20.0, wheel_angle=0.5 * MAX_STEER_ANGLE_RAD)
    nxt = step_ego(s, VehicleControl(steer=0.5, brake=1.0), WET, DT)
    grip = WET * GRAVITY_MPS2
    a_lon = abs(nxt.accel)
    assert (
        math.hypot(a_lon - ROLLING_RESISTANCE_MPS2 - AIR_DRAG_PER_MPS2 * 400, nxt.lateral_accel)
        <= grip + 0.5
    )
    assert abs(nxt.lateral_accel) < 0.3 * grip  # almost all grip goes to braking
