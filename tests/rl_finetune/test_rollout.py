"""Fine-tuning envs (observation, reward, suites) and rollout collection: vector envs,
crashed envs and worker processes, Ray workers."""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
import yaml
from gymnasium import spaces

from agent.rules import view_from_ground_truth
from rl_finetune.config import RewardWeights
from rl_finetune.envs import HISTORY_STEPS, FinetuneEnv, make_finetune_env
from rl_finetune.rollout import RolloutBatch, RolloutCollector, collect
from rl_finetune.shield import ShieldConfig
from sim.lite.town import TownSpec
from sim.spec import PropSpec, RouteSpec, WorldSpec

DT_S = 0.5
HORIZON = 8


def world(**over) -> WorldSpec:
    params: dict = dict(
        town=TownSpec(blocks_x=2, blocks_y=2),
        route=RouteSpec(length_m=120.0),
        num_vehicles=0,
        num_pedestrians=0,
        name="small",
    )
    params.update(over)
    return WorldSpec(**params)


def straight(n: int, speed_mps: float = 6.0) -> np.ndarray:
    """(n, T, 2) straight-ahead waypoints at a constant speed."""
    x = speed_mps * DT_S * np.arange(1, HORIZON + 1)
    one = np.stack([x, np.zeros(HORIZON)], axis=1)
    return np.repeat(one[None], n, axis=0).astype(np.float32)


