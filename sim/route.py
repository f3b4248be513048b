"""Routes in the Leaderboard's shapes, shared by every backend.

A `Route` is the dense path the ego must follow (~1 m spacing, like the Leaderboard's
`interpolate_trajectory(hop_resolution=1.0)`) with a RoadOption per point. The agent gets
the Leaderboard's downsampled global plan (`downsample_route(route, 200)`), both as GPS
dicts and as world transforms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.control import RoadOption
from sim.geometry import GeoReference, Transform

LEADERBOARD_SAMPLE_FACTOR_M = 200.0  # `AutonomousAgent.set_global_plan` downsampling [m]
_LANE_CHANGE_OPTIONS = (RoadOption.CHANGELANELEFT, RoadOption.CHANGELANERIGHT)


def downsample_route(points: np.ndarray, options: np.ndarray, sample_factor: float) -> list[int]:
    """Indices the Leaderboard keeps: lane changes, option transitions, a point every
    `sample_factor` metres, and the last point (the first is an option transition)."""
    keep: list[int] = []
    prev: int | None = None
    dist = 0.0
    n = len(points)
    for i in range(n):
        curr = int(options[i])
        if curr in _LANE_CHANGE_OPTIONS:
            keep.append(i)
            dist = 0.0
        elif prev != curr and prev not in _LANE_CHANGE_OPTIONS:
            keep.append(i)
            dist = 0.0
        elif dist > sample_factor:
            keep.append(i)
            dist = 0.0
        elif i == n - 1:
            keep.append(i)
            dist = 0.0
        else:
            dist += float(np.linalg.norm(points[i] - points[i - 1]))
        prev = curr
    return keep


@dataclass(frozen=True)
class Route:
    """Dense route. `points` (N, 2) [m] world, `yaw` (N,) [rad], `options` (N,) RoadOption."""

    points: np.ndarray
    yaw: np.ndarray
    options: np.ndarray
    geo: GeoReference
    lane_ids: np.ndarray  # (N,) lane under each point (-1 while changing lanes)

    def __post_init__(self) -> None:
        n = len(self.points)
        if self.points.shape != (n, 2) or n < 2:
            raise ValueError(f"Route.points must be (N>=2, 2), got {self.points.shape}")
        for name in ("yaw", "options", "lane_ids"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"Route.{name} must be ({n},), got {getattr(self, name).shape}")
        seg = np.linalg.norm(np.diff(self.points, axis=0), axis=1)
        object.__setattr__(self, "s", np.concatenate([[0.0], np.cumsum(seg)]))

    s: np.ndarray = None  # type: ignore[assignment]  # (N,) cumulative length [m], set above

    @property
    def length_m(self) -> float:
        return float(self.s[-1])

    def transform(self, i: int) -> Transform:
        return Transform.from_xy_yaw(
            self.points[i, 0], self.points[i, 1], math.degrees(self.yaw[i])
        )

    def dense(self) -> list[tuple[Transform, RoadOption]]:
        """`[(transform, RoadOption)]` at every point, like the Leaderboard's route."""
        return [
            (self.transform(i), RoadOption(int(self.options[i]))) for i in range(len(self.points))
        ]

    def global_plan(
        self, sample_factor: float = LEADERBOARD_SAMPLE_FACTOR_M
    ) -> tuple[list[tuple[dict, RoadOption]], list[tuple[Transform, RoadOption]]]:
        """(`global_plan_gps`, `global_plan_world_coord`) as the Leaderboard hands them over."""
        keep = downsample_route(self.points, self.options, sample_factor)
        gps, world = [], []
        for i in keep:
            lat, lon, z = self.geo.to_gps(self.points[i, 0], self.points[i, 1], 0.0)
            option = RoadOption(int(self.options[i]))
            gps.append(({"lat": lat, "lon": lon, "z": z}, option))
            world.append((self.transform(i), option))
        return gps, world

    def point_at(self, s_m: float) -> np.ndarray:
        s_m = min(max(s_m, 0.0), self.length_m)
        return np.array(
            [np.interp(s_m, self.s, self.points[:, 0]), np.interp(s_m, self.s, self.points[:, 1])]
        )

    def yaw_at(self, s_m: float) -> float:
        i = int(np.clip(np.searchsorted(self.s, s_m), 0, len(self.s) - 1))
        return float(self.yaw[i])


@dataclass(frozen=True)
class LaneLayout:
    """The lateral room beside the route, per dense route point (arrays of length N).

    The rules module plans passes from this: how many same-direction lanes lie left and
    right of the route lane, and whether an oncoming lane lies directly left (a two-way
    road). Inside junctions all counts are 0 and `left_opposite` is False (no passing).
    """

    width_m: np.ndarray  # (N,) [m] width of the route lane
    left_same: np.ndarray  # (N,) int, same-direction lanes to the left
    right_same: np.ndarray  # (N,) int, same-direction lanes to the right
    left_opposite: np.ndarray  # (N,) bool, an oncoming lane directly left of the leftmost lane

    def __post_init__(self) -> None:
        n = len(self.width_m)
        for name in ("width_m", "left_same", "right_same", "left_opposite"):
            if np.shape(getattr(self, name)) != (n,):
                raise ValueError(
                    f"LaneLayout.{name} must be ({n},), got {np.shape(getattr(self, name))}"
                )
