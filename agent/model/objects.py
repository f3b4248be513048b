"""The detection head's layout (`PerceptionConfig.objects`): object labels -> per-cell
targets for training, and the head's outputs -> object boxes for the safety guard.

One box per cell and class, CenterNet-style on the BEV grid: a cell is "positive" for a
class when an object of that class has its centre in the cell. Its box is the
axis-aligned hull of those objects' footprints (several cones of a closure can share a
4 m cell: their hull covers them all), its velocity their mean. Channels
(`agent.model.drive_model.OBJECT_CHANNELS`), per class:

    0     centre logit
    1..4  hull [x_lo, x_hi, y_lo, y_hi] relative to the cell's centre, in cell sizes
          (length along x, width along y); the hull may reach beyond the cell
    5..6  velocity (vx, vy) ego frame, in units of OBJECT_VELOCITY_SCALE_MPS

Hulls are axis-aligned in the ego frame (yaw 0): a yawed car's hull is larger than the
car, which is the conservative side for the guard.
"""

from __future__ import annotations

import numpy as np
import torch

from agent.model.config import PerceptionConfig
from agent.model.drive_model import OBJECT_CHANNELS, OBJECT_VELOCITY_SCALE_MPS


def object_targets(
    cfg: PerceptionConfig, obstacles: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """obstacles (B, M, 8) `schema.OBSTACLE_COLUMNS`, mask (B, M) -> (centre (B, classes,
    R, C) in {0, 1}, regression targets (B, classes, 6, R, C): channels 1..6 of the module
    docstring, 0 where the centre is 0)."""
    b, m = mask.shape
    classes = len(cfg.bev_classes)
    rows, cols = cfg.bev_shape
    (cx, cy), (x0, y0) = cfg.cell_size, (cfg.bev_x_m[0], cfg.bev_y_m[0])
    x, y, yaw = obstacles[..., 0], obstacles[..., 1], obstacles[..., 2]
    length, width = obstacles[..., 5], obstacles[..., 6]
    kind = obstacles[..., 7].long()
    row = torch.floor((x - x0) / cx).long()
    col = torch.floor((y - y0) / cy).long()
    valid = mask & (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
    valid &= (kind >= 0) & (kind < classes)
    batch = torch.arange(b, device=mask.device)[:, None].expand(b, m)
    flat = ((batch * classes + kind.clamp(0, classes - 1)) * rows + row.clamp(0, rows - 1)) * cols
    flat = (flat + col.clamp(0, cols - 1))[valid]  # (V,)
    size = b * classes * rows * cols
    cos, sin = yaw.cos().abs(), yaw.sin().abs()
    half_x = (cos * length + sin * width) / 2
    half_y = (sin * length + cos * width) / 2
    # cell centres of each object's cell, to express the hull relative to them
    xc = x0 + cx * (row.float() + 0.5)
    yc = y0 + cy * (col.float() + 0.5)
    edges = {
        "x_lo": ((x - half_x - xc) / cx, "amin"),
        "x_hi": ((x + half_x - xc) / cx, "amax"),
        "y_lo": ((y - half_y - yc) / cy, "amin"),
        "y_hi": ((y + half_y - yc) / cy, "amax"),
        "vx": (obstacles[..., 3] / OBJECT_VELOCITY_SCALE_MPS, "mean"),
        "vy": (obstacles[..., 4] / OBJECT_VELOCITY_SCALE_MPS, "mean"),
    }
    count = torch.zeros(size, device=mask.device).index_add_(
        0, flat, torch.ones_like(flat, dtype=torch.float32)
    )
    channels = []
    for values, reduce in edges.values():
        out = torch.zeros(size, dtype=obstacles.dtype, device=mask.device)
        out = out.scatter_reduce(0, flat, values[valid], reduce=reduce, include_self=False)
        channels.append(out.view(b, classes, rows, cols))
    centre = (count > 0).float().view(b, classes, rows, cols)
    return centre, torch.stack(channels, dim=2) * centre[:, :, None]


def decode_objects(
    logits: np.ndarray, cfg: PerceptionConfig, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...], np.ndarray, np.ndarray]:
    """One frame's detection-head output (classes, OBJECT_CHANNELS, R, C) -> the boxes of
    the cells whose centre probability reaches `threshold`: (centres (N, 2) [m], sizes
    (N, 2) [m] (length along x, width along y), velocities (N, 2) [m/s], kinds (N,),
    ids (N,) flat indices into (classes, R, C), probabilities (N,))."""
    classes, rows, cols = len(cfg.bev_classes), *cfg.bev_shape
    if logits.shape != (classes, OBJECT_CHANNELS, rows, cols):
        raise ValueError(
            f"object logits must be {(classes, OBJECT_CHANNELS, rows, cols)} for the "
            f"configured BEV grid, got {logits.shape}"
        )
    prob = 0.5 * (1.0 + np.tanh(0.5 * logits[:, 0]))  # sigmoid without overflow
    cls, row, col = np.nonzero(prob >= threshold)
    box = logits[cls, 1:, row, col].astype(np.float64)  # (N, 6)
    xs, ys = cfg.cell_centres()
    cx, cy = cfg.cell_size
    x_lo, x_hi = np.sort(box[:, 0:2], axis=1).T
    y_lo, y_hi = np.sort(box[:, 2:4], axis=1).T
    centres = np.stack([xs[row] + cx * (x_lo + x_hi) / 2, ys[col] + cy * (y_lo + y_hi) / 2], 1)
    sizes = np.stack([cx * (x_hi - x_lo), cy * (y_hi - y_lo)], 1)
    velocity = box[:, 4:6] * OBJECT_VELOCITY_SCALE_MPS
    ids = np.ravel_multi_index((cls, row, col), (classes, rows, cols)).astype(np.int64)
    kinds = tuple(cfg.bev_classes[int(c)] for c in cls)
    return (
        centres.reshape(-1, 2),
        sizes.reshape(-1, 2),
        velocity.reshape(-1, 2),
        kinds,
        ids,
        prob[cls, row, col],
    )
