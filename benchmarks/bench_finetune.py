"""Rollout throughput of the fine-tuning job (not a test): `python benchmarks/bench_finetune.py
[--json] [--checkpoint DIR] [--steps N]`.

Environment (policy) steps per second of wall time with the camera and the policy in the
loop — the rollout half of a PPO iteration (`rl_finetune.trainer`), on the training suite
with the shield on, exactly as `vlmdrive finetune` collects:
- `vector, 1 env` / `vector, 2 envs`: a `RolloutCollector` over an `AsyncVectorEnv` (a
  process per env), the policy acting for all envs at once in this process (1 torch
  thread);
- `ray, 2 workers`: `RayRollouts`, 2 actors with 1 env and a policy copy each, the weights
  broadcast before the timed collect (local Ray, 2 CPUs);
- `ray, 2 workers x E envs` (`--ray-envs E ...`, default 4): each actor steps E envs in its
  own process (a sync vector env) and acts for them in one batch, so the encoder and the
  planner run once per step for E frames (`envs_per_worker`, the finetune config's `envs`).
Every configuration first collects `--warmup` steps per env (process start, first resets,
torch warm-up), then times `--steps` steps per env. The issue's goal is >= 500 steps/s
aggregate on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from rl_finetune.config import RewardWeights
from rl_finetune.envs import make_finetune_env
from rl_finetune.rollout import RolloutBatch, RolloutCollector
from rl_finetune.shield import ShieldConfig
from rl_finetune.trainer import RolloutPolicy, make_rollout_policy, rollout_weights

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "scenarios/library/train"
MAX_EPISODE_STEPS = 300  # [policy steps] as configs/finetune.yaml


def _rate(batch: RolloutBatch, seconds: float) -> dict[str, Any]:
    steps = batch.num_steps * batch.num_envs
    return {"steps": steps, "seconds": round(seconds, 2), "steps_per_s": round(steps / seconds, 1)}


def run_vector(checkpoint: Path, envs: int, steps: int, warmup: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    acting = make_rollout_policy(str(checkpoint), None, seed=0)
    env_fns = [
        partial(
            make_finetune_env,
            str(SUITE),
            0,
            i,
            RewardWeights(),
            ShieldConfig(),
            max_episode_steps=MAX_EPISODE_STEPS,
            image_history=acting.policy.model.cfg.encoder.history,
        )
        for i in range(envs)
    ]
    with RolloutCollector(env_fns, seed=0) as collector:
        collector.collect(acting, warmup)
        t = time.perf_counter()
        batch = collector.collect(acting, steps)
        seconds = time.perf_counter() - t
    return {"config": f"vector, {envs} env{'s' if envs > 1 else ''}", **_rate(batch, seconds)}


def run_ray(
    checkpoint: Path, workers: int, steps: int, warmup: int, envs_per_worker: int = 1
) -> dict[str, Any]:
    from rl_finetune.workers import RayRollouts, finetune_env_factory

    learner: RolloutPolicy = make_rollout_policy(str(checkpoint), None, seed=0)
    history = learner.policy.model.cfg.encoder.history
    factory = finetune_env_factory(
        SUITE,
        0,
        RewardWeights(),
        ShieldConfig(),
        max_episode_steps=MAX_EPISODE_STEPS,
        image_history=history,
    )
    with RayRollouts(
        workers,
        factory,
        partial(make_rollout_policy, str(checkpoint.resolve()), None, 0),
        envs_per_worker=envs_per_worker,
        num_cpus=workers,
    ) as rollouts:
        weights = rollout_weights(learner.policy)
        rollouts.collect(weights, warmup)
        t = time.perf_counter()
        batch = rollouts.collect(weights, steps)
        seconds = time.perf_counter() - t
    name = f"ray, {workers} workers" + (f" x {envs_per_worker} envs" if envs_per_worker > 1 else "")
    return {"config": name, **_rate(batch, seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints/vlmdrive-tiny")
    parser.add_argument("--steps", type=int, default=128, help="timed policy steps per env")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps per env first")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray configurations")
    parser.add_argument(
        "--ray-envs",
        type=int,
        nargs="*",
        default=[4],
        help="also time 2 Ray workers with this many envs each (batched acting)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    rows = [run_vector(args.checkpoint, envs, args.steps, args.warmup) for envs in (1, 2)]
    if not args.no_ray:
        rows.append(run_ray(args.checkpoint, 2, args.steps, args.warmup))
        for envs in args.ray_envs:
            if envs < 1:
                parser.error(f"--ray-envs: {envs} envs per worker, need >= 1")
            rows.append(run_ray(args.checkpoint, 2, args.steps, args.warmup, envs))
    report = {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "checkpoint": str(args.checkpoint),
        "steps_per_env": args.steps,
        "runs": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"fine-tuning rollouts: env steps/s, camera + shield + policy in the loop, "
        f"{report['cpus']} cpus, load {report['load_avg_1m']} (goal >= 500 aggregate)"
    )
    print(f"  {'configuration':<26} {'steps':>6} {'seconds':>8} {'steps/s':>8}")
    for r in rows:
        print(f"  {r['config']:<26} {r['steps']:>6} {r['seconds']:>8} {r['steps_per_s']:>8}")


if __name__ == "__main__":
    main()
