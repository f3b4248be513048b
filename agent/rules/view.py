"""The obstacle view: everything the rule set plans from, in the ego frame.

One type, three sources (ARCHITECTURE.md, "the privileged rule set"): the simulator's
ground truth (the expert and the RL shield, `view_from_ground_truth`) or the model's own
perception head (the safety fallback). Frames: ego frame, metres, x forward, y left;
headings left-positive; the route ahead is resampled every `ROUTE_STEP_M` from the ego's
projection onto it (so `route_s[0] == 0`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.geometry import world_to_ego
from sim.ground_truth import GroundTruth, TrafficLightState
from sim.route import LaneLayout, Route

ROUTE_STEP_M = 1.0  # [m] spacing of the route ahead
ROUTE_BEHIND_M = 10.0  # [m] how far back the ego's projection is searched
OBSTACLE_RANGE_M = (
    140.0  # [m] obstacles farther than this are left out (oncoming passes need ~10 s of view)
)
LIGHT_RANGE_M = 70.0  # [m] traffic lights farther along the route are left out
LIGHT_HEADING_COS = 0.7  # [-] a light governs the route if its lanes point along it

KINDS = ("vehicle", "pedestrian", "static")


@dataclass(frozen=True)
class ObstacleView:
    """Route ahead, lateral room, obstacles, lights and road conditions, ego frame.

    Route arrays have length M, obstacle arrays length N. `lights` holds
    (distance along the route to the stop line [m], TrafficLightState) of the lights that
    govern the route ahead, nearest first.
    """

    speed_mps: float  # [m/s] ego speed
    progress_m: float  # [m] route distance of the ego's projection (absolute)
    lateral_offset_m: float  # [m] ego's offset left of the route centre line
    route_xy: np.ndarray  # (M, 2) [m] route centre line ahead
    route_s: np.ndarray  # (M,) [m] distance along the route from the ego's projection
    lane_width_m: np.ndarray  # (M,) [m]
    left_same: np.ndarray  # (M,) int: same-direction lanes to the left
    right_same: np.ndarray  # (M,) int: same-direction lanes to the right
    left_opposite: np.ndarray  # (M,) bool: an oncoming lane directly left
    speed_limit_mps: np.ndarray  # (M,) [m/s]
    obstacle_xy: np.ndarray  # (N, 2) [m] centres
    obstacle_yaw: np.ndarray  # (N,) [rad] heading, left-positive, 0 = along the ego
    obstacle_velocity: np.ndarray  # (N, 2) [m/s]
    obstacle_size: np.ndarray  # (N, 2) [m] length, width
    obstacle_kind: tuple[str, ...]  # (N,) one of KINDS
    obstacle_id: np.ndarray  # (N,) int, stable across ticks when the source tracks them
    obstacle_scenario: np.ndarray  # (N,) bool: placed by the scenario (props, scripted actors)
    lights: tuple[tuple[float, TrafficLightState], ...]
    friction: float  # [-] tyre-road friction coefficient
    visibility_m: float  # [m]
    ego_size: tuple[float, float]  # [m] length, width
    route_remaining_m: float  # [m] to the end of the route

    def __post_init__(self) -> None:
        m = len(self.route_s)
        if self.route_xy.shape != (m, 2) or m < 2:
            raise ValueError(f"ObstacleView.route_xy must be (M>=2, 2), got {self.route_xy.shape}")
        for name in ("lane_width_m", "left_same", "right_same", "left_opposite", "speed_limit_mps"):
            if np.shape(getattr(self, name)) != (m,):
                raise ValueError(
                    f"ObstacleView.{name} must be ({m},), got {np.shape(getattr(self, name))}"
                )
        n = len(self.obstacle_kind)
        shapes = {
            "obstacle_xy": (n, 2),
            "obstacle_yaw": (n,),
            "obstacle_velocity": (n, 2),
            "obstacle_size": (n, 2),
            "obstacle_id": (n,),
            "obstacle_scenario": (n,),
        }
        for name, shape in shapes.items():
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(
                    f"ObstacleView.{name} must be {shape}, got {np.shape(getattr(self, name))}"
                )
        bad = [k for k in self.obstacle_kind if k not in KINDS]
        if bad:
            raise ValueError(f"ObstacleView.obstacle_kind: unknown kinds {bad}; valid: {KINDS}")


def view_from_ground_truth(
    gt: GroundTruth,
    route: Route,
    layout: LaneLayout,
    speed_limit_at=None,
    horizon_m: float = 140.0,
) -> ObstacleView:
    """The privileged view: ground truth of the simulator, for the expert and the shield.

    `speed_limit_at(route_s_m) -> m/s` gives the limit along the route (scenario speed zones);
    without it the ground truth's current limit holds for the whole horizon.
    """
    ego = gt.ego
    ego_xy = np.array([ego.x, ego.y])
    # The ego's projection onto the route near its reported progress.
    lo = int(np.searchsorted(route.s, gt.route_progress_m - ROUTE_BEHIND_M))
    hi = int(np.searchsorted(route.s, gt.route_progress_m + ROUTE_BEHIND_M + 5.0)) + 1
    lo, hi = max(lo, 0), min(max(hi, lo + 2), len(route.s))
    seg_a, seg_b = route.points[lo : hi - 1], route.points[lo + 1 : hi]
    d = seg_b - seg_a
    length2 = np.maximum((d * d).sum(axis=1), 1e-9)
    t = np.clip(((ego_xy - seg_a) * d).sum(axis=1) / length2, 0.0, 1.0)
    foot = seg_a + t[:, None] * d
    k = int(np.argmin(np.linalg.norm(foot - ego_xy, axis=1)))
    s0 = float(route.s[lo + k] + t[k] * math.sqrt(length2[k]))
    s_abs = np.arange(s0, min(s0 + horizon_m, route.length_m) + 1e-6, ROUTE_STEP_M)
    if len(s_abs) < 2:
        s_abs = np.array([s0, s0 + ROUTE_STEP_M])
    world = np.stack(
        [
            np.interp(s_abs, route.s, route.points[:, 0]),
            np.interp(s_abs, route.s, route.points[:, 1]),
        ],
        axis=1,
    )
    # Past the route's end the path carries straight on (the ego must not stop short).
    beyond = s_abs > route.length_m
    if beyond.any():
        end_dir = np.array([math.cos(route.yaw[-1]), math.sin(route.yaw[-1])])
        world[beyond] = route.points[-1] + np.outer(s_abs[beyond] - route.length_m, end_dir)
    route_xy = world_to_ego(world, ego_xy, ego.yaw)
    idx = np.clip(np.searchsorted(route.s, s_abs), 0, len(route.s) - 1)
    tangent = route_xy[1] - route_xy[0]
    normal_left = np.array([-tangent[1], tangent[0]]) / max(float(np.linalg.norm(tangent)), 1e-9)
    lateral = float(-(route_xy[0] @ normal_left))
    if speed_limit_at is None:
        limits = np.full(len(s_abs), gt.speed_limit_mps)
    else:
        limits = np.array([speed_limit_at(float(s)) for s in s_abs])

    actors = [
        a for a in gt.actors + gt.props if math.hypot(a.x - ego.x, a.y - ego.y) < OBSTACLE_RANGE_M
    ]
    n = len(actors)
    if n:
        xy_w = np.array([[a.x, a.y] for a in actors])
        vel_w = np.array([a.velocity for a in actors])
        xy = world_to_ego(xy_w, ego_xy, ego.yaw)
        vel = world_to_ego(xy_w + vel_w, ego_xy, ego.yaw) - xy
        yaw = -np.array([a.yaw - ego.yaw for a in actors])
        yaw = (yaw + np.pi) % (2 * np.pi) - np.pi
        size = np.array([[a.size[0], a.size[1]] for a in actors])
        ids = np.array([a.id for a in actors], np.int64)
        scripted = np.array([a.role == "scenario" for a in actors], bool)
    else:
        xy, vel, size = np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2))
        yaw, ids, scripted = np.zeros(0), np.zeros(0, np.int64), np.zeros(0, bool)

    lights = []
    for light in gt.traffic_lights:
        line = np.asarray(light.stop_line)
        centre = line.mean(axis=0)
        if math.hypot(centre[0] - ego.x, centre[1] - ego.y) > LIGHT_RANGE_M + 10.0:
            continue
        # The stop line governs the route where the route crosses it driving with its lanes.
        local = world_to_ego(line, ego_xy, ego.yaw)
        hit = _crossing_s(route_xy, s_abs - s0, local[0], local[1])
        if hit is None or not 0.0 <= hit <= LIGHT_RANGE_M:
            continue
        j = int(np.clip(np.searchsorted(s_abs - s0, hit), 0, len(s_abs) - 1))
        if math.cos(light.heading - route.yaw[idx[j]]) < LIGHT_HEADING_COS:
            continue
        lights.append((hit, light.state))
    lights.sort(key=lambda item: item[0])

    return ObstacleView(
        speed_mps=float(ego.speed),
        progress_m=s0,
        lateral_offset_m=lateral,
        route_xy=route_xy,
        route_s=s_abs - s0,
        lane_width_m=layout.width_m[idx].astype(float),
        left_same=layout.left_same[idx].astype(np.int64),
        right_same=layout.right_same[idx].astype(np.int64),
        left_opposite=layout.left_opposite[idx].astype(bool),
        speed_limit_mps=limits,
        obstacle_xy=xy,
        obstacle_yaw=yaw,
        obstacle_velocity=vel,
        obstacle_size=size,
        obstacle_kind=tuple(a.kind for a in actors),
        obstacle_id=ids,
        obstacle_scenario=scripted,
        lights=tuple(lights),
        friction=float(gt.friction),
        visibility_m=float(gt.weather.visibility_m),
        ego_size=(float(ego.size[0]), float(ego.size[1])),
        route_remaining_m=float(route.length_m - s0),
    )


def _crossing_s(path: np.ndarray, s: np.ndarray, a: np.ndarray, b: np.ndarray) -> float | None:
    """Distance along `path` where it crosses segment a-b, or None."""
    p, q = path[:-1], path[1:]
    r = q - p
    e = b - a
    denom = r[:, 0] * e[1] - r[:, 1] * e[0]
    ok = np.abs(denom) > 1e-9
    ap = a - p
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (ap[:, 0] * e[1] - ap[:, 1] * e[0]) / denom
        u = (ap[:, 0] * r[:, 1] - ap[:, 1] * r[:, 0]) / denom
    hit = ok & (t >= 0.0) & (t <= 1.0) & (u >= 0.0) & (u <= 1.0)
    if not hit.any():
        return None
    i = int(np.argmax(hit))
    return float(s[i] + t[i] * (s[i + 1] - s[i]))
