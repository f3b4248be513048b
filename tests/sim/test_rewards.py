"""Reward terms and their config: Leaderboard coefficients, comfort bounds, weight errors."""

from __future__ import annotations

import math

import pytest

from sim.ground_truth import InfractionEvent
from sim.rewards import (
    REWARD_TERMS,
    MotionTracker,
    RewardConfig,
    comfort_excess,
    infraction_terms,
    tick_terms,
)


def _event(kind: str, **data) -> InfractionEvent:
    return InfractionEvent(
        kind=kind, message=kind, frame=1, time_s=0.05, location=(0, 0, 0), data=data
    )


def test_default_config_weighs_every_term() -> None:
    config = RewardConfig.default()
    assert set(config.weights) == set(REWARD_TERMS)
    config.require(REWARD_TERMS)


def test_unknown_term_is_refused_listing_the_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown reward term\(s\) \['progress'\]") as exc:
        RewardConfig({"progress": 1.0})
    assert "route_progress" in str(exc.value) and "collisions_pedestrian" in str(exc.value)
    with pytest.raises(ValueError, match="speeding"):
        RewardConfig.default(speeding=1.0)


def test_term_without_weight_is_an_error_naming_it() -> None:
    config = RewardConfig({"route_progress": 1.0})
    assert config.weigh({"route_progress": 2.0}) == {"route_progress": 2.0}
    with pytest.raises(ValueError, match="reward term 'comfort' has no weight"):
        config.weigh({"route_progress": 2.0, "comfort": -0.1})
    with pytest.raises(ValueError, match="reward term 'collisions_pedestrian' has no weight"):
        config.require(REWARD_TERMS)


@pytest.mark.parametrize("weight", [math.nan, math.inf, "1.0", True])
def test_weights_must_be_finite_numbers(weight) -> None:
    with pytest.raises(ValueError, match=r"weights\['comfort'\]"):
        RewardConfig.default(comfort=weight)


def test_config_is_immutable_and_overridable() -> None:
    config = RewardConfig.default(comfort=0.0)
    assert config.weights["comfort"] == 0.0
    assert config.weights["route_progress"] == RewardConfig.default().weights["route_progress"]
    with pytest.raises(TypeError):
        config.weights["comfort"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize(
    ("kind", "penalty"),
    [
        ("collisions_pedestrian", -0.5),
        ("collisions_vehicle", -0.4),
        ("collisions_layout", -0.35),
        ("red_light", -0.3),
        ("stop_infraction", -0.2),
        ("scenario_timeouts", -0.3),
        ("yield_emergency_vehicle_infractions", -0.3),
    ],
)
def test_infraction_penalty_is_one_minus_the_leaderboard_factor(kind: str, penalty: float) -> None:
    assert infraction_terms([_event(kind)]) == {kind: pytest.approx(penalty)}
    assert infraction_terms([_event(kind), _event(kind)]) == {kind: pytest.approx(2 * penalty)}


def test_min_speed_penalty_scales_with_the_speed_percentage() -> None:
    terms = infraction_terms([_event("min_speed_infractions", percentage=40.0)])
    assert terms == {"min_speed_infractions": pytest.approx(-0.3 * 0.6)}


def test_route_ending_events_have_no_infraction_term() -> None:
    assert infraction_terms([_event("route_dev"), _event("outside_route_lanes")]) == {}


def test_comfort_excess_is_zero_inside_the_nuplan_bounds() -> None:
    assert comfort_excess(2.4, 4.89, 8.37) == 0.0
    assert comfort_excess(-4.05, -4.89, -8.37) == 0.0


def test_comfort_excess_is_relative_to_each_bound() -> None:
    assert comfort_excess(4.8, 0.0, 0.0) == pytest.approx(1.0)
    assert comfort_excess(-8.1, 0.0, 0.0) == pytest.approx(1.0)
    assert comfort_excess(0.0, -9.78, 0.0) == pytest.approx(1.0)
    assert comfort_excess(0.0, 0.0, 2 * 8.37) == pytest.approx(1.0)
    assert comfort_excess(4.8, 9.78, 2 * 8.37) == pytest.approx(3.0)


def test_tick_terms_carry_their_signs() -> None:
    terms = tick_terms(
        progress_gain_m=0.5,
        outside_gain_m=0.25,
        events=[_event("collisions_vehicle")],
        comfort=2.0,
        dt_s=0.05,
        route_failed=True,
    )
    assert set(terms) == set(REWARD_TERMS)
    assert terms["route_progress"] == 0.5
    assert terms["outside_route_lanes"] == -0.25
    assert terms["collisions_vehicle"] == pytest.approx(-0.4)
    assert terms["comfort"] == pytest.approx(-0.1)
    assert terms["route_failure"] == -1.0
    assert terms["collisions_pedestrian"] == 0.0


def test_motion_tracker_constant_acceleration_has_no_jerk() -> None:
    tracker = MotionTracker(dt_s=0.05)
    tracker.reset(0.0, 0.0)
    results = [tracker.update(2.0 * 0.05 * k, 0.0) for k in range(1, 6)]
    assert all(lon == pytest.approx(2.0) for lon, _, _ in results)
    assert results[0][2] == pytest.approx(2.0 / 0.05)  # the step from rest
    assert all(jerk == pytest.approx(0.0, abs=1e-9) for _, _, jerk in results[1:])


def test_motion_tracker_lateral_acceleration_on_a_circle() -> None:
    speed, radius = 10.0, 20.0
    tracker = MotionTracker(dt_s=0.05)
    tracker.reset(speed, 3.1)
    yaw = 3.1
    for _ in range(5):  # crosses the +-pi wrap
        yaw = math.remainder(yaw + speed / radius * 0.05, 2 * math.pi)
        lon, lat, _ = tracker.update(speed, yaw)
    assert lon == pytest.approx(0.0)
    assert lat == pytest.approx(speed**2 / radius)
