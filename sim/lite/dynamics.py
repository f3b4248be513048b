"""Ego vehicle dynamics: a kinematic bicycle with actuator limits and a friction circle.

Cascade, per 0.05 s tick:
  control -> steering actuator (first-order lag + rate limit) -> wheel angle
          -> longitudinal force: engine (throttle) or brakes, minus drag
          -> friction circle: |a_lon| <= mu*g, |a_lat| <= sqrt((mu*g)^2 - a_lon^2)
             (so wet roads lengthen braking distances and limit cornering: understeer)
          -> kinematic bicycle integration about the rear axle... (centre-referenced here)
The size is the Lincoln MKZ 2020's (CARLA `vehicle.lincoln.mkz_2020`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.control import VehicleControl
from sim.weather import GRAVITY_MPS2

MKZ_LENGTH_M = 4.89  # [m] bounding box length
MKZ_WIDTH_M = 2.12  # [m] bounding box width (with mirrors)
MKZ_HEIGHT_M = 1.49  # [m]
MKZ_WHEELBASE_M = 2.87  # [m]
MAX_STEER_ANGLE_RAD = math.radians(70.0)  # CARLA's max front wheel angle for steer = 1
STEER_TIME_CONSTANT_S = 0.1  # [s] steering actuator lag
MAX_STEER_RATE_RADPS = math.radians(360.0)  # [rad/s] wheel angle rate limit
MAX_ENGINE_ACCEL_MPS2 = 4.0  # [m/s^2] at low speed, full throttle
TOP_SPEED_MPS = 55.0  # [m/s] engine force fades to zero here
MAX_BRAKE_DECEL_MPS2 = 9.0  # [m/s^2] full brake on a dry road, before the friction limit
HAND_BRAKE_DECEL_MPS2 = 4.0  # [m/s^2]
ROLLING_RESISTANCE_MPS2 = 0.15  # [m/s^2]
AIR_DRAG_PER_MPS2 = 0.00045  # [1/m] decel = k * v^2
MAX_REVERSE_SPEED_MPS = 5.0  # [m/s]


@dataclass
class EgoState:
    x: float  # [m] world
    y: float  # [m] world
    yaw: float  # [rad] CARLA convention
    speed: float = 0.0  # [m/s] signed forward speed (negative in reverse)
    wheel_angle: float = 0.0  # [rad] positive = right
    accel: float = 0.0  # [m/s^2] longitudinal, last tick
    yaw_rate: float = 0.0  # [rad/s] positive = turning right
    lateral_accel: float = 0.0  # [m/s^2] positive = toward the right


def step_ego(state: EgoState, control: VehicleControl, friction: float, dt: float) -> EgoState:
    """Advance the ego by `dt` seconds under `control` on a road with `friction` (mu)."""
    # Steering actuator.
    target = control.steer * MAX_STEER_ANGLE_RAD
    desired_rate = (target - state.wheel_angle) / STEER_TIME_CONSTANT_S
    rate = max(-MAX_STEER_RATE_RADPS, min(MAX_STEER_RATE_RADPS, desired_rate))
    wheel = state.wheel_angle + rate * dt
    if (target - state.wheel_angle) * (target - wheel) < 0.0:
        wheel = target

    v = state.speed
    grip = friction * GRAVITY_MPS2  # [m/s^2] total acceleration the tyres can transmit
    direction = -1.0 if control.reverse else 1.0
    engine = control.throttle * MAX_ENGINE_ACCEL_MPS2 * max(0.0, 1.0 - abs(v) / TOP_SPEED_MPS)
    if control.reverse and v <= -MAX_REVERSE_SPEED_MPS:
        engine = 0.0
    brake = control.brake * MAX_BRAKE_DECEL_MPS2
    if control.hand_brake:
        brake = max(brake, HAND_BRAKE_DECEL_MPS2)
    resist = ROLLING_RESISTANCE_MPS2 + AIR_DRAG_PER_MPS2 * v * v if abs(v) > 1e-3 else 0.0
    drive = min(engine, grip) * direction
    # Brakes and resistance oppose motion; at standstill they hold the car.
    opposing = min(brake, grip) + resist
    if abs(v) < 1e-3 and abs(drive) <= opposing:
        a_lon = 0.0
        v_new = 0.0
    else:
        sign = 1.0 if (v > 0.0 or (v == 0.0 and drive > 0.0)) else -1.0
        a_lon = drive - sign * opposing
        v_new = v + a_lon * dt
        if v != 0.0 and (v_new * v < 0.0) and abs(drive) <= opposing:
            v_new = 0.0  # brakes stop the car, they do not reverse it
    # Friction circle: lateral grip left after the longitudinal demand.
    lat_grip = math.sqrt(max(grip * grip - min(abs(a_lon), grip) ** 2, 0.0))
    curvature = math.tan(wheel) / MKZ_WHEELBASE_M
    v_mid = 0.5 * (v + v_new)
    if abs(v_mid) > 0.1 and abs(curvature) * v_mid * v_mid > lat_grip:
        curvature = math.copysign(lat_grip / (v_mid * v_mid), curvature)  # understeer
    yaw_rate = v_mid * curvature
    yaw = state.yaw + yaw_rate * dt
    heading = state.yaw + 0.5 * yaw_rate * dt
    x = state.x + v_mid * math.cos(heading) * dt
    y = state.y + v_mid * math.sin(heading) * dt
    yaw = (yaw + math.pi) % (2.0 * math.pi) - math.pi
    return EgoState(
        x=x,
        y=y,
        yaw=yaw,
        speed=v_new,
        wheel_angle=wheel,
        accel=(v_new - v) / dt,
        yaw_rate=yaw_rate,
        lateral_accel=v_mid * yaw_rate,
    )
