"""The Leaderboard 2.0 minimum-speed criterion, backend-neutral, fed from GroundTruth.

Re-implements the behaviour of scenario_runner's `MinimumSpeedRouteTest` as the Leaderboard's
`RouteScenario` configures it (`checkpoints=4`):
- the route is split into `checkpoints` equal stretches by length; progress is the furthest
  route point the ego has passed (dot-product test over a window of the next 3 points);
- every tick, if any surrounding background vehicle exists, the ego speed and the mean
  speed of those vehicles are accumulated;
- when the ego has driven more than one stretch past the last checkpoint, the checkpoint's
  value is `round(100 * mean ego speed / mean traffic speed, 2)` [%] (100 when no traffic
  was seen); a value below 100 is an event, message "Average speed is X% of the surrounding
  traffic's one", `data["percentage"] = X`;
- at the end of the route one more checkpoint is taken if the ego passed 95 % of it.
"Surrounding" traffic: in CARLA, the Leaderboard's BackgroundActivity only keeps background
vehicles alive around the ego, so the test can average all of them. Our worlds keep traffic
everywhere, so only background vehicles within SURROUNDING_RADIUS_M count.
Every checkpoint value (events or not) stays in `checkpoint_values`, for Bench2Drive's
efficiency metric.
"""

from __future__ import annotations

import math

import numpy as np

from sim.ground_truth import GroundTruth, InfractionEvent
from sim.route import Route

MIN_SPEED_CHECKPOINTS = 4  # RouteScenario's MinimumSpeedRouteTest(checkpoints=4)
SURROUNDING_RADIUS_M = 50.0  # [m] ~ the radius BackgroundActivity keeps vehicles alive in
ROUTE_WINDOW = 2  # route points looked ahead per tick beyond the current one (WINDOWS_SIZE)
SUCCESS_PERCENTAGE = 100.0  # [%] checkpoint values below this are infractions
LAST_CHECKPOINT_FRACTION = 0.95  # the end-of-route checkpoint needs this much progress


class MinSpeedTest:
    """Feed `update(gt)` once per tick, then `terminate(gt)` once when the route ends."""

    def __init__(
        self,
        route: Route,
        checkpoints: int = MIN_SPEED_CHECKPOINTS,
        radius_m: float = SURROUNDING_RADIUS_M,
    ) -> None:
        if checkpoints < 1:
            raise ValueError(f"checkpoints must be >= 1, got {checkpoints}")
        if radius_m <= 0.0:
            raise ValueError(f"radius_m must be > 0, got {radius_m}")
        self._px = route.points[:, 0].tolist()
        self._py = route.points[:, 1].tolist()
        self._fx = np.cos(route.yaw).tolist()
        self._fy = np.sin(route.yaw).tolist()
        self._accum = route.s.tolist()
        self._n = len(self._accum)
        self._checkpoint_dist = self._accum[-1] / checkpoints
        self._radius2 = radius_m * radius_m
        self._index = 0
        self._current_dist = 0.0
        self._mean_speed = 0.0
        self._actor_speed = 0.0
        self._speed_points = 0
        self.checkpoint_values: list[float] = []  # [%] every checkpoint, events or not

    def update(self, gt: GroundTruth) -> list[InfractionEvent]:
        ego = gt.ego
        x, y = ego.x, ego.y
        for i in range(self._index, min(self._index + ROUTE_WINDOW + 1, self._n)):
            if (x - self._px[i]) * self._fx[i] + (y - self._py[i]) * self._fy[i] > 0.0:
                self._index = i
        events: list[InfractionEvent] = []
        if self._accum[self._index] - self._current_dist > self._checkpoint_dist:
            events += self._checkpoint(gt)
            self._current_dist = self._accum[self._index]
            self._mean_speed = 0.0
            self._actor_speed = 0.0
            self._speed_points = 0
        speeds = [
            abs(a.speed)
            for a in gt.actors
            if a.role == "background"
            and a.kind == "vehicle"
            and (a.x - x) ** 2 + (a.y - y) ** 2 <= self._radius2
        ]
        if speeds:
            self._mean_speed += sum(speeds) / len(speeds)
            self._actor_speed += abs(ego.speed)
            self._speed_points += 1
        return events

    def terminate(self, gt: GroundTruth) -> list[InfractionEvent]:
        """The last checkpoint, if the ego got far enough along the route to take it."""
        if self._accum[self._index] / self._accum[-1] > LAST_CHECKPOINT_FRACTION:
            return self._checkpoint(gt)
        return []

    def _checkpoint(self, gt: GroundTruth) -> list[InfractionEvent]:
        if self._speed_points > 0 and self._mean_speed:
            mean = self._mean_speed / self._speed_points
            actor = self._actor_speed / self._speed_points
            value = round(actor / mean * 100.0, 2)
        else:
            value = 100.0
        self.checkpoint_values.append(value)
        if value >= SUCCESS_PERCENTAGE or math.isnan(value):
            return []
        loc = (round(gt.ego.x, 3), round(gt.ego.y, 3), 0.0)
        return [
            InfractionEvent(
                kind="min_speed_infractions",
                message=f"Average speed is {value}% of the surrounding traffic's one",
                frame=gt.frame,
                time_s=gt.time_s,
                location=loc,
                data={"percentage": value},
            )
        ]
