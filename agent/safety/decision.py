"""What the safety guard decided on one tick, and why.

`ReasonCode` values are stable names: they are written into the evaluation results JSON
(`InterventionCounter.as_dict`), so rename one only together with its consumers. Their
definition order is their severity: a decision's `reason` is the most severe of its
`reasons`.

What each reason does to the trajectory (`FALLBACK_OF`):
- "emergency_stop": every pose at the origin; `sim.tracking.WaypointTracker` brakes fully.
  For failures that leave nothing trustworthy to plan from (a missing or frozen camera,
  non-finite numbers, the guard itself failing, or a rules fallback that is unsafe too).
- "candidate": another of the planner's own candidate trajectories (a lower-scored mode
  that passes every check the chosen one failed), kept on its path, only speed-capped.
- "lane_pass": a move into the next lane around a standing blockage, planned by the guard
  (`agent.safety.lane_pass`) when no candidate of the planner's passes; checked like a plan.
- "rules": the rule set's plan (`agent.rules.RulePlanner`) on the view perceived by the
  model's own heads (`agent.safety.perception_view`).
- "none": the trajectory that was chosen (the planner's, or the rules' after a fallback)
  is kept on its path and only slowed down (time-reparameterised) to a speed cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, get_args

import numpy as np

Fallback = Literal["none", "candidate", "lane_pass", "rules", "emergency_stop"]
FALLBACKS: tuple[str, ...] = get_args(Fallback)


class ReasonCode(StrEnum):
    """Why the guard kept or replaced a trajectory. Definition order = severity."""

    # --- emergency stop: nothing trustworthy to plan from --------------------------------
    GUARD_ERROR = "GUARD_ERROR"  # the guard raised internally (logged)
    MODEL_ERROR = "MODEL_ERROR"  # the driving model raised this tick (the agent logs it)
    CAMERA_MISSING = "CAMERA_MISSING"  # no camera frame this tick
    CAMERA_FROZEN = "CAMERA_FROZEN"  # identical frames for N ticks while the ego moves
    NONFINITE_INPUT = "NONFINITE_INPUT"  # NaN/inf in speed, route or perception outputs
    NONFINITE_PLAN = "NONFINITE_PLAN"  # NaN/inf in the planner's trajectory or confidence
    FALLBACK_UNSAFE = "FALLBACK_UNSAFE"  # the rules' fallback also hits something
    # --- rules fallback ------------------------------------------------------------------
    VLM_ERROR = "VLM_ERROR"  # the VLM's last reasoning attempt raised / returned an error
    VLM_TIMEOUT = "VLM_TIMEOUT"  # the reasoning in use is older than the timeout
    LOW_CONFIDENCE = "LOW_CONFIDENCE"  # the planner's chosen-mode probability is too low
    PATH_BLOCKED = "PATH_BLOCKED"  # the swept ego box hits a static / pedestrian obstacle
    TTC = "TTC"  # the swept ego box reaches an obstacle sooner than the TTC threshold
    RED_LIGHT = "RED_LIGHT"  # red light perceived and the plan does not stop
    # --- another planner mode (the chosen one failed geometric checks only) -----------------
    ALTERNATIVE_MODE = "ALTERNATIVE_MODE"  # a lower-scored candidate passes them: drive it
    LANE_PASS = "LANE_PASS"  # none does, a static blockage is flagged: pass in the next lane
    # --- creep (the planner's path at a crawl after a long hold) ------------------------------
    CREEP = "CREEP"  # held still by PATH_BLOCKED / TTC / LOW_CONFIDENCE too long: creep on
    UNSTICK = "UNSTICK"  # the planner itself stood too long, nothing perceived: creep on
    # --- speed cap (path kept, timing slowed) ----------------------------------------------
    STOPPING_DISTANCE = "STOPPING_DISTANCE"  # too fast to stop within sight (friction, fog)
    SPEED_CAP_CONSTRUCTION = "SPEED_CAP_CONSTRUCTION"  # construction flag
    SPEED_CAP_PEDESTRIAN = "SPEED_CAP_PEDESTRIAN"  # pedestrian-crossing flag
    # --- nothing to do ---------------------------------------------------------------------
    ACCEPTED = "ACCEPTED"  # the planner's trajectory passed every check, unchanged


SEVERITY: dict[ReasonCode, int] = {code: rank for rank, code in enumerate(ReasonCode)}

EMERGENCY_REASONS = frozenset(
    {
        ReasonCode.GUARD_ERROR,
        ReasonCode.MODEL_ERROR,
        ReasonCode.CAMERA_MISSING,
        ReasonCode.CAMERA_FROZEN,
        ReasonCode.NONFINITE_INPUT,
        ReasonCode.NONFINITE_PLAN,
        ReasonCode.FALLBACK_UNSAFE,
    }
)
RULES_REASONS = frozenset(
    {
        ReasonCode.VLM_ERROR,
        ReasonCode.VLM_TIMEOUT,
        ReasonCode.LOW_CONFIDENCE,
        ReasonCode.PATH_BLOCKED,
        ReasonCode.TTC,
        ReasonCode.RED_LIGHT,
    }
)
SPEED_CAP_REASONS = frozenset(
    {
        ReasonCode.STOPPING_DISTANCE,
        ReasonCode.SPEED_CAP_CONSTRUCTION,
        ReasonCode.SPEED_CAP_PEDESTRIAN,
    }
)


def by_severity(reasons: set[ReasonCode] | list[ReasonCode]) -> tuple[ReasonCode, ...]:
    """Distinct reasons, most severe first."""
    return tuple(sorted(set(reasons), key=SEVERITY.__getitem__))


def emergency_stop(num_poses: int) -> np.ndarray:
    """(T, 2) zeros: every pose at the ego, so the tracker's desired speed is 0 (full brake)."""
    return np.zeros((num_poses, 2))


@dataclass(frozen=True)
class GuardDecision:
    """The guard's output for one tick. Ego frame, metres, x forward, y left.

    trajectory: (T, 2) poses one every `GuardConfig.dt_s`, what the tracker follows.
    reason: the most severe entry of `reasons` (`ACCEPTED` when nothing failed).
    reasons: every failed check, most severe first; `(ACCEPTED,)` when nothing failed.
    fallback: what replaced the planner's trajectory (see the module docstring).
    detail: a short human-readable note ("static 18.5 m ahead", the rules' plan reason...).
    """

    trajectory: np.ndarray
    reason: ReasonCode
    reasons: tuple[ReasonCode, ...]
    fallback: Fallback
    detail: str = ""

    def __post_init__(self) -> None:
        traj = self.trajectory
        if not isinstance(traj, np.ndarray) or traj.ndim != 2 or traj.shape[1] != 2:
            got = traj.shape if isinstance(traj, np.ndarray) else type(traj).__name__
            raise ValueError(f"GuardDecision.trajectory must be (T, 2), got {got}")
        if not self.reasons or self.reasons[0] != self.reason:
            raise ValueError(
                f"GuardDecision.reasons must start with reason {self.reason!s}, got {self.reasons}"
            )
        if self.fallback not in FALLBACKS:
            raise ValueError(
                f"GuardDecision.fallback must be one of {FALLBACKS}, got {self.fallback!r}"
            )

    @property
    def intervened(self) -> bool:
        """True when the returned trajectory is not the planner's, unchanged."""
        return self.reason != ReasonCode.ACCEPTED
