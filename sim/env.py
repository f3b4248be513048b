"""`DrivingEnv`: a Gymnasium environment over any `Simulator` backend and any scenario.

    import sim.env  # registers the ids below
    env = gymnasium.make("vlmdrive/construction_left_clear-v0", action_repeat=2)
    env = sim.env.make_env("path/to/scenario.yaml", action_type="trajectory")

Registered ids (on import of this module):
- `vlmdrive/Driving-v0`: the generic env; pass `scenario=...` to `gymnasium.make`.
- `vlmdrive/<name>-v0` for every shipped scenario file
  `scenarios/library/{train,eval}/<name>.yaml` (not `_*.yaml` bases nor `suite*.yaml` suites);
  `LIBRARY_ENV_IDS` maps each id to its file.

Episodes. `scenario` is a scenario YAML path, a `scenarios.schema.Scenario` or a compiled
`sim.spec.WorldSpec` (used as given). For a scenario, each `reset` draws from
`self.np_random`, in this order: a sampler seed giving a fresh concrete variation of the
YAML's distributions (named `<name>#s<seed>`), then the simulator seed (uniform, or one of
`sim_seeds`); a scenario without distributions is compiled once. `variation=i` pins the file's variation `i` (`sample(scenario)[i]`,
named `<name>#<i>`), as evaluation suites run it. Reset options override one episode:
`{"variation": i, "sim_seed": s}`. The variation is compiled, the simulator reset, the
sensors attached and one tick run with the brakes on, so the first observation is a real
sensor frame. The lite backend builds a town from the spec and the simulator seed
(~0.3 s); a pinned `variation` with a small `sim_seeds` pool reuses cached towns.

Observation (`spaces.Dict`), keys:
- each sensor by its id (default: one 256x128, 100 deg front camera `rgb_front`):
  camera `uint8 (H, W, 4)` BGRA; gnss `float64 (3,)` [lat, lon, alt]; imu `float64 (7,)`
  [ax, ay, az, gx, gy, gz, compass]; speedometer `float32 (1,)` [m/s]; lidar/radar
  `Sequence` of `float32 (4,)` points (the lite backend rejects them with SensorSpecError
  at the first reset). The keys below are reserved: a sensor id equal to one is refused.
- `speed`: `float32 (1,)` ego forward speed [m/s].
- `command`: `Discrete(7)`, the RoadOption of the next global-plan target ahead (the first
  point of the Leaderboard's downsampled plan more than 7.5 m of route ahead, like
  TransFuser's route planner): 0 = VOID, 1 LEFT, 2 RIGHT, 3 STRAIGHT, 4 LANEFOLLOW,
  5 CHANGELANELEFT, 6 CHANGELANERIGHT (the RoadOption value; VOID -1 -> 0).
- `target_point`: `float32 (2,)` ego frame [m] (x forward, y left): the dense route point
  `TARGET_POINT_AHEAD_M` of route ahead of the ego's route progress (the route's end
  near the end).

Actions:
- `action_type="control"`: `Box([0, -1, 0], [1, 1, 1])` float32 = [throttle, steer, brake]
  (CARLA semantics, steer + = right).
- `action_type="trajectory"`: `Box((T, 2))` float32 ego-frame waypoints [m], one every
  `waypoint_dt_s` (default T = 8 at 0.5 s), tracked by `sim.tracking.WaypointTracker`
  (one per env, reset on reset). The waypoints are fixed in the world when the action is
  taken and re-expressed in the ego frame at every repeated tick.
Any non-finite action gives a safe stop (throttle 0, steer 0, full brake).
`action_repeat` (default 1) applies each action for that many 0.05 s ticks:
`action_repeat=2` acts at 10 Hz. Rewards are summed over the repeated ticks.

Reward: `sim.rewards` terms weighted by `reward` (a `RewardConfig`, a mapping with a
weight for every term, or None for `RewardConfig.default()`); `info["rewards"]` holds
{term: weighted value} and the reward is their sum.

Episode end: `terminated` when the Leaderboard's route criteria end the route (completed,
deviated, blocked); `truncated` on the route timeout ("Agent timed out") or after
`max_episode_steps` env steps. Reset after either.

Info (reset and step): `route_completion` [%], `route_progress_m` [m], `events`
(this step's `{"kind", "message"}`), `route_status` ("Running", "Perfect", "Completed" or
"Failed - <reason>"), `route_failure` (None or the reason), `scenario` (the variation's
name), `sim_seed`; on step also `rewards` and `control` ([throttle, steer, brake] of the
last tick). With `privileged=True`: `ground_truth` (`sim.ground_truth()`), and the
simulator is registered with `DataProvider.set_simulator` on reset (for a privileged
expert or shield), unregistered on close.

`render_mode="rgb_array"` (lite backend) returns the first camera beside a heading-up BEV,
RGB `uint8`. Constructor arguments are picklable (paths, specs), so the env works in
`gymnasium.vector.AsyncVectorEnv`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import gymnasium
import numpy as np
from gymnasium import spaces

import scenarios
from scenarios.compile import compile_scenario
from scenarios.loader import load_scenario
from scenarios.sampler import is_concrete, sample
from scenarios.schema import Scenario
from sim.control import RoadOption, VehicleControl
from sim.data_provider import DataProvider
from sim.geometry import ego_to_world, world_to_ego
from sim.ground_truth import GroundTruth, InfractionEvent
from sim.lite.world import LiteSimulator
from sim.protocol import FIXED_DELTA_SECONDS, SensorData, Simulator
from sim.rewards import (
    REWARD_TERMS,
    MotionTracker,
    RewardConfig,
    comfort_excess,
    tick_terms,
    zero_terms,
)
from sim.route import LEADERBOARD_SAMPLE_FACTOR_M, downsample_route
from sim.sensors import (
    CAMERA,
    GNSS,
    IMU,
    LIDAR,
    RADAR,
    SPEEDOMETER,
    SensorSpec,
    SensorSpecError,
    default_front_camera,
    parse_sensor_specs,
)
from sim.spec import WorldSpec
from sim.tracking import WaypointTracker


def _carla_simulator() -> Simulator:
    """A CARLA-server backend at $CARLA_HOST:$CARLA_PORT (default localhost:2000); see
    docs/carla_backend.md. Imported lazily: `carla` is only needed when it is used."""
    import os

    from sim.carla import CarlaSimulator

    host = os.environ.get("CARLA_HOST", "localhost")
    return CarlaSimulator(host=host, port=int(os.environ.get("CARLA_PORT", "2000")))


# Simulator backends by name.
BACKENDS: dict[str, Callable[[], Simulator]] = {"lite": LiteSimulator, "carla": _carla_simulator}

DEFAULT_CAMERA_WIDTH_PX = 256  # [px] default front camera: small enough for RL at ~1 ms
DEFAULT_CAMERA_HEIGHT_PX = 128  # [px]
COMMAND_TARGET_MIN_M = 7.5  # [m] TransFuser's route planner pops targets closer than this
TARGET_POINT_AHEAD_M = 10.0  # [m] of route ahead of the ego's progress for `target_point`
DEFAULT_HORIZON = 8  # waypoints of a trajectory action
DEFAULT_WAYPOINT_DT_S = 0.5  # [s] between trajectory waypoints
MAX_WAYPOINT_M = 150.0  # [m] bound of trajectory actions (4 s at 37.5 m/s)
MAX_SPEED_MPS = 100.0  # [m/s] bound of `speed` / speedometer observations
MAX_TARGET_M = 200.0  # [m] `target_point` is clipped to this box
MAX_ALTITUDE_M = 1.0e4  # [m] gnss altitude bound
MAX_IMU_ACCEL_MPS2 = 1.0e3  # [m/s^2] imu accelerometer bound
MAX_IMU_GYRO_RADPS = 1.0e3  # [rad/s] imu gyroscope bound
NUM_COMMANDS = 7  # VOID, LEFT, RIGHT, STRAIGHT, LANEFOLLOW, CHANGELANELEFT, CHANGELANERIGHT
RESERVED_KEYS = ("speed", "command", "target_point")
TIMEOUT_FAILURE = "Agent timed out"
RESET_OPTIONS = ("variation", "sim_seed")
_MAX_SEED = 2**31 - 1

ScenarioSource = str | Path | Scenario | WorldSpec


def command_index(option: RoadOption | int) -> int:
    """`command` observation value of a RoadOption: its value, with VOID (-1) -> 0."""
    return max(int(option), 0)


def _sensor_space(spec: SensorSpec) -> spaces.Space:
    if spec.type == CAMERA:
        return spaces.Box(0, 255, (spec.height, spec.width, 4), np.uint8)
    if spec.type == GNSS:
        return spaces.Box(
            np.array([-90.0, -180.0, -MAX_ALTITUDE_M]),
            np.array([90.0, 180.0, MAX_ALTITUDE_M]),
            dtype=np.float64,
        )
    if spec.type == IMU:
        high = np.array([MAX_IMU_ACCEL_MPS2] * 3 + [MAX_IMU_GYRO_RADPS] * 3 + [2.0 * math.pi])
        low = np.concatenate([-high[:6], [0.0]])
        return spaces.Box(low, high, dtype=np.float64)
    if spec.type == SPEEDOMETER:
        return spaces.Box(-MAX_SPEED_MPS, MAX_SPEED_MPS, (1,), np.float32)
    if spec.type in (LIDAR, RADAR):
        return spaces.Sequence(spaces.Box(-np.inf, np.inf, (4,), np.float32), stack=True)
    raise SensorSpecError(f"sensor {spec.id!r}: DrivingEnv has no observation for {spec.type}")


def _sensor_obs(spec: SensorSpec, data: Any) -> np.ndarray:
    if spec.type == CAMERA:
        return np.array(data, dtype=np.uint8, copy=True)
    if spec.type in (GNSS, IMU):
        return np.array(data, dtype=np.float64, copy=True)
    if spec.type == SPEEDOMETER:
        return np.array([data["speed"]], dtype=np.float32)
    return np.array(data, dtype=np.float32).reshape(-1, 4)


def _control_of(action: np.ndarray) -> VehicleControl:
    """[throttle, steer, brake] -> VehicleControl; non-finite values give the safe stop."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (3,):
        raise ValueError(f"control action must have shape (3,), got {np.shape(action)}")
    return VehicleControl.sanitized(SimpleNamespace(throttle=a[0], steer=a[1], brake=a[2]))


