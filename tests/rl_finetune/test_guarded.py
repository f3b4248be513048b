"""The Leaderboard agent's safety guard in the fine-tuning loop (rl_finetune/guarded.py):
per env it checks the policy's action on the model's own perception, the envs drive its
decision, and each env's guard starts afresh with its episode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_policy import make_model, make_obs

from agent.data.schema import FLAGS, INTENTS, LIGHT_STATES
from agent.safety import GuardConfig
from rl_finetune.guarded import GUARD_REASONS, AgentGuards
from rl_finetune.policy import PlannerPolicy, PolicyStep

T = 8  # poses, 0.5 s apart
K = 4  # candidates in these hand-made steps
SPEED = 8.0  # [m/s]


def straight(speed: float) -> torch.Tensor:
    """(T, 2) along +x at constant speed."""
    x = speed * 0.5 * torch.arange(1, T + 1, dtype=torch.float32)
    return torch.stack([x, torch.zeros(T)], dim=1)


def scene_step(model_cfg, lights: list[str], nan_flags: list[bool]) -> PolicyStep:
    """One env per entry: every candidate drives straight on at SPEED, mode 0 chosen with
    probability ~0.98; an empty BEV grid; the light state given with logit margin 8."""
    b = len(lights)
    rows, cols = model_cfg.perception.bev_shape
    candidates = straight(SPEED).expand(b, K, T, 2).clone()
    logits = torch.zeros(b, K)
    logits[:, 0] = 6.0
    light = torch.full((b, len(LIGHT_STATES)), -4.0)
    for e, state in enumerate(lights):
        light[e, LIGHT_STATES.index(state)] = 4.0
    flags = torch.full((b, len(FLAGS)), -8.0)
    for e, bad in enumerate(nan_flags):
        if bad:
            flags[e, 0] = float("nan")
    return PolicyStep(
        trajectory=candidates[:, 0].clone(),
        mode=torch.zeros(b, dtype=torch.long),
        residual=torch.zeros(b, T, 2),
        logp=torch.zeros(b),
        value=torch.zeros(b),
        mode_logits=logits,
        candidates=candidates,
        noise=torch.zeros(b, K, T, 2),
        heads={
            "bev": torch.full((b, len(model_cfg.perception.bev_classes), rows, cols), -10.0),
            "light": light,
            "flags": flags,
            "intent": torch.zeros(b, len(INTENTS)),
        },
    )


def observations(b: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)  # fresh frames: a repeated one reads as a frozen camera
    return {
        "image": rng.integers(0, 256, (b, 32, 64, 3), dtype=np.uint8),
        "speed": np.full((b, 1), SPEED, np.float32),
        "target_point": np.tile(np.array([[20.0, 0.0]], np.float32), (b, 1)),
        "next_target_point": np.tile(np.array([[40.0, 0.0]], np.float32), (b, 1)),
    }


@pytest.fixture
def guards() -> AgentGuards:
    return AgentGuards(3, GuardConfig(raise_errors=True), make_model().cfg, policy_hz=10.0)


def test_each_env_drives_its_guards_decision(guards: AgentGuards) -> None:
    step = scene_step(guards.model_cfg, ["none", "red", "none"], [False, False, True])
    out = guards.apply(step, observations(3, 0), np.ones(3, bool))
    reasons = [GUARD_REASONS[i] for i in out.reason]
    assert reasons == ["ACCEPTED", "RED_LIGHT", "NONFINITE_INPUT"]
    assert out.intervened.tolist() == [False, True, True]
    assert out.driven.dtype == np.float32 and out.driven.shape == (3, T, 2)
    # Accepted: the policy's own action, unchanged.
    np.testing.assert_allclose(out.driven[0], step.trajectory[0].numpy(), atol=1e-6)
    # Red light: the guard's plan stops well short of where the policy's would go.
    assert out.driven[1, -1, 0] < 0.5 * float(step.trajectory[1, -1, 0])
    # Bad perception: an emergency stop, driven as a standing trajectory.
    assert np.all(out.driven[2] == 0.0)


def test_the_guard_clock_runs_per_episode_and_restarts_with_it(guards: AgentGuards) -> None:
    step = scene_step(guards.model_cfg, ["none"] * 3, [False] * 3)
    guards.apply(step, observations(3, 0), np.ones(3, bool))
    guards.apply(step, observations(3, 1), np.zeros(3, bool))
    guards.apply(step, observations(3, 2), np.array([False, True, False]))
    np.testing.assert_allclose(guards.time_s, [0.2, 0.0, 0.2])


def test_perception_heads_are_required(guards: AgentGuards) -> None:
    step = scene_step(guards.model_cfg, ["none"] * 3, [False] * 3)
    bare = PolicyStep(**{**step.__dict__, "heads": None})
    with pytest.raises(ValueError, match="perceive=True"):
        guards.apply(bare, observations(3, 0), np.ones(3, bool))


def test_act_perceive_returns_the_models_heads_on_the_same_frame() -> None:
    model = make_model()
    policy = PlannerPolicy(model)
    obs = make_obs(b=2)
    step = policy.act(obs, torch.Generator().manual_seed(0), perceive=True)
    assert step.heads is not None
    with torch.no_grad():
        tokens, pooled = policy._encode(policy.model, obs)
        expected = model.heads(tokens, pooled)
    for name in ("bev", "light", "flags", "intent"):
        torch.testing.assert_close(step.heads[name], expected[name])
    assert policy.act(obs, torch.Generator().manual_seed(0)).heads is None


def test_a_rarely_chosen_sampled_mode_is_not_low_confidence(guards: AgentGuards) -> None:
    """The guard's confidence is the top mode's probability, as in the agent: exploring a
    mode the policy seldom picks (p ~ 0.002 here) is not a LOW_CONFIDENCE plan."""
    step = scene_step(guards.model_cfg, ["none"] * 3, [False] * 3)
    sampled = PolicyStep(
        **{
            **step.__dict__,
            "mode": torch.ones(3, dtype=torch.long),
            "trajectory": step.candidates[:, 1].clone(),
        }
    )
    assert float(sampled.mode_logits.softmax(-1)[0, 1]) < 0.01
    out = guards.apply(sampled, observations(3, 0), np.ones(3, bool))
    assert [GUARD_REASONS[i] for i in out.reason] == ["ACCEPTED"] * 3
