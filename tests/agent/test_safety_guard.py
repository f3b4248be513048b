"""The safety guard and its perceived view, on hand-built perception outputs (straight road
along +x, ego frame, the default 4 m BEV grid: rows along x from -8 m, columns along y
from -16 m)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from collections.abc import Sequence

import numpy as np
import pytest

from agent.data.schema import FLAGS, INTENTS, LIGHT_STATES
from agent.model.config import PerceptionConfig
from agent.reasoner.runtime import RuntimeStatus
from agent.rules.planner import RulesConfig
from agent.safety import (
    GuardConfig,
    GuardDecision,
    GuardInputs,
    InterventionCounter,
    PerceptionOutputs,
    PerceptionViewConfig,
    ReasonCode,
    SafetyGuard,
    VLMHealth,
    VLMWatch,
    frame_digest,
    route_from_targets,
    view_from_perception,
)
from agent.safety.blockage_memory import BlockageMemory
from agent.safety.contacts import Contact, swept_contacts
from agent.safety.trajectory import arc_lengths, segment_speeds, stops_within
from sim.ground_truth import TrafficLightState

GRID = PerceptionConfig()
ROWS, COLS = GRID.bev_shape
DT = 0.5  # [s]
T = 8
HALF_LENGTH = 4.89 / 2  # [m] the default ego box
RULES = RulesConfig()
_digests = itertools.count(1)


def occupancy(cells: Sequence[tuple[str, float, float]] = (), prob: float = 0.95) -> np.ndarray:
    """(3, R, C) with the cells containing the given (kind, x, y) [m] points at `prob`."""
    occ = np.zeros((len(GRID.bev_classes), ROWS, COLS))
    for kind, x, y in cells:
        r = int((x - GRID.bev_x_m[0]) // GRID.bev_cell_m)
        c = int((y - GRID.bev_y_m[0]) // GRID.bev_cell_m)
        occ[GRID.bev_classes.index(kind), r, c] = prob
    return occ


def perception(
    cells: Sequence[tuple[str, float, float]] = (),
    light: str = "none",
    flags: tuple[str, ...] = (),
    occ: np.ndarray | None = None,
) -> PerceptionOutputs:
    light_p = np.full(len(LIGHT_STATES), 0.01)
    light_p[LIGHT_STATES.index(light)] = 0.97
    flag_p = np.array([0.9 if f in flags else 0.02 for f in FLAGS])
    return PerceptionOutputs(occupancy(cells) if occ is None else occ, light_p, flag_p)


def straight(speed: float, accel: float = 0.0, y: float = 0.0) -> np.ndarray:
    """(T, 2) along +x from `speed` [m/s] with constant `accel` [m/s^2] (never reversing)."""
    t = DT * np.arange(1, T + 1)
    v = np.maximum(speed + accel * t, 0.0)
    x = np.concatenate([[0.0], np.cumsum((np.concatenate([[speed], v[:-1]]) + v) / 2 * DT)])[1:]
    return np.stack([x, np.full(T, y)], axis=1)


def inputs(
    trajectory: np.ndarray | None = None,
    speed: float = 8.0,
    confidence: float = 0.9,
    percept: PerceptionOutputs | None = None,
    digest: int | None | str = "fresh",
    time_s: float = 0.0,
    vlm: VLMHealth | None = None,
) -> GuardInputs:
    return GuardInputs(
        trajectory=straight(speed) if trajectory is None else trajectory,
        confidence=confidence,
        speed_mps=speed,
        perception=percept or perception(),
        route_xy=np.array([[0.0, 0.0], [60.0, 0.0]]),
        frame_digest=next(_digests) if digest == "fresh" else digest,  # type: ignore[arg-type]
        time_s=time_s,
        vlm=vlm,
    )


@pytest.fixture
def guard() -> SafetyGuard:
    """Internal errors re-raise here: a bug in the guard must fail the test, not stop."""
    return SafetyGuard(GuardConfig(raise_errors=True))


def distance_to_path(points: np.ndarray, trajectory: np.ndarray) -> np.ndarray:
    """(K,) [m] distance of each point to the polyline origin -> trajectory poses."""
    path = np.concatenate([np.zeros((1, 2)), trajectory])
    a, b = path[:-1], path[1:]
    ab = b - a
    t = np.clip(((points[:, None] - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    foot = a + t[..., None] * ab
    return np.linalg.norm(points[:, None] - foot, axis=-1).min(axis=1)


def is_emergency_stop(decision: GuardDecision) -> bool:
    return decision.fallback == "emergency_stop" and np.array_equal(
        decision.trajectory, np.zeros((T, 2))
    )


def test_a_path_ending_on_a_sampling_step_has_no_phantom_contact_beyond_its_end() -> None:
    """Crawls at creep speed are exact multiples of the 0.5 m path sampling (6 m in 4 s at
    1.5 m/s). Float noise once left a ~1e-7 m last segment whose direction was noise, so a
    box 3 m to the side beyond the path's end projected onto the path (lateral ~0) and
    counted as a contact. Every heading and length here must see it clear."""
    view = view_from_perception(perception(), 0.0, np.array([[0.0, 0.0], [60.0, 0.0]]))
    for heading_deg, length in itertools.product(range(-40, 41, 5), (3.0, 6.0, 7.5, 12.0)):
        u = np.array([math.cos(math.radians(heading_deg)), math.sin(math.radians(heading_deg))])
        path = np.outer(np.arange(1, T + 1) * length / T, u)
        end, left = path[-1], np.array([-u[1], u[0]])
        box = end + 1.0 * u + 3.5 * left  # beyond the end, 3.5 m to the left of the path
        boxed = dataclasses.replace(
            view,
            obstacle_xy=box[None],
            obstacle_yaw=np.zeros(1),
            obstacle_velocity=np.zeros((1, 2)),
            obstacle_size=np.array([[1.0, 1.0]]),
            obstacle_kind=("static",),
            obstacle_id=np.zeros(1, dtype=np.int64),
            obstacle_scenario=np.zeros(1, dtype=bool),
        )
        assert swept_contacts(path, DT, boxed, 0.4) == [], (heading_deg, length)


# ----------------------------------------------------------------------------- accepted
def test_clear_road_and_confident_straight_plan_is_accepted_unchanged(guard) -> None:
    plan = straight(8.0)
    decision = guard.check(inputs(plan))
    assert decision.reason == ReasonCode.ACCEPTED
    assert decision.reasons == (ReasonCode.ACCEPTED,)
    assert decision.fallback == "none" and not decision.intervened
    assert np.array_equal(decision.trajectory, plan)
    assert decision.trajectory is not plan  # the caller's array is not handed back


def test_occupancy_noise_below_the_threshold_never_intervenes(guard) -> None:
    rng = np.random.default_rng(0)
    threshold = guard.config.view.occupancy_threshold
    counter = InterventionCounter()
    for tick in range(60):
        occ = rng.uniform(0.0, threshold - 0.02, (3, ROWS, COLS))
        flag_p = rng.uniform(0.0, 0.45, len(FLAGS))
        light_p = np.array([0.55, *rng.uniform(0.0, 0.3, 3)])
        percept = PerceptionOutputs(occ, light_p, flag_p)
        counter.record(guard.check(inputs(percept=percept, time_s=tick * 0.05)))
    assert counter.ticks == 60
    assert counter.interventions == 0
    assert counter.reasons[ReasonCode.ACCEPTED] == 60


# ------------------------------------------------------------------------- non-finite
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_plan_is_an_emergency_stop_on_the_same_tick(guard, bad) -> None:
    plan = straight(8.0)
    plan[3, 0] = bad
    decision = guard.check(inputs(plan))
    assert decision.reason == ReasonCode.NONFINITE_PLAN
    assert is_emergency_stop(decision)


def test_nonfinite_confidence_or_perception_is_an_emergency_stop(guard) -> None:
    assert guard.check(inputs(confidence=math.nan)).reason == ReasonCode.NONFINITE_PLAN
    occ = occupancy()
    occ[0, 3, 3] = math.nan
    decision = guard.check(inputs(percept=perception(occ=occ)))
    assert decision.reason == ReasonCode.NONFINITE_INPUT
    assert is_emergency_stop(decision)
    decision = guard.check(inputs(speed=math.inf, trajectory=straight(8.0)))
    assert decision.reason == ReasonCode.NONFINITE_INPUT


# ---------------------------------------------------------------------- obstacles
def test_static_cell_on_the_path_falls_back_to_a_rules_stop_before_it(guard) -> None:
    # A static cell left of the centre line 20-24 m ahead: a 2 m box at x 21..23 m, 18.6 m
    # ahead of the bumper; at 8 m/s the hand-over distance is 0.6 x 8 + 8^2 / 6 + 3 + 2 =
    # 20.5 m.
    percept = perception([("static", 22.0, 1.0)])
    decision = guard.check(inputs(straight(8.0), speed=8.0, percept=percept))
    assert decision.reason == ReasonCode.PATH_BLOCKED
    assert decision.fallback == "rules"
    traj = decision.trajectory
    assert traj.shape == (T, 2) and np.isfinite(traj).all()
    # The front bumper stays the rules' static gap short of the box.
    assert traj[:, 0].max() + HALF_LENGTH <= 21.0 - RULES.static_gap_m + 0.1
    assert np.all(np.diff(traj[:, 0]) >= -1e-9)  # never backwards
    assert not swept_contacts(traj, DT, guard.last_view, 0.0)


def test_static_obstacle_beyond_the_hand_over_distance_is_left_to_the_planner(guard) -> None:
    # The box of the test above, at 6 m/s: hand over at 0.6 x 6 + 6^2 / 6 + 5 = 14.6 m, the
    # box is 18.6 m ahead: the planner may still brake for it or steer around it.
    percept = perception([("static", 22.0, 1.0)])
    decision = guard.check(inputs(straight(6.0), speed=6.0, percept=percept))
    assert decision.reason == ReasonCode.ACCEPTED
    assert guard.handover_distance("static", 6.0, guard.last_view) == pytest.approx(14.6)
    # Closing in at the same speed, it takes over once within the distance.
    percept = perception([("static", 18.0, 1.0)])  # box at 17..19 m: 14.6 m ahead
    assert guard.check(inputs(straight(6.0), speed=6.0, percept=percept)).reason == (
        ReasonCode.PATH_BLOCKED
    )


def test_a_geometric_fallback_stops_on_the_planners_path_not_the_route_chord(guard) -> None:
    # The planner drifts 2.8 m left over 32 m (into the next lane); a static box (x 17..19,
    # y 1..3) stands on that path. The rules stop before it on the same path: the guard
    # decides when to stop, the planner keeps deciding where to drive.
    plan = straight(8.0)
    plan[:, 1] = np.linspace(0.4, 3.2, T)
    percept = perception([("static", 18.0, 2.0)])
    decision = guard.check(inputs(plan, speed=8.0, percept=percept))
    assert decision.reason == ReasonCode.PATH_BLOCKED and decision.fallback == "rules"
    moved = decision.trajectory[arc_lengths(decision.trajectory)[1:] > 2.0]
    assert len(moved) and distance_to_path(moved, plan).max() < 0.3
    assert not swept_contacts(decision.trajectory, DT, guard.last_view, 0.0)
    # The same plan with low confidence is not trusted on where to go either: the rules
    # drive the navigation's route (the x axis).
    low = SafetyGuard(GuardConfig(raise_errors=True)).check(
        inputs(plan, speed=8.0, percept=percept, confidence=0.01)
    )
    assert ReasonCode.LOW_CONFIDENCE in low.reasons and low.fallback == "rules"
    assert np.abs(low.trajectory[:, 1]).max() < 0.3


def test_wall_of_static_cells_across_the_road_stops_before_it(guard) -> None:
    wall = [("static", 22.0, GRID.bev_y_m[0] + 2.0 + 4.0 * c) for c in range(COLS)]
    decision = guard.check(inputs(straight(8.0), speed=8.0, percept=perception(wall)))
    assert decision.reason == ReasonCode.PATH_BLOCKED
    assert decision.fallback == "rules"
    # Box near edge at 21 m; the rules keep their gap (no lane to pass in).
    assert decision.trajectory[:, 0].max() + HALF_LENGTH <= 21.0 - RULES.static_gap_m + 0.1
    speeds = segment_speeds(decision.trajectory, DT)
    assert speeds[-1] < speeds[0]  # braking


def test_obstacle_too_close_to_stop_for_is_an_emergency_stop(guard) -> None:
    # A box at x 5..7 m at 10 m/s: even the rules cannot stop before it.
    decision = guard.check(
        inputs(straight(10.0), speed=10.0, percept=perception([("static", 6.0, 1.0)]))
    )
    assert ReasonCode.PATH_BLOCKED in decision.reasons
    assert ReasonCode.FALLBACK_UNSAFE in decision.reasons
    assert decision.reason == ReasonCode.FALLBACK_UNSAFE  # the most severe
    assert is_emergency_stop(decision)


def test_vehicle_cells_count_only_when_reached_sooner_than_the_ttc(guard) -> None:
    # A vehicle cell 4-8 m ahead (box 5..7 m) at 5 m/s: reached in ~0.5 s.
    near = guard.check(
        inputs(straight(5.0), speed=5.0, percept=perception([("vehicle", 6.0, 1.0)]))
    )
    assert near.reasons == (ReasonCode.TTC,)
    assert near.fallback == "rules"  # the rules can still stop short of it
    assert near.trajectory[:, 0].max() + HALF_LENGTH < 5.0
    # At 10 m/s the rules cannot: full brake.
    fast = guard.check(
        inputs(straight(10.0), speed=10.0, percept=perception([("vehicle", 10.0, 1.0)]))
    )
    assert fast.reasons == (ReasonCode.FALLBACK_UNSAFE, ReasonCode.TTC)
    assert is_emergency_stop(fast)
    # A vehicle 34 m ahead, reached after ~3 s: it may well be moving (the grid has no
    # velocity), so the planner's plan stands.
    far = guard.check(
        inputs(straight(10.0), speed=10.0, percept=perception([("vehicle", 34.0, 1.0)]))
    )
    assert far.reason == ReasonCode.ACCEPTED


def test_adjacent_lane_cells_do_not_block_a_straight_plan(guard) -> None:
    cells = [(kind, 14.0, y) for kind in ("vehicle", "static") for y in (6.0, -6.0)]
    assert guard.check(inputs(percept=perception(cells))).reason == ReasonCode.ACCEPTED


def test_pedestrian_on_the_path_blocks(guard) -> None:
    # Hand over for pedestrians: 0.6 x 8 + 8^2 / 6 + 5 (their gap) + 2 = 22.5 m; 18.6 m here.
    decision = guard.check(
        inputs(straight(8.0), speed=8.0, percept=perception([("pedestrian", 22.0, -1.0)]))
    )
    assert decision.reason == ReasonCode.PATH_BLOCKED
    assert decision.trajectory[:, 0].max() + HALF_LENGTH <= 21.0 - RULES.pedestrian_gap_m + 0.1


# ----------------------------------------------------------------- alternative modes
def swerve(y_end: float, speed: float = 8.0) -> np.ndarray:
    """(T, 2) at `speed` along +x, drifting linearly from y 0 to `y_end` [m]."""
    plan = straight(speed)
    plan[:, 1] = np.linspace(y_end / T, y_end, T)
    return plan


def with_modes(plan: np.ndarray, others: Sequence[tuple[np.ndarray, float]], **kw) -> GuardInputs:
    """`inputs(plan, ...)` with the planner's candidates: the chosen plan (the most probable)
    first, then `others` as (trajectory, probability)."""
    chosen_p = 1.0 - sum(p for _, p in others)
    base = inputs(plan, confidence=chosen_p, **kw)
    candidates = np.stack([plan, *(t for t, _ in others)])
    probs = np.array([chosen_p, *(p for _, p in others)])
    return GuardInputs(
        **{**base.__dict__, "candidates": candidates, "candidate_probs": probs}  # type: ignore[arg-type]
    )


# A static box in the ego's lane, left half (cell x 16..20, y 0..4): the straight plan
# hits it within the hand-over distance at 8 m/s.
BLOCKED_AHEAD = [("static", 18.0, 2.0)]


def test_a_blocked_plan_drives_the_planners_candidate_around_the_obstacle(guard) -> None:
    around = swerve(-3.5)  # into the lane on the right, clear of the box
    decision = guard.check(
        with_modes(
            straight(8.0),
            [(swerve(2.0), 0.3), (around, 0.2)],
            speed=8.0,
            percept=perception(BLOCKED_AHEAD),
        )
    )
    # The more probable swerve to the left runs into the box too; the right one passes.
    assert decision.reason == ReasonCode.ALTERNATIVE_MODE
    assert decision.reasons == (ReasonCode.ALTERNATIVE_MODE,)
    assert decision.fallback == "candidate" and decision.intervened
    assert np.array_equal(decision.trajectory, around)
    assert "PATH_BLOCKED" in decision.detail and "mode 2 (p 0.20)" in decision.detail
    assert not swept_contacts(decision.trajectory, DT, guard.last_view, 0.4)


@pytest.mark.parametrize(
    ("other", "prob", "why"),
    [
        (swerve(-3.5), 0.01, "scored below alternative_min_prob"),
        (straight(0.5), 0.3, "moves 2 m: no better than the rules' stop"),
        (swerve(-9.0), 0.3, "leaves the route by more than alternative_max_offset_m"),
        (swerve(1.0), 0.3, "hits the box too"),
        (np.full((T, 2), np.nan), 0.3, "not finite"),
        (swerve(-3.5)[[0, 1, 2, 4, 3, 5, 6, 7]], 0.3, "goes back and forth"),
    ],
)
def test_a_blocked_plan_without_an_acceptable_candidate_falls_back_to_the_rules(
    guard, other, prob, why
) -> None:
    decision = guard.check(
        with_modes(straight(8.0), [(other, prob)], speed=8.0, percept=perception(BLOCKED_AHEAD))
    )
    assert decision.reason == ReasonCode.PATH_BLOCKED, why
    assert decision.fallback == "rules", why


def intent_probs(name: str, p: float = 0.9) -> np.ndarray:
    probs = np.full(len(INTENTS), (1.0 - p) / (len(INTENTS) - 1))
    probs[INTENTS.index(name)] = p
    return probs


@pytest.mark.parametrize(
    ("intent", "p", "driven"),
    [
        ("change_right", 0.9, True),  # the reasoning names the open side: drive that mode
        ("change_left", 0.9, False),  # the low-scored mode goes the other way
        ("pass_opposite", 0.9, False),  # the oncoming lane is on the left too
        ("change_right", 0.4, False),  # below intent_threshold
        ("keep_lane", 0.9, False),  # no side named
        (None, 0.0, False),  # no reasoning source
    ],
)
def test_a_blocked_plan_takes_a_low_scored_mode_to_the_side_the_intent_names(
    guard, intent, p, driven
) -> None:
    guard = SafetyGuard(GuardConfig(raise_errors=True, intent_alternatives=True))
    around = swerve(-3.5)  # clear of the box, but scored below alternative_min_prob
    percept = perception(BLOCKED_AHEAD)
    if intent is not None:
        percept = dataclasses.replace(percept, intent=intent_probs(intent, p))
    decision = guard.check(
        with_modes(straight(8.0), [(swerve(2.0), 0.2), (around, 0.01)], speed=8.0, percept=percept)
    )
    if driven:
        assert decision.reason == ReasonCode.ALTERNATIVE_MODE
        assert np.array_equal(decision.trajectory, around)
        assert "mode 2 (p 0.01, intent change_right)" in decision.detail
    else:
        assert decision.reason == ReasonCode.PATH_BLOCKED and decision.fallback == "rules"


def test_the_intent_never_lets_a_blocked_mode_through(guard) -> None:
    guard = SafetyGuard(GuardConfig(raise_errors=True, intent_alternatives=True))
    # The only mode to the right runs into a second box: the rules stop as without intent.
    percept = dataclasses.replace(
        perception([*BLOCKED_AHEAD, ("static", 18.0, -2.0)]), intent=intent_probs("change_right")
    )
    decision = guard.check(
        with_modes(straight(8.0), [(swerve(-3.5), 0.01)], speed=8.0, percept=percept)
    )
    assert decision.reason == ReasonCode.PATH_BLOCKED and decision.fallback == "rules"


def test_the_intent_does_not_swerve_for_a_vehicle_reached_too_soon(guard) -> None:
    guard = SafetyGuard(GuardConfig(raise_errors=True, intent_alternatives=True))
    # TTC alone (a braking lead, a cut-in): a low-scored lane change is no answer.
    percept = dataclasses.replace(
        perception([("vehicle", 6.0, 1.0)]), intent=intent_probs("change_right")
    )
    decision = guard.check(
        with_modes(
            straight(
                5.0,
            ),
            [(swerve(-3.5, 5.0), 0.01)],
            speed=5.0,
            percept=percept,
        )
    )
    assert decision.reasons == (ReasonCode.TTC,) and decision.fallback == "rules"


def test_light_probabilities_are_read_by_state_name() -> None:
    assert perception(light="red").light_prob("red") == pytest.approx(0.97)
    assert perception(light="red").light_prob("green") == pytest.approx(0.01)
    with pytest.raises(ValueError, match="unknown light state 'blue'"):
        perception().light_prob("blue")


def test_intent_probabilities_are_shape_checked() -> None:
    with pytest.raises(ValueError, match="PerceptionOutputs.intent"):
        dataclasses.replace(perception(), intent=np.ones(3))
    bad = dataclasses.replace(perception(), intent=np.full(len(INTENTS), np.nan))
    assert not bad.is_finite()


def test_only_geometric_failures_look_for_another_mode(guard) -> None:
    around = swerve(-3.5)
    # A red light: another mode that does not stop is no answer; the rules stop.
    red = guard.check(
        with_modes(
            straight(8.0),
            [(around, 0.2)],
            speed=8.0,
            percept=perception(BLOCKED_AHEAD, light="red"),
        )
    )
    assert ReasonCode.RED_LIGHT in red.reasons and red.fallback == "rules"
    # Alternative modes switched off: the rules, as before.
    off = SafetyGuard(GuardConfig(raise_errors=True, alternative_modes=False)).check(
        with_modes(straight(8.0), [(around, 0.2)], speed=8.0, percept=perception(BLOCKED_AHEAD))
    )
    assert off.reason == ReasonCode.PATH_BLOCKED and off.fallback == "rules"
    # A clear road (another scene: the blocked one is forgotten): the chosen plan,
    # whatever the others are.
    guard.reset()
    clear = guard.check(with_modes(straight(8.0), [(around, 0.2)], speed=8.0))
    assert clear.reason == ReasonCode.ACCEPTED
    assert np.array_equal(clear.trajectory, straight(8.0))


def test_candidates_must_match_the_trajectory_and_come_with_probabilities() -> None:
    base = inputs(straight(8.0)).__dict__
    with pytest.raises(ValueError, match="GuardInputs.candidates must be"):
        GuardInputs(
            **{**base, "candidates": np.zeros((3, T + 1, 2)), "candidate_probs": np.ones(3)}
        )
    with pytest.raises(ValueError, match="GuardInputs.candidate_probs must be"):
        GuardInputs(**{**base, "candidates": np.zeros((3, T, 2)), "candidate_probs": np.ones(2)})
    with pytest.raises(ValueError, match="come together"):
        GuardInputs(**{**base, "candidates": np.zeros((3, T, 2))})


# ---------------------------------------------------------------------- confidence
def test_low_confidence_falls_back_to_the_rules(guard) -> None:
    plan = straight(8.0, y=0.0)
    plan[:, 1] = np.linspace(0.2, 3.0, T)  # a drifting plan the rules would not make
    decision = guard.check(inputs(plan, confidence=0.01))
    assert decision.reason == ReasonCode.LOW_CONFIDENCE
    assert decision.fallback == "rules"
    # The rules follow the route (the x axis) instead.
    assert np.abs(decision.trajectory[:, 1]).max() < 1e-6
    assert np.all(np.diff(decision.trajectory[:, 0]) > 0)


# ---------------------------------------------------------------------------- light
def test_red_light_not_stopped_for_falls_back_to_a_stop(guard) -> None:
    speed = 8.0
    decision = guard.check(inputs(straight(speed), speed=speed, percept=perception(light="red")))
    assert decision.reason == ReasonCode.RED_LIGHT
    assert decision.fallback == "rules"
    speeds = segment_speeds(decision.trajectory, DT)
    assert speeds[-1] < 0.5  # standing at the end of the horizon
    # ...no farther than a comfortable stop from the current speed.
    assert arc_lengths(decision.trajectory)[-1] <= speed**2 / (2 * 3.0) + 0.5


def test_red_light_with_a_plan_that_stops_is_accepted(guard) -> None:
    plan = straight(8.0, accel=-2.5)  # stops after 3.2 s, 12.8 m
    assert guard.check(inputs(plan, percept=perception(light="red"))).reason == ReasonCode.ACCEPTED
    stopped = np.zeros((T, 2))
    decision = guard.check(inputs(stopped, speed=0.0, percept=perception(light="red")))
    assert decision.reason == ReasonCode.ACCEPTED


def test_once_stopped_at_a_red_light_the_car_stays_until_it_turns() -> None:
    """The planner, standing at a red, keeps planning a short creep (1-4 m in 4 s); each one
    "stops within the light's range", and the creep carried the car over the stop line.
    Once the ego has stopped under a confidently perceived red, a plan that moves is
    refused, through a flicker of the light head, until green is perceived, red has been
    gone 1 s, or the hold has lasted a whole light cycle (`red_hold: true`; off by
    default, see the guard's docstring)."""
    guard = SafetyGuard(GuardConfig(raise_errors=True, red_hold=True))
    creep = straight(1.0, accel=-0.2)  # 2.4 m in 4 s, slowing: "stops within range"
    red, none, green = (perception(light=s) for s in ("red", "none", "green"))
    # Approaching at speed, a plan that stops within the light's range is the planner's.
    assert guard.check(inputs(straight(8.0, accel=-2.5), percept=red)).reason == (
        ReasonCode.ACCEPTED
    )
    # Stopped (below stop_speed_mps) under red: the creep is refused, the car stands.
    held = guard.check(inputs(creep, speed=0.2, percept=red, time_s=10.0))
    assert held.reason == ReasonCode.RED_LIGHT and "stopped at a red light" in held.detail
    assert arc_lengths(held.trajectory)[-1] <= guard.config.red_hold_max_m
    # A plan that stands is accepted while held.
    assert guard.check(inputs(np.zeros((T, 2)), speed=0.0, percept=red, time_s=10.5)).reason == (
        ReasonCode.ACCEPTED
    )
    # The head loses the light for 0.5 s: still held, and the rules stand too.
    flicker = guard.check(inputs(creep, speed=0.0, percept=none, time_s=11.0))
    assert flicker.reason == ReasonCode.RED_LIGHT
    assert arc_lengths(flicker.trajectory)[-1] <= guard.config.red_hold_max_m
    # Green: released at once, the planner drives.
    go = guard.check(inputs(creep, speed=0.0, percept=green, time_s=11.2))
    assert go.reason == ReasonCode.ACCEPTED and np.array_equal(go.trajectory, creep)
    # Held again at the next red; no light perceived for red_release_s also releases.
    assert guard.check(inputs(creep, speed=0.0, percept=red, time_s=20.0)).reason == (
        ReasonCode.RED_LIGHT
    )
    assert guard.check(inputs(creep, speed=0.0, percept=none, time_s=20.5)).reason == (
        ReasonCode.RED_LIGHT
    )
    assert guard.check(inputs(creep, speed=0.0, percept=none, time_s=21.0)).reason == (
        ReasonCode.ACCEPTED
    )
    # A red the head is unsure of (0.55: it sits near 0.5 on lights it cannot make out)
    # starts no hold; the range check alone applies.
    unsure = dataclasses.replace(perception(), light=np.array([0.3, 0.55, 0.05, 0.1]))
    assert guard.check(inputs(creep, speed=0.0, percept=unsure, time_s=25.0)).reason == (
        ReasonCode.ACCEPTED
    )
    # A hold ends after red_hold_max_s however red the head says it is, and the same red
    # does not start another until it has faded.
    limit = guard.config.red_hold_max_s
    assert guard.check(inputs(creep, speed=0.0, percept=red, time_s=100.0)).reason == (
        ReasonCode.RED_LIGHT
    )
    assert guard.check(
        inputs(creep, speed=0.0, percept=red, time_s=100.0 + limit - 0.5)
    ).reason == (ReasonCode.RED_LIGHT)
    assert guard.check(inputs(creep, speed=0.0, percept=red, time_s=100.0 + limit)).reason == (
        ReasonCode.ACCEPTED
    )
    assert guard.check(inputs(creep, speed=0.0, percept=red, time_s=100.0 + limit + 5)).reason == (
        ReasonCode.ACCEPTED
    )
    guard.check(inputs(creep, speed=0.0, percept=none, time_s=200.0))
    assert guard.check(inputs(creep, speed=0.0, percept=red, time_s=201.0)).reason == (
        ReasonCode.RED_LIGHT
    )
    # reset() (a new route) forgets the hold; red_hold=False keeps the range check alone.
    guard.check(inputs(creep, speed=0.0, percept=red, time_s=30.0))
    guard.reset()
    assert guard.check(inputs(creep, speed=0.0, percept=none, time_s=30.1)).reason == (
        ReasonCode.ACCEPTED
    )
    off = SafetyGuard(GuardConfig(raise_errors=True))  # the default: no hold
    assert off.check(inputs(creep, speed=0.0, percept=red)).reason == ReasonCode.ACCEPTED


def test_green_light_is_accepted(guard) -> None:
    assert guard.check(inputs(percept=perception(light="green"))).reason == ReasonCode.ACCEPTED


# ------------------------------------------------------------------------ speed caps
def test_construction_flag_caps_the_mean_speed(guard) -> None:
    cap = guard.config.construction_speed_cap_mps
    plan = straight(cap, accel=1.5)  # speeding up from the cap
    decision = guard.check(inputs(plan, speed=cap, percept=perception(flags=("construction",))))
    assert decision.reason == ReasonCode.SPEED_CAP_CONSTRUCTION
    assert decision.fallback == "none"
    mean_speed = arc_lengths(decision.trajectory)[-1] / (T * DT)
    assert mean_speed <= cap + 0.05
    assert segment_speeds(decision.trajectory, DT).max() <= cap + 1e-6
    # The caps may ask for a surer flag than the weather does (`cap_flag_threshold`): the
    # flag at 0.9 caps at a 0.9 threshold, not at 0.95, and the weather still counts.
    for threshold, capped in ((0.9, True), (0.95, False)):
        strict = SafetyGuard(GuardConfig(raise_errors=True, cap_flag_threshold=threshold))
        flagged = perception(flags=("construction", "pedestrian_crossing"))
        got = strict.check(inputs(plan, speed=cap, percept=flagged))
        assert (ReasonCode.SPEED_CAP_PEDESTRIAN in got.reasons) is capped
        assert np.array_equal(got.trajectory, plan) is not capped


def test_speed_cap_keeps_the_path_and_slows_down_from_above(guard) -> None:
    # A left bend (radius 40 m) at 12 m/s; the pedestrian cap is 5 m/s.
    radius, speed = 40.0, 12.0
    s = speed * DT * np.arange(1, T + 1)
    plan = np.stack([radius * np.sin(s / radius), radius * (1 - np.cos(s / radius))], axis=1)
    decision = guard.check(
        inputs(plan, speed=speed, percept=perception(flags=("pedestrian_crossing",)))
    )
    assert decision.reason == ReasonCode.SPEED_CAP_PEDESTRIAN
    traj = decision.trajectory
    # Every pose on the original path (the polyline through the planned poses)...
    assert distance_to_path(traj, plan).max() < 1e-6
    assert not np.allclose(traj, plan)
    # ...slowing at the cap deceleration, then at the cap (speeds between poses are along
    # chords that cut the original vertices: a few cm/s slower).
    speeds = segment_speeds(traj, DT)
    assert np.all(np.diff(speeds) <= 0.05)
    assert speeds[-1] <= guard.config.pedestrian_speed_cap_mps + 1e-6
    assert speeds[0] <= speed


def test_both_caps_apply_the_lower_one(guard) -> None:
    flags = ("construction", "pedestrian_crossing")
    decision = guard.check(inputs(straight(10.0), speed=5.0, percept=perception(flags=flags)))
    assert set(decision.reasons) == {
        ReasonCode.SPEED_CAP_PEDESTRIAN,
        ReasonCode.SPEED_CAP_CONSTRUCTION,
    }
    assert (
        segment_speeds(decision.trajectory, DT).max()
        <= guard.config.pedestrian_speed_cap_mps + 1e-6
    )


def test_fog_and_rain_cap_the_speed_to_stop_within_sight(guard) -> None:
    percept = perception(flags=("rain", "fog"))
    view = view_from_perception(percept, 16.0, np.array([[0.0, 0.0], [1.0, 0.0]]))
    b = 7.0 * view.friction / 0.9
    v_sight = -b * 0.5 + math.sqrt((b * 0.5) ** 2 + 2 * b * view.visibility_m)
    assert 10.0 < v_sight < 16.0
    decision = guard.check(inputs(straight(16.0), speed=16.0, percept=percept))
    assert decision.reason == ReasonCode.STOPPING_DISTANCE
    assert decision.fallback == "none"
    assert segment_speeds(decision.trajectory, DT)[-1] <= v_sight + 1e-6
    # Below the sight speed nothing changes.
    assert (
        guard.check(inputs(straight(9.0), speed=9.0, percept=percept)).reason == ReasonCode.ACCEPTED
    )


# --------------------------------------------------------------------------- camera
def test_camera_frozen_is_reported_on_tick_n_not_before(guard) -> None:
    n = guard.config.frozen_camera_ticks
    for tick in range(1, n):
        decision = guard.check(inputs(digest=42, time_s=tick * 0.05))
        assert decision.reason == ReasonCode.ACCEPTED, f"tick {tick}"
    decision = guard.check(inputs(digest=42, time_s=n * 0.05))
    assert decision.reason == ReasonCode.CAMERA_FROZEN
    assert is_emergency_stop(decision)
    # A new frame clears it.
    assert guard.check(inputs(digest=43)).reason == ReasonCode.ACCEPTED


def test_identical_frames_while_standing_are_not_a_frozen_camera(guard) -> None:
    stopped = np.zeros((T, 2))
    for _ in range(3 * guard.config.frozen_camera_ticks):
        decision = guard.check(inputs(stopped, speed=0.0, digest=7))
        assert decision.reason == ReasonCode.ACCEPTED


def test_camera_missing_is_an_emergency_stop(guard) -> None:
    decision = guard.check(inputs(digest=None))
    assert decision.reason == ReasonCode.CAMERA_MISSING
    assert is_emergency_stop(decision)


def test_frame_digest_is_cheap_and_sensitive() -> None:
    image = np.random.default_rng(0).integers(0, 255, (128, 256, 4), dtype=np.uint8)
    assert frame_digest(image) == frame_digest(image.copy())
    changed = image.copy()
    changed[64, 128, 0] ^= 1  # a sampled pixel (every 4th row and column)
    assert frame_digest(changed) != frame_digest(image)
    assert frame_digest(None) is None
    assert frame_digest(np.zeros((0, 0, 4), np.uint8)) is None


# ------------------------------------------------------------------------------ VLM
def test_vlm_error_falls_back_to_the_rules(guard) -> None:
    decision = guard.check(inputs(vlm=VLMHealth(error="RuntimeError: boom", age_s=0.2)))
    assert decision.reason == ReasonCode.VLM_ERROR
    assert decision.fallback == "rules"
    assert "boom" in decision.detail


def test_vlm_timeout_falls_back_to_the_rules(guard) -> None:
    timeout = guard.config.vlm_timeout_s
    decision = guard.check(inputs(vlm=VLMHealth(age_s=timeout + 0.5)))
    assert decision.reason == ReasonCode.VLM_TIMEOUT and decision.fallback == "rules"
    assert guard.check(inputs(vlm=VLMHealth(age_s=math.nan))).reason == ReasonCode.VLM_TIMEOUT
    assert guard.check(inputs(vlm=VLMHealth(age_s=0.5))).reason == ReasonCode.ACCEPTED


@pytest.mark.parametrize("start_s", [0.0, 10.0])
def test_no_reasoning_yet_times_out_from_the_route_start(guard, start_s) -> None:
    timeout = guard.config.vlm_timeout_s
    assert guard.check(inputs(vlm=VLMHealth(), time_s=start_s)).reason == ReasonCode.ACCEPTED
    assert (
        guard.check(inputs(vlm=VLMHealth(), time_s=start_s + timeout - 0.1)).reason
        == ReasonCode.ACCEPTED
    )
    late = guard.check(inputs(vlm=VLMHealth(), time_s=start_s + timeout + 0.1))
    assert late.reason == ReasonCode.VLM_TIMEOUT


def test_vlm_watch_reads_the_runtime_counters() -> None:
    def status(completed: int, errors: int, age: float | None = 0.1) -> RuntimeStatus:
        return RuntimeStatus(
            mode="async", age_frames=None, age_s=age, submitted=completed + errors,
            completed=completed, dropped=0, rate_limited=0, errors=errors, timeouts=0,
            stale=0, busy=False, last_error="frame 3: RuntimeError: boom" if errors else None,
        )  # fmt: skip

    def health(completed: int, errors: int, age: float | None = 0.1) -> VLMHealth:
        result = watch.update(status(completed, errors, age))
        assert result is not None
        return result

    watch = VLMWatch()
    assert health(1, 0) == VLMHealth(error=None, age_s=0.1)
    assert "boom" in (health(1, 1).error or "")
    assert health(1, 1, age=0.6).error is not None  # sticky until a success
    assert health(2, 1).error is None
    off = RuntimeStatus("off", None, None, 0, 0, 0, 0, 0, 0, 0, False, None)
    assert watch.update(off) is None


# ---------------------------------------------------------------------- robustness
def test_internal_errors_become_an_emergency_stop_and_are_logged(caplog) -> None:
    # A guard configured for a finer grid than the model's outputs: a configuration bug.
    fine = PerceptionConfig(bev_cell_m=2.0)
    lenient = SafetyGuard(GuardConfig(), grid=fine)
    with caplog.at_level(logging.ERROR, logger="agent.safety.guard"):
        decision = lenient.check(inputs())
    assert decision.reason == ReasonCode.GUARD_ERROR
    assert is_emergency_stop(decision)
    assert "occupancy must be" in (lenient.last_error or "")
    assert any("safety guard failed" in r.message for r in caplog.records)
    strict = SafetyGuard(GuardConfig(raise_errors=True), grid=fine)
    with pytest.raises(ValueError, match="occupancy must be"):
        strict.check(inputs())


def test_absurd_numbers_never_raise_and_always_give_a_finite_trajectory(guard) -> None:
    """Huge, negative and degenerate values (raise_errors is on: an internal exception
    fails the test; numpy warnings too)."""
    rng = np.random.default_rng(7)
    with np.errstate(all="raise"):
        for tick in range(150):
            scale = 10.0 ** rng.integers(-3, 7)
            plan = rng.normal(0.0, scale, (T, 2))
            route = rng.normal(0.0, 10.0 ** rng.integers(-6, 4), (int(rng.integers(2, 5)), 2))
            if tick % 5 == 0:
                route[:] = route[0]  # zero length
            occ = rng.random((3, ROWS, COLS)) * (rng.random((3, ROWS, COLS)) < 0.1)
            percept = PerceptionOutputs(occ, rng.random(4), rng.random(len(FLAGS)))
            speed = float(rng.choice([-3.0, 0.0, 7.0, 45.0, 3.0e6]))
            decision = guard.check(
                GuardInputs(
                    plan,
                    float(rng.uniform(-1.0, 2.0)),
                    speed,
                    percept,
                    route,
                    tick % 3,
                    tick * 0.05,
                )
            )
            assert decision.trajectory.shape == (T, 2)
            assert np.isfinite(decision.trajectory).all()


def test_inputs_and_config_reject_bad_shapes_and_keys() -> None:
    with pytest.raises(ValueError, match="GuardInputs.trajectory"):
        inputs(np.zeros((8, 3)))
    with pytest.raises(ValueError, match="PerceptionOutputs.light"):
        PerceptionOutputs(occupancy(), np.zeros(3), np.zeros(len(FLAGS)))
    with pytest.raises(ValueError, match="PerceptionOutputs.occupancy"):
        PerceptionOutputs(np.zeros((ROWS, COLS)), np.zeros(4), np.zeros(len(FLAGS)))
    with pytest.raises(ValueError, match="ttc_treshold_s"):
        GuardConfig.model_validate({"ttc_treshold_s": 1.0})
    with pytest.raises(ValueError, match="GuardDecision.reasons"):
        GuardDecision(np.zeros((T, 2)), ReasonCode.TTC, (ReasonCode.ACCEPTED,), "rules")


def test_reset_forgets_the_route(guard) -> None:
    n = guard.config.frozen_camera_ticks
    for _ in range(n - 1):
        guard.check(inputs(digest=5))
    guard.reset()
    assert guard.check(inputs(digest=5)).reason == ReasonCode.ACCEPTED


# ------------------------------------------------------------------------ counter
def test_intervention_counter_tallies_a_route(guard) -> None:
    counter = InterventionCounter()
    counter.record(guard.check(inputs()))
    counter.record(guard.check(inputs(confidence=0.0)))
    counter.record(guard.check(inputs(digest=None)))
    counter.record(
        guard.check(inputs(straight(10.0), speed=10.0, percept=perception([("static", 6.0, 1.0)])))
    )
    result = counter.as_dict()
    json.dumps(result)  # JSON-ready
    assert result["ticks"] == 4 and result["interventions"] == 3
    assert result["intervention_rate"] == pytest.approx(0.75)
    assert result["reasons"]["ACCEPTED"] == 1
    assert result["reasons"]["LOW_CONFIDENCE"] == 1
    assert result["reasons"]["CAMERA_MISSING"] == 1
    assert result["reasons"]["PATH_BLOCKED"] == 1 and result["reasons"]["FALLBACK_UNSAFE"] == 1
    assert set(result["reasons"]) == {code.value for code in ReasonCode}
    assert result["fallbacks"] == {
        "none": 1,
        "candidate": 0,
        "lane_pass": 0,
        "rules": 1,
        "emergency_stop": 2,
    }
    counter.reset()
    assert counter.as_dict()["ticks"] == 0


# --------------------------------------------------------------- perception -> view
def test_occupied_cells_become_standing_boxes_of_their_class() -> None:
    occ = occupancy([("vehicle", 22.0, 1.0), ("pedestrian", -5.0, -14.5), ("static", 54.0, 9.0)])
    occ[2, 0, 0] = 0.49  # below the threshold: no obstacle
    percept = PerceptionOutputs(occ, np.array([0.97, 0.01, 0.01, 0.01]), np.zeros(len(FLAGS)))
    view = view_from_perception(percept, 5.0, np.array([[0.0, 0.0], [10.0, 0.0]]))
    got = {kind: tuple(xy) for kind, xy in zip(view.obstacle_kind, view.obstacle_xy, strict=True)}
    # Cell centres: x = -8 + 4 (r + 0.5), y = -16 + 4 (c + 0.5).
    assert got == {"vehicle": (22.0, 2.0), "pedestrian": (-6.0, -14.0), "static": (54.0, 10.0)}
    assert np.all(view.obstacle_size == 4.0 * PerceptionViewConfig().cell_box_scale)
    whole = view_from_perception(
        percept, 5.0, np.array([[0.0, 0.0], [10.0, 0.0]]), PerceptionViewConfig(cell_box_scale=1.0)
    )
    assert np.all(whole.obstacle_size == 4.0)
    assert np.all(view.obstacle_velocity == 0.0) and np.all(view.obstacle_yaw == 0.0)
    assert len(set(view.obstacle_id.tolist())) == 3
    # Stable ids: the flat cell index.
    again = view_from_perception(percept, 9.0, np.array([[0.0, 0.0], [10.0, 0.0]]))
    assert np.array_equal(again.obstacle_id, view.obstacle_id)
    assert view.lights == ()


def test_a_rectangular_grid_gives_cell_sized_boxes_the_ego_passes_beside() -> None:
    # 2 m x 1 m cells centred on the ego (the shipped model's grid): a cone on the lane
    # line (y = 2 m) is the box y in [1.5, 2.5], clear of the ego's corridor (1.06 + 0.4 m),
    # so the expert's straight plan past it is accepted; the same cone one cell inwards
    # (y = 1 m) blocks it.
    grid = PerceptionConfig(bev_y_m=(-12.5, 12.5), bev_cell_m=2.0, bev_cell_y_m=1.0)
    occ = np.zeros((3, *grid.bev_shape))
    occ[2, 9, 14] = 0.9  # x in [10, 12], y in [1.5, 2.5]
    percept = PerceptionOutputs(occ, np.array([0.97, 0.01, 0.01, 0.01]), np.zeros(len(FLAGS)))
    whole = PerceptionViewConfig(cell_box_scale=1.0)
    view = view_from_perception(percept, 5.0, np.array([[0.0, 0.0], [10.0, 0.0]]), whole, grid)
    assert view.obstacle_xy.tolist() == [[11.0, 2.0]] and view.obstacle_size.tolist() == [
        [2.0, 1.0]
    ]
    guard = SafetyGuard(GuardConfig(raise_errors=True, view=whole), grid=grid)
    plan = straight(5.0)
    assert guard.check(inputs(plan, speed=5.0, percept=percept)).reason == ReasonCode.ACCEPTED
    occ[2, 9, 14], occ[2, 9, 13] = 0.0, 0.9
    blocked = guard.check(
        inputs(plan, speed=5.0, percept=PerceptionOutputs(occ, percept.light, percept.flags))
    )
    assert blocked.reason in (ReasonCode.PATH_BLOCKED, ReasonCode.TTC)


def test_a_span_head_puts_the_box_where_in_the_cell_the_object_is() -> None:
    # The shipped 4 m grid: a cone on the lane line (y = 2 m) fills the column y in [0, 4]
    # the ego's corridor (half width 1.06 + 0.4 m) reaches into, so the whole-cell box
    # blocks the straight plan past it. With the span head's [0.45, 0.55] of the cell
    # (y in [1.8, 2.2] m, widened by the 0.25 m margin to [1.55, 2.45]) the ego passes; a
    # span over the cell's right half (y in [0, 2]) still blocks.
    occ = occupancy([("static", 14.0, 2.0)])
    span = np.zeros((3, 2, ROWS, COLS))
    span[2, :, 5, 4] = [1.8 / 4, 2.2 / 4]
    light = np.array([0.97, 0.01, 0.01, 0.01])
    guard = SafetyGuard(GuardConfig(raise_errors=True))
    plan = straight(5.0)
    whole = guard.check(
        inputs(plan, speed=5.0, percept=PerceptionOutputs(occ, light, np.zeros(len(FLAGS))))
    )
    assert whole.reason == ReasonCode.PATH_BLOCKED
    spanned = PerceptionOutputs(occ, light, np.zeros(len(FLAGS)), span=span)
    view = view_from_perception(spanned, 5.0, np.array([[0.0, 0.0], [10.0, 0.0]]))
    np.testing.assert_allclose(view.obstacle_xy, [[14.0, 2.0]])
    np.testing.assert_allclose(view.obstacle_size, [[2.0, 0.4 + 2 * 0.25]])
    guard.reset()
    assert guard.check(inputs(plan, speed=5.0, percept=spanned)).reason == ReasonCode.ACCEPTED
    span[2, :, 5, 4] = [0.0, 0.5]
    guard.reset()
    blocked = guard.check(
        inputs(
            plan, speed=5.0, percept=PerceptionOutputs(occ, light, np.zeros(len(FLAGS)), span=span)
        )
    )
    assert blocked.reason == ReasonCode.PATH_BLOCKED
    # The margin never pushes a box out of its cell, and the span's order does not matter.
    span[2, :, 5, 4] = [0.02, 0.0]
    view = view_from_perception(
        PerceptionOutputs(occ, light, np.zeros(len(FLAGS)), span=span),
        5.0,
        np.array([[0.0, 0.0], [10.0, 0.0]]),
    )
    np.testing.assert_allclose(view.obstacle_xy[0, 1] - view.obstacle_size[0, 1] / 2, 0.0)
    np.testing.assert_allclose(view.obstacle_size[0, 1], 0.08 + 0.25)
    with pytest.raises(ValueError, match="span must be"):
        PerceptionOutputs(occ, light, np.zeros(len(FLAGS)), span=np.zeros((3, ROWS, COLS)))
    assert not PerceptionOutputs(occ, light, np.zeros(len(FLAGS)), span=span * np.nan).is_finite()


def test_view_is_one_lane_on_the_route_from_the_ego() -> None:
    route = np.array([[-5.0, 1.5], [40.0, 1.5]])  # the route centre 1.5 m left of the ego
    view = view_from_perception(perception(), 7.0, route)
    assert view.route_s[0] == 0.0 and view.route_s[-1] == pytest.approx(80.0)
    assert np.allclose(view.route_xy[0], [0.0, 1.5]) and np.allclose(view.route_xy[:, 1], 1.5)
    assert view.lateral_offset_m == pytest.approx(-1.5)  # the ego is right of the route
    assert not view.left_same.any() and not view.right_same.any() and not view.left_opposite.any()
    assert view.ego_size == (pytest.approx(4.89), pytest.approx(2.12))


def test_route_from_targets_skips_points_behind_and_bends_at_the_targets() -> None:
    route = route_from_targets(np.array([20.0, 0.0]), np.array([20.0, 30.0]))
    assert np.allclose(route, [[0, 0], [20, 0], [20, 30]])
    view = view_from_perception(perception(), 5.0, route)
    assert np.allclose(view.route_xy[50], [20.0, 30.0])  # 20 m, then 30 m left
    assert np.allclose(view.route_xy[-1], [20.0, 60.0])  # carried on past the last target
    behind = route_from_targets(np.array([-3.0, 0.0]))
    assert np.allclose(behind, [[0.0, 0.0], [1.0, 0.0]])  # straight on


@pytest.mark.parametrize(
    ("light", "state"),
    [
        ("red", TrafficLightState.Red),
        ("yellow", TrafficLightState.Yellow),
        ("green", TrafficLightState.Green),
    ],
)
def test_light_state_is_placed_at_a_comfortable_stop(light, state) -> None:
    speed = 9.0
    view = view_from_perception(perception(light=light), speed, np.array([[0.0, 0.0], [1.0, 0.0]]))
    cfg = PerceptionViewConfig()
    expected = HALF_LENGTH + speed**2 / (2 * cfg.light_decel_mps2) + cfg.light_margin_m
    assert view.lights == ((pytest.approx(expected), state),)


def test_red_wins_over_green_when_both_are_likely() -> None:
    percept = PerceptionOutputs(occupancy(), np.array([0.0, 0.55, 0.0, 0.6]), np.zeros(len(FLAGS)))
    view = view_from_perception(percept, 0.0, np.array([[0.0, 0.0], [1.0, 0.0]]))
    assert view.lights[0][1] == TrafficLightState.Red


@pytest.mark.parametrize(
    ("flags", "friction", "visibility"),
    [
        ((), 0.9, (5_000.0, 20_000.0)),
        (("rain",), 0.45, (400.0, 600.0)),
        (("fog",), 0.9, (29.0, 31.0)),
        (("night",), 0.9, (50.0, 50.0)),
        (("rain", "fog", "night"), 0.45, (29.0, 31.0)),
    ],
)
def test_road_conditions_from_the_weather_flags(flags, friction, visibility) -> None:
    view = view_from_perception(perception(flags=flags), 5.0, np.array([[0.0, 0.0], [1.0, 0.0]]))
    assert view.friction == pytest.approx(friction)
    assert visibility[0] <= view.visibility_m <= visibility[1]


def test_from_logits_accepts_the_heads_batch_of_one() -> None:
    bev = np.full((1, 3, ROWS, COLS), -8.0)
    bev[0, 1, 7, 4] = 8.0
    light = np.array([[5.0, 0.0, 0.0, 0.0]])
    flags = np.full((1, len(FLAGS)), -6.0)
    percept = PerceptionOutputs.from_logits(bev, light, flags)
    assert percept.occupancy.shape == (3, ROWS, COLS)
    assert percept.occupancy[1, 7, 4] > 0.99
    assert np.sort(percept.occupancy.ravel())[-2] < 1e-3
    assert percept.light.sum() == pytest.approx(1.0) and percept.light[0] > 0.9
    assert percept.flag("rain") < 0.01
    with pytest.raises(ValueError, match="unknown flag"):
        percept.flag("snow")


def test_stops_within_reads_stops_and_decelerations() -> None:
    assert stops_within(np.zeros((T, 2)), DT, 1.0, 0.5)
    assert stops_within(straight(8.0, accel=-2.5), DT, 15.0, 0.5)
    assert not stops_within(straight(8.0, accel=-2.5), DT, 10.0, 0.5)
    assert stops_within(straight(12.0, accel=-1.5), DT, 50.0, 0.5)  # extrapolated: 48 m
    assert not stops_within(straight(8.0), DT, 50.0, 0.5)


def test_a_long_geometric_hold_creeps_on_the_planners_path(guard) -> None:
    """Standing behind a perceived obstacle the planner wants to pass: held for
    creep_after_s, then the planner's trajectory at creep speed for creep_duration_s."""
    cfg = guard.config
    percept = perception([("static", 6.0, 2.0)])  # box 5..7 m: within the 5 m hand-over
    pass_left = np.stack([np.arange(1, T + 1) * 2.0, np.linspace(0.5, 3.5, T)], axis=1)
    t, reasons = 0.0, []
    while t < cfg.creep_after_s + 1.0:
        decision = guard.check(inputs(pass_left, speed=0.0, percept=percept, time_s=t))
        reasons.append((t, decision.reason))
        t += 0.05
    held = [r for tt, r in reasons if tt < cfg.creep_after_s - 1e-6]
    assert ReasonCode.CREEP not in held and ReasonCode.PATH_BLOCKED in held
    crept = [(tt, r) for tt, r in reasons if r == ReasonCode.CREEP]
    assert crept and crept[0][0] == pytest.approx(cfg.creep_after_s, abs=0.06)
    assert decision.reason == ReasonCode.CREEP and decision.intervened
    assert segment_speeds(decision.trajectory, DT).max() <= cfg.creep_speed_mps + 1e-6
    # The creep follows the planner's path (its lateral shape), not the rules' stop.
    assert decision.trajectory[-1, 1] > 0.5


def hold_then_creep(guard, make_inputs, extra_s: float = 1.0) -> list[tuple[float, GuardDecision]]:
    """Feed `make_inputs(t)` at 20 Hz for creep_after_s + extra_s: [(t, decision)]."""
    out, t = [], 0.0
    while t < guard.config.creep_after_s + extra_s:
        out.append((t, guard.check(make_inputs(t))))
        t += 0.05
    return out


def stand_behind(cells, others: Sequence[tuple[np.ndarray, float]]):
    """Inputs of a car standing behind `cells`, its planner choosing straight on (into
    them) and offering `others` as (trajectory, probability)."""
    percept = perception(cells)
    return lambda t: with_modes(straight(4.0), others, speed=0.0, percept=percept, time_s=t)


# Right behind a prop in the right half of the ego's lane (cell x 4..8, y -4..0; its box
# x 5..7, y -3..-1): the straight plan meets it within the hand-over distance, a crawl
# towards the left lane passes beside it, one to the right runs into it.
BOX_RIGHT_AHEAD = [("static", 6.0, -2.0)]
BOX_LEFT_AHEAD = [("static", 6.0, 2.0)]


def test_a_long_hold_creeps_on_a_low_scored_candidate_that_leaves_the_lane(guard) -> None:
    """The planner scores the pass at 0.01 after a stand (below alternative_min_prob): the
    creep crawls it, not the chosen plan into the box."""
    pass_left = swerve(6.0, speed=4.0)
    decisions = hold_then_creep(guard, stand_behind(BOX_RIGHT_AHEAD, [(pass_left, 0.01)]))
    held = [d.reason for t, d in decisions if t < guard.config.creep_after_s - 1e-6]
    assert set(held) == {ReasonCode.PATH_BLOCKED}  # no ALTERNATIVE_MODE at p 0.01
    crept = decisions[-1][1]
    assert crept.reason == ReasonCode.CREEP and "side creep left, mode 1 (p 0.01)" in crept.detail
    assert segment_speeds(crept.trajectory, DT).max() <= guard.config.creep_speed_mps + 1e-6
    # The crawl follows the pass's path: the slow prefix of swerve(6.0).
    assert crept.trajectory[-1, 1] > guard.config.side_creep_min_shift_m
    assert distance_to_path(crept.trajectory, pass_left).max() < 1e-6
    assert not swept_contacts(crept.trajectory, DT, guard.last_view, 0.4)


def test_without_side_creep_the_creep_follows_the_chosen_plan() -> None:
    guard = SafetyGuard(GuardConfig(raise_errors=True, side_creep=False))
    decisions = hold_then_creep(guard, stand_behind(BOX_RIGHT_AHEAD, [(swerve(6.0, 4.0), 0.01)]))
    crept = decisions[-1][1]
    assert crept.reason == ReasonCode.CREEP and "side creep" not in crept.detail
    assert np.allclose(crept.trajectory[:, 1], 0.0)


def test_side_creep_takes_the_right_when_the_left_is_blocked_and_keeps_its_side(guard) -> None:
    """Left before right, each side's candidates best scored first; a pass that meets a
    perceived box is skipped. Once crawling right, the creep never turns left in the same
    episode: with the right blocked too it crawls the chosen plan instead."""
    left, right = swerve(6.0, speed=4.0), swerve(-6.0, speed=4.0)
    others = [(left, 0.3), (right, 0.01)]
    decisions = hold_then_creep(guard, stand_behind(BOX_LEFT_AHEAD, others))
    t, crept = decisions[-1]
    assert crept.reason == ReasonCode.CREEP and "side creep right, mode 2" in crept.detail
    assert crept.trajectory[-1, 1] < -guard.config.side_creep_min_shift_m
    again = guard.check(stand_behind(BOX_RIGHT_AHEAD, others)(t + 0.05))  # left clear now
    assert again.reason == ReasonCode.CREEP and "side creep" not in again.detail
    assert np.allclose(again.trajectory[:, 1], 0.0)


def test_with_no_clear_side_the_creep_follows_the_chosen_plan(guard) -> None:
    walled = BOX_RIGHT_AHEAD + BOX_LEFT_AHEAD
    others = [(swerve(6.0, 4.0), 0.2), (swerve(-6.0, 4.0), 0.2), (swerve(0.3, 4.0), 0.1)]
    crept = hold_then_creep(guard, stand_behind(walled, others))[-1][1]
    assert crept.reason == ReasonCode.CREEP and "side creep" not in crept.detail
    assert np.allclose(crept.trajectory[:, 1], 0.0)


def test_a_red_light_never_creeps(guard) -> None:
    red = perception(light="red")
    for k in range(int((guard.config.creep_after_s + 2.0) / 0.05)):
        decision = guard.check(inputs(straight(8.0), speed=0.0, percept=red, time_s=k * 0.05))
        assert decision.reason != ReasonCode.CREEP


# ----------------------------------------------------------------------------- unstick
def stand_for(guard, seconds: float, percept=None, t0: float = 0.0, speed: float = 0.0):
    """Feed `seconds` of standing plans (every pose at the ego) at 20 Hz: [(t, decision)]."""
    out, t = [], t0
    while t < t0 + seconds:
        plan = np.zeros((T, 2))
        out.append((t, guard.check(inputs(plan, speed=speed, percept=percept, time_s=t))))
        t += 0.05
    return out


def test_a_planner_standing_on_a_clear_road_is_driven_on_along_the_route(guard) -> None:
    """The imitation planner's inertia: it stands with nothing perceived. After
    unstick_after_s the guard drives the route at unstick_speed_mps for creep_duration_s,
    then waits again."""
    cfg = guard.config
    decisions = stand_for(guard, cfg.unstick_after_s + cfg.creep_duration_s + 1.0)
    unstuck = [t for t, d in decisions if d.reason == ReasonCode.UNSTICK]
    assert all(d.reason == ReasonCode.ACCEPTED for t, d in decisions if t < unstuck[0])
    assert unstuck[0] == pytest.approx(cfg.unstick_after_s, abs=0.06)
    assert unstuck[-1] - unstuck[0] == pytest.approx(cfg.creep_duration_s, abs=0.11)
    crawl = next(d for t, d in decisions if d.reason == ReasonCode.UNSTICK)
    assert crawl.intervened and crawl.fallback == "none"
    assert np.allclose(crawl.trajectory[:, 1], 0.0)  # on the route (+x)
    assert segment_speeds(crawl.trajectory, DT) == pytest.approx(cfg.unstick_speed_mps)
    assert decisions[-1][1].reason == ReasonCode.ACCEPTED  # standing again: wait again


@pytest.mark.parametrize(
    ("cells", "light", "flags"),
    [
        ((("vehicle", 6.0, 0.0),), "none", ()),  # queued behind a standing lead
        ((("pedestrian", 8.0, 0.0),), "none", ()),  # waiting for someone crossing
        ((), "red", ()),
        ((), "yellow", ()),
        ((), "none", ("construction",)),  # props the BEV head may miss
        ((), "none", ("obstacle",)),
        ((), "none", ("pedestrian_crossing",)),
    ],
)
def test_a_stand_with_a_perceived_cause_is_never_unstuck(guard, cells, light, flags) -> None:
    percept = perception(list(cells), light=light, flags=flags)
    decisions = stand_for(guard, guard.config.unstick_after_s * 2, percept=percept)
    assert all(d.reason != ReasonCode.UNSTICK for _, d in decisions)


def test_a_red_light_during_the_stand_restarts_the_wait(guard) -> None:
    cfg = guard.config
    stand_for(guard, cfg.unstick_after_s - 1.0)
    stand_for(guard, 0.5, percept=perception(light="red"), t0=cfg.unstick_after_s - 1.0)
    after = stand_for(guard, cfg.unstick_after_s - 1.0, t0=cfg.unstick_after_s - 0.5)
    assert all(d.reason != ReasonCode.UNSTICK for _, d in after)


def test_weather_flags_do_not_explain_a_stand(guard) -> None:
    percept = perception(flags=("rain", "fog", "night", "glare"))
    decisions = stand_for(guard, guard.config.unstick_after_s + 0.5, percept=percept)
    assert decisions[-1][1].reason == ReasonCode.UNSTICK


def test_inching_counts_as_standing_but_driving_does_not(guard) -> None:
    cfg = guard.config
    inching = stand_for(guard, cfg.unstick_after_s + 0.5, speed=cfg.creep_speed_mps * 0.5)
    assert any(d.reason == ReasonCode.UNSTICK for _, d in inching)
    guard.reset()
    t, reasons = 0.0, []
    while t < cfg.unstick_after_s + 1.0:  # slow, but a real plan: never a stand
        reasons.append(guard.check(inputs(straight(1.6), speed=1.6, time_s=t)).reason)
        t += 0.05
    assert ReasonCode.UNSTICK not in reasons


def test_the_crawl_ends_when_the_planner_drives_on_and_can_be_switched_off() -> None:
    guard = SafetyGuard(GuardConfig(raise_errors=True))
    cfg = guard.config
    decisions = stand_for(guard, cfg.unstick_after_s + 0.5)
    assert decisions[-1][1].reason == ReasonCode.UNSTICK
    going = guard.check(inputs(straight(8.0), speed=1.0, time_s=cfg.unstick_after_s + 0.6))
    assert going.reason == ReasonCode.ACCEPTED
    off = SafetyGuard(GuardConfig(raise_errors=True, unstick=False))
    assert all(d.reason == ReasonCode.ACCEPTED for _, d in stand_for(off, cfg.unstick_after_s * 2))


def test_a_blocking_static_obstacle_that_flickers_out_still_blocks_for_the_memory() -> None:
    """Creeping up to a construction zone, the BEV head loses the box for a tick or two:
    the guard keeps it (moved with the ego) for blockage_memory_s after it was last seen,
    then forgets it. Without the memory a flicker lets the creep plan through."""
    creep = straight(1.0)  # a 4 m creep towards the box at 5..7 m
    seen, gone = perception([("static", 6.0, 0.0)]), perception()
    guard = SafetyGuard(GuardConfig(raise_errors=True))
    memory_s = guard.config.blockage_memory_s
    assert guard.check(inputs(creep, speed=0.2, percept=seen, time_s=0.0)).reason == (
        ReasonCode.PATH_BLOCKED
    )
    flicker = guard.check(inputs(creep, speed=0.2, percept=gone, time_s=0.05))
    assert flicker.reason == ReasonCode.PATH_BLOCKED and flicker.fallback == "rules"
    # The remembered box moved back by what the ego drove: 0.2 m/s x 0.05 s.
    remembered = guard.last_view.obstacle_xy[list(guard.last_view.obstacle_id).index(-1)]
    assert remembered[0] == pytest.approx(6.0 - 0.01, abs=1e-9)
    # Seen again: refreshed (one box, not two); then gone for longer than the memory.
    guard.check(inputs(creep, speed=0.0, percept=seen, time_s=0.5))
    assert len(guard._memory) == 1
    held = guard.check(inputs(creep, speed=0.0, percept=gone, time_s=0.5 + memory_s - 0.05))
    assert held.reason == ReasonCode.PATH_BLOCKED
    free = guard.check(inputs(creep, speed=0.0, percept=gone, time_s=0.5 + memory_s + 0.05))
    assert free.reason == ReasonCode.ACCEPTED and np.array_equal(free.trajectory, creep)
    # Without the memory the first flicker already lets the creep through.
    off = SafetyGuard(GuardConfig(raise_errors=True, blockage_memory_s=0.0))
    off.check(inputs(creep, speed=0.2, percept=seen, time_s=0.0))
    assert off.check(inputs(creep, speed=0.2, percept=gone, time_s=0.05)).reason == (
        ReasonCode.ACCEPTED
    )


def test_a_remembered_box_expires_even_while_it_blocks_and_pedestrians_are_not_kept() -> None:
    """Only a new sighting refreshes a remembered box (it must not keep itself alive), and
    a pedestrian walks on: a flicker of one is the next tick's business."""
    creep = straight(1.0)
    guard = SafetyGuard(GuardConfig(raise_errors=True))
    memory_s = guard.config.blockage_memory_s
    guard.check(inputs(creep, speed=0.0, percept=perception([("static", 6.0, 0.0)]), time_s=0.0))
    t, reasons = 0.05, []
    while t < memory_s + 0.3:
        reasons.append((t, guard.check(inputs(creep, speed=0.0, time_s=t)).reason))
        t += 0.05
    assert all(r == ReasonCode.PATH_BLOCKED for tt, r in reasons if tt <= memory_s - 1e-6)
    assert reasons[-1][1] == ReasonCode.ACCEPTED
    walker = SafetyGuard(GuardConfig(raise_errors=True))
    first = walker.check(
        inputs(creep, speed=0.0, percept=perception([("pedestrian", 6.0, 0.0)]), time_s=0.0)
    )
    assert first.reason == ReasonCode.PATH_BLOCKED
    assert walker.check(inputs(creep, speed=0.0, time_s=0.05)).reason == ReasonCode.ACCEPTED


@pytest.mark.parametrize("flag", ["construction", "lane_closed", "obstacle"])
def test_no_plain_creep_into_what_a_static_hazard_flag_confirms(flag) -> None:
    """Held behind a box with a construction / lane-closed / obstacle flag raised, the creep
    may still leave the lane (side creep) but never crawls the planner's path into the box;
    `flagged_plain_creep: true` restores the old crawl."""
    walled = BOX_RIGHT_AHEAD + BOX_LEFT_AHEAD  # no side is clear: the plain creep's case
    percept = perception(walled, flags=(flag,))

    def make(t: float) -> GuardInputs:
        return with_modes(
            straight(4.0), [(swerve(6.0, 4.0), 0.2)], speed=0.0, percept=percept, time_s=t
        )

    guard = SafetyGuard(GuardConfig(raise_errors=True))
    stood = [d for t, d in hold_then_creep(guard, make, extra_s=2.0)]
    assert all(d.reason == ReasonCode.PATH_BLOCKED and d.fallback == "rules" for d in stood)
    assert all(np.abs(d.trajectory).max() < 1e-6 for d in stood[-20:])  # standing
    old = SafetyGuard(GuardConfig(raise_errors=True, flagged_plain_creep=True))
    crept = hold_then_creep(old, make, extra_s=2.0)[-1][1]
    assert crept.reason == ReasonCode.CREEP and "side creep" not in crept.detail
    # A side that is clear is still crawled with the flag raised.
    side = hold_then_creep(
        SafetyGuard(GuardConfig(raise_errors=True)),
        lambda t: with_modes(
            straight(4.0),
            [(swerve(6.0, 4.0), 0.01)],
            speed=0.0,
            percept=perception(BOX_RIGHT_AHEAD, flags=(flag,)),
            time_s=t,
        ),
    )[-1][1]
    assert side.reason == ReasonCode.CREEP and "side creep left" in side.detail


def test_a_plan_must_stop_the_standoff_short_of_a_static_box() -> None:
    """The box is the middle half of its 4 m cell, so the object may be up to 1 m nearer:
    a plan whose bumper ends 0.5 m short of the box (5..7 m) is blocked, one ending 1.5 m
    short is not, and standing right behind it is no contact at all."""
    percept = perception([("static", 6.0, 0.0)])
    front = HALF_LENGTH

    def plan_to(bumper_x: float) -> np.ndarray:
        return np.stack([np.linspace(0.1, bumper_x - front, T), np.zeros(T)], axis=1)

    guard = SafetyGuard(GuardConfig(raise_errors=True, blockage_memory_s=0.0))
    assert guard.config.static_standoff_m == 1.0
    short = guard.check(inputs(plan_to(4.5), speed=0.0, percept=percept))
    assert short.reason == ReasonCode.PATH_BLOCKED
    assert guard.check(inputs(plan_to(3.5), speed=0.0, percept=percept)).reason == (
        ReasonCode.ACCEPTED
    )
    tight = SafetyGuard(GuardConfig(raise_errors=True, static_standoff_m=0.0))
    assert tight.check(inputs(plan_to(4.5), speed=0.0, percept=percept)).reason == (
        ReasonCode.ACCEPTED
    )
    # Standing within the standoff (2.55 m behind the box, standoff 3 m): a plan that
    # stands is no contact; one that creeps 0.5 m is.
    wide = SafetyGuard(GuardConfig(raise_errors=True, static_standoff_m=3.0))
    still = wide.check(inputs(np.zeros((T, 2)), speed=0.0, percept=percept))
    assert still.reason == ReasonCode.ACCEPTED
    assert wide.check(inputs(plan_to(front + 0.5), speed=0.0, percept=percept)).reason == (
        ReasonCode.PATH_BLOCKED
    )


def test_remembered_boxes_move_with_the_ego_along_the_path_it_was_handed() -> None:
    """Odometry: the ego drives speed x dt along last tick's trajectory and turns to its
    heading there, so a box kept while the car moves over to the left stays where it is on
    the road, not where it was relative to the car."""
    memory = BlockageMemory(memory_s=5.0)
    blocking_view = SafetyGuard().perceived_view(
        inputs(straight(1.0), speed=0.0, percept=perception([("static", 6.0, 0.0)])),
        np.array([[0.0, 0.0], [60.0, 0.0]]),
    )
    box = int(np.argmax([k == "static" for k in blocking_view.obstacle_kind]))
    memory.advance(0.0, 0.0)
    memory.remember(blocking_view, [Contact(box, "static", 1.0, 5.0)], 0.0)
    start = blocking_view.obstacle_xy[box].copy()
    # A quarter circle of radius 10 m to the left, all of it (10 * pi / 2 m) in 1 s.
    angles = np.linspace(0.0, np.pi / 2, 200)[1:]
    arc = np.stack([10.0 * np.sin(angles), 10.0 * (1.0 - np.cos(angles))], axis=1)
    memory.advance(1.0, 10.0 * np.pi / 2, path=arc)
    moved = memory.apply(dataclasses.replace(blocking_view, **_no_obstacles(blocking_view)))
    # The ego now stands at (10, 10) of the old frame facing +y: the old (x, y) is at
    # (y - 10, 10 - x) in the new one.
    expected = np.array([start[1] - 10.0, 10.0 - start[0]])
    assert moved.obstacle_xy[0] == pytest.approx(expected, abs=0.05)
    assert moved.obstacle_yaw[0] == pytest.approx(-np.pi / 2, abs=0.02)
    # Straight on without a path; forgotten after memory_s unless keep_s says longer.
    memory.advance(1.5, 2.0)
    again = memory.apply(dataclasses.replace(blocking_view, **_no_obstacles(blocking_view)))
    assert again.obstacle_xy[0] == pytest.approx(expected - [1.0, 0.0], abs=0.05)
    memory.advance(5.9, 0.0, keep_s=10.0)
    assert len(memory) == 1
    memory.advance(6.0, 0.0)
    assert len(memory) == 0


def _no_obstacles(view) -> dict:
    return dict(
        obstacle_xy=np.zeros((0, 2)),
        obstacle_yaw=np.zeros(0),
        obstacle_velocity=np.zeros((0, 2)),
        obstacle_size=np.zeros((0, 2)),
        obstacle_kind=(),
        obstacle_id=np.zeros(0, int),
        obstacle_scenario=np.zeros(0, bool),
    )


def test_with_a_static_hazard_flag_the_blockage_is_kept_longer_when_configured() -> None:
    creep = straight(1.0)
    flags = ("lane_closed",)
    guard = SafetyGuard(GuardConfig(raise_errors=True, blockage_flag_memory_s=10.0))
    seen = perception([("static", 6.0, 0.0)], flags=flags)
    guard.check(inputs(creep, speed=0.0, percept=seen, time_s=0.0))
    flagged = guard.check(inputs(creep, speed=0.0, percept=perception(flags=flags), time_s=5.0))
    assert flagged.reason == ReasonCode.PATH_BLOCKED
    unflagged = guard.check(inputs(creep, speed=0.0, percept=perception(), time_s=5.05))
    assert unflagged.reason == ReasonCode.ACCEPTED  # the flag is down: 1 s memory again


# ----------------------------------------------------------------------- lane pass
# A static box across the ego's lane (both cells at x 12..16), 10.5 m ahead of the bumper:
# within the hand-over distance at 6 m/s, the speed a car has slowed to behind a blockage.
LANE_BLOCKED = [("static", 14.0, 2.0), ("static", 14.0, -2.0)]
PASS_SPEED = 6.0  # [m/s] below max_start_speed_mps


def pass_guard(**lane_pass) -> SafetyGuard:
    config = GuardConfig(raise_errors=True, lane_pass={"enabled": True, **lane_pass})
    return SafetyGuard(config)


def blocked(
    flags=("lane_closed",), cells=LANE_BLOCKED, intent="change_left", speed=PASS_SPEED, **kw
) -> GuardInputs:
    percept = perception(cells, flags=flags)
    if intent is not None:
        percept = dataclasses.replace(percept, intent=intent_probs(intent))
    return inputs(straight(speed), speed=speed, percept=percept, **kw)


def test_a_flagged_blockage_no_candidate_passes_is_passed_in_the_next_lane() -> None:
    guard = pass_guard()
    decision = guard.check(blocked())
    assert decision.reason == ReasonCode.LANE_PASS and decision.fallback == "lane_pass"
    assert "PATH_BLOCKED" in decision.detail and "lane pass left" in decision.detail
    trajectory = decision.trajectory
    # One lane over and 1 m (offset_m 4.5) once the move is done, clear of the boxes.
    assert trajectory[-1, 1] == pytest.approx(4.5, abs=0.05)
    assert np.all(np.diff(trajectory[:, 1]) >= -1e-9)  # moves left only
    assert not swept_contacts(trajectory, DT, guard.last_view, 0.4)
    # From the current speed towards the pass speed (4 m/s) at 1.5 m/s^2.
    assert segment_speeds(trajectory, DT)[0] == pytest.approx(PASS_SPEED - 0.4, abs=0.2)
    assert segment_speeds(trajectory, DT)[-1] == pytest.approx(4.0, abs=0.1)


@pytest.mark.parametrize(
    ("case", "guard_kw", "blocked_kw"),
    [
        ("off by default", None, {}),
        ("no construction / lane-closed / obstacle flag", {}, {"flags": ()}),
        ("blockage closer than min_start_gap_m", {"min_start_gap_m": 12.0}, {}),
        ("the next lane is blocked too", {}, {"cells": [*LANE_BLOCKED, ("static", 14.0, 6.0)]}),
        ("no side named", {}, {"intent": "slow_down"}),
        ("faster than max_start_speed_mps", {"max_start_speed_mps": 5.0}, {}),
        ("a red light besides", {}, {"flags": ("lane_closed",)}),
    ],
)
def test_no_lane_pass(case, guard_kw, blocked_kw) -> None:
    guard = (
        SafetyGuard(GuardConfig(raise_errors=True)) if guard_kw is None else pass_guard(**guard_kw)
    )
    tick = blocked(**blocked_kw)
    if case == "a red light besides":
        tick = dataclasses.replace(
            tick, perception=perception(LANE_BLOCKED, light="red", flags=("lane_closed",))
        )
    decision = guard.check(tick)
    assert decision.reason != ReasonCode.LANE_PASS, case
    assert decision.fallback == "rules", case


def test_the_lane_pass_goes_to_the_side_the_intent_names() -> None:
    decision = pass_guard().check(blocked(intent="change_right"))
    assert decision.reason == ReasonCode.LANE_PASS and "lane pass right" in decision.detail
    assert decision.trajectory[-1, 1] == pytest.approx(-4.5, abs=0.05)


def test_a_started_pass_is_kept_until_the_lane_it_left_is_clear() -> None:
    guard = pass_guard()
    first = guard.check(blocked(time_s=0.0))
    assert first.reason == ReasonCode.LANE_PASS
    # The planner now plans a stand short of the box (accepted on its own; the ego stands
    # too, so the grid has not moved), while the box still stands in the lane: the pass
    # goes on, towards the same lateral target.
    stop = inputs(
        np.zeros((T, 2)),
        speed=0.0,
        time_s=0.05,
        percept=perception(LANE_BLOCKED, flags=("lane_closed",)),
    )
    view = guard.perceived_view(stop, stop.route_xy)
    assert guard.trajectory_failures(stop.trajectory, stop, view) == {}
    second = guard.check(stop)
    assert second.reason == ReasonCode.LANE_PASS and "passing" in second.detail
    # From a stand it is 4 s into the move (a lateral target 4.5 m left of where it began).
    assert 4.0 < second.trajectory[-1, 1] <= 4.5 and np.all(np.diff(second.trajectory[:, 1]) >= 0)
    # Nothing static in that lane for longer than keep_s (2 s) after it was last seen at
    # 0.05 s (and remembered for 1 s after, blockage_memory_s): the planner drives again.
    clear = dict(percept=perception(flags=("lane_closed",)), speed=0.0)
    assert guard.check(inputs(np.zeros((T, 2)), time_s=2.0, **clear)).reason == (
        ReasonCode.LANE_PASS
    )
    assert guard.check(inputs(np.zeros((T, 2)), time_s=3.1, **clear)).reason == (
        ReasonCode.ACCEPTED
    )
