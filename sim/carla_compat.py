"""Conversions between this project's core types and the real `carla` client types.

Only needed at the CARLA boundary (the `carla` backend, a Leaderboard agent returning
`carla.VehicleControl`). Everything here raises a clear ImportError naming the extra to
install when the `carla` package is missing.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from sim.control import RoadOption, VehicleControl
from sim.geometry import Location, Rotation, Transform
from sim.ground_truth import TrafficLightState
from sim.weather import Weather


def carla_available() -> bool:
    try:
        import carla  # noqa: F401
    except ImportError:
        return False
    return True


def require_carla() -> Any:
    try:
        import carla
    except ImportError as exc:
        raise ImportError(
            "the `carla` client package is needed here: pip install -e '.[carla]' (carla==0.9.16)"
        ) from exc
    return carla


def to_carla_control(control: VehicleControl) -> Any:
    carla = require_carla()
    return carla.VehicleControl(
        throttle=control.throttle,
        steer=control.steer,
        brake=control.brake,
        hand_brake=control.hand_brake,
        reverse=control.reverse,
        manual_gear_shift=control.manual_gear_shift,
        gear=control.gear,
    )


def from_carla_control(control: Any) -> VehicleControl:
    return VehicleControl.sanitized(control)


def to_carla_weather(weather: Weather) -> Any:
    carla = require_carla()
    return carla.WeatherParameters(**weather.to_dict())


def from_carla_weather(params: Any) -> Weather:
    # carla stores floats as float32; round away the float32 noise (0.0331 -> 0.033100001).
    return Weather(**{f.name: round(float(getattr(params, f.name)), 5) for f in fields(Weather)})


def to_carla_transform(transform: Transform) -> Any:
    carla = require_carla()
    loc, rot = transform.location, transform.rotation
    return carla.Transform(
        carla.Location(x=loc.x, y=loc.y, z=loc.z),
        carla.Rotation(pitch=rot.pitch, yaw=rot.yaw, roll=rot.roll),
    )


def from_carla_transform(transform: Any) -> Transform:
    loc, rot = transform.location, transform.rotation
    return Transform(
        Location(float(loc.x), float(loc.y), float(loc.z)),
        Rotation(pitch=float(rot.pitch), yaw=float(rot.yaw), roll=float(rot.roll)),
    )


def to_carla_road_option(option: RoadOption) -> Any:
    """CARLA's own RoadOption if its `agents` package is on PYTHONPATH, else ours
    (same names and integer values)."""
    try:
        from agents.navigation.local_planner import RoadOption as CarlaRoadOption
    except ImportError:
        return option
    return CarlaRoadOption(int(option))


def from_carla_light_state(state: Any) -> TrafficLightState:
    return TrafficLightState(int(state))
