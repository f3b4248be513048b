"""Truncated-diffusion trajectory planner (DiffusionDrive, Liao et al. CVPR'25).

Instead of denoising from pure noise, the planner starts from K k-means anchors (typical
manoeuvres: stop, follow, pass left...) noised to a *small* timestep, and denoises them in
2 DDIM steps, each step a cascade decoder that predicts the clean trajectory of every mode
(`prediction_type="sample"`) and a per-mode score. K modes survive to the output, so a
"pass on the left" and a "stop" stay separate candidates instead of being averaged.

Conditioning: cross-attention to the context (the visual tokens, one reasoning token —
the VLM embedding or a learned "no reasoning" token — and one ego-state token), and the
ego-state embedding (speed, command, target point) added to every mode query as well, the
way DiffusionDrive feeds its ego status straight into the plan queries: where to go and
how fast the ego already moves decide most of the trajectory, and a query that has to
find them by attention among ~130 visual tokens learns that slowly. Trajectories are
normalised per axis (`PlannerConfig.x_offset_m`...).

Shapes: trajectories (B, K, T, 2) ego frame [m], scores (B, K) logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from agent.model.config import PlannerConfig


class DDIMSchedule:
    """The scaled-linear beta schedule of DiffusionDrive's DDIMScheduler, and its two
    operations: noising a clean sample to timestep t and one deterministic DDIM step."""

    def __init__(self, timesteps: int, beta_start: float = 0.00085, beta_end: float = 0.012):
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, timesteps) ** 2
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; t broadcasts over x0's leading dims."""
        abar = self.alphas_cumprod.to(x0.device)[t].view(*t.shape, *([1] * (x0.ndim - t.ndim)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def step(self, x0_pred: torch.Tensor, x_t: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        """DDIM (eta = 0) from t to t_prev given the predicted clean sample."""
        abar_t = self.alphas_cumprod[t]
        eps = (x_t - abar_t.sqrt() * x0_pred) / (1 - abar_t).sqrt().clamp_min(1e-8)
        if t_prev < 0:
            return x0_pred
        abar_prev = self.alphas_cumprod[t_prev]
        return abar_prev.sqrt() * x0_pred + (1 - abar_prev).sqrt() * eps


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class _CascadeLayer(nn.Module):
    """Mode self-attention, cross-attention to the context, FFN; then per-mode offsets
    (added to the layer's input trajectory) and a score."""

    def __init__(self, d: int, heads: int, poses: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.norms = nn.ModuleList([nn.LayerNorm(d) for _ in range(3)])
        last = nn.Linear(d, poses * 2)
        nn.init.zeros_(last.weight)  # start as the identity: trajectories = the noisy anchors
        nn.init.zeros_(last.bias)
        self.offset = nn.Sequential(nn.Linear(d, d), nn.GELU(), last)
        self.score = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))

    def memory(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-attention's keys and values of `context` (B, L, d), each
        (B, heads, L, d / heads): the same at every denoising step, so `sample` projects
        them once instead of once per step (the same weights as `cross_attn` uses)."""
        attn = self.cross_attn
        d = attn.embed_dim
        w, b = attn.in_proj_weight, attn.in_proj_bias
        k = nn.functional.linear(context, w[d : 2 * d], None if b is None else b[d : 2 * d])
        v = nn.functional.linear(context, w[2 * d :], None if b is None else b[2 * d :])
        return self._heads(k), self._heads(v)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.cross_attn.num_heads, d // self.cross_attn.num_heads).transpose(
            1, 2
        )

    def _cross(self, q: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """`cross_attn(q, context, context)` from the projected `memory` (no dropout)."""
        attn = self.cross_attn
        d = attn.embed_dim
        b = attn.in_proj_bias
        query = nn.functional.linear(q, attn.in_proj_weight[:d], None if b is None else b[:d])
        out = nn.functional.scaled_dot_product_attention(self._heads(query), *memory)
        return attn.out_proj(out.transpose(1, 2).reshape(q.shape))

    def forward(
        self, q: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`memory`: `self.memory(context)`."""
        q = self.norms[0](q + self.self_attn(q, q, q, need_weights=False)[0])
        q = self.norms[1](q + self._cross(q, memory))
        q = self.norms[2](q + self.ffn(q))
        b, k, _ = q.shape
        return q, self.offset(q).view(b, k, -1, 2), self.score(q).squeeze(-1)


@dataclass(frozen=True)
class PlannerOutput:
    """trajectories (B, K, T, 2) [m] ego frame; scores (B, K) logits; `layers`: the
    normalised per-layer predictions of the last denoising pass (deep supervision)."""

    trajectories: torch.Tensor
    scores: torch.Tensor
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()

    def best(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, 2) trajectory of the highest-scoring mode and its probability (B,)."""
        probs = self.scores.softmax(-1)
        idx = probs.argmax(-1)
        chosen = self.trajectories[torch.arange(len(idx)), idx]
        return chosen, probs.gather(1, idx[:, None]).squeeze(1)


class TruncatedDiffusionPlanner(nn.Module):
    anchors: torch.Tensor  # (K, T, 2) [m] buffer, saved with the weights
    norm_offset: torch.Tensor
    norm_scale: torch.Tensor

    def __init__(self, cfg: PlannerConfig, d_model: int, heads: int, anchors: torch.Tensor):
        super().__init__()
        k, t = cfg.num_modes, cfg.num_poses
        if tuple(anchors.shape) != (k, t, 2):
            raise ValueError(f"anchors must be ({k}, {t}, 2), got {tuple(anchors.shape)}")
        self.cfg = cfg
        self.register_buffer("anchors", anchors.float().clone())
        self.register_buffer("norm_offset", torch.tensor([cfg.x_offset_m, 0.0]), persistent=False)
        self.register_buffer(
            "norm_scale", torch.tensor([cfg.x_scale_m, cfg.y_scale_m]), persistent=False
        )
        self.schedule = DDIMSchedule(cfg.train_timesteps)
        self.d_model = d_model
        self.traj_embed = nn.Sequential(
            nn.Linear(t * 2, d_model), nn.GELU(), nn.Linear(d_model, d_model)
        )
        self.time_embed = nn.Sequential(
            nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model)
        )
        self.mode_embed = nn.Parameter(torch.randn(k, d_model) * 0.02)
        self.layers = nn.ModuleList(
            [_CascadeLayer(d_model, heads, t) for _ in range(cfg.decoder_layers)]
        )

    def normalize(self, traj_m: torch.Tensor) -> torch.Tensor:
        return (traj_m - self.norm_offset) / self.norm_scale

    def denormalize(self, traj_n: torch.Tensor) -> torch.Tensor:
        return traj_n * self.norm_scale + self.norm_offset

    def memory(self, context: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each cascade layer's cross-attention keys / values of the context (B, L, d)."""
        return [cast(_CascadeLayer, layer).memory(context) for layer in self.layers]

    def decode(
        self,
        noisy_n: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        ego: torch.Tensor,
        memory: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Noisy normalised trajectories (B, K, T, 2) at timesteps t (B,), the context
        (B, L, d) and the ego-state embedding (B, d) -> per layer (clean-trajectory
        prediction (B, K, T, 2) normalised, scores (B, K)). `memory`: `self.memory(context)`
        when the caller decodes the same context more than once."""
        if memory is None:
            memory = self.memory(context)
        q = self.traj_embed(noisy_n.flatten(2)) + self.mode_embed + ego[:, None, :]
        q = q + self.time_embed(timestep_embedding(t, self.d_model))[:, None, :]
        traj = noisy_n
        out = []
        for layer, kv in zip(self.layers, memory, strict=True):
            q, offset, score = layer(q, kv)
            traj = traj + offset
            out.append((traj, score))
            traj = traj.detach()  # each layer refines the last one's output (cascade)
        return tuple(out)

    def training_outputs(
        self, context: torch.Tensor, ego: torch.Tensor, generator=None
    ) -> PlannerOutput:
        """One denoising pass from anchors noised to t ~ U[0, train_max_t)."""
        b = context.shape[0]
        anchors_n = self.normalize(self.anchors).expand(b, -1, -1, -1)
        t = torch.randint(0, self.cfg.train_max_t, (b,), device=context.device, generator=generator)
        noise = torch.randn(anchors_n.shape, device=context.device, generator=generator)
        layers = self.decode(self.schedule.add_noise(anchors_n, noise, t), t, context, ego)
        traj_n, scores = layers[-1]
        return PlannerOutput(self.denormalize(traj_n), scores, layers)

    @torch.no_grad()
    def sample(
        self, context: torch.Tensor, ego: torch.Tensor, generator: torch.Generator | None = None
    ) -> PlannerOutput:
        """Inference: anchors noised to `infer_t`, `denoise_steps` DDIM steps to t = 0."""
        b = context.shape[0]
        anchors_n = self.normalize(self.anchors).expand(b, -1, -1, -1)
        t0 = self.cfg.infer_t
        noise = torch.randn(anchors_n.shape, device=context.device, generator=generator)
        x = self.schedule.add_noise(anchors_n, noise, torch.full((b,), t0, dtype=torch.long))
        steps = torch.linspace(t0, 0, self.cfg.denoise_steps + 1).round().long().tolist()
        layers: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
        memory = self.memory(context)
        for t, t_prev in zip(steps[:-1], steps[1:], strict=True):
            layers = self.decode(x, torch.full((b,), t, dtype=torch.long), context, ego, memory)
            x0, _ = layers[-1]
            x = self.schedule.step(x0, x, t, t_prev if t_prev > 0 else -1)
        traj_n, scores = layers[-1]
        return PlannerOutput(self.denormalize(traj_n), scores, layers)
