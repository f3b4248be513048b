"""Short memory of the static obstacles that blocked the plan: a flicker of the BEV head
must not let the car advance into them.

    memory = BlockageMemory(memory_s=1.0)
    memory.advance(time_s, speed_mps)          # every tick, before the checks
    view = memory.apply(view)                  # the perceived view + what is remembered
    memory.remember(view, blocking, time_s)    # the static contacts that blocked the plan

Why. Behind a construction zone the static cells of the 4 m grid come and go from one tick
to the next (measured on construction_stalled_rain, suite_quick seed 0: the guard's
PATH_BLOCKED and ACCEPTED alternated every 1-4 ticks for minutes). Each accepted tick let
the planner's short creep plan (3-4 m over its 4 s) move the car a little; once the bumper
was inside a cell, the cell no longer counted (braking cannot avoid what already overlaps
the ego) and the next one was reached the same way. The car crawled through the board,
cones, barrier and debris at ~0.1 m/s: 8 layout collisions (the Leaderboard counts a
new one every 5 m or 5 s), DS 0.3 with a completed route. Over suite_quick seeds 0-2, the
four routes with layout collisions would have scored 46.8 instead of 41.7 on average had
the car stood at the first contact.

What is remembered: a static obstacle of the view that a check found on the chosen plan
within the hand-over distance (`SafetyGuard.trajectory_failures`' PATH_BLOCKED), as the box
the view gave it, ego frame. Ego motion: between ticks the ego drives its speedometer
speed x dt along the trajectory the guard handed the tracker on the last tick and turns to
its heading there (no yaw rate is measured; the tracker follows that trajectory closely at
the low speeds where this matters). An entry is refreshed when a
blocking obstacle is seen again within `MERGE_M` of it and forgotten `memory_s` after it
was last seen, so a false detection holds the car no longer than that. Pedestrians walk
and are not remembered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from agent.rules import ObstacleView
from agent.safety.contacts import Contact
from agent.safety.trajectory import pose_along, rotation

MERGE_M = 2.0  # [m] a blocking obstacle this close to a remembered one refreshes it (half a cell)
MAX_ENTRIES = 8  # remembered boxes; the oldest go first
REMEMBERED_ID = -1  # obstacle_id of remembered boxes in the view (no tracker id)


@dataclass
class _Entry:
    xy: np.ndarray  # (2,) [m] ego frame, moved with the ego every tick
    yaw: float  # [rad]
    size: np.ndarray  # (2,) [m] length, width
    seen_s: float  # [s] game time last seen blocking


class BlockageMemory:
    """Static boxes that blocked the plan, kept `memory_s` after they were last perceived
    (module docstring). `memory_s` 0 keeps nothing. One per route: `reset` between routes."""

    def __init__(self, memory_s: float) -> None:
        if not memory_s >= 0.0:
            raise ValueError(f"memory_s must be >= 0 s, got {memory_s}")
        self.memory_s = memory_s
        self._entries: list[_Entry] = []
        self._time_s: float | None = None

    def reset(self) -> None:
        self._entries.clear()
        self._time_s = None

    def __len__(self) -> int:
        return len(self._entries)

    def advance(
        self,
        time_s: float,
        speed_mps: float,
        path: np.ndarray | None = None,
        keep_s: float | None = None,
    ) -> None:
        """Move the remembered boxes by the ego's motion since the last tick and forget the
        ones not seen for `keep_s` (default `memory_s`).

        The ego drove speed x dt along `path` ((T, 2) ego frame of the last tick: what the
        guard handed the tracker then), turning to the path's heading there; without a path
        (or with a standing one), straight ahead."""
        if self._time_s is not None and math.isfinite(speed_mps) and self._entries:
            driven = max(speed_mps, 0.0) * max(time_s - self._time_s, 0.0)
            if driven > 0.0:
                offset, heading = pose_along(path, driven)
                to_new = rotation(-heading)
                for entry in self._entries:
                    entry.xy = to_new @ (entry.xy - offset)
                    entry.yaw -= heading
        self._time_s = time_s
        keep = self.memory_s if keep_s is None else keep_s
        self._entries = [e for e in self._entries if time_s - e.seen_s <= keep]

    def remember(self, view: ObstacleView, blocking: list[Contact], time_s: float) -> None:
        """Keep the static obstacles among `blocking` (contacts of the chosen plan with
        `view`'s obstacles) as of `time_s`."""
        if self.memory_s <= 0.0:
            return
        for contact in blocking:
            i = contact.obstacle
            if contact.kind != "static" or view.obstacle_id[i] == REMEMBERED_ID:
                continue  # a remembered box is refreshed only by a new sighting
            xy = np.array(view.obstacle_xy[i], dtype=np.float64)
            entry = _Entry(xy, float(view.obstacle_yaw[i]), np.array(view.obstacle_size[i]), time_s)
            near = [k for k, e in enumerate(self._entries) if np.hypot(*(e.xy - xy)) <= MERGE_M]
            if near:
                self._entries[near[0]] = entry
            else:
                self._entries.append(entry)
        self._entries = self._entries[-MAX_ENTRIES:]

    def apply(self, view: ObstacleView) -> ObstacleView:
        """`view` with the remembered boxes added as static obstacles, except those a
        static obstacle of the view already covers (within `MERGE_M`)."""
        if not self._entries:
            return view
        static = np.array([k == "static" for k in view.obstacle_kind], dtype=bool)
        current = view.obstacle_xy[static]
        extra = [
            e
            for e in self._entries
            if not len(current) or np.hypot(*(current - e.xy).T).min() > MERGE_M
        ]
        if not extra:
            return view
        n = len(extra)
        return replace(
            view,
            obstacle_xy=np.concatenate([view.obstacle_xy, np.stack([e.xy for e in extra])]),
            obstacle_yaw=np.concatenate([view.obstacle_yaw, [e.yaw for e in extra]]),
            obstacle_velocity=np.concatenate([view.obstacle_velocity, np.zeros((n, 2))]),
            obstacle_size=np.concatenate([view.obstacle_size, np.stack([e.size for e in extra])]),
            obstacle_kind=(*view.obstacle_kind, *("static",) * n),
            obstacle_id=np.concatenate([view.obstacle_id, np.full(n, REMEMBERED_ID)]),
            obstacle_scenario=np.concatenate([view.obstacle_scenario, np.zeros(n, bool)]),
        )


__all__ = ["MERGE_M", "REMEMBERED_ID", "BlockageMemory"]
