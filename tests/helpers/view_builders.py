"""Hand-built obstacle views for tests of the rule set and its users (expert, guard,
shield): a straight road along +x in the ego frame, obstacles given as small dicts."""

from __future__ import annotations

import numpy as np

from agent.rules import ObstacleView

LANE_M = 3.5  # [m]
LIMIT_MPS = 13.9  # [m/s] 50 km/h


def straight_road_view(
    speed: float = 10.0,
    obstacles: list[dict] | None = None,
    lights: tuple = (),
    left_same: int = 1,
    right_same: int = 0,
    left_opposite: bool = False,
    friction: float = 0.9,
    visibility: float = 10_000.0,
    progress: float = 50.0,
    length_m: float = 100.0,
) -> ObstacleView:
    """Obstacle dicts: `xy` (m), `yaw` (rad), `v` (m/s, 2-vector), `size` (length, width),
    `kind` (default vehicle); ids start at 10."""
    s = np.arange(0.0, length_m, 1.0)
    m = len(s)
    obstacles = obstacles or []
    n = len(obstacles)

    def col(key: str, default, shape=None):
        arr = np.array([o.get(key, default) for o in obstacles], dtype=float)
        return arr.reshape(shape) if shape else arr

    return ObstacleView(
        speed_mps=speed,
        progress_m=progress,
        lateral_offset_m=0.0,
        route_xy=np.stack([s, np.zeros(m)], axis=1),
        route_s=s,
        lane_width_m=np.full(m, LANE_M),
        left_same=np.full(m, left_same),
        right_same=np.full(m, right_same),
        left_opposite=np.full(m, left_opposite),
        speed_limit_mps=np.full(m, LIMIT_MPS),
        obstacle_xy=col("xy", (0.0, 0.0), (n, 2)),
        obstacle_yaw=col("yaw", 0.0),
        obstacle_velocity=col("v", (0.0, 0.0), (n, 2)),
        obstacle_size=np.array([o.get("size", (4.6, 1.9)) for o in obstacles], float).reshape(n, 2),
        obstacle_kind=tuple(o.get("kind", "vehicle") for o in obstacles),
        obstacle_id=np.arange(n, dtype=np.int64) + 10,
        obstacle_scenario=np.zeros(n, bool),
        lights=lights,
        friction=friction,
        visibility_m=visibility,
        ego_size=(4.89, 2.12),
        route_remaining_m=400.0,
    )
