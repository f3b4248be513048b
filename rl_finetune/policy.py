"""The PPO policy around the imitation-trained planner: pick one of the K denoised candidate
trajectories, add a small Gaussian residual.

    frames ─► encoder (frozen) ─► tokens ─┬─► distilled reasoning (frozen) ─► reasoning token
                                          └─► planner, 2-step DDIM from the stored noise
                                                ─► candidates c (B, K, T, 2), scores (B, K)
    mode     ~ Categorical(softmax(scores / temperature))
    residual ~ N(0, diag(std^2)), std (T, 2) learned, state-independent, init 0.3 m
    action   = c[mode] + residual                    (B, T, 2) ego frame [m], at 10 Hz
    log pi(mode, action) = log softmax(scores / temperature)[mode]
                           + log N(action - c[mode]; 0, std^2)

Why mode selection + a Gaussian residual rather than DPPO (PPO over the denoising steps,
Ren et al. 2024):
- One sampler pass per step, as at deployment. DPPO needs the likelihood of the whole
  denoising chain, i.e. a stochastic sampler (DDPM-like, noise at every step) and a
  gradient through every step; our sampler is a deterministic 2-step DDIM from anchors
  noised to a small timestep, whose per-step Gaussians would have a tiny, hand-set
  variance — a poor exploration distribution and a badly conditioned likelihood.
- The imitation model's K modes already are distinct, sensible manoeuvres (stop, follow,
  pass left...) whose scores are a categorical distribution: exploring *between* modes is
  what fixes closed-loop errors (braking for the cone instead of following the lane),
  and the residual explores locally around the chosen one.
- The KL to the imitation policy is closed-form (categorical over modes + Gaussians), so
  the penalty that keeps the policy from collapsing (Roach's failure) is exact and cheap,
  not a Monte-Carlo estimate through the diffusion chain.
- The result is the same network the Leaderboard agent runs: it takes the argmax mode
  with no residual, so PPO must improve the scores and the candidates themselves.

The residual's mean is 0 relative to the chosen candidate, and no separate "residual head"
exists: with `train_candidates` (default) the candidates are differentiable in the
policy's log-probability (the residual is recomputed as `action - c[mode]` under the
current weights), so the planner's own refinement layers are the state-dependent Gaussian
mean. A separate head would start untrained, duplicate those layers, and its learning
would be lost at deployment, where no residual is added.

Determinism of the candidates: they depend on the diffusion noise that the sampler adds
to the anchors. `act` draws that noise (B, K, T, 2) — from `generator`, exactly the draw
`TruncatedDiffusionPlanner.sample` makes — and returns it in `PolicyStep.noise`; the
rollout stores it and `evaluate` recomputes the same candidates from it (a stored seed
would need one generator per sample; 320 floats per step are cheap).

Reasoning: the model's distillation head's embedding is the reasoning token (the agent's
default `vlm_mode: distilled`); the head is frozen and its output detached. The encoder,
perception and distillation heads are frozen unless `train_encoder`; BatchNorm statistics
stay frozen always (`train()` keeps the DriveModel in eval mode): RL minibatches are
correlated, and moving the statistics would shift the features under the perception heads
the safety guard reads.

The value head is a small MLP on the pooled visual feature of the current frame, the
normalised speed and target point and the one-hot command. Its input is detached from the
encoder: the encoder also feeds the perception heads the safety guard relies on, and early
value targets (returns of an untrained critic) are large and noisy — letting them reshape
the shared features would degrade perception and the planner's conditioning.

History: the model sees `history + 1` frames 0.5 s apart, i.e. `HISTORY_STRIDE` policy
steps apart at 10 Hz. `PolicyObs.image` is either (B, S, H, W, 3) with S = history + 1
(oldest first; `FrameHistory` assembles it from an env's frames, as the agent's feature
ring buffer does) or (B, H, W, 3), the current frame only, which is then repeated as the
history (what the agent sees on a route's first 0.5 s).

Checkpoints (`save_policy`): the DriveModel as `agent.model.checkpoint.save_drive_model`
writes it (`model.safetensors`, `model.yaml`) — `load_drive_model` and so the Leaderboard
agent load the fine-tuned result unchanged — `vlm/` copied from the init checkpoint, plus
`policy.safetensors` (value head, log-std) and `policy.yaml` (PolicyConfig, init path).
"""

