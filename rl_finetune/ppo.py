"""PPO's pieces as importable functions (cleanrl's ppo.py, with the termination /
truncation split and a KL penalty to the imitation policy).

- `gae`: generalised advantage estimation over a (T, N) rollout of N envs.
- `ppo_loss`: clipped surrogate, clipped value loss, entropy bonus, KL penalty, and the
  diagnostics approx_kl / clip_fraction.
- `explained_variance`: how much of the returns' variance the value function explains.

Terminations vs truncations (Pardo et al. 2018, "Time limits in RL"): a *terminated* step
(crash, route finished or failed) has no future, so its bootstrap value is 0; a
*truncated* step (time limit) is cut off but the episode would have gone on, so it
bootstraps with the value of its final observation, `final_values[t]`, when given — without
it a truncation is treated as a termination (biased towards 0). Either way the advantage
recursion stops at the episode's end: nothing leaks from the next episode of that env.

Rollout layouts: when the collector resets finished envs itself (autoreset off), the
final observation is the one the ending step returned; evaluate its value for
`final_values`. With Gymnasium's next-step autoreset instead, the step after an episode's
end is not a transition (its action is ignored) and must be left out of the loss; its
stored observation is the previous episode's final one, so `final_values[t] =
values[t + 1]` for a truncated step t. Rows left out of the loss (e.g. a crashed
episode's) still bound the recursion if their episode's last step is marked truncated.
"""

from __future__ import annotations

import numpy as np
import torch

from rl_finetune.config import PPOConfig

ADV_EPS = 1e-8  # advantage normalisation: (A - mean) / (std + ADV_EPS)


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    last_value: np.ndarray,
    gamma: float,
    lam: float,
    final_values: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(advantages, returns), both (T, N).

    rewards, values (V(s_t)), terminated, truncated, final_values: (T, N); last_value (N,):
    V of the observation after the rollout's last step (ignored where that step ended an
    episode). A step both terminated and truncated counts as terminated. returns =
    advantages + values (the value targets).
    """
    r = np.asarray(rewards, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    term = np.asarray(terminated, dtype=bool)
    trunc = np.asarray(truncated, dtype=bool)
    last = np.asarray(last_value, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"rewards must be (T, N), got {r.shape}")
    for name, arr in (("values", v), ("terminated", term), ("truncated", trunc)):
        if arr.shape != r.shape:
            raise ValueError(f"{name} must be {r.shape} like rewards, got {arr.shape}")
    if last.shape != r.shape[1:]:
        raise ValueError(f"last_value must be ({r.shape[1]},), got {last.shape}")
    final = None
    if final_values is not None:
        final = np.asarray(final_values, dtype=np.float64)
        if final.shape != r.shape:
            raise ValueError(f"final_values must be {r.shape} like rewards, got {final.shape}")
    if not 0.0 <= gamma <= 1.0 or not 0.0 <= lam <= 1.0:
        raise ValueError(f"gamma and lam must be in [0, 1], got {gamma}, {lam}")

    steps = r.shape[0]
    advantages = np.zeros_like(r)
    running = np.zeros_like(last)
    for t in reversed(range(steps)):
        next_value = last if t == steps - 1 else v[t + 1]
        done = term[t] | trunc[t]
        bootstrap = np.where(done, 0.0, next_value)
        if final is not None:
            bootstrap = np.where(trunc[t] & ~term[t], final[t], bootstrap)
        delta = r[t] + gamma * bootstrap - v[t]
        running = delta + gamma * lam * np.where(done, 0.0, running)
        advantages[t] = running
    dtype = np.result_type(np.asarray(rewards).dtype, np.asarray(values).dtype, np.float32)
    return advantages.astype(dtype), (advantages + v).astype(dtype)


def ppo_loss(
    new_logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    new_value: torch.Tensor,
    old_value: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    kl_ref: torch.Tensor,
    cfg: PPOConfig,
) -> dict[str, torch.Tensor]:
    """PPO's loss on a minibatch; every argument (B,). Returns
    - `loss`: policy + value_coef * value - entropy_coef * entropy + kl_coef * kl_ref
      (to minimise);
    - `policy`: the clipped surrogate, mean of max(-A r, -A clip(r, 1 - c, 1 + c)),
      r = exp(new_logp - old_logp), A normalised per minibatch if `cfg.normalize_advantages`
      (unbiased std, as cleanrl);
    - `value`: 0.5 mean of max((V - R)^2, (V_old + clip(V - V_old, -vc, vc) - R)^2), or
      0.5 mean (V - R)^2 without `cfg.value_clip`;
    - `entropy`, `kl_ref`: the means of the given (B,) terms;
    - diagnostics without gradient: `approx_kl` = mean((r - 1) - log r) (the k3 estimator
      of KL(old || new)) and `clip_fraction` = mean(|r - 1| > clip).
    """
    b = new_logp.shape
    for name, value in (
        ("old_logp", old_logp),
        ("advantages", advantages),
        ("new_value", new_value),
        ("old_value", old_value),
        ("returns", returns),
        ("entropy", entropy),
        ("kl_ref", kl_ref),
    ):
        if value.shape != b:
            raise ValueError(
                f"ppo_loss: {name} must be {tuple(b)} like new_logp, got {tuple(value.shape)}"
            )
    log_ratio = new_logp - old_logp
    ratio = log_ratio.exp()
    adv = advantages
    if cfg.normalize_advantages and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + ADV_EPS)
    clipped = ratio.clamp(1.0 - cfg.clip, 1.0 + cfg.clip)
    policy = torch.max(-adv * ratio, -adv * clipped).mean()

    unclipped = (new_value - returns) ** 2
    if cfg.value_clip is not None:
        v_clipped = old_value + (new_value - old_value).clamp(-cfg.value_clip, cfg.value_clip)
        value_loss = 0.5 * torch.max(unclipped, (v_clipped - returns) ** 2).mean()
    else:
        value_loss = 0.5 * unclipped.mean()

    entropy_mean = entropy.mean()
    kl_mean = kl_ref.mean()
    loss = (
        policy
        + cfg.value_coef * value_loss
        - cfg.entropy_coef * entropy_mean
        + cfg.kl_coef * kl_mean
    )
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clip_fraction = ((ratio - 1.0).abs() > cfg.clip).float().mean()
    return {
        "loss": loss,
        "policy": policy,
        "value": value_loss,
        "entropy": entropy_mean,
        "kl_ref": kl_mean,
        "approx_kl": approx_kl,
        "clip_fraction": clip_fraction,
    }


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """1 - Var(R - V) / Var(R); NaN when the returns have no variance."""
    v = np.asarray(values, dtype=np.float64).ravel()
    r = np.asarray(returns, dtype=np.float64).ravel()
    var = r.var()
    return float("nan") if var == 0 else float(1.0 - (r - v).var() / var)
