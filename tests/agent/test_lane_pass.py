"""The lane pass's geometry and memory (agent.safety.lane_pass); the guard's use of it is
tested in test_safety_guard.py."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from agent.data.schema import FLAGS
from agent.model.config import PerceptionConfig
from agent.rules import ObstacleView
from agent.safety.lane_pass import LanePass, LanePassConfig
from agent.safety.perception_view import PerceptionOutputs, view_from_perception
from agent.safety.trajectory import arc_lengths, pose_along

DT = 0.5
T = 8


def to_world(points: np.ndarray, pose: tuple[np.ndarray, float]) -> np.ndarray:
    """Ego-frame points -> the frame the pass started in, the ego at `pose` there."""
    xy, yaw = pose
    c, s = math.cos(yaw), math.sin(yaw)
    return points @ np.array([[c, s], [-s, c]]) + xy


def test_the_pass_starts_at_the_ego_along_its_heading_and_ends_one_lane_over() -> None:
    lane_pass = LanePass(LanePassConfig(enabled=True))
    lane_pass.start(1.0, time_s=0.0)
    trajectory = lane_pass.trajectory(6.0, T, DT)
    assert trajectory.shape == (T, 2)
    first = trajectory[0]
    assert math.degrees(math.atan2(first[1], first[0])) < 10.0  # leaves along the heading
    assert trajectory[-1, 1] == pytest.approx(4.5)
    blend = 2.5 * 4.5  # blend_m_per_m x the lateral move
    done = trajectory[:, 0] >= blend
    assert done.any() and np.allclose(trajectory[done, 1], 4.5)


def test_the_lateral_target_stays_put_while_the_ego_drives_the_pass() -> None:
    """Dead reckoning: the ego drives each tick's path for 0.05 s; every later trajectory,
    taken back into the frame the pass started in, still ends 4.5 m left."""
    lane_pass = LanePass(LanePassConfig(enabled=True))
    lane_pass.start(1.0, time_s=0.0)
    lane_pass.advance(0.0, 5.0, None)
    pose = (np.zeros(2), 0.0)
    trajectory = lane_pass.trajectory(5.0, T, DT)
    for tick in range(1, 41):  # 2 s at 20 Hz
        offset, heading = pose_along(lane_pass.path[1:], 5.0 * 0.05)
        c, s = math.cos(pose[1]), math.sin(pose[1])
        pose = (pose[0] + np.array([[c, -s], [s, c]]) @ offset, pose[1] + heading)
        lane_pass.advance(tick * 0.05, 5.0, trajectory)
        trajectory = lane_pass.trajectory(5.0, T, DT)
        assert to_world(trajectory, pose)[-1, 1] == pytest.approx(4.5, abs=0.05), tick
    assert pose[0][1] > 2.0  # the ego itself has moved most of the way over


def test_the_pass_ends_once_the_lane_it_left_is_clear_for_keep_s() -> None:
    lane_pass = LanePass(LanePassConfig(enabled=True, keep_s=2.0))
    lane_pass.start(1.0, time_s=0.0)
    in_lane = view_with_static([[10.0, 0.5]])
    next_lane = view_with_static([[10.0, 4.5]])
    lane_pass.observe(in_lane, 1.0)
    lane_pass.observe(next_lane, 2.9)  # a box in the lane it moves to does not count
    assert lane_pass.active
    lane_pass.observe(next_lane, 3.1)
    assert not lane_pass.active


def test_the_pass_ends_after_max_m_and_a_side_must_be_named() -> None:
    lane_pass = LanePass(LanePassConfig(enabled=True, max_m=10.0))
    with pytest.raises(ValueError, match="side"):
        lane_pass.start(0.5, time_s=0.0)
    lane_pass.start(-1.0, time_s=0.0)
    lane_pass.advance(0.0, 5.0, None)
    lane_pass.advance(1.0, 5.0, None)
    assert lane_pass.active
    lane_pass.advance(2.5, 5.0, None)  # 12.5 m
    assert not lane_pass.active
    with pytest.raises(RuntimeError):
        lane_pass.trajectory(5.0, T, DT)


def test_dead_reckoning_turns_gradually_along_a_chord() -> None:
    """The heading is the ego's at the start and a chord's direction at its middle: 5 cm
    into a chord turned 30 degrees, the ego has not turned 30 degrees."""
    chord = np.array([[math.cos(math.radians(30)), math.sin(math.radians(30))]]) * 2.0
    path = np.concatenate([chord, chord * 2])
    _, early = pose_along(path, 0.05)
    _, middle = pose_along(path, 1.0)
    assert math.degrees(early) == pytest.approx(1.5, abs=0.1)
    assert math.degrees(middle) == pytest.approx(30.0)
    assert arc_lengths(path)[-1] == pytest.approx(4.0)


def view_with_static(xy: list[list[float]]) -> ObstacleView:
    """A perceived view with nothing in it but static boxes at `xy` (ego frame)."""
    grid = PerceptionConfig()
    empty = PerceptionOutputs(
        occupancy=np.zeros((len(grid.bev_classes), *grid.bev_shape)),
        light=np.array([0.01, 0.01, 0.01, 0.97]),
        flags=np.full(len(FLAGS), 0.02),
    )
    view = view_from_perception(empty, 5.0, np.array([[0.0, 0.0], [60.0, 0.0]]), grid=grid)
    n = len(xy)
    return dataclasses.replace(
        view,
        obstacle_xy=np.array(xy, dtype=float),
        obstacle_yaw=np.zeros(n),
        obstacle_velocity=np.zeros((n, 2)),
        obstacle_size=np.tile([2.0, 2.0], (n, 1)),
        obstacle_kind=("static",) * n,
        obstacle_id=np.arange(n),
        obstacle_scenario=np.zeros(n, bool),
    )
