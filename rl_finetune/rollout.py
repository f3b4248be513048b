"""Rollout collection on one machine: E envs in a `gymnasium.vector` env, one policy call
per step for all of them, a `RolloutBatch` of (T, E) arrays.

    collector = RolloutCollector([partial(make_finetune_env, suite, seed, i) for i in range(E)])
    batch = collector.collect(policy_fn, steps=128)     # continues where the last call ended

`policy_fn(obs) -> dict`: `obs` holds the env's observation keys batched over the envs
(E, ...) plus `first` (E,) bool, True where the observation is the first of an episode
(for frame histories, e.g. `rl_finetune.policy.FrameHistory`). It returns at least
`trajectory` (E, T, 2) float32 [m] ego frame, the action, and may return `driven`
(E, T, 2), what the envs drive instead (a safety layer between policy and env, e.g.
`rl_finetune.guarded`); every other entry (mode,
residual, logp, value, noise...) is stored per step as given (numpy arrays or torch
tensors with a leading E). This module does not depend on the policy's implementation.

Vectorisation: `AsyncVectorEnv` (a process per env, shared-memory observations) or
`SyncVectorEnv` (in-process; what a Ray actor uses), both with autoreset off: the
collector resets finished envs itself (`reset_mask`), so the step that ends an episode
returns that episode's final observation and info, and the next observation is the new
episode's first.

Crashes. Every env runs inside `RestartOnError`: an exception in `step` or `reset` is
logged with its traceback, the env is closed, rebuilt from its factory and reset with a
fresh seed; the step reports `info["env_crashed"]`. The collector then drops the crashed
episode's steps from this batch (`valid` False, the crash step `truncated`, no episode
statistics) and carries on. A worker *process* that dies or hangs (pipe closed, step
timeout) takes the vector env down: the collector logs it, rebuilds the whole vector env,
drops every env's running episode the same way and carries on. Steps of a dropped episode
that an earlier batch already returned stay in that batch.
"""

from __future__ import annotations

import logging
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, SupportsFloat

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from rl_finetune.shield import REASONS as SHIELD_REASONS

log = logging.getLogger(__name__)

PolicyFn = Callable[[dict[str, np.ndarray]], Mapping[str, Any]]
EnvFn = Callable[[], gymnasium.Env]
ACTION_KEY = "trajectory"
DRIVEN_KEY = "driven"  # optional: what the envs drive instead of the action (a safety layer)
FIRST_KEY = "first"
DEFAULT_MAX_ENV_RESTARTS = 100  # per env: a scenario that always crashes is a bug, not bad luck
DEFAULT_MAX_VECTOR_RESTARTS = 3  # in a row, without a successful step in between
DEFAULT_STEP_TIMEOUT_S = 300.0  # [s] a vector step slower than this is a hung worker
_MAX_SEED = 2**31 - 1


# ------------------------------------------------------------------ data
@dataclass(frozen=True)
class EpisodeStats:
    """One finished episode. `env` indexes the batch's env axis; `step` is the batch row of
    its last step. Leaderboard fields come from the env's `info["episode"]` (NaN / "" when
    the env does not report them; `rl_finetune.envs.FinetuneEnv` does)."""

    env: int
    step: int
    episode_return: float
    length: int  # [policy steps]
    driving_score: float = float("nan")  # [0, 100]
    route_completion: float = float("nan")  # [%]
    infraction_penalty: float = float("nan")  # [0, 1]
    shield_interventions: int = 0
    terminated: bool = True  # False: truncated (timeout, step limit)
    status: str = ""
    scenario: str = ""


