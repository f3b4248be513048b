"""Where the ego's box, swept along a planned trajectory, first touches an obstacle.

The swept region is the corridor of half-width `ego width / 2 + margin` around the path
(origin -> poses), from the ego's centre to its front bumper at the path's end. The part
behind the ego's centre is left out: something touching the rear (a tailgater) is not in
the plan's way. Obstacles are taken where they are now: the perceived ones have no
velocity (`agent.safety.perception_view`).

The geometry is the rule set's, not a second copy: obstacle footprints as corners + centre
(`RulePlanner.footprints`) projected onto the path (`RulePlanner.project`), exactly how
the rules decide what lies in their own corridor. Both are stateless helpers of the
planner class, used through one module-level instance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.rules import ObstacleView, RulePlanner
from agent.safety.trajectory import arc_lengths

PATH_STEP_M = 0.5  # [m] the path is resampled this finely for the projection...
MAX_PATH_SAMPLES = 400  # ...but never into more points (bounded work for absurd plans)
STANDING_M = 1e-3  # [m] a plan covering less than this stands still
SAMPLE_MERGE_M = 1e-6  # [m] path samples closer than this to the path's end are dropped

_RULES_GEOMETRY = RulePlanner()  # only its stateless geometry helpers are used


@dataclass(frozen=True)
class Contact:
    """First touch between the swept ego box and one obstacle of the view."""

    obstacle: int  # index into the view's obstacle arrays
    kind: str  # the obstacle's kind (agent.rules.view.KINDS)
    time_s: float  # [s] when the ego's front reaches it along the plan
    ahead_m: float  # [m] along the path from the ego's centre to its nearest point


def swept_contacts(
    trajectory: np.ndarray,
    dt_s: float,
    view: ObstacleView,
    margin_m: float,
    standoff_m: float = 0.0,
    standoff_kinds: tuple[str, ...] = (),
) -> list[Contact]:
    """Contacts of the plan (T, 2) [m] (pose k at (k + 1) * dt_s) with the view's
    obstacles, ordered by time. `margin_m` [m] widens the ego box on each side;
    `standoff_m` [m] lengthens it ahead of the front bumper at the path's end, for the
    obstacles of `standoff_kinds` only (a plan that stops closer than that to one of them
    touches it; its contact time is then inf when the bumper itself never gets there). A
    plan that stands has no standoff: it keeps whatever distance it has."""
    n = len(view.obstacle_kind)
    if n == 0:
        return []
    d = arc_lengths(trajectory)
    total = float(d[-1])
    poses = np.concatenate([np.zeros((1, 2)), trajectory])
    if total < STANDING_M:  # standing: the ego's own box, facing +x
        s = np.array([0.0, PATH_STEP_M])
        path = np.array([[0.0, 0.0], [PATH_STEP_M, 0.0]])
        total = 0.0
        standoff_m = 0.0  # a plan that stands keeps whatever distance it has
    else:
        step = max(PATH_STEP_M, total / MAX_PATH_SAMPLES)
        # The samples end exactly at the path's end. A sample that float noise puts a hair
        # short of it (a path of exactly 6 m: arange's 6.0 and total 6.0000001) would make
        # a last segment of ~1e-7 m whose direction is noise, and every obstacle point
        # beyond the end would be projected onto that random direction (lateral ~0: a
        # phantom contact). Samples within SAMPLE_MERGE_M of the end are dropped.
        s = np.arange(0.0, total, step)
        s = np.concatenate([s[s < total - SAMPLE_MERGE_M], [total]])
        path = np.stack([np.interp(s, d, poses[:, 0]), np.interp(s, d, poses[:, 1])], axis=1)
    points = _RULES_GEOMETRY.footprints(view, np.arange(n))  # (n, 5, 2)
    along, lateral = _RULES_GEOMETRY.project(path, s, points.reshape(-1, 2))
    along, lateral = along.reshape(n, -1), lateral.reshape(n, -1)
    half_length, half_width = view.ego_size[0] / 2, view.ego_size[1] / 2
    reach = np.full((n, 1), total + half_length)  # how far ahead the swept box reaches
    if standoff_m > 0.0 and standoff_kinds:
        reach[np.isin(view.obstacle_kind, standoff_kinds)] += standoff_m
    inside = (along >= 0.0) & (along <= reach) & (np.abs(lateral) <= half_width + margin_m)
    contacts = []
    for i in np.nonzero(inside.any(axis=1))[0]:
        near = float(along[i][inside[i]].min())
        centre_at = max(near - half_length, 0.0)  # ego centre travel when its front touches
        contacts.append(Contact(int(i), view.obstacle_kind[i], _time_at(d, dt_s, centre_at), near))
    return sorted(contacts, key=lambda c: c.time_s)


def _time_at(d: np.ndarray, dt_s: float, distance_m: float) -> float:
    """[s] when the plan with cumulative distances `d` (T + 1,) first covers distance_m."""
    k = int(np.searchsorted(d, distance_m, side="left"))
    if k == 0:
        return 0.0
    if k >= len(d):
        return float("inf")
    return (k - 1 + (distance_m - d[k - 1]) / (d[k] - d[k - 1])) * dt_s
