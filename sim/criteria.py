"""The Leaderboard 2.0 route criteria, backend-neutral.

Re-implements (not copies) the behaviour of scenario_runner's atomic criteria as the
Leaderboard 2.0 configures them for a route:
- CollisionTest: an event per collision, the same other actor ignored within 5 s,
  any collision within 5 m of the last one ignored, none while ego speed < 0.1 m/s;
  class from the other actor's CARLA type_id (static/traffic -> layout, vehicle, walker).
- RunningRedLightTest: the segment behind the ego's rear axle crossing a red light's
  stop line while driving with its lanes, within 15 m of the light; once per light.
- OutsideRouteLanesTest: metres of route progress driven off the driving lanes or
  against the route's direction (junctions excluded), as % of the completed route.
- InRouteTest: > 30 m from the route ends the route (also > 30 % of the route driven
  between 15 and 30 m away). RouteCompletionTest: % of route length passed; 100 once
  > 99 % and within 10 m of the end. ActorBlockedTest: < 0.1 m/s for 180 s ends it.
- RouteTimeoutBehavior: 300 s plus, per metre of progress, the time needed at 10 % of
  the speed limit; exceeding it ends the route.
The backend supplies the ego state, what lane it is on, the collisions of the tick and
the traffic lights; this class turns them into `InfractionEvent`s and a `RouteStatus`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.ground_truth import InfractionEvent, TrafficLightInfo, TrafficLightState
from sim.route import Route

COLLISION_RADIUS_M = 5.0
COLLISION_MAX_ID_TIME_S = 5.0
COLLISION_MIN_EGO_SPEED_MPS = 0.1
RED_LIGHT_DISTANCE_M = 15.0
OFFROAD_MAX_M = 30.0
OFFROAD_MIN_M = 15.0
MAX_OFFROAD_ROUTE_PERCENTAGE = 30.0
COMPLETION_DISTANCE_M = 10.0
COMPLETION_PERCENTAGE = 99.0
BLOCKED_MIN_SPEED_MPS = 0.1
BLOCKED_MAX_TIME_S = 180.0
TIMEOUT_MIN_S = 300.0
TIMEOUT_SPEED_FRACTION = 0.10
WRONG_LANE_ANGLE_DEG = 120.0


@dataclass(frozen=True)
class LaneQuery:
    """Where the ego is, as the backend's map sees it."""

    on_driving_lane: bool  # False on a sidewalk, shoulder or grass
    in_junction: bool
    lane_heading: float | None  # [rad] driving direction of the lane under the ego


@dataclass(frozen=True)
class Collision:
    other_id: int  # 0 for map geometry, like CARLA
    other_type_id: str
    other_xy: tuple[float, float]


@dataclass(frozen=True)
class RouteStatus:
    completion: float  # [%] route completion (RC)
    progress_m: float  # [m] along the route
    ended: bool
    failure: str | None  # e.g. "Agent deviated from the route"; None while fine/complete
    completed: bool  # reached the end (RC = 100)
    outside_lanes_m: float  # [m] route progress driven outside the route lanes
    outside_lanes_pct: float  # [%] of the completed route
    timeout_s: float  # [s] current route timeout
    elapsed_s: float  # [s] game time since the route started


def collision_kind(type_id: str) -> str | None:
    if ("static" in type_id or "traffic" in type_id) and "sidewalk" not in type_id:
        return "collisions_layout"
    if "vehicle" in type_id:
        return "collisions_vehicle"
    if "walker" in type_id:
        return "collisions_pedestrian"
    return None