class DrivingEnv(gymnasium.Env):
    """Gymnasium env over a `Simulator` and a scenario; see the module docstring."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        scenario: ScenarioSource,
        backend: str = "lite",
        sensors: Sequence[dict] | None = None,
        action_type: Literal["control", "trajectory"] = "control",
        privileged: bool = False,
        reward: RewardConfig | Mapping[str, float] | None = None,
        action_repeat: int = 1,
        max_episode_steps: int | None = None,
        horizon: int = DEFAULT_HORIZON,
        waypoint_dt_s: float = DEFAULT_WAYPOINT_DT_S,
        variation: int | None = None,
        sim_seeds: Sequence[int] | None = None,
        render_mode: str | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(
                f"backend: unknown simulator backend {backend!r}; valid: {', '.join(BACKENDS)}"
            )
        if action_type not in ("control", "trajectory"):
            raise ValueError(f"action_type must be 'control' or 'trajectory', got {action_type!r}")
        if (
            isinstance(action_repeat, bool)
            or not isinstance(action_repeat, int)
            or action_repeat < 1
        ):
            raise ValueError(f"action_repeat must be an integer >= 1, got {action_repeat!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1 waypoint, got {horizon}")
        if not waypoint_dt_s > 0.0:
            raise ValueError(f"waypoint_dt_s must be > 0 s, got {waypoint_dt_s}")
        if variation is not None and variation < 0:
            raise ValueError(f"variation must be >= 0 or None, got {variation}")
        if sim_seeds is not None:
            sim_seeds = tuple(int(s) for s in sim_seeds)
            if not sim_seeds or any(not 0 <= s <= _MAX_SEED for s in sim_seeds):
                raise ValueError(
                    f"sim_seeds must be a non-empty sequence of seeds in [0, {_MAX_SEED}], "
                    f"got {sim_seeds}"
                )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, "
                f"got {render_mode!r}"
            )
        self.backend = backend
        self.action_type = action_type
        self.privileged = bool(privileged)
        self.action_repeat = action_repeat
        self.max_episode_steps = max_episode_steps
        self.variation = variation
        self.sim_seeds = sim_seeds
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": 1.0 / (FIXED_DELTA_SECONDS * action_repeat)}

        if reward is None:
            reward = RewardConfig.default()
        elif not isinstance(reward, RewardConfig):
            reward = RewardConfig(dict(reward))
        reward.require(REWARD_TERMS)
        self.reward_config = reward

        self._file = "<scenario>"
        self._scenario: Scenario | None = None
        self._fixed_spec: WorldSpec | None = None
        if isinstance(scenario, WorldSpec):
            self._fixed_spec = scenario
        elif isinstance(scenario, Scenario):
            self._scenario = scenario
        elif isinstance(scenario, str | Path):
            self._file = str(scenario)
            self._scenario = load_scenario(scenario)
        else:
            raise TypeError(
                "scenario must be a YAML path, a scenarios.schema.Scenario or a WorldSpec, "
                f"got {type(scenario).__name__}"
            )
        if self._scenario is not None:
            # Compile one variation now so a broken scenario fails at construction.
            first = self._variation_of(self._scenario, variation or 0)
            spec = compile_scenario(first, self._file)
            if is_concrete(self._scenario) or variation is not None:
                self._fixed_spec = spec

        raw_sensors = (
            [default_front_camera(DEFAULT_CAMERA_WIDTH_PX, DEFAULT_CAMERA_HEIGHT_PX)]
            if sensors is None
            else [dict(s) for s in sensors]
        )
        self._sensor_specs = parse_sensor_specs(raw_sensors)
        self._raw_sensors = [s.to_dict() for s in self._sensor_specs]
        obs_spaces: dict[str, spaces.Space] = {}
        for spec_ in self._sensor_specs:
            if spec_.id in RESERVED_KEYS:
                raise SensorSpecError(
                    f"sensor {spec_.id!r}: the id is one of DrivingEnv's own observation keys "
                    f"{RESERVED_KEYS}; rename the sensor"
                )
            obs_spaces[spec_.id] = _sensor_space(spec_)
        obs_spaces["speed"] = spaces.Box(-MAX_SPEED_MPS, MAX_SPEED_MPS, (1,), np.float32)
        obs_spaces["command"] = spaces.Discrete(NUM_COMMANDS)
        obs_spaces["target_point"] = spaces.Box(-MAX_TARGET_M, MAX_TARGET_M, (2,), np.float32)
        self.observation_space = spaces.Dict(obs_spaces)
        if action_type == "control":
            self.action_space: spaces.Box = spaces.Box(
                np.array([0.0, -1.0, 0.0], np.float32), np.array([1.0, 1.0, 1.0], np.float32)
            )
        else:
            self.action_space = spaces.Box(
                -MAX_WAYPOINT_M, MAX_WAYPOINT_M, (horizon, 2), np.float32
            )
        self.tracker = WaypointTracker(dt_s=waypoint_dt_s)

        self.sim: Simulator = BACKENDS[backend]()
        self._motion = MotionTracker(dt_s=FIXED_DELTA_SECONDS)
        self._ready = False
        self._steps = 0
        self._scenario_name = ""
        self._sim_seed = -1
        self._plan_s = np.zeros(0)
        self._plan_options = np.zeros(0, np.int64)
        self._episode_kinds: list[str] = []
        self._last_data: SensorData = {}
        self._gt: GroundTruth | None = None

    # ------------------------------------------------------------------ episodes
    @staticmethod
    def _variation_of(scenario: Scenario, index: int) -> Scenario:
        """The file's variation `index` (`sample(scenario)[index]`, named `<name>#<index>`)."""
        return sample(scenario, n=index + 1)[index]

    def _episode_spec(self, options: Mapping[str, Any]) -> WorldSpec:
        if "variation" in options:
            if self._scenario is None:
                raise ValueError("reset option 'variation' needs a scenario, not a WorldSpec")
            index = int(options["variation"])
            if index < 0:
                raise ValueError(f"reset option 'variation' must be >= 0, got {index}")
            return compile_scenario(self._variation_of(self._scenario, index), self._file)
        if self._fixed_spec is not None:
            return self._fixed_spec
        scenario = self._scenario
        if scenario is None:  # __init__ sets a fixed spec or a scenario
            raise RuntimeError("DrivingEnv has neither a world spec nor a scenario")
        seed = int(self.np_random.integers(0, _MAX_SEED))
        drawn = sample(scenario.model_copy(update={"seed": seed, "variations": 1}))[0]
        drawn = drawn.model_copy(update={"name": f"{scenario.name}#s{seed}"})
        return compile_scenario(drawn, self._file)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - set(RESET_OPTIONS))
        if unknown:
            raise ValueError(f"reset options: unknown key(s) {unknown}; valid: {RESET_OPTIONS}")
        spec = self._episode_spec(options)
        if "sim_seed" in options:
            sim_seed = int(options["sim_seed"])
        elif self.sim_seeds is not None:
            sim_seed = self.sim_seeds[int(self.np_random.integers(len(self.sim_seeds)))]
        else:
            sim_seed = int(self.np_random.integers(0, _MAX_SEED))
        self.sim.reset(spec, sim_seed)
        # The lite backend keeps its sensors across resets (re-attaching them costs ~30 ms
        # per camera); attach only when the backend does not report exactly ours.
        if list(getattr(self.sim, "sensors", [])) != self._sensor_specs:
            self.sim.setup_sensors(self._raw_sensors)
        self._scenario_name = spec.name
        self._sim_seed = sim_seed
        route = self.sim.route
        keep = downsample_route(route.points, route.options, LEADERBOARD_SAMPLE_FACTOR_M)
        self._plan_s = route.s[keep]
        self._plan_options = route.options[keep].astype(np.int64)
        self.tracker.reset()
        self._steps = 0
        self._episode_kinds = []
        if self.privileged:
            DataProvider.set_simulator(self.sim)
        # One braked tick: the Leaderboard's agent also first sees data after a tick.
        self._last_data = self.sim.tick(VehicleControl(brake=1.0))
        self._gt = self.sim.ground_truth()
        self._motion.reset(self._gt.ego.speed, self._gt.ego.yaw)
        self._ready = True
        return self._observation(), self._info([])

    # ---------------------------------------------------------------------- step
    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if not self._ready:
            raise RuntimeError("step() before reset(): call reset() first")
        world_wps: np.ndarray | None = None
        control = VehicleControl()
        if self.action_type == "control":
            control = _control_of(action)
        else:
            wp = np.asarray(action, dtype=np.float64)
            if wp.shape != self.action_space.shape:
                raise ValueError(
                    f"trajectory action must have shape {self.action_space.shape}, got {wp.shape}"
                )
            ego = self._truth.ego
            if np.all(np.isfinite(wp)):
                world_wps = ego_to_world(wp, np.array([ego.x, ego.y]), ego.yaw)
            else:  # NaN waypoints make the tracker stop safely
                world_wps = np.full(wp.shape, np.nan)
        totals = zero_terms()
        events: list[InfractionEvent] = []
        status = self.sim.route_status
        for _ in range(self.action_repeat):
            if world_wps is not None:
                ego = self._truth.ego
                local = world_to_ego(world_wps, np.array([ego.x, ego.y]), ego.yaw)
                control = self.tracker.control(local, ego.speed)
            before = status
            # Only the step's last frame is observed: the ticks in between skip the camera.
            self.sim.tick(control, render=False)
            self._gt = self.sim.ground_truth()
            status = self.sim.route_status
            tick_events = self.sim.events
            events += tick_events
            lon, lat, jerk = self._motion.update(self._gt.ego.speed, self._gt.ego.yaw)
            terms = tick_terms(
                progress_gain_m=status.progress_m - before.progress_m,
                outside_gain_m=status.outside_lanes_m - before.outside_lanes_m,
                events=tick_events,
                comfort=comfort_excess(lon, lat, jerk),
                dt_s=FIXED_DELTA_SECONDS,
                route_failed=status.failure is not None and before.failure is None,
            )
            for name, value in terms.items():
                totals[name] += value
            if status.ended:
                break
        self._last_data = self.sim.sensor_data()
        self._steps += 1
        self._episode_kinds += [e.kind for e in events]
        rewards = self.reward_config.weigh(totals)
        timed_out = status.failure == TIMEOUT_FAILURE
        terminated = bool(status.ended and not timed_out)
        truncated = bool(
            timed_out
            or (self.max_episode_steps is not None and self._steps >= self.max_episode_steps)
        )
        info = self._info(events)
        info["rewards"] = rewards
        info["control"] = np.array(
            [control.throttle, control.steer, control.brake], dtype=np.float32
        )
        return self._observation(), float(sum(rewards.values())), terminated, truncated, info

    # --------------------------------------------------------------- observation
    @property
    def _truth(self) -> GroundTruth:
        """Ground truth after the last tick (for the ego pose and speed)."""
        if self._gt is None:
            raise RuntimeError("no episode is running: call reset() first")
        return self._gt

    def _observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {}
        for spec in self._sensor_specs:
            if spec.id not in self._last_data:
                raise RuntimeError(
                    f"the {self.backend} simulator returned no data for sensor {spec.id!r}"
                )
            obs[spec.id] = _sensor_obs(spec, self._last_data[spec.id][1])
        ego = self._truth.ego
        route = self.sim.route
        progress = self.sim.route_status.progress_m
        obs["speed"] = np.clip(np.array([ego.speed], np.float32), -MAX_SPEED_MPS, MAX_SPEED_MPS)
        ahead = np.nonzero(self._plan_s > progress + COMMAND_TARGET_MIN_M)[0]
        k = int(ahead[0]) if len(ahead) else len(self._plan_s) - 1
        obs["command"] = command_index(int(self._plan_options[k]))
        target = route.point_at(progress + TARGET_POINT_AHEAD_M)
        local = world_to_ego(target[None], np.array([ego.x, ego.y]), ego.yaw)[0]
        obs["target_point"] = np.clip(local, -MAX_TARGET_M, MAX_TARGET_M).astype(np.float32)
        return obs

    def _route_status_text(self) -> str:
        status = self.sim.route_status
        if status.failure is not None:
            return f"Failed - {status.failure}"
        if not status.ended:
            return "Running"
        clean = not self._episode_kinds and status.outside_lanes_m <= 0.0
        return "Perfect" if clean else "Completed"

    def _info(self, events: list[InfractionEvent]) -> dict[str, Any]:
        status = self.sim.route_status
        info: dict[str, Any] = {
            "route_completion": float(status.completion),
            "route_progress_m": float(status.progress_m),
            "events": [{"kind": e.kind, "message": e.message} for e in events],
            "route_status": self._route_status_text(),
            "route_failure": status.failure,
            "scenario": self._scenario_name,
            "sim_seed": self._sim_seed,
        }
        if self.privileged:
            info["ground_truth"] = self._gt
        return info

    # -------------------------------------------------------------------- render
    def render(self) -> np.ndarray | None:
        """RGB uint8 frame: the first camera beside a heading-up BEV (lite backend)."""
        if self.render_mode is None:
            return None
        if not isinstance(self.sim, LiteSimulator):
            raise NotImplementedError(
                f"rgb_array rendering needs the lite backend, not {self.backend}"
            )
        if not self._ready:
            raise RuntimeError("render() before reset(): call reset() first")
        from sim.lite.recording import composite, ego_bev

        bev = ego_bev(self.sim)
        cams = [s.id for s in self._sensor_specs if s.type == CAMERA]
        camera = (
            self._last_data[cams[0]][1]
            if cams
            else np.dstack([bev, np.full(bev.shape[:2], 255, np.uint8)])
        )
        status = self.sim.route_status
        caption = (
            f"{self._scenario_name}  t={self.sim.time_s:5.1f}s  "
            f"v={self._gt.ego.speed * 3.6 if self._gt else 0.0:5.1f} km/h  "
            f"route {status.completion:5.1f}%"
        )
        frame = composite(camera, bev, caption)
        return np.ascontiguousarray(frame[..., ::-1])

    def close(self) -> None:
        try:
            registered: Simulator | None = DataProvider.simulator()
        except RuntimeError:
            registered = None
        if registered is self.sim:
            DataProvider.set_simulator(None)
        self.sim.close()
        self._ready = False


