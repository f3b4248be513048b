"""GAE and the PPO loss against hand-computed values and a reference computation; the
fine-tuning config."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rl_finetune.config import (
    GUARD_TERM,
    SHIELD_TERM,
    FinetuneConfig,
    PPOConfig,
    RewardWeights,
    load_finetune_config,
)
from rl_finetune.ppo import explained_variance, gae, ppo_loss
from scenarios.loader import ScenarioError
from sim.rewards import REWARD_TERMS

# -- GAE ---------------------------------------------------------------------------------


def reference_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    last_value: np.ndarray,
    gamma: float,
    lam: float,
    final_values: np.ndarray | None,
) -> np.ndarray:
    """The forward definition: A_t = sum_l (gamma lam)^l delta_{t+l} up to the episode's
    end, one env and one step at a time."""
    steps, envs = rewards.shape
    out = np.zeros((steps, envs))
    for n in range(envs):
        deltas = []
        for t in range(steps):
            if terminated[t, n]:
                boot = 0.0
            elif truncated[t, n]:
                boot = 0.0 if final_values is None else final_values[t, n]
            else:
                boot = last_value[n] if t == steps - 1 else values[t + 1, n]
            deltas.append(rewards[t, n] + gamma * boot - values[t, n])
        for t in range(steps):
            total, weight = 0.0, 1.0
            for u in range(t, steps):
                total += weight * deltas[u]
                if terminated[u, n] or truncated[u, n]:
                    break
                weight *= gamma * lam
            out[t, n] = total
    return out


# env 0 terminates at t = 1; env 1 is truncated at t = 2 (final observation worth 5.0).
REWARDS = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [4.0, 1.0]], dtype=np.float32)
VALUES = np.array([[0.5, 1.0], [1.0, 1.0], [1.5, 1.0], [2.0, 1.0]], dtype=np.float32)
TERMINATED = np.array([[0, 0], [1, 0], [0, 0], [0, 0]], dtype=bool)
TRUNCATED = np.array([[0, 0], [0, 0], [0, 1], [0, 0]], dtype=bool)
FINAL = np.zeros((4, 2), dtype=np.float32)
FINAL[2, 1] = 5.0
LAST = np.array([3.0, 2.0], dtype=np.float32)


def test_gae_hand_computed_termination_and_truncation_bootstrap() -> None:
    adv, ret = gae(REWARDS, VALUES, TERMINATED, TRUNCATED, LAST, 0.9, 0.8, final_values=FINAL)
    # env 0: deltas 1.4, 1.0 (terminated: no bootstrap), 3.3, 4.7; gamma * lam = 0.72
    # env 1: deltas 0.9, 0.9, 4.5 (1 + 0.9 * 5 - 1: bootstraps on the final value), 1.8
    want = np.array([[2.12, 3.8808], [1.0, 4.14], [6.684, 4.5], [4.7, 1.8]])
    np.testing.assert_allclose(adv, want, rtol=1e-6)
    np.testing.assert_allclose(ret, want + VALUES, rtol=1e-6)
    assert adv.dtype == np.float32


def test_gae_truncation_without_final_value_is_a_termination() -> None:
    adv, _ = gae(REWARDS, VALUES, TERMINATED, TRUNCATED, LAST, 0.9, 0.8)
    np.testing.assert_allclose(adv[:, 1], [0.9 + 0.72 * 0.9, 0.9, 0.0, 1.8], rtol=1e-6)
    np.testing.assert_allclose(adv[:, 0], [2.12, 1.0, 6.684, 4.7], rtol=1e-6)


def test_gae_matches_the_reference_loop_on_random_rollouts() -> None:
    rng = np.random.default_rng(0)
    steps, envs = 13, 4
    rewards = rng.normal(size=(steps, envs))
    values = rng.normal(size=(steps, envs))
    terminated = rng.random((steps, envs)) < 0.15
    truncated = rng.random((steps, envs)) < 0.15  # some steps are both: terminated wins
    final = rng.normal(size=(steps, envs))
    last = rng.normal(size=envs)
    for final_values in (final, None):
        adv, ret = gae(rewards, values, terminated, truncated, last, 0.97, 0.9, final_values)
        want = reference_gae(rewards, values, terminated, truncated, last, 0.97, 0.9, final_values)
        np.testing.assert_allclose(adv, want, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ret, want + values, rtol=1e-10, atol=1e-10)


def test_gae_lambda_one_is_the_discounted_return_with_bootstrap() -> None:
    rewards = np.array([[1.0], [2.0], [3.0]])
    values = np.array([[0.3], [0.2], [0.1]])
    none = np.zeros((3, 1), dtype=bool)
    _, ret = gae(rewards, values, none, none, np.array([10.0]), 0.5, 1.0)
    assert ret[0, 0] == pytest.approx(1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 10)


def test_gae_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="truncated"):
        gae(REWARDS, VALUES, TERMINATED, TRUNCATED[:3], LAST, 0.9, 0.8)
    with pytest.raises(ValueError, match="last_value"):
        gae(REWARDS, VALUES, TERMINATED, TRUNCATED, LAST[:1], 0.9, 0.8)


# -- PPO loss ----------------------------------------------------------------------------

RATIOS = [1.5, 0.5, 1.1, 0.7]
ADVANTAGES = [1.0, -1.0, -2.0, 2.0]


def loss_inputs() -> dict[str, torch.Tensor]:
    old = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    return {
        "new_logp": (old + torch.log(torch.tensor(RATIOS))).requires_grad_(True),
        "old_logp": old,
        "advantages": torch.tensor(ADVANTAGES),
        "new_value": torch.tensor([1.0, 2.0, 0.0, 3.0], requires_grad=True),
        "old_value": torch.tensor([0.0, 2.5, 0.2, 3.0]),
        "returns": torch.tensor([2.0, 2.0, 1.0, 0.0]),
        "entropy": torch.tensor([1.0, 2.0, 3.0, 4.0]),
        "kl_ref": torch.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True),
    }


CFG = PPOConfig(
    clip=0.2,
    value_clip=0.5,
    value_coef=0.5,
    entropy_coef=0.01,
    kl_coef=0.1,
    normalize_advantages=False,
)


def test_ppo_loss_terms_hand_computed() -> None:
    x = loss_inputs()
    out = ppo_loss(**x, cfg=CFG)
    # max(-A r, -A clip(r, 0.8, 1.2)) per sample:
    #   r = 1.5, A = +1: max(-1.5, -1.2) = -1.2   (clipped above: no gain beyond 1 + c)
    #   r = 0.5, A = -1: max(0.5, 0.8)   = 0.8    (clipped below: no gain beyond 1 - c)
    #   r = 1.1, A = -2: 2.2                       (inside the clip range)
    #   r = 0.7, A = +2: max(-1.4, -1.6) = -1.4   (pessimistic: the unclipped term)
    assert out["policy"].item() == pytest.approx((-1.2 + 0.8 + 2.2 - 1.4) / 4)
    # value: max((V - R)^2, (V_old + clip(V - V_old, -0.5, 0.5) - R)^2):
    #   (1 - 2)^2 = 1 vs (0.5 - 2)^2 = 2.25; 0 vs 0; 1 vs (0 - 1)^2 = 1; 9 vs 9
    assert out["value"].item() == pytest.approx(0.5 * (2.25 + 0 + 1 + 9) / 4)
    assert out["entropy"].item() == pytest.approx(2.5)
    assert out["kl_ref"].item() == pytest.approx(0.25)
    want_loss = 0.1 + 0.5 * 0.5 * 12.25 / 4 - 0.01 * 2.5 + 0.1 * 0.25
    assert out["loss"].item() == pytest.approx(want_loss)
    assert out["clip_fraction"].item() == pytest.approx(0.75)
    approx_kl = np.mean([(r - 1) - math.log(r) for r in RATIOS])
    assert out["approx_kl"].item() == pytest.approx(approx_kl, rel=1e-5)
    assert not out["approx_kl"].requires_grad and not out["clip_fraction"].requires_grad


def test_ppo_loss_gradients_vanish_where_the_ratio_is_clipped() -> None:
    x = loss_inputs()
    ppo_loss(**x, cfg=CFG)["loss"].backward()
    # d/dlogp of -A r / B: clipped samples 0 and 1 get no gradient.
    grad = x["new_logp"].grad
    assert grad is not None
    np.testing.assert_allclose(grad.numpy(), [0.0, 0.0, 2.0 * 1.1 / 4, -2.0 * 0.7 / 4], rtol=1e-5)
    # KL penalty: kl_coef / B per sample.
    assert x["kl_ref"].grad is not None
    np.testing.assert_allclose(x["kl_ref"].grad.numpy(), [0.1 / 4] * 4, rtol=1e-6)
    # value: sample 0 takes the clipped branch (no gradient to V); sample 3 the unclipped
    # one: d/dV of value_coef * 0.5 * (V - R)^2 / B = 0.5 * 0.5 * 2 (V - R) / 4.
    v_grad = x["new_value"].grad
    assert v_grad is not None
    assert v_grad[0].item() == 0.0
    assert v_grad[3].item() == pytest.approx(0.5 * 0.5 * 2 * 3.0 / 4)


def test_ppo_loss_without_value_clip_and_with_normalised_advantages() -> None:
    x = loss_inputs()
    cfg = CFG.model_copy(update={"value_clip": None, "normalize_advantages": True})
    out = ppo_loss(**x, cfg=cfg)
    assert out["value"].item() == pytest.approx(0.5 * (1 + 0 + 1 + 9) / 4)
    adv = np.array(ADVANTAGES)
    adv = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
    r = np.array(RATIOS)
    want = np.mean(np.maximum(-adv * r, -adv * np.clip(r, 0.8, 1.2)))
    assert out["policy"].item() == pytest.approx(want, rel=1e-5)


def test_ppo_loss_rejects_mismatched_shapes() -> None:
    x = loss_inputs()
    x["returns"] = torch.zeros(3)
    with pytest.raises(ValueError, match="returns"):
        ppo_loss(**x, cfg=CFG)


def test_explained_variance() -> None:
    returns = np.array([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(returns, returns) == pytest.approx(1.0)
    assert explained_variance(np.zeros(4) + returns.mean(), returns) == pytest.approx(0.0)
    assert math.isnan(explained_variance(returns, np.ones(4)))


# -- config ------------------------------------------------------------------------------


def test_reward_weights_cover_every_env_term_the_shield_and_the_guard() -> None:
    fields = set(RewardWeights.model_fields) - {"terminate_on"}
    assert fields == {*REWARD_TERMS, SHIELD_TERM, GUARD_TERM}
    weights = RewardWeights().env_reward().weights
    assert set(weights) == set(REWARD_TERMS)
    assert weights["route_progress"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="terminate_on"):
        RewardWeights(terminate_on=("collisions_cat",))


def test_config_file_errors_name_the_line(tmp_path: Path) -> None:
    good = tmp_path / "ft.yaml"
    good.write_text("total_steps: 256\nenvs: 2\nppo:\n  rollout_steps: 16\n  minibatch: 8\n")
    cfg = load_finetune_config(good)
    assert cfg.iteration_steps == 32 and not cfg.use_ray
    assert cfg.model_copy(update={"workers": 2}).use_ray
    bad = tmp_path / "bad.yaml"
    bad.write_text("total_steps: 256\nppo:\n  rollout_step: 16\n")
    with pytest.raises(ScenarioError, match=r"bad\.yaml:3:\d+: .*rollout_step"):
        load_finetune_config(bad)


def test_train_and_eval_suites_stay_apart() -> None:
    with pytest.raises(ValueError, match="apart"):
        FinetuneConfig(
            suite=Path("scenarios/library/eval"),
            eval={"suite": "scenarios/library/eval/suite.yaml"},
        )
    with pytest.raises(ValueError, match="residual_std_m"):
        FinetuneConfig(policy={"residual_std_m": 5.0})
