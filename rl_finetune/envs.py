"""Fine-tuning environments: a training suite, the policy's inputs, CaRL's reward, the shield.

    env = make_finetune_env("scenarios/library/train", seed=0, index=3,
                            reward_cfg=RewardWeights(), shield_cfg=ShieldConfig())

`FinetuneEnv` is a Gymnasium env over a set of scenario sources (a suite's files, or
YAML paths / `Scenario`s / `WorldSpec`s for tests). It holds one `sim.env.DrivingEnv`
(`action_type="trajectory"`, `action_repeat=2`: the policy acts at 10 Hz, `privileged=True`)
for the current source and builds another when a reset draws a different one.

Episodes. Every `reset` draws, from `self.np_random`: the source (weighted by the suite's
`repetitions`), then the seed of the `DrivingEnv` reset, which draws a fresh concrete
variation of that scenario's YAML distributions and a fresh simulator seed (`sim.env`).
Reset options: `{"item": i}` pins the source; `variation` / `sim_seed` pass through to
`DrivingEnv.reset`. Train and eval suites stay apart: `make_finetune_env` refuses any
scenario file inside the shipped held-out suite `scenarios/library/eval` (and
`rl_finetune.config.FinetuneConfig` refuses an eval suite that overlaps the train suite).

Observation (`spaces.Dict`): exactly what the Leaderboard agent (agent/model_agent.py,
agent/leaderboard_agent.py) computes from its sensors, so the fine-tuned policy sees at
training time what it sees at inference:
- `image`: `uint8 (H, W, 3)` BGR, the front camera of `sim.sensors.default_sensor_suite`
  (the agent's own suite) with the alpha channel dropped;
- `speed`: `float32 (1,)` [m/s], the speedometer;
- `command`: `Discrete(7)`, `target_point` and `next_target_point` (the route point after
  it, which the safety guard's route corridor reads): `float32 (2,)` [m] ego frame (x forward,
  y left), from `agent.navigation.RoutePlanner` fed with the simulator's global plan
  (`sim.global_plan()[0]`, what `set_global_plan` hands the agent) and, every step, the
  GNSS fix and the IMU compass;
- `past_images` (only with `image_history` N > 0): `uint8 (N, H, W, 3)`, the camera
  `HISTORY_SPACING_S` x (N - k) earlier for k = 0..N-1 (oldest first), the earliest frame
  of the episode standing in while there is none that old — as the agent's frame history.

Action: `Box((8, 2))` ego-frame waypoints [m], one every 0.5 s, tracked by the PID.
Before the env drives it, the shield (`rl_finetune.shield.Shield`, ground truth) checks
it and may replace it with the rules' plan.

Reward (CaRL: simple and hard to game), per policy step, weights from
`rl_finetune.config.RewardWeights`: the `sim.rewards` terms (route progress per metre,
each Leaderboard infraction's lost score factor, progress outside the route lanes, route
failure; comfort off by default) plus `shield_intervention`: -1 x its weight on every
step the shield overrides the policy. `info["rewards"]` holds every weighted term.

Episode end: the `DrivingEnv`'s (route completed, deviated or blocked: `terminated`;
route timeout or `max_episode_steps`: `truncated`), and `terminated` on the first
infraction listed in `RewardWeights.terminate_on` (`info["terminated_by"]` names it).

Info, every step: `route_completion` [%], `route_progress_m`, `route_status`,
`route_failure`, `scenario`, `sim_seed`, `events`, `control`, `rewards`,
`shield_intervened` (bool), `shield_reason` ("" or a `shield.REASONS` code),
`shield_detail`, `shield_interventions` (this episode so far), `executed_trajectory`
(`float32 (8, 2)`, what was driven), `terminated_by`. On the last step of an episode,
`episode`: {`return`, `length`, `driving_score`, `route_completion`,
`infraction_penalty`, `shield_interventions`, `status` (the route status, or
"Stopped - <infraction>" for a `terminate_on` end), `scenario`}. The driving score is
the Leaderboard's route score RC x IP [0, 100] of the episode as driven (IP: the product of
`sim.scoring.PENALTY_VALUES` over the infractions, times the outside-lanes factor);
the min-speed factor is left out (the env does not run `sim.min_speed`), and an episode
ended early by `terminate_on` or `max_episode_steps` scores its completion so far. The
official numbers come from `vlmdrive eval`. The ground truth stays in the env process
(it is not in `info`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from agent.data.schema import HISTORY_STRIDE, SAMPLE_HZ
from agent.navigation import RoutePlanner
from agent.rules import view_from_ground_truth
from rl_finetune.config import ACTION_REPEAT, SHIELD_TERM, RewardWeights
from rl_finetune.shield import Shield, ShieldConfig
from scenarios.loader import load_suite
from sim import scoring
from sim.env import (
    DEFAULT_HORIZON,
    DEFAULT_WAYPOINT_DT_S,
    LIBRARY_DIR,
    MAX_SPEED_MPS,
    MAX_TARGET_M,
    MAX_WAYPOINT_M,
    NUM_COMMANDS,
    DrivingEnv,
    ScenarioSource,
)
from sim.ground_truth import GroundTruth
from sim.protocol import FIXED_DELTA_SECONDS
from sim.sensors import default_sensor_suite

EVAL_SUITE_DIR = LIBRARY_DIR / "eval"  # the held-out suite: never trained on
CAMERA_ID = "rgb_front"  # the front camera of default_sensor_suite (the agent's)
GNSS_ID = "gps"
IMU_ID = "imu"
SPEEDOMETER_ID = "speedometer"
POLICY_DT_S = FIXED_DELTA_SECONDS * ACTION_REPEAT  # [s] 0.1: the policy acts at 10 Hz
HISTORY_SPACING_S = HISTORY_STRIDE / SAMPLE_HZ  # [s] 0.5: the model's frame history spacing


def history_steps(action_repeat: int) -> int:
    """Policy steps between the model's history frames (0.5 s apart) when every action is
    held for `action_repeat` ticks; at least 1."""
    return max(1, int(round(HISTORY_SPACING_S / (FIXED_DELTA_SECONDS * action_repeat))))


HISTORY_STEPS = history_steps(ACTION_REPEAT)  # policy steps between frames at 10 Hz


_MAX_SEED = 2**31 - 1


class FinetuneEnv(gymnasium.Env):
    """Scenario sources -> shielded, Leaderboard-observed trajectory env (module docstring)."""

    metadata: dict[str, Any] = {"render_modes": [], "render_fps": 1.0 / POLICY_DT_S}

    def __init__(
        self,
        sources: Sequence[ScenarioSource],
        weights: Sequence[float] | None = None,
        reward: RewardWeights | None = None,
        shield: ShieldConfig | None = None,
        backend: str = "lite",
        max_episode_steps: int | None = None,
        image_history: int = 0,
        action_repeat: int = ACTION_REPEAT,
    ) -> None:
        if not sources:
            raise ValueError("sources must name at least one scenario")
        if weights is None:
            weights = [1.0] * len(sources)
        if len(weights) != len(sources) or any(not w > 0 for w in weights):
            raise ValueError(
                f"weights must be {len(sources)} positive numbers (one per source), got {weights}"
            )
        if image_history < 0:
            raise ValueError(f"image_history must be >= 0 frames, got {image_history}")
        if action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1 tick, got {action_repeat}")
        self.sources = list(sources)
        self.weights = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
        self.reward_weights = reward or RewardWeights()
        self.shield = Shield(shield)
        if self.shield.config.dt_s != DEFAULT_WAYPOINT_DT_S:
            raise ValueError(
                f"shield.dt_s ({self.shield.config.dt_s} s) must be the action's waypoint "
                f"spacing, {DEFAULT_WAYPOINT_DT_S} s"
            )
        self.backend = backend
        self.max_episode_steps = max_episode_steps
        self.image_history = image_history
        self.action_repeat = action_repeat
        self.history_steps = history_steps(action_repeat)
        self.metadata = {
            **self.metadata,
            "render_fps": 1.0 / (FIXED_DELTA_SECONDS * action_repeat),
        }
        self._sensors = default_sensor_suite()
        camera = next(s for s in self._sensors if s["id"] == CAMERA_ID)
        height, width = int(camera["height"]), int(camera["width"])
        obs: dict[str, spaces.Space] = {
            "image": spaces.Box(0, 255, (height, width, 3), np.uint8),
            "speed": spaces.Box(-MAX_SPEED_MPS, MAX_SPEED_MPS, (1,), np.float32),
            "command": spaces.Discrete(NUM_COMMANDS),
            "target_point": spaces.Box(-MAX_TARGET_M, MAX_TARGET_M, (2,), np.float32),
            "next_target_point": spaces.Box(-MAX_TARGET_M, MAX_TARGET_M, (2,), np.float32),
        }
        if image_history:
            obs["past_images"] = spaces.Box(0, 255, (image_history, height, width, 3), np.uint8)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Box(
            -MAX_WAYPOINT_M, MAX_WAYPOINT_M, (DEFAULT_HORIZON, 2), np.float32
        )
        self._env: DrivingEnv | None = None
        self._item = -1
        self._gt: GroundTruth | None = None
        self._route = RoutePlanner()
        self._frames: deque[np.ndarray] = deque(maxlen=self.history_steps * image_history + 1)
        self._episode: dict[str, Any] = {}

    # ------------------------------------------------------------------ episodes
    @property
    def driving_env(self) -> DrivingEnv:
        """The `DrivingEnv` of the current episode (its `sim` is the simulator)."""
        if self._env is None:
            raise RuntimeError("no episode is running: call reset() first")
        return self._env

    def _env_for(self, item: int) -> DrivingEnv:
        if self._env is not None and item == self._item:
            return self._env
        if self._env is not None:
            self._env.close()
            self._env = None
        self._env = DrivingEnv(
            self.sources[item],
            backend=self.backend,
            sensors=self._sensors,
            action_type="trajectory",
            privileged=True,
            reward=self.reward_weights.env_reward(),
            action_repeat=self.action_repeat,
            max_episode_steps=self.max_episode_steps,
            horizon=DEFAULT_HORIZON,
            waypoint_dt_s=DEFAULT_WAYPOINT_DT_S,
        )
        self._item = item
        return self._env

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        if "item" in options:
            item = int(options.pop("item"))
            if not 0 <= item < len(self.sources):
                raise ValueError(
                    f"reset option 'item' must be in [0, {len(self.sources)}), got {item}"
                )
        else:
            item = int(self.np_random.choice(len(self.sources), p=self.weights))
        env = self._env_for(item)
        raw, info = env.reset(seed=int(self.np_random.integers(0, _MAX_SEED)), options=options)
        self._gt = info.pop("ground_truth")
        self.shield.reset()
        self._route.set_route(env.sim.global_plan()[0])
        self._frames.clear()
        self._episode = {"return": 0.0, "length": 0, "penalty": 1.0}
        info.update(
            shield_intervened=False,
            shield_reason="",
            shield_detail="",
            shield_interventions=0,
            terminated_by="",
        )
        return self._observe(raw), info

    # ---------------------------------------------------------------------- step
    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        env = self.driving_env
        gt = self._gt
        if gt is None:
            raise RuntimeError("step() before reset(): call reset() first")
        sim = env.sim
        view = view_from_ground_truth(gt, sim.route, sim.lane_layout(), sim.speed_limit_at)
        decision = self.shield.check(np.asarray(action, dtype=np.float64), view, gt.time_s)
        executed = decision.trajectory.astype(np.float32)
        raw, _, terminated, truncated, info = env.step(executed)
        self._gt = info.pop("ground_truth")

        rewards = dict(info["rewards"])
        rewards[SHIELD_TERM] = -self.reward_weights.shield_intervention * float(decision.intervened)
        reward = float(sum(rewards.values()))
        kinds = [e["kind"] for e in info["events"]]
        stop = [k for k in kinds if k in self.reward_weights.terminate_on]
        terminated = terminated or bool(stop)

        ep = self._episode
        ep["return"] += reward
        ep["length"] += 1
        for kind in kinds:
            ep["penalty"] *= scoring.PENALTY_VALUES.get(kind, 1.0)
        info.update(
            rewards=rewards,
            shield_intervened=decision.intervened,
            shield_reason=decision.reason,
            shield_detail=decision.detail,
            shield_interventions=self.shield.interventions,
            executed_trajectory=executed,
            terminated_by=stop[0] if stop else "",
        )
        if terminated or truncated:
            info["episode"] = self._episode_stats(info)
        return self._observe(raw), reward, bool(terminated), bool(truncated), info

    def _episode_stats(self, info: dict[str, Any]) -> dict[str, Any]:
        status = self.driving_env.sim.route_status
        penalty = self._episode["penalty"] * scoring.percentage_factor(
            "outside_route_lanes", float(status.outside_lanes_pct), "unused"
        )
        completion = float(info["route_completion"])
        return {
            "return": float(self._episode["return"]),
            "length": int(self._episode["length"]),
            "driving_score": max(completion * penalty, 0.0),
            "route_completion": completion,
            "infraction_penalty": float(penalty),
            "shield_interventions": int(self.shield.interventions),
            "status": (
                f"Stopped - {info['terminated_by']}"
                if info["terminated_by"] and info["route_status"] == "Running"
                else str(info["route_status"])
            ),
            "scenario": str(info["scenario"]),
        }

    # --------------------------------------------------------------- observation
    def _observe(self, raw: dict[str, Any]) -> dict[str, Any]:
        image = np.ascontiguousarray(raw[CAMERA_ID][..., :3])
        compass = float(np.asarray(raw[IMU_ID])[-1])
        nav = self._route.update(np.asarray(raw[GNSS_ID], dtype=np.float64), compass)
        target = np.clip(np.nan_to_num(nav.target_point), -MAX_TARGET_M, MAX_TARGET_M)
        following = np.clip(np.nan_to_num(nav.next_target_point), -MAX_TARGET_M, MAX_TARGET_M)
        obs: dict[str, Any] = {
            "image": image,
            "speed": np.asarray(raw[SPEEDOMETER_ID], dtype=np.float32).reshape(1),
            "command": int(nav.command),
            "target_point": target.astype(np.float32),
            "next_target_point": following.astype(np.float32),
        }
        if self.image_history:
            self._frames.append(image)
            n = len(self._frames)
            obs["past_images"] = np.stack(
                [
                    self._frames[max(0, n - 1 - self.history_steps * (self.image_history - k))]
                    for k in range(self.image_history)
                ]
            )
        return obs

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
            self._item = -1


def check_not_eval(paths: Sequence[Path]) -> None:
    """Raise ValueError naming the first path inside the held-out eval suite folder."""
    held_out = EVAL_SUITE_DIR.resolve()
    for path in paths:
        resolved = Path(path).resolve()
        if resolved == held_out or held_out in resolved.parents:
            raise ValueError(
                f"{path} belongs to the held-out eval suite ({held_out}): fine-tuning on it "
                "would leak the evaluation; train on scenarios/library/train"
            )


def make_finetune_env(
    suite: str | Path,
    seed: int,
    index: int,
    reward_cfg: RewardWeights | None = None,
    shield_cfg: ShieldConfig | None = None,
    *,
    max_episode_steps: int | None = None,
    image_history: int = 0,
    backend: str = "lite",
    action_repeat: int = ACTION_REPEAT,
) -> FinetuneEnv:
    """The fine-tuning env number `index` of a training suite (folder, suite YAML or one
    scenario; see `scenarios.loader.load_suite`), seeded from (seed, index), so every env
    of every worker draws its own episodes. Refuses the held-out eval suite."""
    if index < 0 or seed < 0:
        raise ValueError(f"seed ({seed}) and index ({index}) must be >= 0")
    check_not_eval([Path(suite)])
    items = load_suite(suite)
    check_not_eval([item.path for item in items])
    env = FinetuneEnv(
        [str(item.path) for item in items],
        weights=[float(item.repetitions) for item in items],
        reward=reward_cfg,
        shield=shield_cfg,
        backend=backend,
        max_episode_steps=max_episode_steps,
        image_history=image_history,
        action_repeat=action_repeat,
    )
    state = np.random.SeedSequence([seed, index])
    env.np_random, _ = gymnasium.utils.seeding.np_random(int(state.generate_state(1)[0]))
    env.action_space.seed(int(state.generate_state(2)[1]))
    return env


__all__ = [
    "EVAL_SUITE_DIR",
    "HISTORY_SPACING_S",
    "HISTORY_STEPS",
    "POLICY_DT_S",
    "FinetuneEnv",
    "check_not_eval",
    "history_steps",
    "make_finetune_env",
]
