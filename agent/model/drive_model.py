"""The driving model: camera frames + ego state (+ reasoning) -> K trajectories + scores,
plus what the safety layer needs (BEV occupancy ahead, the light state) and the distilled
reasoning (embedding, flags, intent) for the VLM-off fast path.

    frames ─► CameraEncoder ─► visual tokens ──┬─► PerceptionHead or CameraLiftPerception
                                               │   (BEV occupancy, light; optionally the
                                               │   span within cells and object boxes)
                                               ├─► LaneHead (optional: lanes beside the route)
                                               ├─► DistilledReasoning (embedding, flags, intent)
    speed, command, target point ─► state token┤ (also added to every planner mode query)
    VLM embedding (or distilled, or "none") ─► reasoning token
                                               └─► TruncatedDiffusionPlanner ─► (K, T, 2), scores
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from agent.data.schema import LANE_COLUMNS, LANE_STATIONS_M
from agent.model.bev_lift import CameraLiftPerception
from agent.model.config import ModelConfig
from agent.model.encoder import CameraEncoder
from agent.model.planner import PlannerOutput, TruncatedDiffusionPlanner

SPEED_SCALE_MPS = 20.0  # [m/s] speed input normalisation
TARGET_SCALE_M = 50.0  # [m] target-point input normalisation
# Channels of the detection head per cell and class (`PerceptionConfig.objects`): the
# centre logit, the hull [x_lo, x_hi, y_lo, y_hi] relative to the cell's centre in cell
# sizes, and the velocity (vx, vy) in units of OBJECT_VELOCITY_SCALE_MPS
# (`agent.model.losses.object_targets` builds the targets in this layout).
OBJECT_CHANNELS = 7
OBJECT_VELOCITY_SCALE_MPS = 10.0


@dataclass(frozen=True)
class DriveInputs:
    """A batch. frames (B, S, C, H, W, 3) uint8 BGR, oldest first; speed (B,) [m/s];
    command (B,) int RoadOption index; target_point (B, 2) [m] ego frame; reasoning (B, E)
    or None (no reasoning); reasoning_mask (B,) bool: which rows have reasoning."""

    frames: torch.Tensor
    speed_mps: torch.Tensor
    command: torch.Tensor
    target_point: torch.Tensor
    reasoning: torch.Tensor | None = None
    reasoning_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        b = self.frames.shape[0]
        if self.frames.ndim != 6 or self.frames.shape[-1] != 3:
            raise ValueError(
                f"DriveInputs.frames must be (B, S, C, H, W, 3), got {tuple(self.frames.shape)}"
            )
        for name, shape in (("speed_mps", (b,)), ("command", (b,)), ("target_point", (b, 2))):
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(
                    f"DriveInputs.{name} must be {shape}, got {tuple(getattr(self, name).shape)}"
                )
        if self.reasoning is not None and (
            self.reasoning.ndim != 2 or self.reasoning.shape[0] != b
        ):
            raise ValueError(
                f"DriveInputs.reasoning must be (B, E), got {tuple(self.reasoning.shape)}"
            )


@dataclass(frozen=True)
class DriveOutput:
    plan: PlannerOutput
    bev_logits: torch.Tensor  # (B, classes, rows, cols) occupancy ahead
    light_logits: torch.Tensor  # (B, LIGHT_STATES)
    distilled_embedding: torch.Tensor  # (B, E)
    distilled_flags: torch.Tensor  # (B, F) logits
    distilled_intent: torch.Tensor  # (B, I) logits
    pooled: torch.Tensor  # (B, d) current-frame visual summary
    # (B, classes, 2, rows, cols) logits of where across each cell its objects lie
    # (sigmoid: fractions of the cell's width, `losses.bev_spans`); None without the head
    bev_span_logits: torch.Tensor | None = None
    # (B, classes, OBJECT_CHANNELS, rows, cols) the detection head; None without it
    object_logits: torch.Tensor | None = None
    # (B, len(LANE_STATIONS_M), len(LANE_COLUMNS)) lane logits; None without the lane head
    lane_logits: torch.Tensor | None = None


class PerceptionHead(nn.Module):
    """Learned BEV cell queries cross-attend to the visual tokens -> occupancy logits per
    class (and, with `PerceptionConfig.bev_span`, the lateral span of each class within
    each cell); a light-state classifier on the pooled feature.

    One query per cell (128 for the shipped 16 x 8 grid, 800 for a 2 x 1 m one). The
    queries are parameters, so their attention projection does not depend on the input:
    outside training it is computed once and reused (`nn.MultiheadAttention`'s weights and
    math without the per-call query projection; with 800 queries ~20 % of the head)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        rows, cols = cfg.perception.bev_shape
        self.shape = (len(cfg.perception.bev_classes), rows, cols)
        self.queries = nn.Parameter(torch.randn(rows * cols, cfg.d_model) * 0.02)
        self.attn = nn.MultiheadAttention(cfg.d_model, cfg.heads, batch_first=True)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.cells = nn.Linear(cfg.d_model, self.shape[0])
        self.spans = nn.Linear(cfg.d_model, 2 * self.shape[0]) if cfg.perception.bev_span else None
        self.objects = (
            nn.Linear(cfg.d_model, OBJECT_CHANNELS * self.shape[0])
            if cfg.perception.objects
            else None
        )
        self.light = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_model),
            nn.GELU(),
            nn.Linear(cfg.d_model, cfg.num_light_states),
        )
        self._projected: tuple[tuple[int, ...], torch.Tensor] | None = None
        # Cells this head is trained on (all: attention may look anywhere; the camera lift
        # masks the ones its camera cannot see). The BEV loss reads this.
        self.seen: torch.Tensor
        self.register_buffer("seen", torch.ones(rows, cols, dtype=torch.bool), persistent=False)

    def _query_projection(self) -> torch.Tensor:
        """(N, d) the queries through the attention's query projection; cached while no
        gradient is taken, keyed on the weights' in-place versions (an optimiser step or
        `load_state_dict` changes them)."""
        d = self.attn.embed_dim
        w, b = self.attn.in_proj_weight, self.attn.in_proj_bias
        if torch.is_grad_enabled():
            return nn.functional.linear(self.queries, w[:d], None if b is None else b[:d])
        key = tuple(t._version for t in (self.queries, w, b) if t is not None)
        if self._projected is None or self._projected[0] != key:
            q = nn.functional.linear(self.queries, w[:d], None if b is None else b[:d])
            self._projected = (key, q)
        return self._projected[1]

    def _attend(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, d): the cell queries attending to the tokens (B, T, d)."""
        attn = self.attn
        d, heads = attn.embed_dim, attn.num_heads
        w, b = attn.in_proj_weight, attn.in_proj_bias
        k, v = nn.functional.linear(tokens, w[d:], None if b is None else b[d:]).chunk(2, dim=-1)
        batch, n_tokens, n_cells = tokens.shape[0], tokens.shape[1], self.queries.shape[0]
        q = self._query_projection().view(1, n_cells, heads, d // heads).transpose(1, 2)
        k = k.reshape(batch, n_tokens, heads, d // heads).transpose(1, 2)
        v = v.reshape(batch, n_tokens, heads, d // heads).transpose(1, 2)
        dropout = attn.dropout if self.training else 0.0
        out = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        return attn.out_proj(out.transpose(1, 2).reshape(batch, n_cells, d))

    def forward(
        self, tokens: torch.Tensor, pooled: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(occupancy logits (B, classes, rows, cols), light logits (B, states), span logits
        (B, classes, 2, rows, cols) or None, object logits (B, classes, OBJECT_CHANNELS,
        rows, cols) or None)."""
        b = tokens.shape[0]
        q = self.queries.expand(b, -1, -1)
        features = self.norm(q + self._attend(tokens))
        bev = self.cells(features).transpose(1, 2).reshape(b, *self.shape)
        classes, rows, cols = self.shape
        span = objects = None
        if self.spans is not None:
            span = self.spans(features).transpose(1, 2).reshape(b, classes, 2, rows, cols)
        if self.objects is not None:
            objects = self.objects(features).transpose(1, 2)
            objects = objects.reshape(b, classes, OBJECT_CHANNELS, rows, cols)
        return bev, self.light(pooled), span, objects


