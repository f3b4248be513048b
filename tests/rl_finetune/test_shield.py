"""The RL shield: hand-built obstacle views (straight road along +x, ego frame), then the
shield in the simulator (a cone on the route; the expert on a road with traffic)."""

from __future__ import annotations

import numpy as np
import pytest
from view_builders import LANE_M, straight_road_view

from agent.rules import ObstacleView, RulePlanner, view_from_ground_truth
from rl_finetune.config import RewardWeights
from rl_finetune.envs import FinetuneEnv
from rl_finetune.shield import Shield, ShieldConfig, lane_edges
from sim.ground_truth import TrafficLightState
from sim.lite.town import TownSpec
from sim.spec import PropSpec, RouteSpec, WorldSpec

DT_S = 0.5
CONE = {"kind": "static", "size": (0.4, 0.4)}


def view(**kwargs) -> ObstacleView:
    """A 120 m straight road (see view_builders.straight_road_view)."""
    return straight_road_view(length_m=120.0, **kwargs)


def straight(speed: float, lateral: float = 0.0, poses: int = 8) -> np.ndarray:
    """(T, 2) constant speed [m/s] along +x, at `lateral` [m] from the second pose on."""
    x = speed * DT_S * np.arange(1, poses + 1)
    y = np.full(poses, lateral)
    y[0] = lateral / 2
    return np.stack([x, y], axis=1)


def test_overrides_a_trajectory_into_a_cone_with_the_rules_plan() -> None:
    v = view(obstacles=[{**CONE, "xy": (25.0, 0.0)}])
    shield = Shield()
    decision = shield.check(straight(10.0), v, time_s=0.0)
    assert decision.intervened and decision.reason == "collision"
    assert "static" in decision.detail
    assert decision.plan is not None
    np.testing.assert_allclose(decision.trajectory, decision.plan.trajectory)  # same T, dt
    assert not shield.violations(decision.trajectory, v)  # the rules pass or stop
    assert shield.interventions == 1 and shield.by_reason["collision"] == 1
    shield.reset()
    assert shield.interventions == 0


def test_accepts_the_rules_own_plan_and_a_safe_policy() -> None:
    lead = {"xy": (25.0, 0.0), "v": (8.0, 0.0)}  # a lead vehicle driving on at 8 m/s
    for v in (view(), view(obstacles=[lead]), view(obstacles=[{**CONE, "xy": (25.0, 3.5)}])):
        plan = RulePlanner().plan(v, 0.0).trajectory
        shield = Shield()
        decision = shield.check(plan, v, time_s=0.0)
        assert not decision.intervened and decision.reason == ""
        assert decision.violations == ()
        np.testing.assert_array_equal(decision.trajectory, plan)
    # Following the lead at a safe gap, slower than it: no contact.
    assert not Shield().check(straight(7.0), view(obstacles=[lead]), 0.0).intervened


def test_a_moving_vehicle_counts_where_it_will_be() -> None:
    # Crossing from the right 20 m ahead at 10 m/s: at the crossing when the ego arrives.
    crossing = {"xy": (20.0, -20.0), "v": (0.0, 10.0), "yaw": np.pi / 2}
    decision = Shield().check(straight(10.0), view(obstacles=[crossing]), 0.0)
    assert decision.intervened and decision.reason == "collision"
    assert "moving vehicle" in decision.detail
    # A lead driving away faster than the ego is no hazard, though the path reaches
    # where it stands now.
    away = {"xy": (15.0, 0.0), "v": (12.0, 0.0)}
    assert not Shield().check(straight(10.0), view(obstacles=[away]), 0.0).intervened


def test_red_light_is_overridden_unless_the_rules_cannot_stop_either() -> None:
    red = ((25.0, TrafficLightState.Red),)
    decision = Shield().check(straight(10.0), view(lights=red), 0.0)
    assert decision.intervened and decision.reason == "red_light"
    stopping = np.stack([np.minimum(straight(10.0)[:, 0], 18.0), np.zeros(8)], axis=1)
    assert not Shield().check(stopping, view(lights=red), 0.0).intervened
    assert (
        not Shield()
        .check(straight(10.0), view(lights=((25.0, TrafficLightState.Green),)), 0.0)
        .intervened
    )
    # Dilemma zone: at 15 m/s with the line 4 m from the bumper the rules drive on too.
    late = view(speed=15.0, lights=((6.5, TrafficLightState.Red),))
    decision = Shield().check(straight(15.0), late, 0.0)
    assert not decision.intervened
    assert [v.reason for v in decision.violations] == ["red_light"]


def test_leaving_the_route_lanes_is_overridden_a_lane_change_is_not() -> None:
    decision = Shield().check(straight(8.0, lateral=-4.0), view(right_same=0), 0.0)
    assert decision.intervened and decision.reason == "outside_lanes"
    assert "right" in decision.detail
    assert not Shield().check(straight(8.0, lateral=3.5), view(left_same=1), 0.0).intervened


