"""Trajectory tracking: ego-frame waypoints -> `VehicleControl`, by a PID cascade.

The project's one controller, shared by the Gymnasium env (`action_type="trajectory"`),
the expert and the Leaderboard agent. It lives in `sim` (the lower layer) because the env
needs it; it reads nothing but the waypoints and the ego speed, so it runs unchanged on
any backend and inside a Leaderboard agent. Conventions follow TransFuser++ (REFERENCE.md):

    waypoints (T, 2) ego frame, x forward, y left, one every `dt_s`
      -> desired speed   = |wp(0.5 s) - wp(1.0 s)| / 0.5 s          (speed profile)
      -> longitudinal PID on (desired - current) speed -> throttle <= MAX_THROTTLE
         brake when desired < BRAKE_SPEED_MPS or current / desired > BRAKE_RATIO
      -> aim point       = first waypoint >= AIM_DISTANCE_M ahead (on the path polyline)
      -> lateral PID on the heading error to the aim point -> steer (CARLA: + = right),
         steering change limited per tick

Controllers hold integrator state: make one per route (`reset()` between routes).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from sim.control import VehicleControl

BRAKE_SPEED_MPS = 0.4  # [m/s] desired speeds below this mean "stop"
BRAKE_RATIO = 1.1  # [-] brake when current speed exceeds the desired speed by 10 %
MAX_THROTTLE = 0.75  # [-] TransFuser++ / CARLA VehiclePIDController limit
AIM_DISTANCE_M = 3.0  # [m] steer toward the first path point at least this far ahead
AIM_TIME_S = 0.45  # [s] the aim distance grows with speed (look-ahead time)
MAX_STEER_DELTA = 0.1  # [-] steering change per 0.05 s tick (CARLA VehiclePIDController)
FULL_BRAKE_SPEED_ERROR_MPS = 4.0  # [m/s] speed excess that gives full brake


@dataclass
class PID:
    """Discrete PID with a windowed integral (the TransFuser++ form): the integral is the
    mean error over the last `window` ticks, the derivative the last difference."""

    kp: float
    ki: float
    kd: float
    window: int = 40
    _errors: deque = field(default_factory=deque, repr=False)

    def step(self, error: float) -> float:
        self._errors.append(error)
        if len(self._errors) > self.window:
            self._errors.popleft()
        integral = sum(self._errors) / len(self._errors)
        derivative = self._errors[-1] - self._errors[-2] if len(self._errors) >= 2 else 0.0
        return self.kp * error + self.ki * integral + self.kd * derivative

    def reset(self) -> None:
        self._errors.clear()


@dataclass
class WaypointTracker:
    """Waypoints (ego frame) + current speed -> VehicleControl. See the module docstring."""

    dt_s: float = 0.5  # [s] time between waypoints
    speed_pid: PID = field(default_factory=lambda: PID(5.0, 0.5, 1.0))  # [-/(m/s)]
    steer_pid: PID = field(default_factory=lambda: PID(1.25, 0.75, 0.3))  # [-/(90 deg)]
    _last_steer: float = 0.0

    def reset(self) -> None:
        self.speed_pid.reset()
        self.steer_pid.reset()
        self._last_steer = 0.0

    @staticmethod
    def desired_speed(waypoints: np.ndarray, dt_s: float) -> float:
        """[m/s] speed over the second waypoint interval (0.5 s -> 1.0 s at dt 0.5 s),
        or over the first when only one waypoint is given."""
        if len(waypoints) >= 2:
            return float(np.linalg.norm(waypoints[1] - waypoints[0])) / dt_s
        return float(np.linalg.norm(waypoints[0])) / dt_s

    def aim_point(self, waypoints: np.ndarray, speed_mps: float) -> np.ndarray:
        """The point at the aim distance along the path (origin -> waypoints)."""
        aim = max(AIM_DISTANCE_M, AIM_TIME_S * speed_mps)
        path = np.concatenate([np.zeros((1, 2)), waypoints], axis=0)
        seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        if s[-1] < 1e-3:
            return np.array([1.0, 0.0])
        if s[-1] <= aim:  # short path: extend its last direction
            d = path[-1] - path[-2] if seg[-1] > 1e-3 else np.array([1.0, 0.0])
            return path[-1] + d / max(np.linalg.norm(d), 1e-6) * (aim - s[-1])
        i = int(np.searchsorted(s, aim))
        t = (aim - s[i - 1]) / max(seg[i - 1], 1e-6)
        return path[i - 1] + t * (path[i] - path[i - 1])

    def control(self, waypoints: np.ndarray, speed_mps: float) -> VehicleControl:
        """`waypoints`: (T, 2) ego frame [m], x forward, y left. NaN/inf give a safe stop."""
        wp = np.asarray(waypoints, dtype=float)
        if wp.ndim != 2 or wp.shape[1] != 2 or len(wp) == 0:
            raise ValueError(f"waypoints must have shape (T, 2), got {wp.shape}")
        if not np.all(np.isfinite(wp)) or not math.isfinite(speed_mps):
            return VehicleControl(brake=1.0)
        desired = self.desired_speed(wp, self.dt_s)
        brake = desired < BRAKE_SPEED_MPS or speed_mps / max(desired, 1e-6) > BRAKE_RATIO
        # Longitudinal: PID on the speed error; the integral is not fed while braking.
        throttle = 0.0
        brake_value = 0.0
        if brake:
            self.speed_pid.reset()
            excess = speed_mps - desired if desired >= BRAKE_SPEED_MPS else speed_mps + 1.0
            brake_value = float(np.clip(excess / FULL_BRAKE_SPEED_ERROR_MPS, 0.3, 1.0))
        else:
            throttle = float(np.clip(self.speed_pid.step(desired - speed_mps), 0.0, MAX_THROTTLE))
        # Lateral: heading error to the aim point (left positive), CARLA steer + = right.
        aim = self.aim_point(wp, speed_mps)
        # TransFuser++ normalises the angle by 90 degrees before its PID.
        angle_left = math.atan2(aim[1], aim[0]) / (math.pi / 2)
        steer = -self.steer_pid.step(angle_left)
        if desired < BRAKE_SPEED_MPS and speed_mps < BRAKE_SPEED_MPS:
            steer = self._last_steer  # standing still: hold the wheel
        steer = float(
            np.clip(steer, self._last_steer - MAX_STEER_DELTA, self._last_steer + MAX_STEER_DELTA)
        )
        steer = float(np.clip(steer, -1.0, 1.0))
        self._last_steer = steer
        return VehicleControl(throttle=throttle, steer=steer, brake=brake_value)