def straight_policy(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = len(obs["speed"])
    return {"trajectory": straight(n), "value": np.zeros(n, np.float32), "mode": np.arange(n)}


def route_follower(env: FinetuneEnv, speed_mps: float) -> np.ndarray:
    """A policy blind to obstacles: the route centre line ahead at a constant speed."""
    sim = env.driving_env.sim
    v = view_from_ground_truth(sim.ground_truth(), sim.route, sim.lane_layout())
    d = speed_mps * DT_S * np.arange(1, HORIZON + 1)
    return np.stack(
        [np.interp(d, v.route_s, v.route_xy[:, 0]), np.interp(d, v.route_s, v.route_xy[:, 1])],
        axis=1,
    ).astype(np.float32)


# ------------------------------------------------------------------------------ env
def test_observation_is_what_the_leaderboard_agent_sees() -> None:
    env = FinetuneEnv([world()], image_history=1)
    try:
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        assert obs["image"].shape == (128, 256, 3) and obs["image"].dtype == np.uint8
        assert obs["target_point"][0] > 0.0  # the next route waypoint lies ahead
        assert 1 <= obs["command"] <= 6
        np.testing.assert_array_equal(obs["past_images"][0], obs["image"])  # no history yet
        frames = [obs["image"]]
        for _ in range(HISTORY_STEPS + 1):
            obs, *_ = env.step(straight(1)[0])
            frames.append(obs["image"])
        assert obs["speed"][0] > 0.5
        # The history frame is the camera 0.5 s (HISTORY_STEPS policy steps) earlier.
        np.testing.assert_array_equal(obs["past_images"][0], frames[-1 - HISTORY_STEPS])
        assert not np.array_equal(obs["past_images"][0], obs["image"])
        assert "ground_truth" not in info
    finally:
        env.close()


def test_a_lower_policy_rate_holds_each_action_for_more_ticks() -> None:
    """policy_hz 2 (action_repeat 10): one step is 0.5 s of game time, and the history
    frame, 0.5 s back, is the previous step's camera."""
    env = FinetuneEnv([world()], image_history=1, action_repeat=10)
    try:
        assert env.history_steps == 1 and env.metadata["render_fps"] == 2.0
        obs, _ = env.reset(seed=0)
        start = env.driving_env.sim.ground_truth().time_s
        before = obs["image"]
        obs, *_ = env.step(straight(1)[0])
        assert env.driving_env.sim.ground_truth().time_s - start == pytest.approx(0.5)
        np.testing.assert_array_equal(obs["past_images"][0], before)
    finally:
        env.close()
    with pytest.raises(ValueError, match="action_repeat"):
        FinetuneEnv([world()], action_repeat=0)


def test_reward_pays_route_progress_and_charges_a_collision() -> None:
    cone = world(props=(PropSpec("cone", 30.0),), route=RouteSpec(length_m=150.0))
    env = FinetuneEnv([cone], reward=RewardWeights(), shield=ShieldConfig(enabled=False))
    try:
        _, info = env.reset(seed=0)
        progress0, gained = info["route_progress_m"], 0.0
        for _ in range(120):
            _, reward, terminated, truncated, info = env.step(route_follower(env, 8.0))
            terms = info["rewards"]
            gained += terms["route_progress"]
            assert reward == pytest.approx(sum(terms.values()))
            assert terms["shield_intervention"] == 0.0  # the shield is off
            if terminated or truncated:
                break
        assert terminated and info["terminated_by"] == "collisions_layout"
        assert terms["collisions_layout"] == pytest.approx(-10.0 * (1.0 - 0.65))
        assert gained == pytest.approx(0.1 * (info["route_progress_m"] - progress0))
        assert gained > 2.0  # ~25 m of route before the cone
        episode = info["episode"]
        assert episode["infraction_penalty"] == pytest.approx(0.65)
        assert episode["driving_score"] == pytest.approx(0.65 * info["route_completion"])
        assert episode["shield_interventions"] == 0
        assert episode["status"] == "Stopped - collisions_layout"
    finally:
        env.close()


def test_finetune_env_refuses_the_eval_suite_and_seeds_per_index() -> None:
    with pytest.raises(ValueError, match="held-out eval suite"):
        make_finetune_env("scenarios/library/eval", seed=0, index=0)
    with pytest.raises(ValueError, match="held-out eval suite"):
        make_finetune_env("scenarios/library/eval/suite_quick.yaml", seed=0, index=0)
    with pytest.raises(ValueError, match="waypoint spacing"):
        FinetuneEnv([world()], shield=ShieldConfig(dt_s=0.25))
    train = "scenarios/library/train/suite.yaml"
    a, b = (make_finetune_env(train, seed=0, index=i) for i in (0, 1))
    entries = yaml.safe_load(Path(train).read_text())["scenarios"]
    assert len(a.sources) == len(entries) >= 15  # one source per suite entry
    assert a.weights.max() > a.weights.min()  # repetitions weigh
    assert a.np_random.integers(1 << 30) != b.np_random.integers(1 << 30)


# ------------------------------------------------------------------------ collection
def test_async_vector_collection_gives_time_by_env_arrays() -> None:
    env_fns = [partial(FinetuneEnv, [world(name=f"w{i}")]) for i in range(2)]
    with RolloutCollector(env_fns, seed=3, context="fork") as collector:
        batch = collector.collect(straight_policy, steps=5)
        assert batch.num_steps == 5 and batch.num_envs == 2
        obs = batch.observations
        assert obs["image"].shape == (5, 2, 128, 256, 3) and obs["image"].dtype == np.uint8
        assert obs["speed"].shape == (5, 2, 1)
        assert obs["command"].shape == (5, 2)
        assert obs["target_point"].shape == (5, 2, 2)
        assert batch.policy_outputs["trajectory"].shape == (5, 2, HORIZON, 2)
        assert batch.policy_outputs["value"].shape == (5, 2)
        assert batch.executed.shape == (5, 2, HORIZON, 2)
        for name in ("rewards", "terminated", "truncated", "shield_intervened", "valid"):
            assert getattr(batch, name).shape == (5, 2)
        assert batch.valid.all() and batch.first[0].all() and not batch.first[1:].any()
        assert batch.last_observations["image"].shape == (2, 128, 256, 3)
        assert set(batch.reward_terms) >= {"route_progress", "shield_intervention"}
        # The next batch continues the same episodes.
        more = collect(straight_policy, collector, steps=2)
        assert not more.first.any()
        both = RolloutBatch.concat([more, more])
        assert both.num_envs == 4 and both.observations["image"].shape[:2] == (2, 4)


class RaisesOnce(gymnasium.Wrapper):
    """Raises in its `crash_at`-th step, once per `flag` file."""

    def __init__(self, env: gymnasium.Env, flag: str, crash_at: int, hard: bool = False) -> None:
        super().__init__(env)
        self.flag, self.crash_at, self.hard, self.steps = flag, crash_at, hard, 0

    def step(self, action: Any) -> Any:
        self.steps += 1
        if self.steps == self.crash_at and not os.path.exists(self.flag):
            Path(self.flag).touch()
            if self.hard:
                os._exit(1)  # the worker process dies
            raise RuntimeError("simulated env failure")
        return self.env.step(action)


def flaky_env(flag: str, crash_at: int) -> gymnasium.Env:
    return RaisesOnce(FinetuneEnv([world(name="flaky")]), flag, crash_at)


def test_an_env_that_raises_is_restarted_and_its_episode_dropped(tmp_path: Path) -> None:
    env_fns = [
        partial(FinetuneEnv, [world(name="steady")]),
        partial(flaky_env, str(tmp_path / "crashed"), 3),
    ]
    with RolloutCollector(env_fns, seed=0, context="fork") as collector:
        batch = collector.collect(straight_policy, steps=6)
    assert batch.num_steps == 6 and batch.crashes == 1
    assert batch.valid[:, 0].all()
    assert not batch.valid[:3, 1].any() and batch.valid[3:, 1].all()  # steps 0-2 dropped
    assert batch.truncated[2, 1] and batch.first[3, 1]
    assert batch.rewards[2, 1] == 0.0
    assert not batch.episodes  # the dropped episode is not reported


class TinyEnv(gymnasium.Env):
    """No simulator: a 4x4 image and a speed, episodes of `length` steps."""

    def __init__(self, flag: str = "", crash_at: int = 0, length: int = 100) -> None:
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, 255, (4, 4, 3), np.uint8),
                "speed": spaces.Box(-100.0, 100.0, (1,), np.float32),
            }
        )
        self.action_space = spaces.Box(-150.0, 150.0, (HORIZON, 2), np.float32)
        self.flag, self.crash_at, self.length, self.t = flag, crash_at, length, 0

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "image": np.full((4, 4, 3), self.t, np.uint8),
            "speed": np.array([self.t], np.float32),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> Any:
        self.t += 1
        if self.flag and self.t == self.crash_at and not os.path.exists(self.flag):
            Path(self.flag).touch()
            os._exit(1)  # the whole worker process dies, not just the env
        return self._obs(), 1.0, False, self.t >= self.length, {}


