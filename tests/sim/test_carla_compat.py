"""Round trips between our core types and the real `carla` client types."""

import pytest

from sim.carla_compat import (
    from_carla_control,
    from_carla_light_state,
    from_carla_transform,
    from_carla_weather,
    to_carla_control,
    to_carla_transform,
    to_carla_weather,
)
from sim.control import VehicleControl
from sim.geometry import Transform
from sim.ground_truth import TrafficLightState
from sim.weather import PRESET_NAMES, Weather

carla = pytest.importorskip("carla")


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_weather_round_trip_through_carla(name):
    weather = Weather.preset(name)
    assert from_carla_weather(to_carla_weather(weather)) == weather


def test_control_round_trip_through_carla():
    control = VehicleControl(throttle=0.4, steer=-0.25, brake=0.0, reverse=True)
    carla_control = to_carla_control(control)
    assert isinstance(carla_control, carla.VehicleControl)
    assert carla_control.steer == pytest.approx(-0.25)
    back = from_carla_control(carla_control)  # carla stores float32
    assert (back.throttle, back.steer, back.brake) == pytest.approx((0.4, -0.25, 0.0))
    assert back.reverse is True and back.hand_brake is False


def test_transform_round_trip_through_carla():
    transform = Transform.from_xy_yaw(12.5, -3.0, 137.0, z=0.5)
    assert from_carla_transform(to_carla_transform(transform)) == transform


def test_light_state_values_match_carla():
    for state in ("Red", "Yellow", "Green", "Off", "Unknown"):
        assert (
            from_carla_light_state(getattr(carla.TrafficLightState, state))
            == TrafficLightState[state]
        )
