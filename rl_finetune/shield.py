"""The RL shield: the rule set with ground truth, checking the policy's trajectory every
policy step and overriding it with the rules' own plan when it is unsafe.

ARCHITECTURE.md, "the privileged rule set, used three ways": this is the third way. The
view is the simulator's ground truth (`agent.rules.view_from_ground_truth`), the planner
is the expert's (`agent.rules.RulePlanner`), and the geometry is theirs: obstacle
footprints (`RulePlanner.footprints`) projected onto a path (`RulePlanner.project`), and
the swept ego box of the safety guard (`agent.safety.contacts.swept_contacts`).

Checks of a trajectory (T, 2) [m], ego frame (x forward, y left), pose k at (k + 1) dt_s.
Each gives the time of the first violation (inf: none):
- `collision`: the ego box (widened by `margin_m` each side, front half plus
  `front_margin_m`, as the guard and the rules' corridor) touches an obstacle.
  Standing obstacles (speed < `still_mps`: props, parked or queued vehicles, waiting
  pedestrians) count wherever the swept box meets them (`swept_contacts`). Moving ones
  are predicted at constant velocity and count where the ego box at time t meets their
  footprint at time t, for t up to `prediction_horizon_s` (the rules' own horizon:
  beyond it constant velocity says little), sampled every `time_step_s`.
- `red_light`: the front bumper passes the stop line of a red light governing the route
  (the view's `lights`; lights the ego's front is already over are left alone).
- `outside_lanes`: the ego centre leaves the route's same-direction lanes (lane width x
  (0.5 + lanes on that side), `lane_margin_m` of slack; junctions: see `lane_edges`): the
  Leaderboard's outside-route-lanes / deviation criteria (oncoming lane or off the road).
- `nonfinite`: NaN / inf anywhere in the trajectory (any violation at time 0).

Override rule: the policy's trajectory is replaced by the rules' plan (resampled to the
action's T and dt) when one of its checks is violated *and the rules' plan does better on
it*: for `collision`, no contact or a strictly later first one (more time to brake); for
the others, no violation at all. Where the rules cannot avoid a hazard either (a
pedestrian stepping out in front of the bumper, a red light in the dilemma zone, an ego
already outside the lanes), overriding would not make the ego safer, so the policy keeps
the wheel and the reward's infraction terms do the teaching. Reasons, most severe first:
nonfinite, collision, red_light, outside_lanes. `override` lists the reasons the shield
acts on; a violation of any other check is reported but the policy keeps the wheel (e.g.
leave `outside_lanes` out so the policy learns lane keeping from the outside-lanes
penalty and the route-deviation termination, instead of leaning on a shield that the
evaluation does not have).

The rules plan every policy step by default (`plan_every_step`), so their state (how long
a vehicle has stood, a committed pass) stays as the expert's would; `False` plans only
when the policy fails a check (faster; the rules then start from stale state and are more
conservative: a stalled car counts as stalled only from that step on).

One `Shield` per route: `reset()` between episodes. It counts its interventions
(`interventions`, `by_reason`) since the last reset.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.rules import ObstacleView, Plan, RulePlanner, RulesConfig, view_from_ground_truth
from agent.rules.planner import DT_S as RULES_DT_S
from agent.safety.contacts import swept_contacts
from agent.safety.trajectory import arc_lengths, resample_in_time
from sim.ground_truth import TrafficLightState
from sim.protocol import Simulator

REASONS: tuple[str, ...] = ("nonfinite", "collision", "red_light", "outside_lanes")
STANDING_M = 1e-3  # [m] a trajectory covering less than this stands still
PATH_STEP_M = 0.5  # [m] resampling of the policy's path for projections


class ShieldConfig(BaseModel):
    """Thresholds of the shield, with units. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True  # False: checks still run and are reported, nothing is overridden
    dt_s: float = Field(0.5, gt=0.0)  # [s] between the action's poses (DrivingEnv default)
    margin_m: float = Field(0.4, ge=0.0)  # [m] each side of the ego box (= rules' corridor)
    pedestrian_margin_m: float = Field(0.4, ge=0.0)  # [m] more for moving pedestrians
    front_margin_m: float = Field(0.5, ge=0.0)  # [m] ahead of the front bumper, movers
    still_mps: float = Field(0.3, ge=0.0)  # [m/s] slower obstacles count as standing
    prediction_horizon_s: float = Field(3.0, gt=0.0)  # [s] movers are checked this far
    time_step_s: float = Field(0.1, gt=0.0)  # [s] sampling of the moving-obstacle check
    lane_margin_m: float = Field(0.3, ge=0.0)  # [m] the centre may pass a lane edge by this
    plan_every_step: bool = True  # see the module docstring
    override: tuple[str, ...] = REASONS  # the checks the shield overrides on (docstring)
    rules: dict[str, float] = Field(default_factory=dict)  # RulesConfig overrides

    @field_validator("override")
    @classmethod
    def _known_reasons(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [r for r in value if r not in REASONS]
        if unknown:
            raise ValueError(f"unknown reason(s) {unknown}; valid: {list(REASONS)}")
        return value


@dataclass(frozen=True)
class Violation:
    """The first violation of one check: `time_s` [s] into the trajectory, what it was."""

    reason: str  # one of REASONS
    time_s: float  # [s] 0 = now
    detail: str


@dataclass(frozen=True)
class ShieldDecision:
    """What to drive this step. Ego frame, metres, x forward, y left.

    trajectory: (T, 2) the policy's own trajectory, or the rules' plan when `intervened`.
    reason: "" or the REASONS code that made the shield intervene; detail: why, readable.
    violations: every check the policy's trajectory failed (intervened or not).
    plan: the rules' plan of this step (None when it was not needed).
    """

    trajectory: np.ndarray
    intervened: bool
    reason: str
    detail: str
    violations: tuple[Violation, ...]
    plan: Plan | None

    def __post_init__(self) -> None:
        if self.trajectory.ndim != 2 or self.trajectory.shape[1] != 2:
            raise ValueError(
                f"ShieldDecision.trajectory must be (T, 2), got {self.trajectory.shape}"
            )
        if self.reason not in ("", *REASONS):
            raise ValueError(
                f"ShieldDecision.reason must be '' or one of {REASONS}, got {self.reason!r}"
            )


class Shield:
    """The privileged rules as an RL shield (see the module docstring). One per route."""

    def __init__(self, config: ShieldConfig | None = None) -> None:
        self.config = config or ShieldConfig()
        self.rules = RulePlanner(RulesConfig.from_dict(dict(self.config.rules)))
        self.interventions = 0
        self.by_reason: Counter[str] = Counter()

    def reset(self) -> None:
        self.rules.reset()
        self.interventions = 0
        self.by_reason.clear()

    def check_simulator(self, trajectory: np.ndarray, sim: Simulator) -> ShieldDecision:
        """`check` with the view built from the simulator's ground truth right now."""
        gt = sim.ground_truth()
        view = view_from_ground_truth(gt, sim.route, sim.lane_layout(), sim.speed_limit_at)
        return self.check(trajectory, view, gt.time_s)

    def check(self, trajectory: np.ndarray, view: ObstacleView, time_s: float) -> ShieldDecision:
        """Check the policy's trajectory (T, 2) against the privileged `view` at game time
        `time_s` [s]; override it with the rules' plan when the module docstring says so."""
        cfg = self.config
        policy = np.asarray(trajectory, dtype=np.float64)
        if policy.ndim != 2 or policy.shape[1] != 2 or len(policy) == 0:
            raise ValueError(f"trajectory must be (T>=1, 2), got {policy.shape}")
        plan = self.rules.plan(view, time_s) if cfg.plan_every_step else None
        violations = self.violations(policy, view)
        if not violations:
            return ShieldDecision(policy, False, "", "", (), plan)
        if plan is None:
            plan = self.rules.plan(view, time_s)
        rules = resample_in_time(plan.trajectory, RULES_DT_S, cfg.dt_s, len(policy))
        rules_first = {v.reason: v.time_s for v in self.violations(rules, view)}
        worse = [
            v
            for v in violations
            if v.reason in cfg.override
            and (
                v.reason not in rules_first
                or (v.reason == "collision" and v.time_s < rules_first[v.reason])
            )
        ]
        if not worse or not cfg.enabled:
            return ShieldDecision(policy, False, "", "", violations, plan)
        first = min(worse, key=lambda v: REASONS.index(v.reason))
        self.interventions += 1
        self.by_reason[first.reason] += 1
        detail = f"{first.detail} -> rules: {plan.reason}"
        return ShieldDecision(rules, True, first.reason, detail, violations, plan)

    # ---------------------------------------------------------------- checks
    def violations(self, trajectory: np.ndarray, view: ObstacleView) -> tuple[Violation, ...]:
        """The first violation of every check the trajectory (T, 2) fails, by severity."""
        if not np.isfinite(trajectory).all():
            return (Violation("nonfinite", 0.0, "NaN/inf in the trajectory"),)
        found = [
            self._collision(trajectory, view),
            self._red_light(trajectory, view),
            self._outside_lanes(trajectory, view),
        ]
        return tuple(v for v in found if v is not None)

    def _collision(self, trajectory: np.ndarray, view: ObstacleView) -> Violation | None:
        cfg = self.config
        n = len(view.obstacle_kind)
        if n == 0:
            return None
        speed = np.linalg.norm(view.obstacle_velocity, axis=1)
        standing = speed < cfg.still_mps
        hits: list[tuple[float, str]] = []
        for c in swept_contacts(trajectory, cfg.dt_s, view, cfg.margin_m):
            if standing[c.obstacle]:
                hits.append(
                    (c.time_s, f"{c.kind} {c.ahead_m:.1f} m ahead, reached in {c.time_s:.1f} s")
                )
                break  # ordered by time: the first standing one is the one
        movers = np.nonzero(~standing)[0]
        if len(movers):
            hit = self._moving_contact(trajectory, view, movers)
            if hit is not None:
                hits.append(hit)
        if not hits:
            return None
        time_s, detail = min(hits)
        return Violation("collision", time_s, detail)

    def _moving_contact(
        self, trajectory: np.ndarray, view: ObstacleView, movers: np.ndarray
    ) -> tuple[float, str] | None:
        """First (time [s], detail) at which the ego box along the trajectory meets a moving
        obstacle predicted at constant velocity, or None."""
        cfg = self.config
        d = arc_lengths(trajectory)  # (T + 1,) ego centre distance at times k dt
        times = np.arange(
            cfg.time_step_s,
            min(cfg.prediction_horizon_s, cfg.dt_s * len(trajectory)) + 1e-9,
            cfg.time_step_s,
        )
        if not len(times):
            return None
        centre = np.interp(times, cfg.dt_s * np.arange(len(d)), d)  # (S,) [m]
        half_length, half_width = view.ego_size[0] / 2, view.ego_size[1] / 2
        # Movers that can come near the path at all: within its length plus the ego box
        # and their own size of the ego, at some sample time.
        velocity = view.obstacle_velocity[movers]  # (m, 2) [m/s]
        xy = view.obstacle_xy[movers][None] + times[:, None, None] * velocity[None]  # (S, m, 2)
        size = np.linalg.norm(view.obstacle_size[movers], axis=1) / 2
        near_m = float(d[-1]) + half_length + cfg.front_margin_m + 2.0 * half_width
        near = (np.linalg.norm(xy, axis=2) <= near_m + size[None]).any(axis=0)
        if not near.any():
            return None
        movers, velocity = movers[near], velocity[near]
        path, s = _path(trajectory, d)
        # Outline (corners, centre, edge midpoints) now, moved at constant velocity.
        outline = _outline(self.rules.footprints(view, movers))  # (m, 9, 2)
        pts = outline[None] + times[:, None, None, None] * velocity[None, :, None, :]
        S, m, p = pts.shape[:3]
        along, lateral = self.rules.project(path, s, pts.reshape(-1, 2))
        along, lateral = along.reshape(S, m, p), lateral.reshape(S, m, p)
        is_ped = np.array([view.obstacle_kind[i] == "pedestrian" for i in movers])
        reach = half_width + cfg.margin_m + np.where(is_ped, cfg.pedestrian_margin_m, 0.0)
        ahead = along - centre[:, None, None]
        inside = (
            (ahead >= 0.0)
            & (ahead <= half_length + cfg.front_margin_m)
            & (np.abs(lateral) <= reach[None, :, None])
        )
        touch = inside.any(axis=2)  # (S, m)
        if not touch.any():
            return None
        k, j = np.argwhere(touch)[0]  # first sample time, then the first obstacle
        i = int(movers[j])
        return (
            float(times[k]),
            f"moving {view.obstacle_kind[i]} (id {int(view.obstacle_id[i])}) met in {times[k]:.1f} s",
        )

    def _red_light(self, trajectory: np.ndarray, view: ObstacleView) -> Violation | None:
        half_length = view.ego_size[0] / 2
        reds = [dist for dist, state in view.lights if state == TrafficLightState.Red]
        reds = [dist for dist in reds if dist - half_length >= 0.0]
        if not reds:
            return None
        along, _ = self.rules.project(view.route_xy, view.route_s, trajectory)
        front = along + half_length  # (T,) [m] front bumper along the route
        for dist in sorted(reds):
            over = np.nonzero(front > dist)[0]
            if len(over):
                k = int(over[0])
                return Violation(
                    "red_light",
                    (k + 1) * self.config.dt_s,
                    f"runs the red light {dist - half_length:.0f} m ahead",
                )
        return None

    def _outside_lanes(self, trajectory: np.ndarray, view: ObstacleView) -> Violation | None:
        cfg = self.config
        along, lateral = self.rules.project(view.route_xy, view.route_s, trajectory)
        left_edge, right_edge = lane_edges(view)
        a = np.clip(along, view.route_s[0], view.route_s[-1])
        left = np.interp(a, view.route_s, left_edge)
        right = np.interp(a, view.route_s, right_edge)
        out = (lateral > left + cfg.lane_margin_m) | (lateral < -right - cfg.lane_margin_m)
        if not out.any():
            return None
        k = int(np.argmax(out))
        side = "left" if lateral[k] > 0 else "right"
        return Violation(
            "outside_lanes",
            (k + 1) * cfg.dt_s,
            f"leaves the route lanes to the {side} ({lateral[k]:+.1f} m) "
            f"in {(k + 1) * cfg.dt_s:.1f} s",
        )


def lane_edges(view: ObstacleView) -> tuple[np.ndarray, np.ndarray]:
    """(left (M,), right (M,)) [m] distances from the route centre line to the outer edges
    of its same-direction lanes. Inside junctions the layout has no lane counts
    (`sim.route.LaneLayout`), and the Leaderboard does not check lanes there either: a
    junction stretch gets the wider of the edges of the lanes it joins (the last point
    before it and the first after it), so a turn from or into the next lane is no
    violation while leaving the road is."""
    width = np.asarray(view.lane_width_m, dtype=np.float64)
    left = width * (0.5 + view.left_same)
    right = width * (0.5 + view.right_same)
    junction = (view.left_same == 0) & (view.right_same == 0) & ~view.left_opposite
    if junction.any() and not junction.all():
        idx = np.arange(len(width))
        known = np.nonzero(~junction)[0]
        before = known[np.clip(np.searchsorted(known, idx, side="right") - 1, 0, None)]
        after = known[np.clip(np.searchsorted(known, idx, side="left"), None, len(known) - 1)]
        left = np.where(junction, np.maximum(left[before], left[after]), left)
        right = np.where(junction, np.maximum(right[before], right[after]), right)
    return left, right


def _path(trajectory: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The path origin -> poses resampled every PATH_STEP_M: (points (P, 2), s (P,)); a
    standing trajectory is the ego's own heading (+x), like `swept_contacts`."""
    total = float(d[-1])
    if total < STANDING_M:
        return np.array([[0.0, 0.0], [PATH_STEP_M, 0.0]]), np.array([0.0, PATH_STEP_M])
    poses = np.concatenate([np.zeros((1, 2)), trajectory])
    s = np.unique(np.concatenate([np.arange(0.0, total, PATH_STEP_M), [total]]))
    return np.stack([np.interp(s, d, poses[:, 0]), np.interp(s, d, poses[:, 1])], axis=1), s


def _outline(footprint: np.ndarray) -> np.ndarray:
    """(n, 5, 2) corners [front-left, front-right, rear-left, rear-right] + centre from
    `RulePlanner.footprints` -> (n, 9, 2) with the four edge midpoints added, so a long
    obstacle across the path cannot slip between its corners and centre."""
    fl, fr, rl, rr = (footprint[:, i] for i in range(4))
    mids = np.stack([(fl + fr) / 2, (rl + rr) / 2, (fl + rl) / 2, (fr + rr) / 2], axis=1)
    return np.concatenate([footprint, mids], axis=1)


__all__ = ["REASONS", "Shield", "ShieldConfig", "ShieldDecision", "Violation", "lane_edges"]