from __future__ import annotations

import copy
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from agent.model.checkpoint import (
    VLM_DIR,
    CheckpointError,
    atomic_write,
    load_drive_model,
    save_drive_model,
)
from agent.model.drive_model import SPEED_SCALE_MPS, TARGET_SCALE_M, DriveInputs, DriveModel
from agent.model.planner import TruncatedDiffusionPlanner
from rl_finetune.config import POLICY_HZ, PolicyConfig
from rl_finetune.frame_cache import FrameFeatureCache

HISTORY_DT_S = 0.5  # [s] between the model's history frames (the dataset's spacing)
HISTORY_STRIDE = round(HISTORY_DT_S * POLICY_HZ)  # policy steps between history frames
POLICY_WEIGHTS = "policy.safetensors"
POLICY_CONFIG = "policy.yaml"
_LOG_2PI = math.log(2.0 * math.pi)

TensorLike = torch.Tensor | np.ndarray


def _tensor(value: TensorLike, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value
    raise ValueError(f"PolicyObs.{name} must be a torch tensor or numpy array, got {type(value)}")


@dataclass(frozen=True)
class PolicyObs:
    """The model's inputs for one frame of B envs (numpy arrays are wrapped, not copied).

    image: (B, H, W, 3) current frame, or (B, S, H, W, 3) S history steps 0.5 s apart,
    oldest first, or (B, S, C, H, W, 3) with C cameras; uint8 BGR (a 4th alpha channel,
    the Leaderboard's BGRA, is dropped). Stored as (B, S, C, H, W, 3).
    speed_mps: (B,) [m/s]; command: (B,) int RoadOption index (`sim.env.command_index`);
    target_point: (B, 2) [m] ego frame.
    """

    image: torch.Tensor
    speed_mps: torch.Tensor
    command: torch.Tensor
    target_point: torch.Tensor

    def __post_init__(self) -> None:
        image = _tensor(self.image, "image")
        if image.dtype != torch.uint8:
            raise ValueError(f"PolicyObs.image must be uint8 BGR, got {image.dtype}")
        if image.ndim not in (4, 5, 6) or image.shape[-1] not in (3, 4):
            raise ValueError(
                "PolicyObs.image must be (B, H, W, 3), (B, S, H, W, 3) or (B, S, C, H, W, 3), "
                f"got {tuple(image.shape)}"
            )
        image = image[..., :3]
        if image.ndim == 4:
            image = image[:, None, None]
        elif image.ndim == 5:
            image = image[:, :, None]
        b = image.shape[0]
        speed = _tensor(self.speed_mps, "speed_mps").float()
        command = _tensor(self.command, "command").long()
        target = _tensor(self.target_point, "target_point").float()
        for name, value, shape in (
            ("speed_mps", speed, (b,)),
            ("command", command, (b,)),
            ("target_point", target, (b, 2)),
        ):
            if tuple(value.shape) != shape:
                raise ValueError(f"PolicyObs.{name} must be {shape}, got {tuple(value.shape)}")
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "speed_mps", speed)
        object.__setattr__(self, "command", command)
        object.__setattr__(self, "target_point", target)

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def index(self, idx: torch.Tensor | slice) -> PolicyObs:
        """The rows `idx` (a minibatch)."""
        return PolicyObs(
            self.image[idx], self.speed_mps[idx], self.command[idx], self.target_point[idx]
        )

    def to(self, device: torch.device | str) -> PolicyObs:
        return PolicyObs(
            self.image.to(device),
            self.speed_mps.to(device),
            self.command.to(device),
            self.target_point.to(device),
        )

    @staticmethod
    def cat(parts: Sequence[PolicyObs]) -> PolicyObs:
        """Concatenate along the batch (e.g. the steps of a rollout)."""
        if not parts:
            raise ValueError("PolicyObs.cat needs at least one PolicyObs")
        return PolicyObs(
            torch.cat([p.image for p in parts]),
            torch.cat([p.speed_mps for p in parts]),
            torch.cat([p.command for p in parts]),
            torch.cat([p.target_point for p in parts]),
        )


