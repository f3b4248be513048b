"""Training losses of the driving model (REFERENCE.md "Planner and training anchors"):

    L = L_mode + L_traj + 0.5 L_align + 1.0 L_collision + 0.1 L_comfort
        + w_aux (L_bev + L_light) + w_distill (L_emb + L_flags + L_intent)

- L_mode: focal loss on the planner's scores, target = the anchor closest to the expert
  trajectory (DiffusionDrive; `mode_target: anchor`), or, per cascade layer, the denoised
  candidate closest to it (`mode_target: candidate`: the score learns to point at the
  output that is right, which is what the agent drives. Measured on the shipped model,
  the candidate nearest the expert is 1.0-1.2 m off at 3 s where the chosen one is
  2.6-2.9 m: its scores, not its candidates, carry most of the error);
- L_traj: L1 [m] between that mode's denoised trajectory and the expert's, every cascade
  layer (deep supervision);
- L_align: 1 - cos(VLM embedding, embedding of the expert trajectory) (VADv2-style);
- L_collision: how far the target mode's waypoints reach into ground-truth obstacle boxes
  (moved at constant velocity to each waypoint's time) beyond what the expert's own
  trajectory does;
- L_comfort: jerk beyond nuPlan's bound along the predicted trajectory;
- the auxiliary perception targets (BEV occupancy, light state; with their heads the span
  within cells, object boxes (`agent.model.objects`) and the lanes beside the route) and
  the distillation of the VLM (embedding) and of the auto labels (flags, intent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from agent.data.schema import POSE_DT_S
from agent.model.config import ModelConfig, PerceptionConfig
from agent.model.drive_model import DriveModel, DriveOutput
from agent.model.objects import object_targets

EGO_RADIUS_M = 1.0  # [m] waypoints closer than this to a box count as a collision
MAX_JERK_MPS3 = 4.13  # [m/s^3] nuPlan's comfort bound on longitudinal jerk
FOCAL_GAMMA = 2.0
MAX_FLAG_POS_WEIGHT = 20.0  # [-] cap of a rare flag's positive-class weight


def flag_pos_weight(flags: np.ndarray) -> torch.Tensor:
    """(F,) BCE positive weights, negatives/positives per flag capped at MAX_FLAG_POS_WEIGHT.

    Edge-case flags are rare (a lead braking hard is in ~1 % of the frames) and the target
    is recall: unweighted BCE settles below the 0.5 threshold on them. A flag with no
    positives at all gets weight 1 (nothing to balance)."""
    flags = np.asarray(flags, dtype=bool)
    pos = flags.sum(0).astype(np.float64)
    neg = len(flags) - pos
    weight = np.where(pos > 0, neg / np.maximum(pos, 1.0), 1.0)
    return torch.tensor(np.clip(weight, 1.0, MAX_FLAG_POS_WEIGHT), dtype=torch.float32)


@dataclass(frozen=True)
class LossWeights:
    mode: float = 1.0
    traj: float = 1.0
    align: float = 0.5
    collision: float = 1.0
    comfort: float = 0.1
    aux: float = 0.5
    distill: float = 0.5
    span: float = 1.0  # x aux: the BEV span head's L1 (a model without one ignores it)
    objects: float = 1.0  # x aux: the detection head (centre BCE + box and velocity L1)
    lanes: float = 1.0  # x aux: the lane head's BCE
    mode_target: str = "anchor"  # L_mode's target: "anchor" or "candidate" (module docstring)


@dataclass(frozen=True)
class Targets:
    """trajectory (B, T, 2) [m]; obstacles (B, M, 8) schema.OBSTACLE_COLUMNS; obstacle_mask
    (B, M); light_state (B,); flags (B, F) float; intent (B,); vlm_embedding (B, E) or None;
    lanes (B, stations, columns) float or None (`schema.LANE_COLUMNS`), lanes_known (B,)
    bool: which rows have lane labels (datasets collected before them do not)."""

    trajectory: torch.Tensor
    obstacles: torch.Tensor
    obstacle_mask: torch.Tensor
    light_state: torch.Tensor
    flags: torch.Tensor
    intent: torch.Tensor
    vlm_embedding: torch.Tensor | None = None
    lanes: torch.Tensor | None = None
    lanes_known: torch.Tensor | None = None


def closest_anchor(anchors: torch.Tensor, trajectory: torch.Tensor) -> torch.Tensor:
    """(K, T, 2), (B, T, 2) -> (B,) index of the anchor with the smallest mean L2."""
    return closest_candidate(anchors[None], trajectory)


def closest_candidate(candidates: torch.Tensor, trajectory: torch.Tensor) -> torch.Tensor:
    """(B or 1, K, T, 2), (B, T, 2) -> (B,) index of each sample's candidate with the
    smallest mean L2 to the trajectory (a target: no gradient flows through the choice)."""
    return (candidates.detach() - trajectory[:, None]).norm(dim=-1).mean(-1).argmin(-1)


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = FOCAL_GAMMA
) -> torch.Tensor:
    logp = logits.log_softmax(-1).gather(1, target[:, None]).squeeze(1)
    return (-((1 - logp.exp()) ** gamma) * logp).mean()


def box_penetration(
    points: torch.Tensor, obstacles: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """How far each waypoint reaches into each obstacle box inflated by EGO_RADIUS_M [m].

    points (B, T, 2) at times (1..T) * POSE_DT_S; obstacles (B, M, 8) at time 0, moved at
    constant velocity. Returns (B, T, M) >= 0 (0 for masked-out obstacles)."""
    t = torch.arange(1, points.shape[1] + 1, device=points.device) * POSE_DT_S  # (T,)
    centre = obstacles[:, None, :, 0:2] + t[None, :, None, None] * obstacles[:, None, :, 3:5]
    rel = points[:, :, None, :] - centre  # (B, T, M, 2)
    yaw = obstacles[:, None, :, 2]
    cos, sin = yaw.cos(), yaw.sin()
    along = rel[..., 0] * cos + rel[..., 1] * sin
    across = -rel[..., 0] * sin + rel[..., 1] * cos
    outside = torch.maximum(
        along.abs() - obstacles[:, None, :, 5] / 2, across.abs() - obstacles[:, None, :, 6] / 2
    )
    return F.relu(EGO_RADIUS_M - outside) * mask[:, None, :].float()


def jerk_excess(trajectory: torch.Tensor) -> torch.Tensor:
    """(B, T, 2) [m] from the ego at the origin -> (B,) mean jerk beyond the bound, in units
    of the bound (linear, not squared: an untrained planner's jerk is huge and must not
    swamp the other terms)."""
    zero = torch.zeros_like(trajectory[:, :1])
    p = torch.cat([zero, trajectory], dim=1)
    jerk = p.diff(n=3, dim=1) / POSE_DT_S**3
    return (F.relu(jerk.norm(dim=-1) - MAX_JERK_MPS3) / MAX_JERK_MPS3).mean(-1)


def _cell_hits(cfg: PerceptionConfig, obstacles: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, rows * cols, M) bool: obstacle m touches the cell, i.e. the cell's centre lies in
    its box grown by half a cell (cells in `PerceptionConfig.cell_centres` order, row-major)."""
    half_x, half_y = (size / 2 for size in cfg.cell_size)
    xs, ys = (torch.as_tensor(c, dtype=obstacles.dtype) for c in cfg.cell_centres())
    gx, gy = torch.meshgrid(xs.to(obstacles.device), ys.to(obstacles.device), indexing="ij")
    cells = torch.stack([gx.flatten(), gy.flatten()], dim=-1)  # (R*C, 2)
    rel = cells[None, :, None, :] - obstacles[:, None, :, 0:2]  # (B, R*C, M, 2)
    cos, sin = obstacles[:, None, :, 2].cos(), obstacles[:, None, :, 2].sin()
    along = rel[..., 0] * cos + rel[..., 1] * sin
    across = -rel[..., 0] * sin + rel[..., 1] * cos
    inside = (along.abs() <= obstacles[:, None, :, 5] / 2 + half_x) & (
        across.abs() <= obstacles[:, None, :, 6] / 2 + half_y
    )
    return inside & mask[:, None, :]


