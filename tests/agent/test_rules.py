"""The rule set on hand-built obstacle views (straight road along +x, ego frame)."""

from __future__ import annotations

import numpy as np
import pytest
from view_builders import LANE_M, LIMIT_MPS, straight_road_view

from agent.rules import ObstacleView, RulePlanner, RulesConfig
from sim.ground_truth import TrafficLightState


def view(**kwargs) -> ObstacleView:
    return straight_road_view(**kwargs)


def cones(start: float, lateral: float, count: int = 8) -> list[dict]:
    return [
        {"xy": (start + 3.0 * k, lateral), "kind": "static", "size": (0.45, 0.45)}
        for k in range(count)
    ]


def test_free_road_accelerates_along_the_route_within_the_limit() -> None:
    plan = RulePlanner().plan(view(speed=5.0), 0.0)
    traj = plan.trajectory
    assert traj.shape == (8, 2)
    assert np.all(np.diff(traj[:, 0]) > 0)  # forward, monotone
    assert np.allclose(traj[:, 1], 0.0, atol=1e-6)  # on the centre line
    step_speed = np.diff(traj[:, 0]) / 0.5
    assert step_speed[-1] > step_speed[0]  # speeding up
    assert step_speed.max() <= LIMIT_MPS + 1e-6
    assert plan.reason == "cruise"


def test_stops_behind_a_standing_vehicle_with_the_gap() -> None:
    car = {"xy": (30.0, 0.0)}  # rear at 27.7 m; not yet "stalled", so not passed
    plan = RulePlanner().plan(view(speed=10.0, obstacles=[car]), 0.0)
    front_of_ego_at_end = plan.trajectory[-1, 0] + 4.89 / 2
    assert front_of_ego_at_end <= 27.7 - RulesConfig().lead_gap_m + 0.5
    assert plan.reason.startswith("vehicle")
    assert plan.lane_offset_m == 0.0


def test_follows_a_moving_lead_without_closing_in() -> None:
    lead = {"xy": (25.0, 0.0), "v": (8.0, 0.0)}
    plan = RulePlanner().plan(view(speed=12.0, obstacles=[lead]), 0.0)
    # Lead position after 4 s: 25 + 32 = 57 m, rear at 54.7 m.
    assert plan.trajectory[-1, 0] + 4.89 / 2 < 54.7
    assert plan.target_speed_mps < 12.0
    assert plan.reason.startswith("lead vehicle")


@pytest.mark.parametrize(
    ("state", "stops"),
    [
        (TrafficLightState.Red, True),
        (TrafficLightState.Yellow, True),
        (TrafficLightState.Green, False),
    ],
)
def test_red_and_yellow_lights_stop_before_the_line_green_goes(state, stops) -> None:
    plan = RulePlanner().plan(view(speed=8.0, lights=((40.0, state),)), 0.0)
    front = plan.trajectory[-1, 0] + 4.89 / 2
    assert (front <= 40.0) == stops
    if stops:
        assert "light" in plan.reason and "red_light" in plan.hazards


def test_yellow_too_close_to_stop_comfortably_is_crossed() -> None:
    plan = RulePlanner().plan(view(speed=13.0, lights=((6.0, TrafficLightState.Yellow),)), 0.0)
    assert plan.trajectory[-1, 0] > 6.0


def test_pedestrian_about_to_cross_stops_the_ego() -> None:
    walker = {"xy": (25.0, -4.0), "v": (0.0, 1.4), "kind": "pedestrian", "size": (0.5, 0.5)}
    plan = RulePlanner().plan(view(speed=10.0, obstacles=[walker]), 0.0)
    assert "pedestrian" in plan.hazards
    assert plan.trajectory[-1, 0] + 4.89 / 2 < 25.0


def test_pedestrian_walking_away_on_the_sidewalk_is_ignored() -> None:
    walker = {"xy": (25.0, -6.0), "v": (1.4, 0.0), "kind": "pedestrian", "size": (0.5, 0.5)}
    plan = RulePlanner().plan(view(speed=10.0, obstacles=[walker]), 0.0)
    assert "pedestrian" not in plan.hazards
    assert plan.reason == "cruise"