def make_env(
    scenario: ScenarioSource,
    backend: str = "lite",
    sensors: Sequence[dict] | None = None,
    seed: int | None = None,
    action_type: Literal["control", "trajectory"] = "control",
    privileged: bool = False,
    reward: RewardConfig | Mapping[str, float] | None = None,
    **kwargs: Any,
) -> DrivingEnv:
    """A `DrivingEnv` (other keyword arguments as `DrivingEnv`). `seed` seeds the env's
    generator (so an unseeded first `reset()` is reproducible) and its action space."""
    env = DrivingEnv(
        scenario,
        backend=backend,
        sensors=sensors,
        action_type=action_type,
        privileged=privileged,
        reward=reward,
        **kwargs,
    )
    if seed is not None:
        env.np_random, _ = gymnasium.utils.seeding.np_random(seed)
        env.action_space.seed(seed)
    return env


# ------------------------------------------------------------------ registration
LIBRARY_DIR = Path(scenarios.__file__).resolve().parent / "library"
GENERIC_ENV_ID = "vlmdrive/Driving-v0"


def library_scenarios() -> dict[str, Path]:
    """{scenario name: file} of the shipped library (`train` and `eval`)."""
    out: dict[str, Path] = {}
    for split in ("train", "eval"):
        for path in sorted((LIBRARY_DIR / split).glob("*.yaml")):
            if path.name.startswith(("_", "suite")):  # bases and suite files
                continue
            if path.stem in out:
                raise RuntimeError(
                    f"library scenario name {path.stem!r} appears twice: {out[path.stem]} and {path}"
                )
            out[path.stem] = path
    return out


LIBRARY_ENV_IDS: dict[str, Path] = {
    f"vlmdrive/{name}-v0": path for name, path in library_scenarios().items()
}


def _register() -> None:
    if GENERIC_ENV_ID not in gymnasium.registry:
        gymnasium.register(id=GENERIC_ENV_ID, entry_point="sim.env:DrivingEnv")
    for env_id, path in LIBRARY_ENV_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id, entry_point="sim.env:DrivingEnv", kwargs={"scenario": str(path)}
            )


_register()
