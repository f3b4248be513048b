"""Rollouts on Ray: actors that own envs and a policy copy, weights broadcast each iteration.

    rollouts = RayRollouts(num_workers=2, env_factory=finetune_env_factory(suite, seed=0),
                           policy_factory=make_policy, envs_per_worker=2)
    batch = rollouts.collect(policy.state_dict(), steps=128)   # (T, workers x envs, ...)
    rollouts.close()

`RolloutWorker` (a Ray actor; also usable in-process) owns a `RolloutCollector` over its
envs (`SyncVectorEnv` by default: one process per actor, Ray does the parallelism) and a
policy from `policy_factory()`: any object with `load_state_dict(state_dict)` that is
called like `policy_fn` (`rl_finetune.rollout`): obs dict (E, ...) -> {"trajectory":
(E, T, 2), ...}. `collect(steps, weights)` loads the weights, then collects; the weights
travel as one `ray.put` object per iteration, shared by all actors. `env_factory(index)`
builds env number `index` (worker w owns indices w x envs_per_worker ...); it and the policy
factory must be picklable (module-level functions or `functools.partial`s of them).

Fault tolerance, Ray's own where it fits:
- Actors are created with `max_restarts` and `max_task_retries`: when an actor's process
  dies, Ray restarts it (a fresh `__init__`, which logs that it was reconstructed and
  reseeds its envs) and re-runs the interrupted `collect` with the same weights; the
  partial rollout of the dead process is gone.
- An actor that stays dead (killed with `ray.kill`, restarts used up) or whose `collect`
  raises or times out: its batch is dropped and logged, the actor is killed and replaced
  by a new one in the same slot (new seed), and the iteration returns the other workers'
  batches. If no worker returns anything, `collect` tries once more with the replaced
  actors, then raises.
- Env crashes inside an actor are the collector's business (restart the env, drop the
  episode), as on one machine.
The same code runs on a local Ray (`address=None`: started here with `num_cpus`, shut down
by `close`) and on a cluster (`address="ray://head:10001"` or "auto": the repository is
shipped as the job's working_dir, without data, runs and outputs).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

import gymnasium
import numpy as np

from rl_finetune.config import RewardWeights
from rl_finetune.envs import make_finetune_env
from rl_finetune.rollout import RolloutBatch, RolloutCollector
from rl_finetune.shield import ShieldConfig
from sim.agent_loading import REPO_ROOT

log = logging.getLogger(__name__)

DEFAULT_MAX_RESTARTS = 3  # Ray restarts of a crashed actor process
DEFAULT_MAX_TASK_RETRIES = 1  # Ray re-runs of a `collect` interrupted by such a crash
# Left out of the working_dir shipped to a cluster (Ray caps it at a few hundred MB).
CLUSTER_EXCLUDES = [".venv", ".git", "data", "runs", "outputs", "*.mp4"]


class RolloutPolicy(Protocol):
    """What `policy_factory()` returns (see the module docstring)."""

    def __call__(self, obs: dict[str, np.ndarray]) -> Mapping[str, Any]: ...

    def load_state_dict(self, state_dict: Any, /) -> Any: ...


EnvFactory = Callable[[int], gymnasium.Env]
PolicyFactory = Callable[[], RolloutPolicy]


def finetune_env_factory(
    suite: str | Path,
    seed: int,
    reward_cfg: RewardWeights | None = None,
    shield_cfg: ShieldConfig | None = None,
    **kwargs: Any,
) -> EnvFactory:
    """A picklable `env_factory(index)` building `make_finetune_env(suite, seed, index, ...)`."""
    return partial(_finetune_env, str(suite), seed, reward_cfg, shield_cfg, kwargs)


def _finetune_env(
    suite: str,
    seed: int,
    reward_cfg: RewardWeights | None,
    shield_cfg: ShieldConfig | None,
    kwargs: dict[str, Any],
    index: int,
) -> gymnasium.Env:
    return make_finetune_env(suite, seed, index, reward_cfg, shield_cfg, **kwargs)


def _reconstructed() -> bool:
    """Is this process a Ray actor that Ray restarted after a crash?"""
    try:
        import ray

        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # not in a Ray actor
        return False


class RolloutWorker:
    """Envs + a policy copy; one per Ray actor (see the module docstring)."""

    def __init__(
        self,
        env_factory: EnvFactory,
        policy_factory: PolicyFactory,
        worker_index: int = 0,
        envs_per_worker: int = 1,
        seed: int = 0,
        generation: int = 0,
        vectorization: Literal["async", "sync"] = "sync",
    ) -> None:
        if envs_per_worker < 1:
            raise ValueError(f"envs_per_worker must be >= 1, got {envs_per_worker}")
        self.worker_index = worker_index
        entropy = [seed, worker_index, generation]
        if _reconstructed():
            log.warning(
                "rollout worker %d was restarted by Ray after its process died; the partial "
                "rollout it was collecting is dropped",
                worker_index,
            )
            entropy.append(os.getpid())  # do not replay the episodes of the dead process
        collector_seed = int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)
        first = worker_index * envs_per_worker
        self.collector = RolloutCollector(
            [partial(env_factory, first + i) for i in range(envs_per_worker)],
            seed=collector_seed,
            vectorization=vectorization,
        )
        self.policy = policy_factory()

    def set_weights(self, state_dict: Any) -> None:
        self.policy.load_state_dict(state_dict)

    def collect(self, steps: int, weights: Any = None) -> RolloutBatch:
        """Load `weights` (if given), then `steps` policy steps of every env."""
        if weights is not None:
            self.set_weights(weights)
        return self.collector.collect(self.policy, steps)

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self.collector.close()


def _require_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("Ray rollouts need Ray: pip install -e '.[distributed]'") from exc
    return ray


class RayRollouts:
    """`num_workers` `RolloutWorker` actors (see the module docstring).

    `num_cpus`: of a local Ray started here (default: num_workers x cpus_per_worker);
    ignored when Ray is already initialised or `address` is given. `collect_timeout_s`:
    a worker slower than this is treated as dead (None: wait).
    """

    def __init__(
        self,
        num_workers: int,
        env_factory: EnvFactory,
        policy_factory: PolicyFactory,
        address: str | None = None,
        envs_per_worker: int = 1,
        seed: int = 0,
        num_cpus: int | None = None,
        cpus_per_worker: float = 1.0,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        max_task_retries: int = DEFAULT_MAX_TASK_RETRIES,
        collect_timeout_s: float | None = None,
        vectorization: Literal["async", "sync"] = "sync",
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        ray = _require_ray()
        self._started = False
        if not ray.is_initialized():
            if address:
                ray.init(
                    address=address,
                    runtime_env={"working_dir": str(REPO_ROOT), "excludes": CLUSTER_EXCLUDES},
                    log_to_driver=False,
                )
            else:
                pythonpath = os.pathsep.join(
                    p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
                )
                ray.init(
                    num_cpus=num_cpus or max(int(np.ceil(num_workers * cpus_per_worker)), 1),
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    log_to_driver=False,
                    runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
                )
            self._started = True
        self.num_workers = num_workers
        self.envs_per_worker = envs_per_worker
        self.seed = seed
        self.collect_timeout_s = collect_timeout_s
        self._worker_cls = ray.remote(
            num_cpus=cpus_per_worker,
            max_restarts=max_restarts,
            max_task_retries=max_task_retries,
        )(RolloutWorker)
        self._args = (env_factory, policy_factory)
        self._vectorization = vectorization
        self.generation = [0] * num_workers
        self.actors: list[Any] = [self._spawn(w) for w in range(num_workers)]
        self.replaced = 0  # actors replaced after dying or failing
        self.dropped = 0  # worker batches dropped

    def _spawn(self, worker: int) -> Any:
        return self._worker_cls.remote(
            *self._args,
            worker_index=worker,
            envs_per_worker=self.envs_per_worker,
            seed=self.seed,
            generation=self.generation[worker],
            vectorization=self._vectorization,
        )

    def _replace(self, worker: int) -> None:
        ray = _require_ray()
        with suppress(Exception):
            ray.kill(self.actors[worker], no_restart=True)
        self.generation[worker] += 1
        self.actors[worker] = self._spawn(worker)
        self.replaced += 1

    def collect(self, weights: Any, steps: int) -> RolloutBatch:
        """Broadcast `weights` (one `ray.put`), collect `steps` from every worker, and
        return the batches side by side (worker order) along the env axis."""
        ray = _require_ray()
        last_error: BaseException | None = None
        for _attempt in range(2):
            ref = ray.put(weights)
            futures = [actor.collect.remote(steps, ref) for actor in self.actors]
            deadline = (
                None
                if self.collect_timeout_s is None
                else time.monotonic() + self.collect_timeout_s
            )
            batches: list[RolloutBatch] = []
            for worker, future in enumerate(futures):
                timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                try:
                    batches.append(ray.get(future, timeout=timeout))
                except (ray.exceptions.RayError, TimeoutError) as exc:
                    last_error = exc
                    self.dropped += 1
                    log.error(
                        "rollout worker %d failed (%s: %s); its rollout is dropped and the "
                        "actor replaced",
                        worker,
                        type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "",
                    )
                    self._replace(worker)
            if batches:
                return RolloutBatch.concat(batches)
        raise RuntimeError(
            f"no rollout worker returned a batch twice in a row; last error: {last_error!r}"
        ) from last_error

    def close(self) -> None:
        """Close the actors' envs, kill the actors, shut down a Ray started here."""
        ray = _require_ray()
        with suppress(Exception):
            ray.get([actor.close.remote() for actor in self.actors], timeout=60)
        for actor in self.actors:
            with suppress(Exception):
                ray.kill(actor, no_restart=True)
        self.actors = []
        if self._started:
            ray.shutdown()
            self._started = False

    def __enter__(self) -> RayRollouts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "RayRollouts",
    "RolloutPolicy",
    "RolloutWorker",
    "finetune_env_factory",
]