@dataclass(frozen=True)
class RolloutBatch:
    """T steps of E envs. Arrays are (T, E, ...), index [t, e]; trajectories are ego frame
    [m], x forward, y left, (H, 2) with H waypoints.

    observations: {key: (T, E, ...)} what the policy saw at step t (the env's keys: image
        (H, W, 3) uint8 BGR, speed (1,) [m/s], command int, target_point (2,) [m]...).
    first: (T, E) bool, observation t is the first of an episode.
    policy_outputs: {key: (T, E, ...)} what `policy_fn` returned; `trajectory` is the action.
    executed: (T, E, H, 2) float32 the trajectory the env drove (the shield's plan where
        it intervened; the action otherwise).
    rewards: (T, E) float32; reward_terms: {term: (T, E) float32} (from info["rewards"]).
    terminated, truncated: (T, E) bool, as Gymnasium; a dropped (crashed) episode's last
        step is truncated.
    shield_intervened: (T, E) bool.
    shield_reason: (T, E) int8 or None: 0 no intervention, k the shield.REASONS[k - 1] code.
    valid: (T, E) bool, False for the steps of dropped (crashed) episodes: leave them out
        of the loss.
    last_observations: {key: (E, ...)} the observation after step T - 1 (bootstrap value);
        last_first: (E,) bool.
    final_observations: {key: (N, ...)} the final observation of the N truncated (not
        terminated, not dropped) episodes, to bootstrap their value; final_index: (N, 2)
        int (t, e) of their last step.
    episodes: the episodes that ended in this batch (not dropped), in order of ending.
    crashes: env restarts during this batch; vector_restarts: vector env rebuilds.
    """

    observations: Mapping[str, np.ndarray]
    first: np.ndarray
    policy_outputs: Mapping[str, np.ndarray]
    executed: np.ndarray
    rewards: np.ndarray
    reward_terms: Mapping[str, np.ndarray]
    terminated: np.ndarray
    truncated: np.ndarray
    shield_intervened: np.ndarray
    valid: np.ndarray
    last_observations: Mapping[str, np.ndarray]
    last_first: np.ndarray
    final_observations: Mapping[str, np.ndarray]
    final_index: np.ndarray
    episodes: tuple[EpisodeStats, ...] = ()
    crashes: int = 0
    vector_restarts: int = 0
    shield_reason: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.rewards.ndim != 2:
            raise ValueError(f"RolloutBatch.rewards must be (T, E), got {self.rewards.shape}")
        t, e = self.rewards.shape
        for name in ("first", "terminated", "truncated", "shield_intervened", "valid"):
            value = getattr(self, name)
            if value.shape != (t, e) or value.dtype != np.bool_:
                raise ValueError(
                    f"RolloutBatch.{name} must be bool ({t}, {e}), got {value.dtype} {value.shape}"
                )
        if self.executed.ndim != 4 or self.executed.shape[:2] != (t, e):
            raise ValueError(
                f"RolloutBatch.executed must be ({t}, {e}, H, 2), got {self.executed.shape}"
            )
        for group in ("observations", "policy_outputs", "reward_terms"):
            for key, value in getattr(self, group).items():
                if value.shape[:2] != (t, e):
                    raise ValueError(
                        f"RolloutBatch.{group}[{key!r}] must start with ({t}, {e}), "
                        f"got {value.shape}"
                    )
        if ACTION_KEY not in self.policy_outputs:
            raise ValueError(f"RolloutBatch.policy_outputs must hold {ACTION_KEY!r}")
        if self.last_first.shape != (e,):
            raise ValueError(f"RolloutBatch.last_first must be ({e},), got {self.last_first.shape}")
        for key, value in self.last_observations.items():
            if value.shape[:1] != (e,):
                raise ValueError(
                    f"RolloutBatch.last_observations[{key!r}] must start with ({e},), "
                    f"got {value.shape}"
                )
        n = len(self.final_index)
        if self.final_index.shape != (n, 2):
            raise ValueError(
                f"RolloutBatch.final_index must be (N, 2), got {self.final_index.shape}"
            )
        for key, value in self.final_observations.items():
            if value.shape[:1] != (n,):
                raise ValueError(
                    f"RolloutBatch.final_observations[{key!r}] must start with ({n},), "
                    f"got {value.shape}"
                )

    @property
    def num_steps(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_envs(self) -> int:
        return int(self.rewards.shape[1])

    @property
    def episode_returns(self) -> np.ndarray:
        return np.array([ep.episode_return for ep in self.episodes], dtype=np.float64)

    @property
    def driving_scores(self) -> np.ndarray:
        return np.array([ep.driving_score for ep in self.episodes], dtype=np.float64)

    @property
    def interventions(self) -> int:
        """Shield interventions over the batch's valid steps."""
        return int(np.count_nonzero(self.shield_intervened & self.valid))

    @property
    def interventions_by_reason(self) -> dict[str, int]:
        """{shield.REASONS code: interventions over the valid steps} (every code, zeros too)."""
        if self.shield_reason is None:
            return {}
        codes = self.shield_reason[self.shield_intervened & self.valid]
        return {r: int(np.count_nonzero(codes == k + 1)) for k, r in enumerate(SHIELD_REASONS)}

    @staticmethod
    def concat(batches: Sequence[RolloutBatch]) -> RolloutBatch:
        """Batches of the same T side by side along the env axis (e.g. from Ray workers)."""
        if not batches:
            raise ValueError("RolloutBatch.concat needs at least one batch")
        steps = {b.num_steps for b in batches}
        if len(steps) != 1:
            raise ValueError(f"RolloutBatch.concat needs batches of one length T, got {steps}")

        def cat(group: str, axis: int) -> dict[str, np.ndarray]:
            keys = list(getattr(batches[0], group))
            for b in batches[1:]:
                if list(getattr(b, group)) != keys:
                    raise ValueError(f"RolloutBatch.concat: {group} keys differ between batches")
            return {k: np.concatenate([getattr(b, group)[k] for b in batches], axis) for k in keys}

        offsets = np.cumsum([0] + [b.num_envs for b in batches[:-1]])
        episodes = tuple(
            EpisodeStats(**{**ep.__dict__, "env": ep.env + int(off)})
            for b, off in zip(batches, offsets, strict=True)
            for ep in b.episodes
        )
        final_index = np.concatenate(
            [b.final_index + np.array([0, off]) for b, off in zip(batches, offsets, strict=True)]
        ).astype(np.int64)
        return RolloutBatch(
            observations=cat("observations", 1),
            first=np.concatenate([b.first for b in batches], 1),
            policy_outputs=cat("policy_outputs", 1),
            executed=np.concatenate([b.executed for b in batches], 1),
            rewards=np.concatenate([b.rewards for b in batches], 1),
            reward_terms=cat("reward_terms", 1),
            terminated=np.concatenate([b.terminated for b in batches], 1),
            truncated=np.concatenate([b.truncated for b in batches], 1),
            shield_intervened=np.concatenate([b.shield_intervened for b in batches], 1),
            shield_reason=(
                np.concatenate([b.shield_reason for b in batches], 1)
                if all(b.shield_reason is not None for b in batches)
                else None
            ),
            valid=np.concatenate([b.valid for b in batches], 1),
            last_observations=cat("last_observations", 0),
            last_first=np.concatenate([b.last_first for b in batches]),
            final_observations=cat("final_observations", 0),
            final_index=final_index,
            episodes=episodes,
            crashes=sum(b.crashes for b in batches),
            vector_restarts=sum(b.vector_restarts for b in batches),
        )


# ------------------------------------------------------------------ crash-restarting env
class RestartOnError(gymnasium.Wrapper):
    """Runs the env from `env_fn`; when `step` or `reset` raises, logs the traceback,
    closes it, builds a new one and resets it with a seed drawn from the old one's
    generator. A crashed `step` returns the new episode's first observation, reward 0,
    `truncated=True` and `info["env_crashed"] = True`, `info["crash"]` = the error.
    More than `max_restarts` restarts re-raise (a systematic failure is a bug)."""

    def __init__(self, env_fn: EnvFn, max_restarts: int = DEFAULT_MAX_ENV_RESTARTS) -> None:
        super().__init__(env_fn())
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {max_restarts}")
        self.env_fn = env_fn
        self.max_restarts = max_restarts
        self.restarts = 0

    def _restart(self, exc: BaseException, during: str) -> int:
        """Replace the env after `exc`; returns the seed to reset the new one with."""
        self.restarts += 1
        log.error(
            "env crashed during %s (restart %d/%d), partial episode dropped:\n%s",
            during,
            self.restarts,
            self.max_restarts,
            "".join(traceback.format_exception(exc)),
        )
        if self.restarts > self.max_restarts:
            raise RuntimeError(
                f"env crashed {self.restarts} times (max_restarts={self.max_restarts}); "
                f"last error: {type(exc).__name__}: {exc}"
            ) from exc
        seed = int(np.random.default_rng().integers(0, _MAX_SEED))
        with suppress(Exception):
            seed = int(self.env.np_random.integers(0, _MAX_SEED))
        with suppress(Exception):
            self.env.close()
        self.env = self.env_fn()
        return seed

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        while True:
            try:
                return self.env.reset(seed=seed, options=options)
            except Exception as exc:
                seed = self._restart(exc, "reset")

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        try:
            return self.env.step(action)
        except Exception as exc:
            seed = self._restart(exc, "step")
            obs, info = self.reset(seed=seed)
            info = {**info, "env_crashed": True, "crash": f"{type(exc).__name__}: {exc}"}
            return obs, 0.0, False, True, info


# ------------------------------------------------------------------ collector
def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _mask(infos: Mapping[str, Any], key: str, num_envs: int) -> np.ndarray:
    """Where the vector info `key` was set (Gymnasium's `_key` masks)."""
    return np.asarray(infos.get(f"_{key}", np.zeros(num_envs, bool)), dtype=bool)


def _obs_buffers(space: spaces.Dict, steps: int, envs: int) -> dict[str, np.ndarray]:
    out = {}
    for key, sub in space.spaces.items():
        if not isinstance(sub, spaces.Box | spaces.Discrete):
            raise ValueError(f"observation {key!r}: only Box and Discrete are supported, got {sub}")
        out[key] = np.zeros((steps, envs, *(sub.shape or ())), dtype=sub.dtype)
    return out


@dataclass
class _Running:
    """Per-env bookkeeping of the running episodes; returns and lengths carry across
    batches, `start` is the batch row where each env's episode began (0: earlier)."""

    returns: np.ndarray  # (E,)
    lengths: np.ndarray  # (E,)
    start: np.ndarray  # (E,) int


class RolloutCollector:
    """E envs in one vector env, collecting `RolloutBatch`es (see the module docstring).

    `env_fns`: one zero-argument factory per env (picklable for "async", e.g.
    `functools.partial(make_finetune_env, suite, seed, index)`). `seed` seeds the first
    reset (env i gets seed + i) and the reseeding after a vector env rebuild. State (the
    current observations, running episodes) carries over between `collect` calls.
    """

    def __init__(
        self,
        env_fns: Sequence[EnvFn],
        seed: int = 0,
        vectorization: Literal["async", "sync"] = "async",
        max_env_restarts: int = DEFAULT_MAX_ENV_RESTARTS,
        max_vector_restarts: int = DEFAULT_MAX_VECTOR_RESTARTS,
        step_timeout_s: float | None = DEFAULT_STEP_TIMEOUT_S,
        context: str | None = None,
    ) -> None:
        if not env_fns:
            raise ValueError("env_fns must hold at least one env factory")
        if vectorization not in ("async", "sync"):
            raise ValueError(f"vectorization must be 'async' or 'sync', got {vectorization!r}")
        self.env_fns = [partial(RestartOnError, fn, max_env_restarts) for fn in env_fns]
        self.vectorization = vectorization
        self.max_vector_restarts = max_vector_restarts
        self.step_timeout_s = step_timeout_s
        self.context = context
        self.num_envs = len(env_fns)
        self._rng = np.random.default_rng(seed)
        self._seed = seed
        self.vec_env: VectorEnv = self._make()
        self._obs: dict[str, np.ndarray] | None = None
        self._first = np.ones(self.num_envs, bool)
        self._running = _Running(
            np.zeros(self.num_envs),
            np.zeros(self.num_envs, np.int64),
            np.zeros(self.num_envs, np.int64),
        )
        self.total_steps = 0  # env steps collected (valid or not)
        self.crashes = 0
        self.vector_restarts = 0

    def _make(self) -> VectorEnv:
        if self.vectorization == "sync":
            return SyncVectorEnv(self.env_fns, autoreset_mode=AutoresetMode.DISABLED)
        return AsyncVectorEnv(
            self.env_fns, autoreset_mode=AutoresetMode.DISABLED, context=self.context
        )

    @property
    def observation_space(self) -> spaces.Dict:
        space = self.vec_env.single_observation_space
        if not isinstance(space, spaces.Dict):
            raise ValueError(f"the envs' observation space must be a Dict, got {space}")
        return space

    def _reset_all(self, seed: int | None) -> None:
        obs, _ = self.vec_env.reset(seed=seed)
        self._obs = obs
        self._first = np.ones(self.num_envs, bool)
        self._running.returns[:] = 0.0
        self._running.lengths[:] = 0

    def _rebuild(self, exc: BaseException) -> None:
        log.error(
            "vector env failed (%s: %s); rebuilding all %d envs, their running episodes "
            "are dropped:\n%s",
            type(exc).__name__,
            exc,
            self.num_envs,
            "".join(traceback.format_exception(exc)),
        )
        with suppress(Exception), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "close while waiting for step": we know
            if isinstance(self.vec_env, AsyncVectorEnv):
                self.vec_env.close(terminate=True)
            else:
                self.vec_env.close()
        self.vector_restarts += 1
        self.vec_env = self._make()
        self._reset_all(int(self._rng.integers(0, _MAX_SEED)))

    def _step(self, actions: np.ndarray) -> tuple[Any, ...]:
        if isinstance(self.vec_env, AsyncVectorEnv):
            self.vec_env.step_async(actions)
            return self.vec_env.step_wait(timeout=self.step_timeout_s)
        return self.vec_env.step(actions)

    def collect(self, policy_fn: PolicyFn, steps: int) -> RolloutBatch:
        """`steps` policy steps of every env (see `RolloutBatch`)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if self._obs is None:
            self._reset_all(self._seed)
        T, E = steps, self.num_envs
        obs_buf = _obs_buffers(self.observation_space, T, E)
        action_shape = tuple(self.vec_env.single_action_space.shape or ())
        outputs: dict[str, np.ndarray] = {}
        terms: dict[str, np.ndarray] = {}
        first = np.zeros((T, E), bool)
        executed = np.zeros((T, E, *action_shape), np.float32)
        rewards = np.zeros((T, E), np.float32)
        terminated = np.zeros((T, E), bool)
        truncated = np.zeros((T, E), bool)
        shield = np.zeros((T, E), bool)
        reason = np.zeros((T, E), np.int8)  # 0 or 1 + shield.REASONS index
        valid = np.ones((T, E), bool)
        finals: list[tuple[int, int, dict[str, np.ndarray]]] = []
        episodes: list[EpisodeStats] = []
        running = self._running
        running.start = np.zeros(E, np.int64)
        crashes0, restarts0 = self.crashes, self.vector_restarts
        failures = 0
        t = 0
        while t < T:
            obs = self._obs
            if obs is None:  # set by _reset_all
                raise RuntimeError("the collector has no observations: reset failed")
            for key, buf in obs_buf.items():
                buf[t] = obs[key]
            first[t] = self._first
            raw = policy_fn({**obs, FIRST_KEY: self._first.copy()})
            out = self._check_outputs(raw, E, action_shape)
            for key, value in out.items():
                if key not in outputs:
                    outputs[key] = np.zeros((T, *value.shape), value.dtype)
                outputs[key][t] = value
            actions = out.get(DRIVEN_KEY, out[ACTION_KEY]).astype(np.float32)
            try:
                next_obs, rew, term, trunc, infos = self._step(actions)
            except Exception as exc:  # a worker process died, hung or broke its pipe
                failures += 1
                if failures > self.max_vector_restarts:
                    raise
                running_here = running.start < t  # envs whose episode has rows in this batch
                if t > 0:
                    truncated[t - 1, running_here] = True
                for e in np.nonzero(running_here)[0].tolist():
                    valid[running.start[e] : t, e] = False
                self._rebuild(exc)
                running.start[:] = t
                continue
            failures = 0
            rewards[t] = rew
            terminated[t] = term
            truncated[t] = trunc
            if "shield_intervened" in infos:
                shield[t] = infos["shield_intervened"] & _mask(infos, "shield_intervened", E)
            if "shield_reason" in infos:
                has = _mask(infos, "shield_reason", E)
                reason[t] = [
                    SHIELD_REASONS.index(r) + 1 if h and r in SHIELD_REASONS else 0
                    for r, h in zip(infos["shield_reason"], has, strict=True)
                ]
            executed[t] = actions
            if "executed_trajectory" in infos:
                set_ = _mask(infos, "executed_trajectory", E)
                executed[t, set_] = infos["executed_trajectory"][set_]
            for name, value in (infos.get("rewards") or {}).items():
                if name.startswith("_"):
                    continue
                if name not in terms:
                    terms[name] = np.zeros((T, E), np.float32)
                terms[name][t] = value
            running.returns += rew
            running.lengths += 1

            crashed = infos.get("env_crashed", np.zeros(E, bool)) & _mask(infos, "env_crashed", E)
            done = terminated[t] | truncated[t] | crashed
            for c in np.nonzero(crashed)[0].tolist():
                self.crashes += 1
                valid[running.start[c] : t + 1, c] = False
                truncated[t, c] = True
                terminated[t, c] = False
                log.warning(
                    "env %d crashed (%s); dropped its partial episode (%d steps in this batch)",
                    c,
                    infos["crash"][c] if "crash" in infos else "?",
                    t + 1 - running.start[c],
                )
            for d in np.nonzero(done & ~crashed)[0].tolist():
                episodes.append(self._episode(infos, d, t, bool(terminated[t, d])))
                if truncated[t, d] and not terminated[t, d]:
                    finals.append((t, d, {k: np.array(v[d]) for k, v in next_obs.items()}))
            to_reset = done & ~crashed
            if to_reset.any():
                next_obs, _ = self.vec_env.reset(options={"reset_mask": to_reset})
            self._obs = next_obs
            self._first = done
            running.returns[done] = 0.0
            running.lengths[done] = 0
            running.start[done] = t + 1
            t += 1
        self.total_steps += T * E
        return RolloutBatch(
            observations=obs_buf,
            first=first,
            policy_outputs=outputs,
            executed=executed,
            rewards=rewards,
            reward_terms=terms,
            terminated=terminated,
            truncated=truncated,
            shield_intervened=shield,
            shield_reason=reason,
            valid=valid,
            last_observations={k: np.array(v) for k, v in (self._obs or {}).items()},
            last_first=self._first.copy(),
            final_observations={
                key: (
                    np.stack([f[2][key] for f in finals])
                    if finals
                    else np.zeros((0, *buf.shape[2:]), buf.dtype)
                )
                for key, buf in obs_buf.items()
            },
            final_index=np.array([(f[0], f[1]) for f in finals], np.int64).reshape(-1, 2),
            episodes=tuple(episodes),
            crashes=self.crashes - crashes0,
            vector_restarts=self.vector_restarts - restarts0,
        )

    def _episode(self, infos: Mapping[str, Any], e: int, t: int, term: bool) -> EpisodeStats:
        stats: dict[str, Any] = {}
        if "episode" in infos and _mask(infos, "episode", self.num_envs)[e]:
            ep = infos["episode"]
            stats = {k: ep[k][e] for k in ep if not k.startswith("_") and ep[f"_{k}"][e]}
        return EpisodeStats(
            env=e,
            step=t,
            episode_return=float(self._running.returns[e]),
            length=int(self._running.lengths[e]),
            driving_score=float(stats.get("driving_score", float("nan"))),
            route_completion=float(stats.get("route_completion", float("nan"))),
            infraction_penalty=float(stats.get("infraction_penalty", float("nan"))),
            shield_interventions=int(stats.get("shield_interventions", 0)),
            terminated=term,
            status=str(stats.get("status", "")),
            scenario=str(stats.get("scenario", "")),
        )

    @staticmethod
    def _check_outputs(
        raw: Mapping[str, Any], envs: int, action_shape: tuple[int, ...]
    ) -> dict[str, np.ndarray]:
        if ACTION_KEY not in raw:
            raise ValueError(
                f"policy_fn must return a dict with {ACTION_KEY!r} ({envs}, {action_shape}); "
                f"got keys {sorted(raw)}"
            )
        out = {key: _to_numpy(value) for key, value in raw.items()}
        for key in (ACTION_KEY, DRIVEN_KEY):
            if key in out and out[key].shape != (envs, *action_shape):
                raise ValueError(
                    f"policy_fn()[{key!r}] must be {(envs, *action_shape)}, got {out[key].shape}"
                )
        for key, value in out.items():
            if value.shape[:1] != (envs,):
                raise ValueError(
                    f"policy_fn()[{key!r}] must have a leading env axis of {envs}, "
                    f"got {value.shape}"
                )
        return out

    def close(self) -> None:
        with suppress(Exception):
            self.vec_env.close()

    def __enter__(self) -> RolloutCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def collect(
    policy_fn: PolicyFn, vec_env: RolloutCollector | Sequence[EnvFn], steps: int
) -> RolloutBatch:
    """`steps` policy steps with `policy_fn` on a `RolloutCollector` (continuing its
    episodes), or on a fresh one over `env_fns` (an `AsyncVectorEnv`, closed afterwards)."""
    if isinstance(vec_env, RolloutCollector):
        return vec_env.collect(policy_fn, steps)
    with RolloutCollector(vec_env) as collector:
        return collector.collect(policy_fn, steps)


__all__ = [
    "EpisodeStats",
    "PolicyFn",
    "RestartOnError",
    "RolloutBatch",
    "RolloutCollector",
    "collect",
]