@dataclass(frozen=True)
class PolicyStep:
    """One action of B envs. trajectory (B, T, 2) [m] ego frame, the action to execute
    (= candidates[mode] + residual); mode (B,) long; residual (B, T, 2) [m]; logp (B,)
    log-probability of (mode, trajectory); value (B,); mode_logits (B, K); candidates
    (B, K, T, 2) [m]; noise (B, K, T, 2) the diffusion noise, to store for `evaluate`."""

    trajectory: torch.Tensor
    mode: torch.Tensor
    residual: torch.Tensor
    logp: torch.Tensor
    value: torch.Tensor
    mode_logits: torch.Tensor
    candidates: torch.Tensor
    noise: torch.Tensor
    heads: dict[str, torch.Tensor] | None = None  # `act(perceive=True)`: DriveModel.heads

    def __post_init__(self) -> None:
        b, k, t = self.candidates.shape[:3]
        for name, shape in (
            ("candidates", (b, k, t, 2)),
            ("trajectory", (b, t, 2)),
            ("mode", (b,)),
            ("residual", (b, t, 2)),
            ("logp", (b,)),
            ("value", (b,)),
            ("mode_logits", (b, k)),
            ("noise", (b, k, t, 2)),
        ):
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(
                    f"PolicyStep.{name} must be {shape}, got {tuple(getattr(self, name).shape)}"
                )


class PolicyEval(NamedTuple):
    """`PlannerPolicy.evaluate`, with gradients. All (B,) but mode_logits (B, K)."""

    logp: torch.Tensor  # log pi(mode, trajectory) under the current weights
    entropy: torch.Tensor  # joint entropy: categorical over modes + Gaussian residual
    value: torch.Tensor
    mode_logits: torch.Tensor
    kl_ref: torch.Tensor  # KL(pi || pi_ref), closed form; zeros when not requested


def draw_noise(model: DriveModel, batch: int, generator: torch.Generator | None) -> torch.Tensor:
    """The diffusion noise (B, K, T, 2) on the CPU: the same draw (shape, order) as
    `TruncatedDiffusionPlanner.sample` makes from `generator`."""
    k, t = model.cfg.planner.num_modes, model.cfg.planner.num_poses
    return torch.randn((batch, k, t, 2), generator=generator)