class LaneHead(nn.Module):
    """The lanes beside the route: one learned query per station along the route
    (`LANE_STATIONS_M`) cross-attends to the visual tokens -> a logit per `LANE_COLUMNS`
    entry. A probe on the shipped encoder's pooled feature separated them poorly
    (left_opposite 0.74 accuracy against 0.55 for the majority class), so the head looks
    at the tokens, and trains with the encoder."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.queries = nn.Parameter(torch.randn(1, len(LANE_STATIONS_M), d) * 0.02)
        self.attn = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        self.trunk = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU())
        self.out = nn.Linear(d, len(LANE_COLUMNS))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, stations, columns) logits."""
        q = self.queries.expand(tokens.shape[0], -1, -1)
        return self.out(self.trunk(q + self.attn(q, tokens, tokens, need_weights=False)[0]))


class DistilledReasoning(nn.Module):
    """Predicts the VLM's embedding, flags and intent from the visual features, so the fast
    path keeps the VLM's knowledge with the VLM off (`mode: distilled`)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.attn = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        self.trunk = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU())
        self.embedding = nn.Linear(d, cfg.reasoning_dim)
        self.flags = nn.Linear(d, cfg.num_flags)
        self.intent = nn.Linear(d, cfg.num_intents)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = self.query.expand(tokens.shape[0], -1, -1)
        h = self.trunk((q + self.attn(q, tokens, tokens, need_weights=False)[0]).squeeze(1))
        return self.embedding(h), self.flags(h), self.intent(h)


class DriveModel(nn.Module):
    def __init__(self, cfg: ModelConfig, anchors: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.encoder = CameraEncoder(cfg.encoder, d)
        self.perception: PerceptionHead | CameraLiftPerception
        if cfg.perception.lift == "camera":
            h, w = self.encoder.grid
            self.perception = CameraLiftPerception(
                cfg.perception,
                d,
                cfg.num_light_states,
                feature_grid=(h, w),
                image_size=(cfg.encoder.image_height, cfg.encoder.image_width),
                tokens_per_frame=cfg.encoder.cameras * h * w,
            )
        else:
            self.perception = PerceptionHead(cfg)
        self.distill = DistilledReasoning(cfg)
        self.lanes = LaneHead(cfg) if cfg.perception.lanes else None
        self.command_embed = nn.Embedding(cfg.num_commands, d)
        self.state_embed = nn.Sequential(nn.Linear(3, d), nn.GELU(), nn.Linear(d, d))
        self.reasoning_proj = nn.Sequential(
            nn.Linear(cfg.reasoning_dim, d), nn.GELU(), nn.Linear(d, d)
        )
        self.no_reasoning = nn.Parameter(torch.zeros(d))
        self.token_type = nn.Parameter(torch.randn(3, d) * 0.02)  # visual, state, reasoning
        self.planner = TruncatedDiffusionPlanner(cfg.planner, d, cfg.heads, anchors)
        # Trajectory embedding for the VLM <-> trajectory alignment loss.
        self.traj_align = nn.Sequential(
            nn.Linear(cfg.planner.num_poses * 2, d), nn.GELU(), nn.Linear(d, cfg.reasoning_dim)
        )

    def state_token(self, x: DriveInputs) -> torch.Tensor:
        scalars = torch.cat(
            [(x.speed_mps / SPEED_SCALE_MPS)[:, None], x.target_point / TARGET_SCALE_M], dim=-1
        )
        command = x.command.clamp(0, self.cfg.num_commands - 1)
        return self.state_embed(scalars.float()) + self.command_embed(command)

    def reasoning_token(self, x: DriveInputs, b: int) -> torch.Tensor:
        none = self.no_reasoning.expand(b, -1)
        if x.reasoning is None:
            return none
        token = self.reasoning_proj(x.reasoning.float())
        if x.reasoning_mask is None:
            return token
        return torch.where(x.reasoning_mask[:, None], token, none)

    def context(self, tokens: torch.Tensor, x: DriveInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-attention context (B, L + 2, d), ego-state embedding (B, d))."""
        b = tokens.shape[0]
        state = self.state_token(x)
        extra = torch.stack(
            [state + self.token_type[1], self.reasoning_token(x, b) + self.token_type[2]], dim=1
        )
        return torch.cat([tokens + self.token_type[0], extra], dim=1), state

    def heads(self, tokens: torch.Tensor, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        bev, light, span, objects = self.perception(tokens, pooled)
        emb, flags, intent = self.distill(tokens)
        out = {"bev": bev, "light": light, "emb": emb, "flags": flags, "intent": intent}
        if span is not None:
            out["bev_span"] = span
        if objects is not None:
            out["objects"] = objects
        if self.lanes is not None:
            out["lanes"] = self.lanes(tokens)
        return out

    def forward(self, x: DriveInputs, sample: bool = False, generator=None) -> DriveOutput:
        """Training (`sample=False`): one denoising pass from randomly noised anchors.
        Inference (`sample=True`): the 2-step truncated DDIM sampler."""
        tokens, pooled = self.encoder(x.frames)
        return self.from_tokens(tokens, pooled, x, sample, generator)

    def from_tokens(
        self,
        tokens: torch.Tensor,
        pooled: torch.Tensor,
        x: DriveInputs,
        sample: bool,
        generator=None,
        heads: dict[str, torch.Tensor] | None = None,
    ) -> DriveOutput:
        """`heads`: `self.heads(tokens, pooled)` when the caller already computed them
        (the agent reads the distilled reasoning before planning)."""
        h = heads if heads is not None else self.heads(tokens, pooled)
        context, state = self.context(tokens, x)
        plan = (
            self.planner.sample(context, state, generator)
            if sample
            else self.planner.training_outputs(context, state, generator)
        )
        return DriveOutput(
            plan,
            h["bev"],
            h["light"],
            h["emb"],
            h["flags"],
            h["intent"],
            pooled,
            h.get("bev_span"),
            h.get("objects"),
            h.get("lanes"),
        )