def test_construction_closing_the_lane_is_passed_on_the_free_left_lane() -> None:
    planner = RulePlanner()
    plan = planner.plan(view(speed=8.0, obstacles=cones(20.0, 0.0)), 0.0)
    assert plan.lane_offset_m == pytest.approx(LANE_M)
    assert plan.reason.startswith("pass left") or "blocked_lane" in plan.hazards
    # The path reaches the left lane before the cones.
    j = int(np.searchsorted(np.arange(100.0), 20.0))
    assert plan.path[j, 1] == pytest.approx(LANE_M, abs=0.3)


def test_closed_lane_with_the_left_lane_taken_waits_behind_the_cones() -> None:
    blocker = {"xy": (22.0, LANE_M)}  # stands in the left lane beside the cones
    plan = RulePlanner().plan(view(speed=8.0, obstacles=cones(20.0, 0.0) + [blocker]), 0.0)
    assert plan.lane_offset_m == 0.0
    assert plan.trajectory[-1, 0] + 4.89 / 2 < 20.0


def test_two_way_road_passes_in_the_oncoming_lane_only_when_it_is_clear() -> None:
    clear = RulePlanner().plan(
        view(speed=6.0, obstacles=cones(20.0, 0.0), left_same=0, left_opposite=True), 0.0
    )
    assert clear.lane_offset_m == pytest.approx(LANE_M)
    assert clear.reason.startswith("pass oncoming") or "blocked_lane" in clear.hazards
    oncoming = {"xy": (70.0, LANE_M), "v": (-11.0, 0.0), "yaw": np.pi}
    busy = RulePlanner().plan(
        view(speed=6.0, obstacles=cones(20.0, 0.0) + [oncoming], left_same=0, left_opposite=True),
        0.0,
    )
    assert busy.lane_offset_m == 0.0
    assert busy.trajectory[-1, 0] + 4.89 / 2 < 20.0


def test_no_room_at_all_stops() -> None:
    plan = RulePlanner().plan(view(speed=8.0, obstacles=cones(20.0, 0.0), left_same=0), 0.0)
    assert plan.lane_offset_m == 0.0
    assert plan.trajectory[-1, 0] + 4.89 / 2 < 20.0


def test_stalled_vehicle_is_passed_once_it_has_stood_still_long_enough() -> None:
    planner = RulePlanner()
    car = {"xy": (25.0, 0.0)}
    first = planner.plan(view(speed=5.0, obstacles=[car]), 0.0)
    assert first.lane_offset_m == 0.0
    later = planner.plan(view(speed=5.0, obstacles=[car]), RulesConfig().stalled_after_s + 0.1)
    assert later.lane_offset_m == pytest.approx(LANE_M)


def test_slippery_road_and_fog_lower_the_speed() -> None:
    dry = RulePlanner().plan(view(speed=13.0), 0.0)
    fog = RulePlanner().plan(view(speed=13.0, visibility=10.0), 0.0)
    assert fog.target_speed_mps < dry.target_speed_mps - 1.5
    # ...but never below the floor that keeps pace with traffic (min-speed criterion).
    floor = RulesConfig().min_visibility_fraction * LIMIT_MPS
    assert fog.trajectory[-1, 0] - fog.trajectory[-2, 0] >= 0.5 * floor - 1e-6
    car = {"xy": (40.0, 0.0)}
    dry_stop = RulePlanner().plan(view(speed=13.0, obstacles=[car]), 0.0)
    wet_stop = RulePlanner().plan(view(speed=13.0, obstacles=[car], friction=0.45), 0.0)
    # On a wet road the rules brake earlier: less distance covered in the horizon.
    assert wet_stop.trajectory[2, 0] < dry_stop.trajectory[2, 0]


def test_rules_config_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown rules setting.*'lead_gap'"):
        RulesConfig.from_dict({"lead_gap": 3.0})
    assert RulesConfig.from_dict({"lead_gap_m": 6.0}).lead_gap_m == 6.0


def test_view_checks_its_shapes() -> None:
    good = view()
    with pytest.raises(ValueError, match="left_same"):
        ObstacleView(**{**good.__dict__, "left_same": np.zeros(3)})
    with pytest.raises(ValueError, match="obstacle_kind"):
        ObstacleView(
            **{
                **view(obstacles=[{"xy": (5.0, 0.0)}]).__dict__,
                "obstacle_kind": ("tree",),
            }
        )