def denoise(
    planner: TruncatedDiffusionPlanner,
    context: torch.Tensor,
    ego: torch.Tensor,
    noise: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`TruncatedDiffusionPlanner.sample` from given noise (B, K, T, 2), with gradients
    when enabled -> (candidates (B, K, T, 2) [m], scores (B, K) logits)."""
    b = context.shape[0]
    device = context.device
    anchors_n = planner.normalize(planner.anchors).expand(b, -1, -1, -1)
    t0 = planner.cfg.infer_t
    x = planner.schedule.add_noise(
        anchors_n, noise.to(device), torch.full((b,), t0, dtype=torch.long, device=device)
    )
    steps = torch.linspace(t0, 0, planner.cfg.denoise_steps + 1).round().long().tolist()
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
    memory = planner.memory(context)  # the context's keys / values, once for every step
    for t, t_prev in zip(steps[:-1], steps[1:], strict=True):
        layers = planner.decode(
            x, torch.full((b,), t, dtype=torch.long, device=device), context, ego, memory
        )
        x0, _ = layers[-1]
        x = planner.schedule.step(x0, x, t, t_prev if t_prev > 0 else -1)
    traj_n, scores = layers[-1]
    return planner.denormalize(traj_n), scores


class _Forward(NamedTuple):
    candidates: torch.Tensor  # (B, K, T, 2) [m]
    mode_logits: torch.Tensor  # (B, K)
    value: torch.Tensor  # (B,)
    tokens: torch.Tensor  # (B, L, d) encoder tokens
    pooled: torch.Tensor  # (B, d) pooled encoder features
    reasoning: torch.Tensor  # (B, E) distilled embedding (detached)


class Encoded(NamedTuple):
    """The frozen encoder's output for a batch (`PlannerPolicy.encode`): computed once per
    PPO iteration and reused by every epoch and minibatch instead of re-running the
    encoder on the images (it is most of a forward pass)."""

    tokens: torch.Tensor  # (B, L, d)
    pooled: torch.Tensor  # (B, d)
    reasoning: torch.Tensor  # (B, E) distilled embedding

    def select(self, idx: torch.Tensor | np.ndarray) -> Encoded:
        """The rows `idx` of every field (a minibatch). Not `index`: that is tuple.index."""
        rows = torch.as_tensor(idx, dtype=torch.long, device=self.tokens.device)
        return Encoded(self.tokens[rows], self.pooled[rows], self.reasoning[rows])


class PlannerPolicy(nn.Module):
    """See the module docstring. `model` is trained in place (the planner side; the
    encoder too with `train_encoder`); `reference` (default: a frozen copy of `model` as
    given) is the imitation policy of the KL penalty; `init_dir` the checkpoint the model
    came from (its `vlm/` is copied into saved checkpoints)."""

    def __init__(
        self,
        model: DriveModel,
        cfg: PolicyConfig | None = None,
        reference: DriveModel | None = None,
        init_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg or PolicyConfig()
        self.init_dir = Path(init_dir) if init_dir is not None else None
        self.model = model
        if reference is None:
            reference = copy.deepcopy(model)
        if reference.cfg != model.cfg:
            raise ValueError("the reference model's config differs from the policy's model")
        self.reference = reference
        for p in self.reference.parameters():
            p.requires_grad_(False)
        frozen: list[nn.Module] = [model.perception, model.distill, model.traj_align]
        if not self.cfg.train_encoder:
            frozen.append(model.encoder)
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)
        if not self.cfg.train_candidates:  # only the planner's score heads learn
            scores = {
                id(p)
                for layer in model.planner.layers
                for p in layer.get_submodule("score").parameters()
            }
            for p in model.parameters():
                if id(p) not in scores:
                    p.requires_grad_(False)
        # Acting reuses the frozen encoder's features of frames it has seen (an env's
        # earlier history frame); cleared whenever weights are loaded.
        self.frame_cache = None if self.cfg.train_encoder else FrameFeatureCache()
        t = model.cfg.planner.num_poses
        self.log_std = nn.Parameter(
            torch.full((t, 2), math.log(self.cfg.residual_std_m)),
            requires_grad=self.cfg.learn_std,
        )
        h = self.cfg.value_hidden
        last = nn.Linear(h, 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.value_head = nn.Sequential(
            nn.LayerNorm(model.cfg.d_model + 3 + model.cfg.num_commands),
            nn.Linear(model.cfg.d_model + 3 + model.cfg.num_commands, h),
            nn.GELU(),
            nn.Linear(h, h),
            nn.GELU(),
            last,
        )
        self.train()

    # -- modes -------------------------------------------------------------------------

    def train(self, mode: bool = True) -> PlannerPolicy:
        """The value head follows `mode`; the DriveModels stay in eval mode (frozen
        BatchNorm statistics, see the module docstring)."""
        super().train(mode)
        self.model.eval()
        self.reference.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.log_std.device

    def clamped_log_std(self) -> torch.Tensor:
        """(T, 2) log of the residual's std [m], clamped to the configured range."""
        lo, hi = self.cfg.min_residual_std_m, self.cfg.max_residual_std_m
        return self.log_std.clamp(math.log(lo), math.log(hi))

    def std(self) -> torch.Tensor:
        """(T, 2) [m] the residual's standard deviation."""
        return self.clamped_log_std().exp()

    def param_groups(self, lr: float, value_lr: float) -> list[dict[str, Any]]:
        """Optimizer groups: the DriveModel's trainable weights at `lr`; the value head and
        log-std (trained from scratch) at `value_lr`."""
        policy = [p for p in self.model.parameters() if p.requires_grad]
        value = [*self.value_head.parameters()]
        if self.log_std.requires_grad:
            value.append(self.log_std)
        return [{"params": policy, "lr": lr}, {"params": value, "lr": value_lr}]

    # -- forward -----------------------------------------------------------------------

    def _inputs(self, obs: PolicyObs, reasoning: torch.Tensor | None) -> DriveInputs:
        return DriveInputs(
            frames=obs.image[:, -1:],
            speed_mps=obs.speed_mps,
            command=obs.command,
            target_point=obs.target_point,
            reasoning=reasoning,
        )

    def _encode(
        self, model: DriveModel, obs: PolicyObs, cache: FrameFeatureCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L, d), pooled (B, d); a single frame is repeated as the history (its
        features computed once). With `cache` (no gradients), frames encoded before — an
        env's earlier history frame was its current frame `HISTORY_STRIDE` steps ago —
        are looked up instead of encoded again."""
        enc = model.encoder
        b, s = obs.image.shape[:2]
        if obs.image.shape[2] != enc.cfg.cameras:
            raise ValueError(
                f"PolicyObs.image has {obs.image.shape[2]} cameras, the model expects "
                f"{enc.cfg.cameras}"
            )
        if s not in (1, enc.steps):
            raise ValueError(
                f"PolicyObs.image has {s} history steps, the model expects {enc.steps} (or 1)"
            )
        if cache is not None:
            frames = obs.image.reshape(b * s, *obs.image.shape[2:])
            features = cache.features(frames, enc.encode_frames)
            features = features.reshape(b, s, *features.shape[1:])
            return enc.assemble(features.expand(-1, enc.steps, -1, -1, -1))
        if s == enc.steps:
            return enc(obs.image)
        current = enc.encode_frames(obs.image[:, 0])
        return enc.assemble(current[:, None].expand(-1, enc.steps, -1, -1, -1))

    def _candidates(
        self, model: DriveModel, tokens: torch.Tensor, x: DriveInputs, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        context, state = model.context(tokens, x)
        return denoise(model.planner, context, state, noise)

    def encode(self, obs: PolicyObs) -> Encoded:
        """The frozen encoder's tokens, pooled features and distilled reasoning (no
        gradients); only for `train_encoder: false`, where they never change."""
        if self.cfg.train_encoder:
            raise ValueError("encode() caches a frozen encoder; train_encoder is on")
        obs = obs.to(self.device)
        with torch.no_grad():
            tokens, pooled = self._encode(self.model, obs)
            return Encoded(tokens, pooled, self.model.distill(tokens)[0])

    def _forward(
        self,
        obs: PolicyObs,
        noise: torch.Tensor,
        encoder_grad: bool = True,
        encoded: Encoded | None = None,
        frame_cache: FrameFeatureCache | None = None,
    ) -> _Forward:
        obs = obs.to(self.device)
        if encoded is not None:
            if self.cfg.train_encoder:
                raise ValueError("a cached encoding cannot be used with train_encoder on")
            tokens, pooled, reasoning = encoded
        else:
            grad = encoder_grad and self.cfg.train_encoder and torch.is_grad_enabled()
            with torch.set_grad_enabled(grad):
                tokens, pooled = self._encode(self.model, obs, None if grad else frame_cache)
            with torch.no_grad():
                reasoning = self.model.distill(tokens)[0]
        x = self._inputs(obs, reasoning)
        candidates, scores = self._candidates(self.model, tokens, x, noise)
        if not self.cfg.train_candidates:
            candidates = candidates.detach()
        return _Forward(
            candidates,
            scores / self.cfg.temperature,
            self._value(obs, pooled),
            tokens,
            pooled,
            reasoning,
        )

    def _value(self, obs: PolicyObs, pooled: torch.Tensor) -> torch.Tensor:
        command = nn.functional.one_hot(
            obs.command.clamp(0, self.model.cfg.num_commands - 1), self.model.cfg.num_commands
        )
        features = torch.cat(
            [
                pooled.detach(),
                (obs.speed_mps / SPEED_SCALE_MPS)[:, None],
                obs.target_point / TARGET_SCALE_M,
                command.float(),
            ],
            dim=-1,
        )
        return self.value_head(features).squeeze(-1)

    def _log_prob(
        self, f: _Forward, mode: torch.Tensor, trajectory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log pi(mode, trajectory) (B,), residual = trajectory - candidates[mode])."""
        rows = torch.arange(len(mode), device=mode.device)
        residual = trajectory - f.candidates[rows, mode]
        log_std = self.clamped_log_std()
        gauss = -0.5 * (residual / log_std.exp()) ** 2 - log_std - 0.5 * _LOG_2PI
        logp_mode = f.mode_logits.log_softmax(-1)[rows, mode]
        return logp_mode + gauss.sum(dim=(-1, -2)), residual

    def _entropy(self, mode_logits: torch.Tensor) -> torch.Tensor:
        logp = mode_logits.log_softmax(-1)
        categorical = -(logp.exp() * logp).sum(-1)
        gaussian = (0.5 + 0.5 * _LOG_2PI + self.clamped_log_std()).sum()
        return categorical + gaussian

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """nn.Module.load_state_dict, and the cached frame features go (they were the old
        encoder's)."""
        if self.frame_cache is not None:
            self.frame_cache.clear()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # -- the API -----------------------------------------------------------------------

    def act(
        self,
        obs: PolicyObs,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
        noise: torch.Tensor | None = None,
        perceive: bool = False,
    ) -> PolicyStep:
        """One action per row (no gradients in the result). Draws, in order, from
        `generator` (CPU): the diffusion noise (unless given), then the mode and the
        residual (unless `deterministic`: the argmax mode and no residual — what the
        Leaderboard agent does). `perceive`: also the model's perception and distilled
        reasoning heads on the same encoder output (`PolicyStep.heads`, logits), what the
        agent's safety guard reads (`rl_finetune.guarded`).

        The planner runs with autograd enabled, as in `evaluate`: PyTorch's no-grad
        attention kernels round differently (~1e-5 m on the candidates, which 1 / std^2
        amplifies to ~1e-4 in the log-probability); this way `evaluate` on the same batch
        gives the same log-probability, and PPO's first ratio is exactly 1. Cost: the
        graph of a small decoder, freed at once; the encoder runs without it."""
        b = len(obs)
        if noise is None:
            noise = draw_noise(self.model, b, generator)
        with torch.enable_grad():
            f = self._forward(obs, noise, encoder_grad=False, frame_cache=self.frame_cache)
        with torch.no_grad():
            f = _Forward(*(t.detach() for t in f))
            if deterministic:
                mode = f.mode_logits.argmax(-1)
                residual = torch.zeros_like(f.candidates[:, 0])
            else:
                probs = f.mode_logits.softmax(-1).cpu()
                mode = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                mode = mode.to(self.device)
                eps = torch.randn(f.candidates[:, 0].shape, generator=generator)
                residual = eps.to(self.device) * self.std()
            rows = torch.arange(b, device=self.device)
            trajectory = f.candidates[rows, mode] + residual
            logp, _ = self._log_prob(f, mode, trajectory)
            heads = self.model.heads(f.tokens, f.pooled) if perceive else None
        return PolicyStep(
            trajectory=trajectory,
            mode=mode,
            residual=residual,
            logp=logp,
            value=f.value,
            mode_logits=f.mode_logits,
            candidates=f.candidates,
            noise=noise.to(self.device),
            heads=heads,
        )

    def evaluate(
        self,
        obs: PolicyObs,
        mode: torch.Tensor,
        trajectory: torch.Tensor,
        noise: torch.Tensor,
        with_kl: bool = True,
        encoded: Encoded | None = None,
    ) -> PolicyEval:
        """Log-probability of the executed actions (mode (B,), trajectory (B, T, 2) =
        `PolicyStep.trajectory`) under the current weights, with gradients. The candidates
        are recomputed from the stored `noise`, the residual as trajectory - candidates[mode]
        (so PPO moves the candidates too, see the module docstring). `with_kl`: also the
        KL to the reference (one more planner pass; the encoder's tokens are shared while
        it is frozen). `encoded`: `encode(obs)` computed beforehand (frozen encoder only):
        the same numbers without running the encoder again."""
        f = self._forward(obs, noise, encoded=encoded)
        mode = mode.to(self.device).long()
        logp, _ = self._log_prob(f, mode, trajectory.to(self.device))
        kl = self._kl(obs, f, noise) if with_kl else torch.zeros_like(logp)
        return PolicyEval(logp, self._entropy(f.mode_logits), f.value, f.mode_logits, kl)

    def kl_to_reference(
        self,
        obs: PolicyObs,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """(B,) KL(pi || pi_ref) of the joint (mode, trajectory) distributions, closed form:
            KL_cat(pi || pi_ref) + sum_k pi_k KL(N(c_k, std^2) || N(c_ref_k, std_ref^2)),
        pi_ref = the imitation model's modes (same temperature) with the initial residual
        std. The first term is the categorical KL over modes; the second is zero until PPO
        moves the candidates or the std. Needs the diffusion noise (drawn if not given)."""
        if noise is None:
            noise = draw_noise(self.model, len(obs), generator)
        return self._kl(obs, self._forward(obs, noise), noise)

    def _kl(self, obs: PolicyObs, f: _Forward, noise: torch.Tensor) -> torch.Tensor:
        obs = obs.to(self.device)
        with torch.no_grad():
            if self.cfg.train_encoder:  # the reference has its own (initial) encoder
                tokens, _ = self._encode(self.reference, obs)
                reasoning = self.reference.distill(tokens)[0]
            else:  # frozen encoder and distillation head: identical to the reference's
                tokens, reasoning = f.tokens, f.reasoning
            ref_c, ref_scores = self._candidates(
                self.reference, tokens, self._inputs(obs, reasoning), noise
            )
        logp = f.mode_logits.log_softmax(-1)
        ref_logp = (ref_scores / self.cfg.temperature).log_softmax(-1)
        pi = logp.exp()
        categorical = (pi * (logp - ref_logp)).sum(-1)
        # Per coordinate, with x = log(std / ref_std): log(ref_std / std) + std^2 /
        # (2 ref_std^2) - 1/2 = -x + expm1(2 x) / 2 (exact 0 at x = 0 in float32), plus
        # the means' term (c - c_ref)^2 / (2 ref_std^2).
        ref_std = self.cfg.residual_std_m
        x = self.clamped_log_std() - math.log(ref_std)
        spread = (-x + 0.5 * torch.expm1(2.0 * x)).sum()
        means = ((f.candidates - ref_c) ** 2).sum(dim=(-1, -2)) / (2.0 * ref_std**2)  # (B, K)
        gauss = spread + means
        return categorical + (pi * gauss).sum(-1)


class FrameHistory:
    """Per-env frame stacks for `PolicyObs.image`: frames of N envs pushed every policy
    step -> (N, S, H, W, 3), S = `steps`, the frames `stride` pushes apart, oldest first.
    An env's first frame (`first=True`, e.g. after a reset) fills its whole history, as the
    agent's ring buffer repeats its oldest frame on a route's first 0.5 s."""

    def __init__(self, envs: int, steps: int, stride: int = HISTORY_STRIDE) -> None:
        if envs < 1 or steps < 1 or stride < 1:
            raise ValueError(
                f"FrameHistory needs envs, steps, stride >= 1, got {envs, steps, stride}"
            )
        self.envs, self.steps, self.stride = envs, steps, stride
        self.length = stride * (steps - 1) + 1
        self.buffer: np.ndarray | None = None
        self.pos = -1

    def push(self, frames: np.ndarray, first: np.ndarray) -> np.ndarray:
        """frames (N, H, W, 3 or 4) uint8; first (N,) bool -> (N, S, H, W, 3) uint8."""
        frames = np.asarray(frames)[..., :3]
        first = np.asarray(first, dtype=bool)
        if frames.ndim != 4 or frames.shape[0] != self.envs:
            raise ValueError(f"frames must be ({self.envs}, H, W, 3), got {frames.shape}")
        if first.shape != (self.envs,):
            raise ValueError(f"first must be ({self.envs},), got {first.shape}")
        if self.buffer is None or self.buffer.shape[2:] != frames.shape[1:]:
            self.buffer = np.empty((self.envs, self.length, *frames.shape[1:]), dtype=np.uint8)
            first = np.ones(self.envs, dtype=bool)
        self.pos = (self.pos + 1) % self.length
        self.buffer[:, self.pos] = frames
        self.buffer[first] = frames[first][:, None]
        idx = [(self.pos - self.stride * k) % self.length for k in range(self.steps - 1, -1, -1)]
        return self.buffer[:, idx]


# -- checkpoints -----------------------------------------------------------------------


def init_policy(init: str | Path, cfg: PolicyConfig | None = None) -> PlannerPolicy:
    """A fresh policy from an imitation checkpoint (which is also the KL reference)."""
    model, _ = load_drive_model(init)
    return PlannerPolicy(model, cfg, init_dir=init)


def save_policy(
    policy: PlannerPolicy, directory: str | Path, meta: dict[str, Any] | None = None
) -> None:
    """Write a checkpoint directory that `load_drive_model` (the Leaderboard agent) loads
    unchanged, plus the policy's own parts (see the module docstring). `meta` goes into
    model.yaml. An existing `vlm/` in `directory` is kept (the VLM is not fine-tuned)."""
    directory = Path(directory)
    if policy.init_dir is not None and directory.resolve() == policy.init_dir.resolve():
        raise ValueError(f"refusing to overwrite the init checkpoint {directory}")
    save_drive_model(policy.model, directory, meta)
    if policy.init_dir is not None and (policy.init_dir / VLM_DIR).is_dir():
        target = directory / VLM_DIR
        if not target.exists():
            shutil.copytree(policy.init_dir / VLM_DIR, target)
    state = {"log_std": policy.log_std.detach().contiguous().clone()}
    for name, tensor in policy.value_head.state_dict().items():
        state[f"value_head.{name}"] = tensor.detach().contiguous().clone()
    atomic_write(directory / POLICY_WEIGHTS, lambda tmp: save_file(state, tmp))
    doc = {
        "policy": policy.cfg.model_dump(mode="json"),
        "init": None if policy.init_dir is None else str(policy.init_dir),
    }
    atomic_write(
        directory / POLICY_CONFIG,
        lambda tmp: Path(tmp).write_text(yaml.safe_dump(doc, sort_keys=False)),
    )


def load_policy(directory: str | Path, init: str | Path | None = None) -> PlannerPolicy:
    """A policy saved by `save_policy`; `init` (default: the path recorded at saving) is the
    imitation checkpoint, reloaded as the KL reference."""
    directory = Path(directory)
    path = directory / POLICY_CONFIG
    if not path.is_file():
        raise CheckpointError(f"{path}: no policy config (was {directory} saved by save_policy?)")
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict) or "policy" not in doc:
        raise CheckpointError(f"{path}: expected a mapping with a 'policy' key")
    try:
        cfg = PolicyConfig.model_validate(doc["policy"])
    except ValueError as exc:
        raise CheckpointError(f"{path}: invalid policy config: {exc}") from exc
    init = init if init is not None else doc.get("init")
    if init is None:
        raise CheckpointError(f"{path}: no init checkpoint recorded; pass init=<imitation dir>")
    model, _ = load_drive_model(directory)
    reference, _ = load_drive_model(init)
    if reference.cfg != model.cfg:
        raise CheckpointError(
            f"{init}: the init checkpoint's model config differs from {directory}'s"
        )
    policy = PlannerPolicy(model, cfg, reference=reference, init_dir=init)
    state = load_file(str(directory / POLICY_WEIGHTS))
    own = {"log_std": policy.log_std}
    own.update({f"value_head.{k}": v for k, v in policy.value_head.state_dict().items()})
    if set(state) != set(own):
        raise CheckpointError(
            f"{directory / POLICY_WEIGHTS} does not match the policy: missing "
            f"{sorted(set(own) - set(state))[:5]}, unexpected {sorted(set(state) - set(own))[:5]}"
        )
    with torch.no_grad():
        policy.log_std.copy_(state["log_std"])
    policy.value_head.load_state_dict(
        {k.split(".", 1)[1]: v for k, v in state.items() if k != "log_std"}
    )
    return policy