def _segments_intersect(p1: np.ndarray, p2: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> bool:
    def orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    d1, d2 = orient(q1, q2, p1), orient(q1, q2, p2)
    d3, d4 = orient(p1, p2, q1), orient(p1, p2, q2)
    return (d1 * d2 <= 0.0) and (d3 * d4 <= 0.0)


def _loc(xy: np.ndarray | tuple[float, float]) -> tuple[float, float, float]:
    return (round(float(xy[0]), 3), round(float(xy[1]), 3), 0.0)


def _fmt(loc: tuple[float, float, float]) -> str:
    return f"(x={loc[0]}, y={loc[1]}, z={loc[2]})"


class RouteCriteria:
    def __init__(
        self,
        route: Route,
        speed_limit_mps: float,
        ego_half_length_m: float,
        timeout_s: float | None = None,
        oncoming_zones: tuple[tuple[float, float], ...] = (),
    ) -> None:
        self.route = route
        self.oncoming_zones = oncoming_zones
        self.speed_limit_mps = speed_limit_mps
        self.ego_half_length_m = ego_half_length_m
        self.fixed_timeout_s = timeout_s
        self.start_time_s: float | None = None
        n = len(route.points)
        # Per-tick checks touch only a handful of route points: plain floats beat numpy here.
        self._px = route.points[:, 0].tolist()
        self._py = route.points[:, 1].tolist()
        self._fx = np.cos(route.yaw).tolist()
        self._fy = np.sin(route.yaw).tolist()
        self._s = route.s.tolist()
        self._n = n
        self.completion_idx = 0
        self.deviation_idx = 0
        self.outside_idx = 0
        self.timeout_idx = 0
        self.completion = 0.0
        self.completed = False
        self.failure: str | None = None
        self.ended = False
        self.timeout_s = timeout_s if timeout_s is not None else TIMEOUT_MIN_S
        self.elapsed_s = 0.0
        self._offroad_m = 0.0
        self.outside_m = 0.0
        self.driven_m = 0.0
        self._last_collision_id: int | None = None
        self._last_collision_time = -math.inf
        self._last_collision_loc: np.ndarray | None = None
        self._last_red_light: int | None = None
        self._last_valid_time: float | None = None

    # -------------------------------------------------------------- per tick
    def update(
        self,
        frame: int,
        time_s: float,
        ego_xy: np.ndarray,
        ego_yaw: float,
        ego_speed: float,
        lane: LaneQuery,
        collisions: list[Collision],
        lights: list[TrafficLightInfo],
    ) -> list[InfractionEvent]:
        if self.ended:
            return []
        if self.start_time_s is None:
            self.start_time_s = time_s
        self.elapsed_s = time_s - self.start_time_s
        events: list[InfractionEvent] = []
        events += self._collisions(frame, time_s, ego_xy, ego_speed, collisions)
        events += self._red_lights(frame, time_s, ego_xy, ego_yaw, lights)
        self._outside_lanes(ego_xy, ego_yaw, lane)
        self._completion(ego_xy)
        events += self._deviation(frame, time_s, ego_xy)
        events += self._blocked(frame, time_s, ego_xy, ego_speed)
        events += self._timeout(frame, time_s, ego_xy)
        return events

    def _passed(self, ego_xy: np.ndarray, start: int, window: int) -> int:
        """Furthest route index in [start, start + window] the ego has passed."""
        idx = start
        x, y = float(ego_xy[0]), float(ego_xy[1])
        px, py, fx, fy = self._px, self._py, self._fx, self._fy
        for i in range(start, min(start + window + 1, self._n)):
            if (x - px[i]) * fx[i] + (y - py[i]) * fy[i] > 0.0:
                idx = i
        return idx

    def _collisions(self, frame, time_s, ego_xy, ego_speed, collisions) -> list[InfractionEvent]:
        events = []
        if (
            self._last_collision_loc is not None
            and math.dist(ego_xy, self._last_collision_loc) > COLLISION_RADIUS_M
        ):
            self._last_collision_loc = None
        if time_s - self._last_collision_time > COLLISION_MAX_ID_TIME_S:
            self._last_collision_id = None
        for c in collisions:
            if c.other_id != 0 and c.other_id == self._last_collision_id:
                continue
            if self._last_collision_loc is not None:
                continue
            if ego_speed < COLLISION_MIN_EGO_SPEED_MPS:
                continue
            kind = collision_kind(c.other_type_id)
            self._last_collision_time = time_s
            self._last_collision_loc = np.array(ego_xy, dtype=float)
            if c.other_id != 0:
                self._last_collision_id = c.other_id
            if kind is None:
                continue
            loc = _loc(ego_xy)
            events.append(
                InfractionEvent(
                    kind=kind,
                    frame=frame,
                    time_s=time_s,
                    location=loc,
                    actor_id=c.other_id,
                    message=f"Agent collided against object with type={c.other_type_id} and id={c.other_id} at {_fmt(loc)}",
                    data={"other_actor": c.other_id, "location": loc},
                )
            )
        return events

    def _red_lights(self, frame, time_s, ego_xy, ego_yaw, lights) -> list[InfractionEvent]:
        if not lights:
            return []
        fwd = np.array([math.cos(ego_yaw), math.sin(ego_yaw)])
        tail_close = ego_xy - fwd * 0.8 * self.ego_half_length_m
        tail_far = ego_xy - fwd * (self.ego_half_length_m + 1.0)
        events = []
        for light in lights:
            if light.id == self._last_red_light or light.state != TrafficLightState.Red:
                continue
            line = np.asarray(light.stop_line)
            centre = line.mean(axis=0)
            if np.linalg.norm(centre - ego_xy) > RED_LIGHT_DISTANCE_M:
                continue
            if math.cos(light.heading - ego_yaw) <= 0.0:
                continue
            if _segments_intersect(tail_close, tail_far, line[0], line[1]):
                self._last_red_light = light.id
                loc = _loc((light.x, light.y))
                events.append(
                    InfractionEvent(
                        kind="red_light",
                        frame=frame,
                        time_s=time_s,
                        location=loc,
                        actor_id=light.id,
                        message=f"Agent ran a red light {light.id} at {_fmt(loc)}",
                        data={"id": light.id, "location": loc},
                    )
                )
        return events

    def _outside_lanes(self, ego_xy, ego_yaw, lane: LaneQuery) -> None:
        idx = self._passed(ego_xy, self.outside_idx, 3)
        if idx == self.outside_idx:
            return
        step = self._s[idx] - self._s[self.outside_idx]
        self.outside_idx = idx
        self.driven_m += step
        wrong = False
        if not lane.in_junction and lane.lane_heading is not None:
            angle = abs(
                math.degrees(math.remainder(lane.lane_heading - self.route.yaw[idx], 2 * math.pi))
            )
            wrong = angle > WRONG_LANE_ANGLE_DEG
            if wrong and any(a <= self._s[idx] <= b for a, b in self.oncoming_zones):
                wrong = False  # a two-way scenario has switched the check off here
        outside = not lane.on_driving_lane and not lane.in_junction
        if outside or wrong:
            self.outside_m += step

    def _completion(self, ego_xy) -> None:
        self.completion_idx = self._passed(ego_xy, self.completion_idx, 2)
        self.completion = round(100.0 * self._s[self.completion_idx] / self._s[-1], 2)
        end_dist = math.hypot(ego_xy[0] - self._px[-1], ego_xy[1] - self._py[-1])
        if self.completion > COMPLETION_PERCENTAGE and end_dist < COMPLETION_DISTANCE_M:
            self.completion = 100.0
            self.completed = True
            self.ended = True

    def _deviation(self, frame, time_s, ego_xy) -> list[InfractionEvent]:
        lo, hi = self.deviation_idx, min(self.deviation_idx + 6, self._n)
        x, y = float(ego_xy[0]), float(ego_xy[1])
        closest, shortest = lo, math.inf
        for i in range(lo, hi):
            d = math.hypot(x - self._px[i], y - self._py[i])
            if d <= shortest:  # ties go to the later index, like the Leaderboard
                closest, shortest = i, d
        off_route = shortest >= OFFROAD_MAX_M
        if closest != self.deviation_idx:
            if shortest >= OFFROAD_MIN_M:
                self._offroad_m += self._s[closest] - self._s[self.deviation_idx]
                if 100.0 * self._offroad_m / self.route.length_m > MAX_OFFROAD_ROUTE_PERCENTAGE:
                    off_route = True
            self.deviation_idx = closest
        if not off_route:
            return []
        self._end("Agent deviated from the route")
        loc = _loc(ego_xy)
        return [
            InfractionEvent(
                kind="route_dev",
                frame=frame,
                time_s=time_s,
                location=loc,
                message=f"Agent deviated from the route at {_fmt(loc)}",
                data={"location": loc},
            )
        ]

    def _blocked(self, frame, time_s, ego_xy, ego_speed) -> list[InfractionEvent]:
        if ego_speed < BLOCKED_MIN_SPEED_MPS and self._last_valid_time is not None:
            if time_s - self._last_valid_time > BLOCKED_MAX_TIME_S:
                self._end("Agent got blocked")
                loc = _loc(ego_xy)
                return [
                    InfractionEvent(
                        kind="vehicle_blocked",
                        frame=frame,
                        time_s=time_s,
                        location=loc,
                        message=f"Agent got blocked at {_fmt(loc)}",
                        data={"location": loc},
                    )
                ]
        else:
            self._last_valid_time = time_s
        return []

    def _timeout(self, frame, time_s, ego_xy) -> list[InfractionEvent]:
        idx = self._passed(ego_xy, self.timeout_idx, 3)
        if idx > self.timeout_idx and self.fixed_timeout_s is None:
            gained = self._s[idx] - self._s[self.timeout_idx]
            self.timeout_s += gained / max(self.speed_limit_mps * TIMEOUT_SPEED_FRACTION, 1e-3)
        self.timeout_idx = idx
        if self.elapsed_s > self.timeout_s and not self.ended:
            self._end("Agent timed out")
            loc = _loc(ego_xy)
            return [
                InfractionEvent(
                    kind="route_timeout",
                    frame=frame,
                    time_s=time_s,
                    location=loc,
                    message="Route timeout.",
                )
            ]
        return []

    def _end(self, failure: str) -> None:
        if not self.ended:
            self.ended = True
            self.failure = failure

    # ---------------------------------------------------------------- status
    @property
    def progress_m(self) -> float:
        """[m] route progress (the completion criterion's index)."""
        return self._s[self.completion_idx]

    @property
    def status(self) -> RouteStatus:
        pct = 100.0 * self.outside_m / self.driven_m if self.driven_m > 0 else 0.0
        return RouteStatus(
            completion=self.completion,
            progress_m=float(self.route.s[self.completion_idx]),
            ended=self.ended,
            failure=self.failure,
            completed=self.completed,
            outside_lanes_m=self.outside_m,
            outside_lanes_pct=pct,
            timeout_s=self.timeout_s,
            elapsed_s=self.elapsed_s,
        )

    def outside_lanes_event(self, frame: int, time_s: float) -> InfractionEvent | None:
        """The Leaderboard's single outside-route-lanes event for the route, if any."""
        if self.outside_m <= 0.0:
            return None
        pct = self.status.outside_lanes_pct
        return InfractionEvent(
            kind="outside_route_lanes",
            frame=frame,
            time_s=time_s,
            location=None,  # route-wide: the distance outside over the whole route
            message=(
                f"Agent went outside its route lanes for about {round(self.outside_m, 3)} meters "
                f"({round(pct, 2)}% of the completed route)"
            ),
            data={"distance": round(self.outside_m, 3), "percentage": pct},
        )
