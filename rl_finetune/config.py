"""The fine-tuning configuration (`vlmdrive finetune --config ...`; flags override it).

Unknown keys are errors that name the file, line and field (`load_finetune_config`, through
`scenarios.loader.load_typed_yaml`). Sections:
- top level: what to start from, where to drive, how many steps and workers, where to write;
- `policy`: the PPO policy around the planner (rl_finetune/policy.py);
- `ppo`: rollout length, GAE and the PPO update (rl_finetune/ppo.py);
- `reward`: the weight of every reward term, and which infractions end an episode;
- `shield`: the safety shield's thresholds (rl_finetune/shield.py), on during training;
- `safety`: the Leaderboard agent's own safety guard in the loop (`enabled`, `guard`: as in
  the agent config; rl_finetune/guarded.py), off by default;
- `eval`: the held-out evaluation during and after training.

Steps are *policy* steps: the policy acts at `policy_hz` (default `POLICY_HZ`, 10 Hz, the
issue's rate), each action applied for `action_repeat` simulator ticks of 0.05 s
(`DrivingEnv(action_repeat=2)` at 10 Hz). A lower rate (`policy_hz: 2`: one trajectory
tracked for 0.5 s) is an experiment on credit assignment: at 10 Hz a mode choice steers the
car for 0.1 s before the next one replaces it, so one choice barely changes the return
(README: measured).

The reward follows CaRL (Jaeger et al. 2025, "Learning scalable planning policies with simple
rewards"): one dominant term, route progress; infractions cost the Leaderboard's loss of
score factor (1 - factor, e.g. 0.5 for a pedestrian collision) times a weight, and the severe
ones end the episode, so the lost future progress is most of their cost — CaRL ends episodes
or scales progress rather than summing many shaped terms, which PPO games. A step in which
the safety shield (the rules with ground truth) overrides the policy costs
`reward.shield_intervention`: the default equals the progress reward of 1 m, i.e. the
progress of a 10 m/s step, so driving under the shield's control earns about nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.leaderboard_agent import SafetyConfig
from rl_finetune.shield import ShieldConfig
from scenarios.loader import load_typed_yaml
from sim.protocol import FIXED_DELTA_SECONDS
from sim.rewards import LEADERBOARD_PENALTY_FACTORS, REWARD_TERMS, RewardConfig

POLICY_HZ = 10  # [Hz] the policy's default action rate
ACTION_REPEAT = 2  # simulator ticks (20 Hz) per policy step at POLICY_HZ
SIM_HZ = round(1.0 / FIXED_DELTA_SECONDS)  # [Hz] 20: the simulator's tick rate
SHIELD_TERM = "shield_intervention"  # reward terms the env does not compute: the shield's
GUARD_TERM = "guard_intervention"  # and the agent's guard's (the trainer adds it)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyConfig(_Strict):
    """The policy: a categorical over the K denoised candidates + a Gaussian residual."""

    temperature: float = Field(1.0, gt=0)  # mode logits = planner scores / temperature
    residual_std_m: float = Field(0.3, gt=0)  # [m] initial std of the residual, per coordinate
    min_residual_std_m: float = Field(0.02, gt=0)  # [m] the learned std is clamped to
    max_residual_std_m: float = Field(2.0, gt=0)  # [m]   [min, max]
    learn_std: bool = True  # the log-std is a trained parameter (else fixed at its init)
    train_candidates: bool = True  # PPO moves the candidates (the Gaussian means), not only
    #   the scores; the deployed agent has no residual. False: only the planner's score
    #   heads learn (mode selection); every weight the candidates depend on is frozen, so
    #   they stay the imitation model's exactly and the KL to it is the modes' alone.
    #   (Freezing the offset heads alone let the shared decoder trunk drift them with no
    #   restoring gradient: KL to the imitation policy 0.01 -> 60 in 8k steps.)
    train_encoder: bool = False  # also fine-tune the camera encoder (slow, shifts perception)
    value_hidden: int = Field(128, ge=8)  # width of the value head's two hidden layers

    @model_validator(mode="after")
    def _std(self) -> PolicyConfig:
        if not self.min_residual_std_m <= self.residual_std_m <= self.max_residual_std_m:
            raise ValueError(
                f"residual_std_m ({self.residual_std_m}) must lie within "
                f"[min_residual_std_m, max_residual_std_m] = "
                f"[{self.min_residual_std_m}, {self.max_residual_std_m}]"
            )
        return self


class PPOConfig(_Strict):
    """Rollouts, GAE and the clipped PPO update (cleanrl's defaults, a smaller lr)."""

    rollout_steps: int = Field(128, ge=1)  # policy steps per env per iteration
    gamma: float = Field(0.99, gt=0, le=1)  # discount per policy step (0.1 s)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip: float = Field(0.2, gt=0)  # ratio clip epsilon
    value_clip: float | None = Field(0.2, gt=0)  # clip of the value change; None: unclipped
    epochs: int = Field(4, ge=1)  # passes over each rollout
    minibatch: int = Field(64, ge=1)  # samples per gradient step
    lr: float = Field(3e-5, gt=0)  # policy parameters (pretrained planner: small)
    value_lr: float = Field(1e-3, gt=0)  # value head and log-std (trained from scratch)
    max_grad_norm: float = Field(0.5, gt=0)
    value_coef: float = Field(0.5, ge=0)
    entropy_coef: float = Field(0.0, ge=0)  # bonus on the joint (mode, residual) entropy
    kl_coef: float = Field(0.1, ge=0)  # penalty on KL(policy || imitation reference)
    normalize_advantages: bool = True  # per minibatch, as cleanrl
    target_kl: float | None = Field(None, gt=0)  # stop an iteration's epochs above this


class RewardWeights(_Strict):
    """A weight for every term of `sim.rewards` plus the shield's; 0.0 switches a term off.
    Infraction terms are the Leaderboard's lost score factor per event (negative)."""

    route_progress: float = 0.1  # per metre of route progress
    collisions_pedestrian: float = 10.0  # x -(1 - 0.50)
    collisions_vehicle: float = 10.0  # x -(1 - 0.60)
    collisions_layout: float = 10.0  # x -(1 - 0.65)
    red_light: float = 10.0  # x -(1 - 0.70)
    stop_infraction: float = 10.0  # x -(1 - 0.80)
    scenario_timeouts: float = 10.0  # x -(1 - 0.70)
    yield_emergency_vehicle_infractions: float = 10.0  # x -(1 - 0.70)
    min_speed_infractions: float = 10.0  # x -0.3 (1 - pct / 100)
    outside_route_lanes: float = 0.1  # per metre of progress outside the route lanes
    comfort: float = 0.0  # off: the residual's exploration noise would be penalised
    route_failure: float = 10.0  # x -1 when the route fails (deviation, blocked, timeout)
    shield_intervention: float = 0.1  # x -1 per policy step the shield overrides
    guard_intervention: float = 0.1  # x -1 per policy step the agent's guard overrides
    #   (`safety.enabled`; rl_finetune.guarded)
    # Infractions that end the episode (CaRL); the env itself ends only failed routes.
    terminate_on: tuple[str, ...] = (
        "collisions_pedestrian",
        "collisions_vehicle",
        "collisions_layout",
        "red_light",
    )

    @model_validator(mode="after")
    def _terminate_on(self) -> RewardWeights:
        unknown = sorted(set(self.terminate_on) - set(LEADERBOARD_PENALTY_FACTORS))
        if unknown:
            raise ValueError(
                f"terminate_on: unknown infraction(s) {unknown}; "
                f"valid: {', '.join(LEADERBOARD_PENALTY_FACTORS)}"
            )
        return self

    def env_reward(self) -> RewardConfig:
        """The env's `RewardConfig` (every `sim.rewards` term; the shield term is added by
        the rollout, which sees the shield)."""
        return RewardConfig({term: float(getattr(self, term)) for term in REWARD_TERMS})


class EvalConfig(_Strict):
    """Held-out evaluation (`vlmdrive eval`) of the current policy, deterministic."""

    suite: Path = Path("scenarios/library/eval/suite_quick.yaml")
    every: int = Field(10, ge=1)  # [iterations] between evaluations (and one at the end)
    workers: int = Field(1, ge=1)
    deterministic: bool = True  # argmax mode, no residual: what the Leaderboard agent does


class FinetuneConfig(_Strict):
    init: Path = Path("checkpoints/vlmdrive-tiny")  # imitation checkpoint (and KL reference)
    suite: Path = Path("scenarios/library/train")  # training suite YAML, folder or file
    out: Path = Path("runs/finetune")  # run directory: checkpoints, TensorBoard, final model
    total_steps: int = Field(100_000, ge=1)  # policy steps over all envs
    envs: int = Field(2, ge=1)  # environments per worker (one vector env each)
    workers: int = Field(1, ge=1)  # rollout workers
    backend: Literal["auto", "vector", "ray"] = "auto"  # auto: Ray iff workers > 1 or address
    ray_address: str | None = None  # e.g. "ray://head:10001"; None: a local Ray when needed
    seed: int = 0
    threads: int = Field(1, ge=1)  # torch threads of the learner
    max_episode_steps: int | None = Field(None, ge=1)  # policy steps; None: the route timeout
    policy_hz: int = Field(POLICY_HZ, ge=1)  # [Hz] action rate; must divide the sim's 20 Hz
    checkpoint_every: int = Field(5, ge=1)  # [iterations] between resumable checkpoints
    policy: PolicyConfig = PolicyConfig()
    ppo: PPOConfig = PPOConfig()
    reward: RewardWeights = RewardWeights()
    shield: ShieldConfig = ShieldConfig()
    # The Leaderboard agent's own safety guard (its config's `safety` section) between the
    # policy and the env, as deployed: off by default (rl_finetune/guarded.py).
    safety: SafetyConfig = SafetyConfig(enabled=False)
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _apart(self) -> FinetuneConfig:
        train, held_out = self.suite.resolve(), self.eval.suite.resolve()
        train_dir = train if train.suffix not in (".yaml", ".yml") else train.parent
        held_dir = held_out if held_out.suffix not in (".yaml", ".yml") else held_out.parent
        if train_dir == held_dir or train_dir in held_dir.parents or held_dir in train_dir.parents:
            raise ValueError(
                f"eval.suite ({self.eval.suite}) must be kept apart from the training suite "
                f"({self.suite}): use a separate folder"
            )
        return self

    @model_validator(mode="after")
    def _whole_ticks(self) -> FinetuneConfig:
        if SIM_HZ % self.policy_hz:
            raise ValueError(
                f"policy_hz ({self.policy_hz}) must divide the simulator's {SIM_HZ} Hz: "
                "every action is held for a whole number of ticks"
            )
        return self

    @property
    def action_repeat(self) -> int:
        """Simulator ticks (0.05 s) per policy step."""
        return SIM_HZ // self.policy_hz

    @property
    def iteration_steps(self) -> int:
        """Policy steps collected per iteration over all envs."""
        return self.ppo.rollout_steps * self.envs * self.workers

    @property
    def use_ray(self) -> bool:
        if self.backend != "auto":
            return self.backend == "ray"
        return self.workers > 1 or self.ray_address is not None


def load_finetune_config(path: str | Path) -> FinetuneConfig:
    """Parse and validate a YAML file; problems raise `ScenarioError` with file:line."""
    return load_typed_yaml(path, FinetuneConfig, "finetune config")
