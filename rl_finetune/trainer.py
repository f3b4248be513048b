"""Closed-loop PPO fine-tuning of the planner: rollouts with the shield on, GAE, clipped PPO
with a KL penalty to the imitation policy, TensorBoard, resumable checkpoints.

    summary = FinetuneTrainer(load_finetune_config("configs/finetune.yaml")).run()

One iteration, top to bottom (`FinetuneTrainer.run`):
1. Rollouts: `ppo.rollout_steps` policy steps (10 Hz) of every env. One machine
   (`cfg.use_ray` False): a `RolloutCollector` over an `AsyncVectorEnv` of
   `envs x workers` envs, the policy acting in this process (`RolloutPolicy`). Ray
   (`workers > 1`, `ray_address`, or `backend: ray`): `RayRollouts`, `workers` actors of
   `envs` envs each; this iteration's weights are broadcast first (`rollout_weights`: the
   DriveModel, value head and log-std, not the frozen reference). Either way the policy
   stores, per step, `trajectory` (the action), `mode`, `noise`, `logp` and `value`.
   With `safety.enabled` the Leaderboard agent's safety guard sits between the policy and
   the envs (`rl_finetune.guarded`): the envs drive its trajectory, and every step it
   overrides the policy costs `reward.guard_intervention` (added to the rewards here).
2. Advantages: `ppo.gae` over the (T, E) batch. Terminations bootstrap 0; truncations
   (time limit) bootstrap from the value of their final observation
   (`RolloutBatch.final_observations`); the rollout's end from `last_observations`.
   Rows of dropped episodes (a crashed env, a dead vector-env worker; their last row is
   marked truncated, which bounds the recursion) are left out of the update (`valid`).
3. Update: `ppo.epochs` passes over the valid rows in minibatches of about
   `ppo.minibatch`; the frozen encoder runs once per iteration over the batch
   (`PlannerPolicy.encode`), `PlannerPolicy.evaluate` recomputes the candidates from
   those features and the stored noise, `ppo.ppo_loss` (clipped surrogate, clipped value loss, entropy bonus, KL to the
   imitation policy), gradients clipped to `ppo.max_grad_norm`, Adam with the policy
   weights at `ppo.lr` and the value head / log-std at `ppo.value_lr`. An epoch whose mean
   approx-KL exceeds `ppo.target_kl` ends the update.
4. Logging: TensorBoard at `<out>/tb` (x axis: env steps) — `losses/{policy, value,
   entropy, kl_ref, approx_kl, clip_fraction}`, `charts/SPS` (env steps per wall second of
   this process, updates included), `charts/rollout_SPS`, per finished episode
   `charts/episode_{return, driving_score, length}` and `charts/shield_interventions`,
   per iteration `charts/shield_intervention_rate` (per valid step),
   `charts/shield_interventions_by_reason/<reason>` (shield.REASONS); with the agent's
   guard in the loop `charts/guard_intervention_rate` and
   `charts/guard_interventions_by_reason/<reason>` (`guarded.GUARD_REASONS`); `charts/env_crashes`
   and `charts/dropped_workers` (cumulative), `charts/explained_variance`,
   `charts/residual_std_m`. A rich progress bar counts the steps.

The policy's frame history comes from the env (`image_history` = the model's history):
the stored observations then hold everything the policy saw, for the update and for the
truncation bootstrap, on one machine and on Ray workers alike.

Checkpoints: every `checkpoint_every` iterations and at the end, `<out>/state` (written
to a temporary directory and swapped in, `agent.training.state.save_state`): the policy
as `save_policy` writes it (`state/policy`), Adam's moments, both RNG streams of this
process (actions on one machine, minibatch order), the iteration and step counters and
running totals. The final policy goes to `<out>/checkpoint` via `save_policy`: the
Leaderboard agent loads it with `checkpoint: <out>/checkpoint`, unchanged.

`run(resume=True)` continues from `<out>/state`: the iteration and step counters, the
policy, Adam and the two RNG streams are restored, and training runs on to `total_steps`.
Not bit-exact with an uninterrupted run: the envs live in other processes, so running
episodes are lost and the envs restart with a seed derived from (seed, iteration); Ray
workers seed their action noise from their process. An interrupted iteration's rollout is
collected anew.

Steps: env (policy) steps over all envs, counted whether or not a crash dropped them;
training stops at the first iteration end at or past `total_steps`. The `eval` section of
the config is not run here: evaluate `<out>/checkpoint` with `vlmdrive eval`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from safetensors.torch import load_file, save_file

from agent.model.checkpoint import read_config
from agent.safety import GuardConfig
from agent.training import state as st
from rl_finetune.config import POLICY_HZ, FinetuneConfig
from rl_finetune.envs import check_not_eval, make_finetune_env
from rl_finetune.guarded import GUARD_REASONS, AgentGuards
from rl_finetune.policy import (
    Encoded,
    PlannerPolicy,
    PolicyObs,
    draw_noise,
    init_policy,
    load_policy,
    save_policy,
)
from rl_finetune.ppo import explained_variance, gae, ppo_loss
from rl_finetune.rollout import DRIVEN_KEY, FIRST_KEY, RolloutBatch, RolloutCollector
from scenarios.loader import load_suite
from sim.agent_loading import REPO_ROOT

log = logging.getLogger(__name__)

STATE_DIR = "state"
POLICY_DIR = "policy"  # inside the state: a save_policy directory
CHECKPOINT_DIR = "checkpoint"  # the final policy, for the Leaderboard agent
TB_DIR = "tb"
MINIBATCH_RNG = "rng_minibatch.safetensors"
OUTPUT_KEYS = ("trajectory", "mode", "noise", "logp", "value")  # stored per step
GUARD_KEY = "guard_intervened"  # per step and env, with the guard in the loop
GUARD_REASON_KEY = "guard_reason"  # GUARD_REASONS index
VALUE_CHUNK = 64  # rows per value-only forward (bootstrap values)
RECENT_EPISODES = 100  # the summary's means are over the last this many episodes
_MAX_SEED = 2**31 - 1


class FinetuneError(ValueError):
    """A fine-tuning job cannot start (bad init checkpoint, suite, or saved state)."""


# ------------------------------------------------------------------------ the policy side
def policy_obs(obs: Mapping[str, np.ndarray]) -> PolicyObs:
    """Batched env observations (B, ...) -> `PolicyObs`: `past_images` (B, N, H, W, 3) and
    `image` (B, H, W, 3) stacked oldest first, speed (B, 1) squeezed to (B,)."""
    image = np.asarray(obs["image"])
    if "past_images" in obs:
        image = np.concatenate([np.asarray(obs["past_images"]), image[:, None]], axis=1)

    def tensor(value: Any, dtype: Any = None) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(value, dtype=dtype))

    return PolicyObs(
        tensor(image),
        tensor(np.asarray(obs["speed"]).reshape(len(image)), np.float32),
        tensor(obs["command"]),
        tensor(obs["target_point"]),
    )


def rollout_weights(policy: PlannerPolicy) -> dict[str, torch.Tensor]:
    """What acting needs (DriveModel, value head, log-std); the frozen imitation reference
    stays out of the broadcast."""
    return {
        k: v.detach().cpu()
        for k, v in policy.state_dict().items()
        if not k.startswith("reference.")
    }


class RolloutPolicy:
    """The `policy_fn` of the collector (and the Ray workers' policy): env observations
    (E, ...) -> {trajectory (E, T, 2), mode (E,), noise (E, K, T, 2), logp (E,), value (E,)},
    sampled from `generator`. With `guards` (the agent's safety guard in the loop,
    `rl_finetune.guarded`) also `driven` (E, T, 2), what the envs drive, and per env
    `guard_intervened` (bool) and `guard_reason` (`GUARD_REASONS` index)."""

    def __init__(
        self,
        policy: PlannerPolicy,
        generator: torch.Generator,
        guards: AgentGuards | None = None,
    ) -> None:
        self.policy = policy
        self.generator = generator
        self.guards = guards

    def __call__(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        step = self.policy.act(policy_obs(obs), self.generator, perceive=self.guards is not None)
        out: dict[str, np.ndarray] = {
            "trajectory": step.trajectory.cpu().numpy().astype(np.float32),
            "mode": step.mode.cpu().numpy().astype(np.int64),
            "noise": step.noise.cpu().numpy().astype(np.float32),
            "logp": step.logp.cpu().numpy().astype(np.float32),
            "value": step.value.cpu().numpy().astype(np.float32),
        }
        if self.guards is not None:
            first = np.asarray(obs.get(FIRST_KEY, np.zeros(len(out["mode"]), np.bool_)), np.bool_)
            guarded = self.guards.apply(step, dict(obs), first)
            out[DRIVEN_KEY] = guarded.driven
            out[GUARD_KEY] = guarded.intervened
            out[GUARD_REASON_KEY] = guarded.reason
        return out

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Weights from `rollout_weights` (the reference is left as it is)."""
        missing, unexpected = self.policy.load_state_dict(dict(state_dict), strict=False)
        missing = [k for k in missing if not k.startswith("reference.")]
        if missing or unexpected:
            raise ValueError(
                f"rollout weights do not match the policy: missing {missing[:5]}, "
                f"unexpected {list(unexpected)[:5]}"
            )


def make_rollout_policy(
    init: str,
    cfg: Any,
    seed: int,
    threads: int = 1,
    guard: GuardConfig | None = None,
    envs: int = 1,
    policy_hz: float = POLICY_HZ,
) -> RolloutPolicy:
    """A Ray worker's policy (picklable through `functools.partial`): the imitation
    checkpoint `init` (relative paths: to the repository root, which is the job's
    working_dir on a cluster), weights arriving with every `collect`; with `guard`, the
    agent's safety guard for each of the worker's `envs` envs. Its action noise is
    seeded from (seed, process id): distinct per worker, not reproducible."""
    torch.set_num_threads(threads)
    path = Path(init)
    if not path.is_absolute():
        path = REPO_ROOT / path
    policy = init_policy(path, cfg)
    entropy = np.random.SeedSequence([seed, os.getpid()]).generate_state(1)[0]
    guards = None if guard is None else AgentGuards(envs, guard, policy.model.cfg, policy_hz)
    return RolloutPolicy(policy, torch.Generator().manual_seed(int(entropy)), guards)


# ------------------------------------------------------------------------ rollouts
class _Rollouts(Protocol):
    @property
    def dropped_workers(self) -> int: ...

    def collect(self, policy: PlannerPolicy, steps: int) -> RolloutBatch: ...

    def close(self) -> None: ...


class _LocalRollouts:
    """An `AsyncVectorEnv` here; the learner's policy acts."""

    def __init__(self, collector: RolloutCollector, acting: RolloutPolicy) -> None:
        self.collector, self.acting = collector, acting
        self.dropped_workers = 0

    def collect(self, policy: PlannerPolicy, steps: int) -> RolloutBatch:
        return self.collector.collect(self.acting, steps)

    def close(self) -> None:
        self.collector.close()


class _RayRollouts:
    """`RayRollouts` actors; the weights are broadcast with every collect."""

    def __init__(self, rollouts: Any) -> None:
        self.rollouts = rollouts

    @property
    def dropped_workers(self) -> int:
        return int(self.rollouts.dropped)

    def collect(self, policy: PlannerPolicy, steps: int) -> RolloutBatch:
        return self.rollouts.collect(rollout_weights(policy), steps)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.rollouts.close()


def _stream_seed(seed: int, iteration: int) -> int:
    """The envs' seed when (re)starting at `iteration`: `seed` itself on a fresh run."""
    if iteration == 0:
        return seed
    return int(np.random.SeedSequence([seed, iteration]).generate_state(1)[0] >> 1)


# ------------------------------------------------------------------------ the trainer
@dataclass
class _Totals:
    """Running totals, saved with the state."""

    iteration: int = 0
    global_step: int = 0
    valid_steps: int = 0
    episodes: int = 0
    shield_steps: int = 0  # valid steps the shield overrode
    shield_by_reason: dict[str, int] = field(default_factory=dict)  # of those, per reason
    guard_steps: int = 0  # valid steps the agent's guard overrode (safety.enabled)
    guard_by_reason: dict[str, int] = field(default_factory=dict)  # of those, per reason
    env_crashes: int = 0  # env restarts + vector env rebuilds
    wall_s: float = 0.0  # over all processes of this run


class FinetuneTrainer:
    """See the module docstring. `progress`: show the rich progress bar (else one log line
    per iteration)."""

    def __init__(self, cfg: FinetuneConfig, progress: bool = True) -> None:
        self.cfg = cfg
        self.progress = progress
        self.out = cfg.out
        self.state_dir = cfg.out / STATE_DIR
        self.recent: deque[dict[str, float]] = deque(maxlen=RECENT_EPISODES)

    # ---------------------------------------------------------------- checks
    def check(self) -> None:
        """Fail early, with the field at fault: the init checkpoint, the suite."""
        cfg = self.cfg
        try:
            read_config(cfg.init)
        except ValueError as exc:
            raise FinetuneError(f"init: {exc}") from None
        if cfg.out.resolve() == cfg.init.resolve():
            raise FinetuneError(f"out ({cfg.out}) must not be the init checkpoint")
        if not cfg.suite.exists():
            raise FinetuneError(f"suite: {cfg.suite} does not exist")
        try:
            check_not_eval([cfg.suite])
            check_not_eval([item.path for item in load_suite(cfg.suite)])
        except ValueError as exc:
            raise FinetuneError(f"suite: {exc}") from None

    # ---------------------------------------------------------------- entry point
    def run(self, resume: bool = False) -> dict[str, Any]:
        cfg = self.cfg
        self.check()
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        saved = st.read_progress(self.state_dir) if resume else None
        if resume and saved is None:
            log.warning("--resume: no saved state in %s; starting from scratch", self.state_dir)
        if saved is None:  # a fresh run: the previous run's state and charts would mix in
            for stale in (self.state_dir, self.out / TB_DIR):
                if stale.exists():
                    log.warning("removing the previous run's %s (no --resume)", stale)
                    shutil.rmtree(stale)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(
            yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
        )

        act_gen = torch.Generator().manual_seed(cfg.seed)
        batch_gen = torch.Generator().manual_seed(cfg.seed + 1)
        if saved is not None:
            policy = load_policy(self.state_dir / POLICY_DIR, init=cfg.init)
            if policy.cfg != cfg.policy:
                log.warning("--resume: the saved policy config wins over the config file's")
        else:
            policy = init_policy(cfg.init, cfg.policy)
        policy.train()
        opt = torch.optim.Adam(policy.param_groups(cfg.ppo.lr, cfg.ppo.value_lr), eps=1e-5)
        totals = _Totals()
        if saved is not None:
            st.load_extras(self.state_dir, opt, act_gen)
            batch_gen.set_state(load_file(str(self.state_dir / MINIBATCH_RNG))["state"])
            totals = _Totals(**saved["totals"])
            self.recent.extend(saved.get("recent", []))
            log.info("resuming at iteration %d, step %d", totals.iteration, totals.global_step)

        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(self.out / TB_DIR))
        rollouts = self._rollouts(policy, act_gen, totals.iteration)
        t_start, step_start = time.perf_counter(), totals.global_step
        wall_before = totals.wall_s
        try:
            with self._bar(totals.global_step) as (bar, task):
                while totals.global_step < cfg.total_steps:
                    t0 = time.perf_counter()
                    batch = rollouts.collect(policy, cfg.ppo.rollout_steps)
                    rollout_s = time.perf_counter() - t0
                    totals.iteration += 1
                    totals.global_step += batch.num_steps * batch.num_envs
                    metrics = self._update(policy, opt, batch, batch_gen)
                    elapsed = time.perf_counter() - t_start
                    totals.wall_s = wall_before + elapsed
                    metrics["charts/SPS"] = (totals.global_step - step_start) / elapsed
                    metrics["charts/rollout_SPS"] = batch.num_steps * batch.num_envs / rollout_s
                    metrics["charts/dropped_workers"] = rollouts.dropped_workers
                    self._log(writer, batch, totals, metrics)
                    bar.update(
                        task,
                        completed=totals.global_step,
                        iteration=totals.iteration,
                        ds=self._recent_mean("driving_score"),
                        sps=metrics["charts/SPS"],
                    )
                    if not self.progress:
                        log.info(
                            "iteration %d  step %d/%d  SPS %.1f  return %.2f  DS %.1f  "
                            "policy %.4f  value %.4f  kl_ref %.4f",
                            totals.iteration,
                            totals.global_step,
                            cfg.total_steps,
                            metrics["charts/SPS"],
                            self._recent_mean("return"),
                            self._recent_mean("driving_score"),
                            metrics.get("losses/policy", math.nan),
                            metrics.get("losses/value", math.nan),
                            metrics.get("losses/kl_ref", math.nan),
                        )
                    if totals.iteration % cfg.checkpoint_every == 0:
                        self._save_state(policy, opt, act_gen, batch_gen, totals)
        finally:
            rollouts.close()
            writer.close()
        self._save_state(policy, opt, act_gen, batch_gen, totals)
        summary = self._summary(totals, rollouts.dropped_workers)
        save_policy(
            policy,
            self.out / CHECKPOINT_DIR,
            {"finetune": {**summary, "config": cfg.model_dump(mode="json")}},
        )
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary

    # ---------------------------------------------------------------- rollouts
    def _rollouts(
        self, policy: PlannerPolicy, act_gen: torch.Generator, iteration: int
    ) -> _Rollouts:
        cfg = self.cfg
        seed = _stream_seed(cfg.seed, iteration)
        env_kwargs: dict[str, Any] = {
            "max_episode_steps": cfg.max_episode_steps,
            "image_history": policy.model.cfg.encoder.history,
            "action_repeat": cfg.action_repeat,
        }
        if not cfg.use_ray:
            env_fns = [
                partial(
                    make_finetune_env,
                    str(cfg.suite),
                    seed,
                    i,
                    cfg.reward,
                    cfg.shield,
                    **env_kwargs,
                )
                for i in range(cfg.envs * cfg.workers)
            ]
            guards = None
            if cfg.safety.enabled:
                guards = AgentGuards(
                    len(env_fns), cfg.safety.guard, policy.model.cfg, cfg.policy_hz
                )
            return _LocalRollouts(
                RolloutCollector(env_fns, seed=seed), RolloutPolicy(policy, act_gen, guards)
            )
        from rl_finetune.workers import RayRollouts, finetune_env_factory

        cluster = cfg.ray_address is not None
        suite, init = self._worker_path(cfg.suite, cluster), self._worker_path(cfg.init, cluster)
        rollouts = RayRollouts(
            num_workers=cfg.workers,
            env_factory=finetune_env_factory(suite, seed, cfg.reward, cfg.shield, **env_kwargs),
            policy_factory=partial(
                make_rollout_policy,
                init,
                policy.cfg,
                seed,
                guard=cfg.safety.guard if cfg.safety.enabled else None,
                envs=cfg.envs,
                policy_hz=cfg.policy_hz,
            ),
            address=cfg.ray_address,
            envs_per_worker=cfg.envs,
            seed=seed,
        )
        return _RayRollouts(rollouts)

    @staticmethod
    def _worker_path(path: Path, cluster: bool) -> str:
        """Absolute on a local Ray; relative to the repository (the job's working_dir) on a
        cluster, where nothing else is shipped."""
        resolved = path.resolve()
        if not cluster:
            return str(resolved)
        try:
            return str(resolved.relative_to(REPO_ROOT))
        except ValueError:
            raise FinetuneError(
                f"{path}: on a Ray cluster the init checkpoint and the suite must lie inside "
                f"the repository ({REPO_ROOT}), which is shipped as the job's working_dir"
            ) from None

    # ---------------------------------------------------------------- PPO
    @torch.no_grad()
    def _values(self, policy: PlannerPolicy, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """V(obs) (B,) for batched env observations (bootstraps)."""
        n = len(next(iter(obs.values())))
        out = np.zeros(n, np.float32)
        for start in range(0, n, VALUE_CHUNK):
            rows = slice(start, start + VALUE_CHUNK)
            part = policy_obs({k: v[rows] for k, v in obs.items()})
            noise = torch.zeros_like(draw_noise(policy.model, len(part), None))
            step = policy.act(part, deterministic=True, noise=noise)
            out[rows] = step.value.cpu().numpy()
        return out

    def _advantages(
        self, policy: PlannerPolicy, batch: RolloutBatch
    ) -> tuple[np.ndarray, np.ndarray]:
        """GAE (T, E) advantages and returns (see the module docstring, step 2)."""
        ppo = self.cfg.ppo
        values = batch.policy_outputs["value"].astype(np.float32)
        last_value = self._values(policy, batch.last_observations)
        final_values = np.zeros_like(values)
        if len(batch.final_index):
            t, e = batch.final_index.T
            final_values[t, e] = self._values(policy, batch.final_observations)
        return gae(
            self._rewards(batch),
            values,
            batch.terminated,
            batch.truncated,
            last_value,
            ppo.gamma,
            ppo.gae_lambda,
            final_values,
        )

    def _rewards(self, batch: RolloutBatch) -> np.ndarray:
        """The env's rewards, less `reward.guard_intervention` for every step the agent's
        guard overrode the policy (the guard runs in this process, not in the env)."""
        if GUARD_KEY not in batch.policy_outputs:
            return batch.rewards
        overridden = batch.policy_outputs[GUARD_KEY].astype(np.float32)
        return batch.rewards - np.float32(self.cfg.reward.guard_intervention) * overridden

    def _update(
        self,
        policy: PlannerPolicy,
        opt: torch.optim.Optimizer,
        batch: RolloutBatch,
        generator: torch.Generator,
    ) -> dict[str, float]:
        """PPO epochs over the batch's valid rows; the mean of every loss term."""
        ppo = self.cfg.ppo
        advantages, returns = self._advantages(policy, batch)
        valid = batch.valid
        n = int(valid.sum())
        if n == 0:
            log.warning("no valid steps in this iteration (all dropped); no update")
            return {}
        obs = {k: v[valid] for k, v in batch.observations.items()}
        out = {k: torch.from_numpy(batch.policy_outputs[k][valid]) for k in OUTPUT_KEYS}
        adv = torch.from_numpy(advantages[valid].astype(np.float32))
        ret = torch.from_numpy(returns[valid].astype(np.float32))
        params = [p for group in opt.param_groups for p in group["params"]]
        chunks = max(1, round(n / ppo.minibatch))
        encoded = self._encode_batch(policy, obs, ppo.minibatch)
        sums: dict[str, list[float]] = {}
        for _epoch in range(ppo.epochs):
            perm = torch.randperm(n, generator=generator).numpy()
            epoch_kl: list[float] = []
            for idx in np.array_split(perm, chunks):
                ev = policy.evaluate(
                    policy_obs({k: v[idx] for k, v in obs.items()}),
                    out["mode"][idx],
                    out["trajectory"][idx],
                    out["noise"][idx],
                    encoded=None if encoded is None else encoded.select(idx),
                )
                idx_t = torch.from_numpy(idx)
                losses = ppo_loss(
                    ev.logp,
                    out["logp"][idx_t],
                    adv[idx_t],
                    ev.value,
                    out["value"][idx_t],
                    ret[idx_t],
                    ev.entropy,
                    ev.kl_ref,
                    ppo,
                )
                opt.zero_grad(set_to_none=True)
                losses["loss"].backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, ppo.max_grad_norm)
                opt.step()
                for name, value in losses.items():
                    sums.setdefault(f"losses/{name}", []).append(float(value.detach()))
                sums.setdefault("losses/grad_norm", []).append(float(grad_norm))
                epoch_kl.append(float(losses["approx_kl"]))
            if ppo.target_kl is not None and float(np.mean(epoch_kl)) > ppo.target_kl:
                log.info("approx KL %.4f > target_kl: epochs stopped", np.mean(epoch_kl))
                break
        metrics = {k: float(np.mean(v)) for k, v in sums.items()}
        metrics["charts/explained_variance"] = explained_variance(
            batch.policy_outputs["value"][valid], returns[valid]
        )
        metrics["charts/residual_std_m"] = float(policy.std().mean().detach())
        metrics["charts/valid_fraction"] = n / valid.size
        return metrics

    @staticmethod
    def _encode_batch(
        policy: PlannerPolicy, obs: dict[str, np.ndarray], chunk: int
    ) -> Encoded | None:
        """The frozen encoder's output for every row, once per iteration (in chunks of
        `chunk` rows, the minibatch size); None when the encoder is trained."""
        if policy.cfg.train_encoder:
            return None
        n = len(next(iter(obs.values())))
        parts = [
            policy.encode(policy_obs({k: v[i : i + chunk] for k, v in obs.items()}))
            for i in range(0, n, max(1, chunk))
        ]
        return Encoded(*(torch.cat(t) for t in zip(*parts, strict=True)))

    # ---------------------------------------------------------------- logging
    def _log(
        self, writer: Any, batch: RolloutBatch, totals: _Totals, metrics: dict[str, float]
    ) -> None:
        step = totals.global_step
        valid = int(batch.valid.sum())
        totals.valid_steps += valid
        totals.shield_steps += batch.interventions
        totals.env_crashes += batch.crashes + batch.vector_restarts
        totals.episodes += len(batch.episodes)
        for ep in batch.episodes:
            record = {
                "return": ep.episode_return,
                "driving_score": ep.driving_score,
                "route_completion": ep.route_completion,
                "length": float(ep.length),
                "shield_interventions": float(ep.shield_interventions),
            }
            self.recent.append(record)
            writer.add_scalar("charts/episode_return", ep.episode_return, step)
            writer.add_scalar("charts/episode_driving_score", ep.driving_score, step)
            writer.add_scalar("charts/episode_route_completion", ep.route_completion, step)
            writer.add_scalar("charts/episode_length", ep.length, step)
            writer.add_scalar("charts/shield_interventions", ep.shield_interventions, step)
        if valid:
            writer.add_scalar("charts/shield_intervention_rate", batch.interventions / valid, step)
        for reason, count in batch.interventions_by_reason.items():
            totals.shield_by_reason[reason] = totals.shield_by_reason.get(reason, 0) + count
            writer.add_scalar(f"charts/shield_interventions_by_reason/{reason}", count, step)
        if GUARD_KEY in batch.policy_outputs and valid:
            overridden = batch.policy_outputs[GUARD_KEY] & batch.valid
            totals.guard_steps += int(overridden.sum())
            writer.add_scalar("charts/guard_intervention_rate", overridden.sum() / valid, step)
            reasons = batch.policy_outputs[GUARD_REASON_KEY][overridden]
            for index, count in zip(*np.unique(reasons, return_counts=True), strict=True):
                name = GUARD_REASONS[int(index)]
                totals.guard_by_reason[name] = totals.guard_by_reason.get(name, 0) + int(count)
                writer.add_scalar(f"charts/guard_interventions_by_reason/{name}", count, step)
        writer.add_scalar("charts/env_crashes", totals.env_crashes, step)
        writer.add_scalar("charts/iteration", totals.iteration, step)
        for name, value in metrics.items():
            if name != "losses/loss":
                writer.add_scalar(name, value, step)
        writer.flush()

    def _recent_mean(self, key: str) -> float:
        values = [r[key] for r in self.recent if not math.isnan(r[key])]
        return float(np.mean(values)) if values else math.nan

    @contextmanager
    def _bar(self, start: int) -> Iterator[tuple[Progress, TaskID]]:
        with Progress(
            TextColumn("[bold]finetune[/]"),
            BarColumn(),
            TextColumn(
                "{task.completed}/{task.total} steps  it {task.fields[iteration]}  "
                "DS {task.fields[ds]:.1f}  SPS {task.fields[sps]:.1f}"
            ),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not self.progress,
        ) as bar:
            task = bar.add_task(
                "finetune",
                total=self.cfg.total_steps,
                completed=start,
                iteration=0,
                ds=math.nan,
                sps=0.0,
            )
            yield bar, task

    # ---------------------------------------------------------------- state
    def _save_state(
        self,
        policy: PlannerPolicy,
        opt: torch.optim.Optimizer,
        act_gen: torch.Generator,
        batch_gen: torch.Generator,
        totals: _Totals,
    ) -> None:
        def write_extra(tmp: Path) -> None:
            save_policy(policy, tmp / POLICY_DIR)
            save_file({"state": batch_gen.get_state()}, str(tmp / MINIBATCH_RNG))

        progress = {
            "iteration": totals.iteration,
            "global_step": totals.global_step,
            "totals": totals.__dict__,
            "recent": list(self.recent),
        }
        st.save_state(self.state_dir, progress, {}, opt, act_gen, write_extra)

    def _summary(self, totals: _Totals, dropped_workers: int) -> dict[str, Any]:
        return {
            "init": str(self.cfg.init),
            "suite": str(self.cfg.suite),
            "iterations": totals.iteration,
            "steps": totals.global_step,
            "wall_s": round(totals.wall_s, 1),
            "sps": round(totals.global_step / totals.wall_s, 2) if totals.wall_s else None,
            "episodes": totals.episodes,
            "shield_intervention_rate": (
                totals.shield_steps / totals.valid_steps if totals.valid_steps else None
            ),
            "shield_interventions_by_reason": dict(totals.shield_by_reason),
            "guard_intervention_rate": (
                totals.guard_steps / totals.valid_steps
                if self.cfg.safety.enabled and totals.valid_steps
                else None
            ),
            "guard_interventions_by_reason": dict(totals.guard_by_reason),
            "env_crashes": totals.env_crashes,
            "dropped_workers": dropped_workers,
            f"last_{RECENT_EPISODES}_episodes": {
                key: _finite(self._recent_mean(key))
                for key in ("return", "driving_score", "route_completion", "shield_interventions")
            },
        }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


__all__ = [
    "FinetuneError",
    "FinetuneTrainer",
    "RolloutPolicy",
    "make_rollout_policy",
    "policy_obs",
    "rollout_weights",
]
