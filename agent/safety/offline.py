"""The guard's geometric checks replayed on recorded frames: how often a perception source
makes the guard stop a good plan, and how often it lets a bad one through.

Closed-loop runs say whether the guard helps only after minutes of simulation per route;
these two rates say it per frame, from the dataset alone:

- expert plan flagged: the share of frames on which the guard's path checks
  (PATH_BLOCKED / TTC, `SafetyGuard.trajectory_failures`) fail the expert's own future
  trajectory. Each one is a tick where the guard would hold or divert a car that was
  driving well (on the construction routes: stand behind a board in the next lane).
- hazards caught: among the frames where driving straight on (at the current speed, at
  least `STRAIGHT_MIN_SPEED_MPS`) really reaches an obstacle (the same checks on the
  frame's true boxes fail), the share where the perceived view fails it too.

Lights, flags and the VLM are left out (no light, no flags): only the BEV obstacles count.
Run on ground-truth occupancy (`agent.model.losses.bev_targets` / `bev_spans`) it measures
what a grid layout can express at best; on a model's heads, what the model gives the guard.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from agent.data.schema import FLAGS, LIGHT_STATES, POSE_DT_S
from agent.rules import ObstacleView
from agent.rules.view import KINDS
from agent.safety.decision import ReasonCode
from agent.safety.guard import GuardInputs, SafetyGuard
from agent.safety.perception_view import PerceptionOutputs, route_from_targets

GEOMETRIC = frozenset({ReasonCode.PATH_BLOCKED, ReasonCode.TTC})
STRAIGHT_MIN_SPEED_MPS = 4.0  # [m/s] the straight-on probe drives at least this fast


def true_view(view: ObstacleView, obstacles: np.ndarray) -> ObstacleView:
    """`view` with its obstacles replaced by real boxes: obstacles (N, 8) rows of
    `agent.data.schema.OBSTACLE_COLUMNS` (ego frame), standing still like the grid's."""
    rows = np.asarray(obstacles, dtype=np.float64).reshape(-1, 8)
    n = len(rows)
    return dataclasses.replace(
        view,
        obstacle_xy=rows[:, 0:2],
        obstacle_yaw=rows[:, 2],
        obstacle_velocity=np.zeros((n, 2)),
        obstacle_size=rows[:, 5:7],
        obstacle_kind=tuple(KINDS[int(k)] for k in rows[:, 7]),
        obstacle_id=np.arange(n, dtype=np.int64),
        obstacle_scenario=np.zeros(n, dtype=bool),
    )


def plan_check_rates(
    guard: SafetyGuard,
    occupancy: np.ndarray,
    span: np.ndarray | None,
    speed_mps: np.ndarray,
    target_point: np.ndarray,
    trajectory: np.ndarray,
    obstacles: np.ndarray,
    obstacle_mask: np.ndarray,
) -> dict[str, float | int | None]:
    """The two rates of the module docstring over N frames.

    occupancy (N, classes, R, C) probabilities on `guard.grid`; span (N, classes, 2, R, C)
    fractions or None; speed_mps (N,); target_point (N, 2); trajectory (N, T, 2) the
    expert's; obstacles (N, M, 8) and obstacle_mask (N, M) the frames' true boxes.
    Returns {"frames", "expert_plan_flagged", "hazards", "hazards_caught"} (None when no
    frame has a hazard)."""
    n = len(occupancy)
    light = np.zeros(len(LIGHT_STATES))
    light[LIGHT_STATES.index("none")] = 1.0
    no_flags = np.zeros(len(FLAGS))
    steps = np.arange(1, trajectory.shape[1] + 1) * POSE_DT_S
    flagged = hazards = caught = 0
    for i in range(n):
        perception = PerceptionOutputs(
            occupancy[i], light, no_flags, None, None if span is None else span[i]
        )
        speed = float(speed_mps[i])
        route = route_from_targets(np.asarray(target_point[i], dtype=np.float64))
        expert = np.asarray(trajectory[i], dtype=np.float64)
        inputs = GuardInputs(expert, 1.0, speed, perception, route, 0, 0.0)
        view = guard.perceived_view(inputs, route)
        if set(guard.trajectory_failures(expert, inputs, view)) & GEOMETRIC:
            flagged += 1
        straight = np.stack([max(speed, STRAIGHT_MIN_SPEED_MPS) * steps, 0.0 * steps], axis=1)
        truth = true_view(view, obstacles[i][obstacle_mask[i]])
        if set(guard.trajectory_failures(straight, inputs, truth)) & GEOMETRIC:
            hazards += 1
            caught += bool(set(guard.trajectory_failures(straight, inputs, view)) & GEOMETRIC)
    return {
        "frames": n,
        "expert_plan_flagged": round(flagged / n, 4) if n else None,
        "hazards": hazards,
        "hazards_caught": round(caught / hazards, 4) if hazards else None,
    }
