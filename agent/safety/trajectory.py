"""Timing of ego-frame trajectories: speeds along them, stops, speed caps.

A trajectory is (T, 2) [m] ego frame (x forward, y left), pose k at time (k + 1) * dt_s;
the ego is at the origin at time 0. Its path is the polyline origin -> poses.
"""

from __future__ import annotations

import math

import numpy as np


def arc_lengths(trajectory: np.ndarray) -> np.ndarray:
    """(T + 1,) [m] distance along the path from the ego to each pose (0 first)."""
    path = np.concatenate([np.zeros((1, 2)), trajectory])
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])


def segment_speeds(trajectory: np.ndarray, dt_s: float) -> np.ndarray:
    """(T,) [m/s] mean speed over each step (origin -> pose 0, pose 0 -> pose 1, ...)."""
    return np.diff(arc_lengths(trajectory)) / dt_s


def sight_speed(sight_m: float, decel_mps2: float, reaction_s: float) -> float:
    """[m/s] the highest speed that still stops within `sight_m`:
    v * reaction + v^2 / (2 decel) = sight."""
    b = decel_mps2
    return -b * reaction_s + math.sqrt((b * reaction_s) ** 2 + 2.0 * b * max(sight_m, 0.0))


def retime_to_speed_cap(
    trajectory: np.ndarray, dt_s: float, speed_mps: float, cap_mps: float, decel_mps2: float
) -> np.ndarray:
    """The same path, driven no faster than `cap_mps` (time reparameterisation).

    The ego's distance at each pose time becomes the smaller of the original one and that
    of an envelope which slows from the current speed to the cap at `decel_mps2`, then
    holds the cap. Never ahead of the original timing, so every stop of the original
    (a pose the plan does not pass) is kept."""
    d = arc_lengths(trajectory)
    t = dt_s * np.arange(1, len(trajectory) + 1)
    v0 = max(speed_mps, 0.0)
    if v0 <= cap_mps:
        envelope = cap_mps * t
    else:
        ramp_s = (v0 - cap_mps) / decel_mps2
        ramp_m = v0 * ramp_s - 0.5 * decel_mps2 * ramp_s**2
        envelope = np.where(
            t <= ramp_s, v0 * t - 0.5 * decel_mps2 * t**2, ramp_m + cap_mps * (t - ramp_s)
        )
    target = np.minimum(d[1:], envelope)
    path = np.concatenate([np.zeros((1, 2)), trajectory])
    # Zero-length steps repeat a distance in `d`; any of their (equal) points is right.
    return np.stack([np.interp(target, d, path[:, 0]), np.interp(target, d, path[:, 1])], 1)


def stops_within(
    trajectory: np.ndarray, dt_s: float, distance_m: float, stop_speed_mps: float
) -> bool:
    """Does the plan come to a stop within `distance_m` of path?

    Yes if a step's speed falls to `stop_speed_mps` no farther than that; otherwise the
    deceleration of the last two steps is extrapolated to a stop."""
    d = arc_lengths(trajectory)
    v = np.diff(d) / dt_s
    slow = np.nonzero(v <= stop_speed_mps)[0]
    if len(slow):
        return bool(d[slow[0] + 1] <= distance_m)
    if len(v) < 2:
        return False
    decel = (v[-2] - v[-1]) / dt_s
    if decel <= 1e-3:
        return False
    return bool(d[-1] + v[-1] ** 2 / (2.0 * decel) <= distance_m)


def resample_in_time(
    trajectory: np.ndarray, dt_in_s: float, dt_out_s: float, num_poses: int
) -> np.ndarray:
    """(num_poses, 2): the trajectory at times (k + 1) * dt_out_s, linear in time; past its
    last pose it holds there (stops)."""
    t_in = dt_in_s * np.arange(len(trajectory) + 1)
    t_out = dt_out_s * np.arange(1, num_poses + 1)
    path = np.concatenate([np.zeros((1, 2)), trajectory])
    return np.stack([np.interp(t_out, t_in, path[:, 0]), np.interp(t_out, t_in, path[:, 1])], 1)


def pose_along(path: np.ndarray | None, distance_m: float) -> tuple[np.ndarray, float]:
    """(position (2,), heading [rad]) `distance_m` along origin -> `path` (ego frame),
    straight on past its end; straight ahead when there is no usable path. Dead reckoning:
    where the ego is after driving `distance_m` along what the tracker was given.

    The position lies on the polyline. The heading is 0 (the ego's) at the origin and each
    segment's direction at the segment's middle, linear in distance between: a chord's
    direction is the path's tangent near the chord's middle, not at its start (taking the
    chord's direction at once turned the ego by the whole ~12 degrees of a lane change's
    first chord on the first tick)."""
    if path is None or not np.isfinite(path).all():
        return np.array([distance_m, 0.0]), 0.0
    points = np.concatenate([np.zeros((1, 2)), np.asarray(path, dtype=np.float64)])
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1)
    keep = steps > 1e-6
    if not keep.any():
        return np.array([distance_m, 0.0]), 0.0
    points = np.concatenate([points[:1], points[1:][keep]])
    along = np.concatenate([[0.0], np.cumsum(steps[keep])])
    k = min(int(np.searchsorted(along, distance_m, side="right")) - 1, len(along) - 2)
    direction = (points[k + 1] - points[k]) / (along[k + 1] - along[k])
    chords = np.diff(points, axis=0)
    headings = np.unwrap(np.concatenate([[0.0], np.arctan2(chords[:, 1], chords[:, 0])]))
    middles = np.concatenate([[0.0], (along[:-1] + along[1:]) / 2.0])
    heading = float(np.interp(distance_m, middles, headings))
    return points[k] + direction * (distance_m - along[k]), heading


def rotation(angle_rad: float) -> np.ndarray:
    """(2, 2) the matrix rotating ego-frame vectors by `angle_rad` (counter-clockwise)."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, -s], [s, c]])