def test_reasons_left_out_of_override_are_reported_but_not_overridden() -> None:
    lanes_only_reported = ShieldConfig(override=("nonfinite", "collision", "red_light"))
    shield = Shield(lanes_only_reported)
    decision = shield.check(straight(8.0, lateral=-4.0), view(right_same=0), 0.0)
    assert not decision.intervened and shield.interventions == 0
    assert [v.reason for v in decision.violations] == ["outside_lanes"]
    cone = view(obstacles=[{**CONE, "xy": (25.0, 0.0)}])
    assert shield.check(straight(10.0), cone, 0.0).reason == "collision"  # still acted on
    with pytest.raises(ValueError, match="unknown reason"):
        ShieldConfig(override=("collision", "speeding"))


def test_junction_stretches_take_the_lanes_they_join() -> None:
    v = view(left_same=0, right_same=1)
    right = v.right_same.copy()
    right[40:60] = 0  # a junction: no lane counts, no oncoming lane
    v = ObstacleView(**{**v.__dict__, "right_same": right})
    left_edge, right_edge = lane_edges(v)
    np.testing.assert_allclose(right_edge[40:60], 1.5 * LANE_M)
    np.testing.assert_allclose(left_edge, 0.5 * LANE_M)


def test_nonfinite_policy_gets_the_rules_plan() -> None:
    bad = straight(10.0)
    bad[3, 0] = np.nan
    decision = Shield().check(bad, view(), 0.0)
    assert decision.intervened and decision.reason == "nonfinite"
    assert np.isfinite(decision.trajectory).all()


def test_disabled_shield_reports_but_never_overrides() -> None:
    shield = Shield(ShieldConfig(enabled=False))
    decision = shield.check(straight(10.0), view(obstacles=[{**CONE, "xy": (25.0, 0.0)}]), 0.0)
    assert not decision.intervened and shield.interventions == 0
    assert [v.reason for v in decision.violations] == ["collision"]
    with pytest.raises(ValueError, match="rules setting"):
        Shield(ShieldConfig(rules={"no_such_knob": 1.0}))
    with pytest.raises(ValueError, match="extra"):
        ShieldConfig.model_validate({"margin": 1.0})


# ----------------------------------------------------------------------- in the simulator
def cone_world(**over) -> WorldSpec:
    params: dict = dict(
        town=TownSpec(blocks_x=2, blocks_y=2),
        route=RouteSpec(length_m=150.0),
        num_vehicles=0,
        num_pedestrians=0,
        props=(PropSpec("cone", 35.0),),
        name="cone_on_route",
    )
    params.update(over)
    return WorldSpec(**params)


def route_follower(env: FinetuneEnv, speed_mps: float) -> np.ndarray:
    """A policy blind to obstacles: the route centre line ahead at a constant speed."""
    sim = env.driving_env.sim
    v = view_from_ground_truth(sim.ground_truth(), sim.route, sim.lane_layout())
    d = speed_mps * DT_S * np.arange(1, 9)
    return np.stack(
        [np.interp(d, v.route_s, v.route_xy[:, 0]), np.interp(d, v.route_s, v.route_xy[:, 1])],
        axis=1,
    ).astype(np.float32)


def test_shield_steers_a_route_follower_around_a_cone_in_the_simulator() -> None:
    env = FinetuneEnv([cone_world()], reward=RewardWeights())
    try:
        env.reset(seed=0)
        reasons, events = [], []
        for _ in range(90):  # 9 s: well past the cone at 8 m/s
            _, reward, terminated, truncated, info = env.step(route_follower(env, 8.0))
            events += [e["kind"] for e in info["events"]]
            if info["shield_intervened"]:
                reasons.append(info["shield_reason"])
                assert info["rewards"]["shield_intervention"] == pytest.approx(-0.1)
                assert info["executed_trajectory"].shape == (8, 2)
            if terminated or truncated:
                break
        assert reasons and set(reasons) <= {"collision", "outside_lanes"}
        assert "collision" in reasons
        assert "collisions_layout" not in events
        assert info["route_progress_m"] > 45.0  # it got past the cone at 35 m
        assert info["shield_interventions"] == len(reasons)
    finally:
        env.close()


def test_shield_leaves_the_expert_alone_on_a_road_with_traffic() -> None:
    world = cone_world(props=(), num_vehicles=10, num_pedestrians=4, name="traffic")
    env = FinetuneEnv([world])
    expert = RulePlanner()
    try:
        env.reset(seed=1)
        for _ in range(120):
            sim = env.driving_env.sim
            gt = sim.ground_truth()
            v = view_from_ground_truth(gt, sim.route, sim.lane_layout(), sim.speed_limit_at)
            plan = expert.plan(v, gt.time_s).trajectory.astype(np.float32)
            _, _, terminated, truncated, info = env.step(plan)
            assert not info["shield_intervened"], info["shield_detail"]
            if terminated or truncated:
                break
        assert env.shield.interventions == 0
        assert info["route_progress_m"] > 30.0
    finally:
        env.close()
