"""The Leaderboard agent's safety guard in the fine-tuning loop (`safety.enabled: true`).

The deployed agent is not the planner alone: every tick its trajectory passes the safety
guard (`agent.safety.SafetyGuard`, reading the model's own perception heads), which may
slow it, hold the car, or replace it with the rules' plan. Fine-tuning the planner alone
optimises a closed loop the evaluation never runs: a mode the guard would always stop is
as good as any other to PPO, and a mode that only works because the ground-truth shield
catches it looks safe. With the guard in the loop the policy learns mode selection under
the guard it ships with, and pays `reward.guard_intervention` for every step the guard
overrides it — the issue's target is a higher Driving Score *with fewer guard
interventions*.

Per policy step and env (`AgentGuards.apply`), exactly what the agent does per tick
(`agent.leaderboard_agent.guard_inputs`, one code path):
- a `ModelStep` from the policy's action: the sampled trajectory (mode + residual), the K
  candidates with their probabilities, the perception heads computed on the same encoder
  output (`PlannerPolicy.act(perceive=True)`), the target points of the observation. The
  confidence is the top mode's probability, as the agent's (its mode is the argmax): the
  guard's LOW_CONFIDENCE then fires where the model is unsure of the scene, as deployed,
  not whenever exploration samples a rarely chosen mode;
- the env's guard checks it (its blockage memory, hold timers and unstick state live per
  env and are reset on the first step of every episode; its clock is the episode's game
  time, `1 / POLICY_HZ` per step);
- the env drives the guard's trajectory (`driven`); PPO still scores the policy's own
  action (`trajectory`): the guard is part of the environment the policy acts in.

Then, in the env process, the ground-truth shield checks what the guard let through, as
without the guard. Differences from the agent, said plainly: the guard runs at the
policy's 10 Hz, not 20 Hz; an emergency stop is driven as a standing trajectory (the PID
brakes in proportion to the speed), where the agent brakes fully.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from agent.data.schema import INTENTS
from agent.leaderboard_agent import guard_inputs
from agent.model.config import ModelConfig
from agent.model_agent import ModelStep
from agent.safety import GuardConfig, ReasonCode, SafetyGuard
from rl_finetune.policy import PolicyStep

# The guard's reason codes, in a fixed order: `GuardedActions.reason` indexes it.
GUARD_REASONS: tuple[str, ...] = tuple(code.value for code in ReasonCode)


@dataclass(frozen=True)
class GuardedActions:
    """One step of E envs. driven (E, T, 2) float32 [m]: what the envs drive; intervened
    (E,) bool: the guard did not accept the policy's trajectory as it was; reason (E,) int8:
    `GUARD_REASONS` index of the guard's decision."""

    driven: np.ndarray
    intervened: np.ndarray
    reason: np.ndarray


class AgentGuards:
    """One `SafetyGuard` per env, with an episode clock each (see the module docstring)."""

    def __init__(
        self, envs: int, config: GuardConfig, model_cfg: ModelConfig, policy_hz: float
    ) -> None:
        if envs < 1:
            raise ValueError(f"envs must be >= 1, got {envs}")
        self.model_cfg = model_cfg
        self.dt_s = 1.0 / policy_hz
        self.guards = [SafetyGuard(config, grid=model_cfg.perception) for _ in range(envs)]
        self.time_s = np.zeros(envs)

    def apply(
        self, step: PolicyStep, obs: dict[str, np.ndarray], first: np.ndarray
    ) -> GuardedActions:
        """The guard's decision for every env's action. `obs`: the batched observations the
        policy acted on (`image`, `speed`, `target_point`, `next_target_point`); `first`
        (E,) bool: the observation is an episode's first (the guard starts afresh)."""
        if step.heads is None:
            raise ValueError("the guard needs the perception heads: act(..., perceive=True)")
        envs = len(self.guards)
        heads = step.heads
        probs = step.mode_logits.softmax(-1).cpu().numpy()
        trajectory = step.trajectory.cpu().numpy().astype(np.float64)
        candidates = step.candidates.cpu().numpy()
        bev = torch.sigmoid(heads["bev"]).cpu().numpy()
        light = heads["light"].softmax(-1).cpu().numpy()
        flags = torch.sigmoid(heads["flags"]).cpu().numpy()
        intent = heads["intent"].softmax(-1).cpu().numpy()
        span = torch.sigmoid(heads["bev_span"]).cpu().numpy() if "bev_span" in heads else None
        speed = np.asarray(obs["speed"], dtype=np.float64).reshape(envs)
        target = np.asarray(obs["target_point"], dtype=np.float64)
        following = np.asarray(obs.get("next_target_point", obs["target_point"]), np.float64)
        images = np.asarray(obs["image"])

        driven = np.zeros((envs, *trajectory.shape[1:]), np.float32)
        intervened = np.zeros(envs, bool)
        reason = np.zeros(envs, np.int8)
        for e, guard in enumerate(self.guards):
            if first[e]:
                guard.reset()
                self.time_s[e] = 0.0
            else:
                self.time_s[e] += self.dt_s
            model_step = ModelStep(
                trajectory=trajectory[e],
                candidates=candidates[e],
                scores=probs[e],
                confidence=float(probs[e].max()),  # the agent's: its top mode's probability
                bev_probs=bev[e],
                light_probs=light[e],
                flag_probs=flags[e],
                intent=INTENTS[int(np.argmax(intent[e]))],
                intent_probs=intent[e],
                target_point=target[e],
                next_target_point=following[e],
                bev_span=None if span is None else span[e],
            )
            decision = guard.check(
                guard_inputs(model_step, images[e], speed[e], self.time_s[e], self.model_cfg)
            )
            plan = np.nan_to_num(np.asarray(decision.trajectory, dtype=np.float64))
            if decision.fallback == "emergency_stop":
                plan = np.zeros_like(plan)  # standing: the PID brakes (see the docstring)
            driven[e] = plan
            intervened[e] = decision.intervened
            reason[e] = GUARD_REASONS.index(decision.reason.value)
        return GuardedActions(driven, intervened, reason)


__all__ = ["GUARD_REASONS", "AgentGuards", "GuardedActions"]
