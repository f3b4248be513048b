"""Waypoint tracking quality (not a test): `make bench` or `python benchmarks/bench_tracking.py [--json]`.

The tuned `sim.tracking.WaypointTracker` against a faithful port of TransFuser++'s
`control_pid` with its default gains (carla_garage `config.py`), both driving the embedded
simulator's ego dynamics (`sim.lite.dynamics.step_ego`, dry road, 20 Hz). Every tick each
controller gets what a planner sends: 8 waypoints 0.5 s apart along a reference path and
speed profile, from the ego's projection on the path, in the ego frame. Scenarios:

  speed step       0 -> 10 m/s on a straight: overshoot [%], settling time to +-2 % [s]
  arc              R = 30 m at 8 m/s, from the arc's start with the wheel straight:
                   lateral RMS and max error after 2 s [m]
  curves           straight -> 90 deg arc -> straight at R/speed 12 m/4.5 m/s, 50 m/13 m/s,
                   150 m/20 m/s: largest lateral error [m]
  lateral offset   1 m off a straight at 8 m/s: overshoot [m], time to stay within 5 cm [s]
  stop             8 m/s, plan brakes at 2 m/s^2 to stand at x = 30 m: stop error [m]
                   (negative = short), brake applications, peak deceleration [m/s^2]
  replanned stop   a planner like the rule planner's (from the ego's speed, 3 m/s^2
                   planned, 7 m/s^2 at most) re-planning every tick, 8 m/s, stop at 45 m:
                   stop error [m], brake applications
  emergency        the same planner, an obstacle at the distance needing 5 / 6 / 6.5 m/s^2
                   from 14 / 10 m/s: smallest margin to the plan's stop point [m]
                   (negative = past it)
  noisy waypoints  the arc with N(0, (0.1 m * k/4)^2) noise on waypoint k every tick:
                   RMS steering rate [1/s], lateral RMS [m]
The same measurements bound `tests/sim/test_tracking_closed_loop.py`.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import deque
from collections.abc import Callable

import numpy as np

from sim.control import VehicleControl
from sim.geometry import world_to_ego
from sim.lite.dynamics import EgoState, step_ego
from sim.tracking import WaypointTracker
from sim.weather import Weather

DT_S = 0.05  # [s] simulator tick
WAYPOINT_DT_S = 0.5  # [s]
NUM_WAYPOINTS = 8
DRY = Weather.preset("ClearNoon").friction


class TransFuserPPController:
    """TF++ `control_pid` (carla_garage `model.py`) with its `config.py` defaults.

    Adapted only at the boundaries: our ego frame has y left (TF++'s y right), and the
    0.5 s / 1.0 s waypoints are indices 0 and 1 at our 0.5 s spacing. Everything else as
    TF++: zero-prefilled 20-tick PID windows, speed error clipped to [0, 0.25] m/s, binary
    full brake, aim at the first waypoint >= 3 m away (2.25 m below 5.5 m/s), heading error
    zeroed while braking or standing, no steering-rate limit.
    """

    class _PID:
        def __init__(self, kp: float, ki: float, kd: float, n: int = 20) -> None:
            self.k = (kp, ki, kd)
            self.window: deque[float] = deque([0.0] * n, maxlen=n)

        def step(self, error: float) -> float:
            self.window.append(error)
            integral = float(np.mean(self.window))
            derivative = self.window[-1] - self.window[-2]
            return self.k[0] * error + self.k[1] * integral + self.k[2] * derivative

    def __init__(self) -> None:
        self.turn = self._PID(1.25, 0.75, 0.3)
        self.speed = self._PID(5.0, 0.5, 1.0)

    def control(self, waypoints: np.ndarray, speed_mps: float) -> VehicleControl:
        wp = np.asarray(waypoints, dtype=float)
        if not np.all(np.isfinite(wp)):
            return VehicleControl(brake=1.0)
        desired = float(np.linalg.norm(wp[0] - wp[1])) * 2.0
        brake = desired < 0.4 or speed_mps / max(desired, 1e-6) > 1.1
        delta = float(np.clip(desired - speed_mps, 0.0, 0.25))
        throttle = float(np.clip(self.speed.step(delta), 0.0, 0.75))
        throttle = 0.0 if brake else throttle
        aim_distance = 2.25 if desired < 5.5 else 3.0
        aim = wp[-1]
        for point in wp:
            if np.linalg.norm(point) >= aim_distance:
                aim = point
                break
        angle_right = math.degrees(math.atan2(-aim[1], aim[0])) / 90.0
        if speed_mps < 0.01 or brake:
            angle_right = 0.0
        steer = float(np.clip(self.turn.step(angle_right), -1.0, 1.0))
        return VehicleControl(throttle=throttle, steer=steer, brake=float(brake))


Controller = WaypointTracker | TransFuserPPController


def _cruise(speed_mps: float) -> Callable[[float], float]:
    return lambda s: speed_mps


def _line_project(x: float, y: float) -> tuple[float, float]:
    return x, y


def _arc(radius_m: float) -> tuple[Callable, Callable]:
    """Right-hand circle through the origin tangent to +x: (point(s), project(x, y))."""

    def point(s: float) -> tuple[float, float]:
        phi = s / radius_m
        return radius_m * math.sin(phi), radius_m * (1.0 - math.cos(phi))

    def project(x: float, y: float) -> tuple[float, float]:
        return radius_m * math.atan2(x, radius_m - y), math.hypot(x, y - radius_m) - radius_m

    return point, project


def _polyline(segments: list[tuple[float, float]], ds: float = 0.1) -> tuple[Callable, Callable]:
    """Path of (length [m], curvature [1/m], + = right) segments: (point(s), project(x, y))."""
    pts, x, y, yaw = [(0.0, 0.0)], 0.0, 0.0, 0.0
    for length, curvature in segments:
        for _ in range(int(round(length / ds))):
            mid = yaw + 0.5 * curvature * ds
            x, y, yaw = x + ds * math.cos(mid), y + ds * math.sin(mid), yaw + curvature * ds
            pts.append((x, y))
    p = np.array(pts)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])

    def point(q: float) -> tuple[float, float]:
        return float(np.interp(q, s, p[:, 0])), float(np.interp(q, s, p[:, 1]))

    def project(qx: float, qy: float) -> tuple[float, float]:
        d = np.hypot(p[:, 0] - qx, p[:, 1] - qy)
        i = int(np.argmin(d))
        return float(s[i]), float(d[i])

    return point, project


def _drive(
    controller: Controller,
    point: Callable,
    project: Callable,
    profile: Callable[[float], float],
    seconds: float,
    ego: EgoState,
    noise: np.random.Generator | None = None,
    planner: Callable[[EgoState], np.ndarray] | None = None,
) -> np.ndarray:
    """Closed loop; rows (t, x, y, speed, lateral error, throttle, steer, brake). The
    waypoints follow `profile` along the path, or come from `planner` if given."""
    rows = []
    for k in range(int(round(seconds / DT_S))):
        s, lateral = project(ego.x, ego.y)
        world = []
        for _ in range(NUM_WAYPOINTS):
            for _ in range(10):
                s += profile(s) * WAYPOINT_DT_S / 10
            world.append(point(s))
        wp = world_to_ego(np.array(world), np.array([ego.x, ego.y]), ego.yaw)
        if planner is not None:
            wp = planner(ego)
        if noise is not None:
            wp = (
                wp + noise.normal(0.0, 0.1, wp.shape) * np.arange(1, NUM_WAYPOINTS + 1)[:, None] / 4
            )
        c = controller.control(wp, ego.speed)
        rows.append((k * DT_S, ego.x, ego.y, ego.speed, lateral, c.throttle, c.steer, c.brake))
        ego = step_ego(ego, c, DRY, DT_S)
    return np.array(rows)


def _replanned_stop(stop_x: float, cruise_mps: float) -> Callable[[EgoState], np.ndarray]:
    """Ego-frame waypoints on the x axis from the ego's speed: brake at up to 7 m/s^2 toward
    the speed that stops at `stop_x` with 3 m/s^2, accelerate at 2 m/s^2 below it."""

    def waypoints(ego: EgoState) -> np.ndarray:
        s, v, out, h = ego.x, max(ego.speed, 0.0), [], DT_S
        for i in range(1, NUM_WAYPOINTS * 10 + 1):
            target = min(cruise_mps, math.sqrt(2.0 * 3.0 * max(stop_x - s, 0.0)))
            v = max(v - 7.0 * h, target) if target < v else min(v + 2.0 * h, target)
            s += v * h
            if i % 10 == 0:
                out.append((s, 0.0))
        return world_to_ego(np.array(out), np.array([ego.x, ego.y]), ego.yaw)

    return waypoints


def measure(make: Callable[[], Controller]) -> dict[str, float]:
    """The figures of one controller (a fresh instance per scenario)."""
    out: dict[str, float] = {}
    line = (lambda s: (s, 0.0), _line_project)

    log = _drive(make(), *line, _cruise(10.0), 15.0, EgoState(0.0, 0.0, 0.0))
    v = log[:, 3]
    out["speed_overshoot_pct"] = max(0.0, (v.max() - 10.0) / 10.0 * 100.0)
    outside = np.nonzero(np.abs(v - 10.0) > 0.2)[0]
    out["speed_settling_s"] = float(log[outside[-1] + 1, 0]) if len(outside) else 0.0

    log = _drive(make(), *_arc(30.0), _cruise(8.0), 12.0, EgoState(0.0, 0.0, 0.0, speed=8.0))
    lat = log[log[:, 0] >= 2.0, 4]
    out["arc_lateral_rms_m"] = float(np.sqrt(np.mean(lat**2)))
    out["arc_lateral_max_m"] = float(np.abs(lat).max())

    worst = 0.0
    for radius, speed in ((12.0, 4.5), (50.0, 13.0), (150.0, 20.0)):
        path = _polyline([(20.0, 0.0), (radius * math.pi / 2, 1.0 / radius), (30.0, 0.0)])
        seconds = (20.0 + radius * math.pi / 2 + 20.0) / speed
        log = _drive(make(), *path, _cruise(speed), seconds, EgoState(0, 0, 0, speed=speed))
        worst = max(worst, float(np.abs(log[:, 4]).max()))
    out["curves_lateral_max_m"] = worst

    log = _drive(make(), *line, _cruise(8.0), 10.0, EgoState(0.0, 1.0, 0.0, speed=8.0))
    y = log[:, 4]
    out["offset_overshoot_m"] = max(0.0, -float(y.min()))
    outside = np.nonzero(np.abs(y) > 0.05)[0]
    out["offset_settling_s"] = float(log[outside[-1] + 1, 0]) if len(outside) else 0.0

    def stop_profile(s: float) -> float:
        return min(8.0, math.sqrt(2.0 * 2.0 * max(30.0 - s, 0.0)))

    log = _drive(make(), *line, stop_profile, 15.0, EgoState(0.0, 0.0, 0.0, speed=8.0))
    out["stop_error_m"] = float(log[-1, 1] - 30.0)
    braking = (log[:, 7] > 0.0).astype(int)
    out["stop_brake_applications"] = float(np.count_nonzero(np.diff(braking) == 1))
    out["stop_peak_decel_mps2"] = float(-np.diff(log[:, 3]).min() / DT_S)

    log = _drive(
        make(),
        *line,
        _cruise(8.0),
        20.0,
        EgoState(0, 0, 0, speed=8.0),
        planner=_replanned_stop(45.0, 8.0),
    )
    out["replanned_stop_error_m"] = float(log[-1, 1] - 45.0)
    braking = (log[:, 7] > 0.0).astype(int)
    out["replanned_stop_brake_applications"] = float(np.count_nonzero(np.diff(braking) == 1))

    margins = []
    for speed, needed in ((14.0, 5.0), (10.0, 5.0), (14.0, 6.0), (10.0, 6.5)):
        stop_x = speed**2 / (2.0 * needed)
        log = _drive(
            make(),
            *line,
            _cruise(speed),
            6.0,
            EgoState(0, 0, 0, speed=speed),
            planner=_replanned_stop(stop_x, speed),
        )
        margins.append(stop_x - float(log[-1, 1]))
    out["emergency_margin_m"] = min(margins)

    rates, rms = [], []
    for seed in range(3):
        log = _drive(
            make(),
            *_arc(30.0),
            _cruise(8.0),
            10.0,
            EgoState(0, 0, 0, speed=8.0),
            noise=np.random.default_rng(seed),
        )
        rates.append(float(np.sqrt(np.mean(np.diff(log[:, 6]) ** 2)) / DT_S))
        rms.append(float(np.sqrt(np.mean(log[20:, 4] ** 2))))
    out["noisy_steer_rate_rms_per_s"] = float(np.mean(rates))
    out["noisy_lateral_rms_m"] = float(np.mean(rms))
    return out


LABELS = {
    "speed_overshoot_pct": "0->10 m/s overshoot [%]",
    "speed_settling_s": "0->10 m/s settling +-2 % [s]",
    "arc_lateral_rms_m": "R30 @ 8 m/s lateral RMS [m]",
    "arc_lateral_max_m": "R30 @ 8 m/s lateral max [m]",
    "curves_lateral_max_m": "curve entries lateral max [m]",
    "offset_overshoot_m": "1 m offset @ 8 m/s overshoot [m]",
    "offset_settling_s": "1 m offset settling to 5 cm [s]",
    "stop_error_m": "stop at 30 m error [m]",
    "stop_brake_applications": "stop brake applications",
    "stop_peak_decel_mps2": "stop peak deceleration [m/s^2]",
    "replanned_stop_error_m": "replanned stop error [m]",
    "replanned_stop_brake_applications": "replanned stop brake applications",
    "emergency_margin_m": "emergency stop margin, worst [m]",
    "noisy_steer_rate_rms_per_s": "noisy wps steer rate RMS [1/s]",
    "noisy_lateral_rms_m": "noisy wps lateral RMS [m]",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures = {
        "tuned": measure(WaypointTracker),
        "transfuser_pp": measure(TransFuserPPController),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{'':34s} {'tuned':>9s} {'TF++':>9s}")
    for key, label in LABELS.items():
        print(f"{label:34s} {figures['tuned'][key]:9.3f} {figures['transfuser_pp'][key]:9.3f}")


if __name__ == "__main__":
    main()