def test_a_dead_worker_process_rebuilds_the_vector_env(tmp_path: Path) -> None:
    env_fns = [partial(TinyEnv, length=3), partial(TinyEnv, str(tmp_path / "died"), 2)]
    with RolloutCollector(env_fns, seed=0, context="fork", step_timeout_s=60.0) as collector:
        batch = collector.collect(straight_policy, steps=5)
    assert batch.vector_restarts == 1 and batch.num_steps == 5
    assert not batch.valid[:1].any() and batch.valid[1:].all()  # both episodes dropped
    assert batch.truncated[0].all() and batch.first[1].all()
    # TinyEnv 0 ran 3-step episodes after the rebuild: one truncated at row 3, kept.
    assert [(ep.env, ep.step, ep.length) for ep in batch.episodes] == [(0, 3, 3)]
    np.testing.assert_array_equal(batch.final_index, [[3, 0]])
    assert batch.final_observations["speed"][0, 0] == 3.0


# ------------------------------------------------------------------------------ Ray
TINY_SCENARIO = """\
name: tiny_rl
seed: 0
variations: 1
map:
  town: {blocks_x: 2, blocks_y: 2}
route:
  length_m: 100
traffic: {vehicles: 2, pedestrians: 0}
"""


class SpeedPolicy:
    """Straight ahead at the speed its weights say: shows which weights a worker has."""

    def __init__(self) -> None:
        self.speed = 0.0

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.speed = float(state_dict["speed"])

    def __call__(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(obs["speed"])
        return {"trajectory": straight(n, self.speed), "speed": np.full(n, self.speed)}


@pytest.mark.slow
def test_ray_workers_collect_and_a_killed_worker_is_replaced(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from rl_finetune.workers import RayRollouts, finetune_env_factory

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests are no package
    (tmp_path / "tiny_rl.yaml").write_text(TINY_SCENARIO)
    factory = finetune_env_factory(tmp_path / "tiny_rl.yaml", seed=0)
    with RayRollouts(2, factory, SpeedPolicy, num_cpus=2, max_task_retries=1) as rollouts:
        batch = rollouts.collect({"speed": 4.0}, steps=3)
        assert batch.num_envs == 2 and batch.num_steps == 3
        assert (batch.policy_outputs["speed"] == 4.0).all()  # the broadcast weights
        pids = ray.get([a.pid.remote() for a in rollouts.actors])

        ray.kill(rollouts.actors[0])  # dead for good: its rollout is dropped, a new actor
        batch = rollouts.collect({"speed": 5.0}, steps=3)
        assert batch.num_envs == 1 and rollouts.dropped == 1 and rollouts.replaced == 1
        assert (batch.policy_outputs["speed"] == 5.0).all()

        ray.kill(rollouts.actors[1], no_restart=False)  # Ray restarts it and retries
        batch = rollouts.collect({"speed": 6.0}, steps=3)
        assert batch.num_envs == 2 and rollouts.dropped == 1
        assert (batch.policy_outputs["speed"] == 6.0).all()
        new_pids = ray.get([a.pid.remote() for a in rollouts.actors])
        assert new_pids[0] != pids[0] and new_pids[1] != pids[1]
    assert not ray.is_initialized()
