"""Route following from sensor data only: the Leaderboard global plan, GNSS and compass.

What a Leaderboard agent has at inference (no ground truth): `set_global_plan` hands it
the sparse `[(gps_dict, RoadOption)]` plan, and every tick brings GNSS `[lat, lon, alt]`
and the IMU compass. `RoutePlanner` keeps the waypoints still ahead and gives the target
point (the next waypoint, ego frame) and its command, the TransFuser++ convention:
waypoints the ego has come within `min_distance_m` of are popped (at least one is kept);
the target is the first remaining one.

GPS is converted to metres with a `GeoReference` at the plan's first waypoint: the agent
does not know the map's geo reference, and the Mercator scale of a reference a few
hundred metres away differs by a negligible amount (cm over a route), since the ego and
the waypoints go through the same conversion.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.env import command_index
from sim.geometry import GeoReference, compass_to_yaw, world_to_ego


@dataclass(frozen=True)
class Navigation:
    """Where to go next, in the ego frame (metres, x forward, y left)."""

    target_point: np.ndarray  # (2,) float32 [m] the first waypoint still ahead
    command: int  # sim.env.command_index of the target waypoint's RoadOption
    next_target_point: np.ndarray  # (2,) float32 [m] the waypoint after (or the target again)

    def __post_init__(self) -> None:
        for name in ("target_point", "next_target_point"):
            value = getattr(self, name)
            if np.shape(value) != (2,):
                raise ValueError(f"Navigation.{name} must be (2,), got {np.shape(value)}")


def road_option_value(option: Any) -> int:
    """Integer value of a RoadOption: ours (IntEnum), a plain int, or CARLA's
    `agents.navigation.local_planner.RoadOption` (an Enum whose `.value` is the int)."""
    if isinstance(option, bool):
        raise ValueError(f"a RoadOption must be an int or RoadOption, got {option!r}")
    if isinstance(option, int):
        return int(option)
    value = getattr(option, "value", option)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"cannot read a RoadOption from {option!r}") from None


class RoutePlanner:
    """Keeps the global plan's waypoints still ahead of the ego (see the module docstring).

    Stateful: one planner per route; call `set_route` before the first `update`.
    """

    def __init__(self, min_distance_m: float = 7.5, max_distance_m: float = 50.0) -> None:
        if not min_distance_m > 0.0:
            raise ValueError(f"`min_distance_m` must be > 0, got {min_distance_m}")
        if not max_distance_m >= min_distance_m:
            raise ValueError(
                f"`max_distance_m` must be >= min_distance_m ({min_distance_m}), "
                f"got {max_distance_m}"
            )
        self.min_distance_m = float(min_distance_m)  # [m] a waypoint this close is reached
        self.max_distance_m = float(max_distance_m)  # [m] route length searched for it
        self.geo: GeoReference | None = None
        self._route: deque[tuple[np.ndarray, int]] = deque()
        self._yaw = 0.0  # [rad] last valid heading (CARLA's compass can be NaN)

    def set_route(self, global_plan_gps: list[tuple[dict, Any]]) -> None:
        """The Leaderboard's `[(gps_dict {"lat", "lon", "z"}, RoadOption), ...]`."""
        if len(global_plan_gps) == 0:
            raise ValueError("`global_plan_gps` is empty: a route needs at least one waypoint")
        first = global_plan_gps[0][0]
        self.geo = GeoReference(lat_ref=float(first["lat"]), lon_ref=float(first["lon"]))
        self._route = deque()
        for i, (gps, option) in enumerate(global_plan_gps):
            try:
                lat, lon = float(gps["lat"]), float(gps["lon"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(
                    f"`global_plan_gps[{i}]` must be ({{'lat', 'lon', 'z'}}, RoadOption), "
                    f"got {gps!r}"
                ) from None
            x, y, _ = self.geo.from_gps(lat, lon)
            self._route.append((np.array([x, y]), road_option_value(option)))

    @property
    def remaining(self) -> int:
        """Waypoints still ahead (the target included)."""
        return len(self._route)

    def position(self, gnss: np.ndarray) -> np.ndarray:
        """(2,) [m] the GNSS fix in the planner's local metric frame (CARLA's axes)."""
        if self.geo is None:
            raise RuntimeError("RoutePlanner.update() before set_route()")
        gnss = np.asarray(gnss, dtype=np.float64)
        if gnss.shape[0] < 2:
            raise ValueError(f"`gnss` must be [lat, lon, alt], got shape {gnss.shape}")
        x, y, _ = self.geo.from_gps(float(gnss[0]), float(gnss[1]))
        return np.array([x, y])

    def update(self, gnss: np.ndarray, compass_rad: float) -> Navigation:
        """Pop reached waypoints and return the target in the ego frame."""
        ego = self.position(gnss)
        if math.isfinite(compass_rad):
            self._yaw = compass_to_yaw(float(compass_rad))
        self._pop_reached(ego)
        target_xy, option = self._route[0]
        next_xy = self._route[1][0] if len(self._route) > 1 else target_xy
        local = world_to_ego(np.stack([target_xy, next_xy]), ego, self._yaw).astype(np.float32)
        return Navigation(
            target_point=local[0], command=command_index(option), next_target_point=local[1]
        )

    def _pop_reached(self, ego: np.ndarray) -> None:
        # The farthest waypoint within `min_distance_m`, searched along the first
        # `max_distance_m` of the remaining route; it and all before it are reached.
        reached = -1
        travelled = 0.0
        for i, (xy, _) in enumerate(self._route):
            if i > 0:
                travelled += float(np.linalg.norm(xy - self._route[i - 1][0]))
                if travelled > self.max_distance_m:
                    break
            if float(np.linalg.norm(xy - ego)) < self.min_distance_m:
                reached = i
        for _ in range(min(reached + 1, len(self._route) - 1)):
            self._route.popleft()