def bev_targets(cfg: PerceptionConfig, obstacles: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Occupancy (B, classes, rows, cols) in {0, 1}: a cell is occupied by a class when the
    cell's centre lies in one of its boxes grown by half a cell (the box touches the cell)."""
    rows, cols = cfg.bev_shape
    inside = _cell_hits(cfg, obstacles, mask)
    kind = obstacles[..., 7].long()  # (B, M)
    out = []
    for c in range(len(cfg.bev_classes)):
        out.append((inside & (kind == c)[:, None, :]).any(-1))
    return torch.stack(out, dim=1).float().view(obstacles.shape[0], -1, rows, cols)


def bev_spans(cfg: PerceptionConfig, obstacles: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, classes, 2, rows, cols): where across each occupied cell its class's objects lie,
    [y_lo, y_hi] as fractions of the cell's width (0 = the cell's right edge, at its lowest
    y; 1 = its left edge). The union over the class's objects touching the cell
    (`bev_targets`), each object as its ego-frame axis-aligned footprint clipped to the
    cell; 0 where the class does not occupy the cell (the loss masks those). An object
    counted by `bev_targets`' grown-box test whose footprint misses the cell (a yawed box's
    corner) clips to the nearest edge."""
    rows, cols = cfg.bev_shape
    width = cfg.cell_size[1]
    inside = _cell_hits(cfg, obstacles, mask)  # (B, R*C, M)
    yaw = obstacles[..., 2]
    half = (yaw.sin().abs() * obstacles[..., 5] + yaw.cos().abs() * obstacles[..., 6]) / 2
    low, high = obstacles[..., 1] - half, obstacles[..., 1] + half  # (B, M) [m]
    _, ys = cfg.cell_centres()
    right = torch.as_tensor(ys - width / 2, dtype=obstacles.dtype, device=obstacles.device)
    right = right.repeat(rows)  # (R*C,) row-major, as _cell_hits
    # (B, R*C, M) fractions of the cell's width, clipped to the cell
    lo = ((low[:, None, :] - right[None, :, None]) / width).clamp(0.0, 1.0)
    hi = ((high[:, None, :] - right[None, :, None]) / width).clamp(0.0, 1.0)
    kind = obstacles[..., 7].long()
    out = []
    for c in range(len(cfg.bev_classes)):
        hit = inside & (kind == c)[:, None, :]
        occupied = hit.any(-1)
        c_lo = torch.where(hit, lo, torch.full_like(lo, 2.0)).amin(-1)
        c_hi = torch.where(hit, hi, torch.full_like(hi, -1.0)).amax(-1)
        zero = torch.zeros_like(c_lo)
        out.append(
            torch.stack([torch.where(occupied, c_lo, zero), torch.where(occupied, c_hi, zero)], 1)
        )
    return torch.stack(out, dim=1).view(obstacles.shape[0], -1, 2, rows, cols)


def compute_losses(
    model: DriveModel,
    out: DriveOutput,
    targets: Targets,
    weights: LossWeights,
    flag_weight: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Named loss terms and their weighted sum under "total". `flag_weight`: (F,) BCE
    positive weights of the flags (`flag_pos_weight` of the training set)."""
    cfg: ModelConfig = model.cfg
    gt = targets.trajectory
    b = gt.shape[0]
    target_mode = closest_anchor(model.planner.anchors, gt)
    rows = torch.arange(b, device=gt.device)
    terms: dict[str, torch.Tensor] = {}
    if weights.mode_target not in ("anchor", "candidate"):
        raise ValueError(
            f"mode_target must be 'anchor' or 'candidate', got {weights.mode_target!r}"
        )

    def score_target(traj_n: torch.Tensor) -> torch.Tensor:
        if weights.mode_target == "anchor":
            return target_mode
        return closest_candidate(model.planner.denormalize(traj_n), gt)

    terms["mode"] = torch.stack(
        [focal_loss(score, score_target(traj_n)) for traj_n, score in out.plan.layers]
    ).mean()
    traj_l1 = []
    for traj_n, _ in out.plan.layers:
        chosen = model.planner.denormalize(traj_n[rows, target_mode])
        traj_l1.append((chosen - gt).abs().mean())
    terms["traj"] = torch.stack(traj_l1).mean()
    pred = out.plan.trajectories[rows, target_mode]  # (B, T, 2) [m]
    pen_pred = box_penetration(pred, targets.obstacles, targets.obstacle_mask)
    pen_gt = box_penetration(gt, targets.obstacles, targets.obstacle_mask)
    terms["collision"] = F.relu(pen_pred - pen_gt).amax(-1).mean()
    terms["comfort"] = jerk_excess(pred).mean()
    if targets.vlm_embedding is not None:
        traj_emb = model.traj_align(model.planner.normalize(gt).flatten(1))
        terms["align"] = (1 - F.cosine_similarity(traj_emb, targets.vlm_embedding, dim=-1)).mean()
        terms["distill_emb"] = F.mse_loss(out.distilled_embedding, targets.vlm_embedding)
    occupancy = bev_targets(cfg.perception, targets.obstacles, targets.obstacle_mask)
    # Cells the head cannot see (`perception.seen`: the camera lift's blind cells) carry no
    # evidence: not trained.
    weight = model.perception.seen.expand_as(occupancy).float()
    pos = ((occupancy * weight).sum() / weight.sum()).clamp(1e-3, 0.5)
    bce = F.binary_cross_entropy_with_logits(
        out.bev_logits, occupancy, pos_weight=((1 - pos) / pos).sqrt(), reduction="none"
    )
    terms["bev"] = (bce * weight).sum() / weight.sum()
    aux = terms["bev"]
    if out.bev_span_logits is not None:
        # L1 in cell widths on the cells the class occupies (elsewhere there is no span).
        spans = bev_spans(cfg.perception, targets.obstacles, targets.obstacle_mask)
        occupied = (occupancy * weight)[:, :, None].expand_as(spans)
        err = (torch.sigmoid(out.bev_span_logits) - spans).abs() * occupied
        terms["bev_span"] = err.sum() / occupied.sum().clamp(min=1.0)
        aux = aux + weights.span * terms["bev_span"]
    if out.object_logits is not None:
        centre, boxes = object_targets(cfg.perception, targets.obstacles, targets.obstacle_mask)
        pos = centre.mean().clamp(1e-3, 0.5)
        terms["object_centre"] = F.binary_cross_entropy_with_logits(
            out.object_logits[:, :, 0], centre, pos_weight=((1 - pos) / pos).sqrt()
        )
        positive = centre[:, :, None]
        count = positive.sum().clamp(min=1.0)
        err = (out.object_logits[:, :, 1:] - boxes).abs() * positive
        terms["object_box"] = err[:, :, :4].sum() / (4 * count)
        terms["object_velocity"] = err[:, :, 4:].sum() / (2 * count)
        aux = aux + weights.objects * (
            terms["object_centre"] + terms["object_box"] + terms["object_velocity"]
        )
    if out.lane_logits is not None:
        if targets.lanes is None or targets.lanes_known is None:
            raise ValueError("the model has a lane head but the batch has no lane labels")
        known = targets.lanes_known.float()[:, None, None].expand_as(out.lane_logits)
        bce = F.binary_cross_entropy_with_logits(
            out.lane_logits, targets.lanes.float(), reduction="none"
        )
        terms["lanes"] = (bce * known).sum() / known.sum().clamp(min=1.0)
        aux = aux + weights.lanes * terms["lanes"]
    terms["light"] = F.cross_entropy(out.light_logits, targets.light_state)
    terms["distill_flags"] = F.binary_cross_entropy_with_logits(
        out.distilled_flags, targets.flags, pos_weight=flag_weight
    )
    terms["distill_intent"] = F.cross_entropy(out.distilled_intent, targets.intent)
    w = weights
    total = (
        w.mode * terms["mode"]
        + w.traj * terms["traj"]
        + w.collision * terms["collision"]
        + w.comfort * terms["comfort"]
        + w.aux * (aux + terms["light"])
        + w.distill * (terms["distill_flags"] + terms["distill_intent"])
    )
    if "align" in terms:
        total = total + w.align * terms["align"] + w.distill * terms["distill_emb"]
    terms["total"] = total
    return terms
