"""Pictures of what the perception heads see, against the labels (`vlmdrive
draw-perception`): for a few held-out frames, the camera image above a bird's-eye view
of the model's BEV grid, x forward (up) and y left (left), one tile per frame:

- grey lines: the grid's cells; purple outlines: cells the occupancy head marks (any
  class, probability >= 0.5);
- green: the labelled obstacle boxes (`schema.OBSTACLE_COLUMNS`, with their yaw);
- red (vehicles), orange (static), magenta (pedestrians): the detection head's boxes
  (`agent.model.objects`), when the model has one;
- white: the ego;
- text: the lane head's probabilities at each station against the labels (left
  same-direction, right same-direction, oncoming left), when the model has one.

Scores say how often a head is right; the pictures say how it is wrong (a detection head
that paints a construction zone's usual cone pattern instead of the cones in the image
scores about as badly as one that sees nothing, and is a different problem).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from agent.data.schema import LANE_STATIONS_M
from agent.model.checkpoint import load_drive_model
from agent.model.config import PerceptionConfig
from agent.model.objects import decode_objects
from agent.safety.perception_view import EGO_LENGTH_M, EGO_WIDTH_M
from agent.training.trainer import load_arrays

PX_PER_M = 6  # bird's-eye view scale
THRESHOLD = 0.5  # occupancy and detection probability drawn
GREEN, WHITE, PURPLE, GRID_GREY = (0, 220, 0), (255, 255, 255), (160, 70, 160), (60, 60, 60)
KIND_COLOURS = {"vehicle": (0, 0, 255), "static": (0, 160, 255), "pedestrian": (255, 0, 255)}


def pick_frames(
    obstacles: np.ndarray,
    mask: np.ndarray,
    episode: np.ndarray,
    grid: PerceptionConfig,
    n: int,
    seed: int = 0,
) -> np.ndarray:
    """(n,) frame indices, one per episode (at most n), with at least two labelled
    obstacles ahead on the grid (something to look at) where there are such frames, in
    frame order."""
    x, y = obstacles[..., 0], obstacles[..., 1]
    on_grid = (x < grid.bev_x_m[1]) & (y >= grid.bev_y_m[0]) & (y < grid.bev_y_m[1])
    ahead = mask & (x > 0.0) & on_grid
    rich = np.nonzero(ahead.sum(1) >= 2)[0]
    pool = rich if len(rich) else np.arange(len(mask))
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for ep in rng.permutation(np.unique(episode[pool])):
        chosen.append(int(rng.choice(pool[episode[pool] == ep])))
        if len(chosen) == n:
            break
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _px(grid: PerceptionConfig, x: float, y: float) -> tuple[int, int]:
    """Ego-frame metres -> (column, row) pixels of the bird's-eye view."""
    return (
        round((grid.bev_y_m[1] - y) * PX_PER_M),
        round((grid.bev_x_m[1] - x) * PX_PER_M),
    )


def render_tile(
    image_bgr: np.ndarray,
    obstacles: np.ndarray,
    grid: PerceptionConfig,
    occupancy: np.ndarray,
    objects: np.ndarray | None = None,
    lane_prob: np.ndarray | None = None,
    lanes: np.ndarray | None = None,
    title: str = "",
) -> np.ndarray:
    """One tile (see the module docstring). obstacles (M, 8) the labelled rows (masked
    already); occupancy (classes, R, C) probabilities; objects (classes, 7, R, C) the
    detection head's output or None; lane_prob / lanes (stations, columns) or None."""
    (x0, x1), (y0, y1) = grid.bev_x_m, grid.bev_y_m
    width, height = round((y1 - y0) * PX_PER_M), round((x1 - x0) * PX_PER_M)
    bev = np.full((height, width, 3), 30, np.uint8)
    (cx, cy), (rows, cols) = grid.cell_size, grid.bev_shape
    for r in range(rows + 1):
        cv2.line(bev, _px(grid, x0 + r * cx, y1), _px(grid, x0 + r * cx, y0), GRID_GREY, 1)
    for c in range(cols + 1):
        cv2.line(bev, _px(grid, x1, y0 + c * cy), _px(grid, x0, y0 + c * cy), GRID_GREY, 1)
    for r, c in zip(*np.nonzero((occupancy >= THRESHOLD).any(0)), strict=True):
        lo_x, lo_y = x0 + r * cx, y0 + c * cy
        cv2.rectangle(bev, _px(grid, lo_x + cx, lo_y + cy), _px(grid, lo_x, lo_y), PURPLE, 1)
    for x, y, yaw, _, _, length, wide, _ in obstacles:
        centre = (float((y1 - y) * PX_PER_M), float((x1 - x) * PX_PER_M))
        extent = (float(wide * PX_PER_M), float(length * PX_PER_M))
        corners = cv2.boxPoints((centre, extent, float(-np.degrees(yaw))))
        cv2.polylines(bev, [corners.astype(np.int32)], True, GREEN, 2)
    if objects is not None:
        xy, size, _, kinds, _, _ = decode_objects(objects, grid, THRESHOLD)
        for centre_xy, box_size, kind in zip(xy, size, kinds, strict=True):
            far, left = centre_xy + box_size / 2
            near, right = centre_xy - box_size / 2
            cv2.rectangle(bev, _px(grid, far, left), _px(grid, near, right), KIND_COLOURS[kind], 2)
    half_l, half_w = EGO_LENGTH_M / 2, EGO_WIDTH_M / 2
    cv2.rectangle(bev, _px(grid, half_l, half_w), _px(grid, -half_l, -half_w), WHITE, -1)
    camera = cv2.resize(image_bgr, (width, width * image_bgr.shape[0] // image_bgr.shape[1]))
    lines = [title[:32]]
    if lane_prob is not None and lanes is not None:
        lines.append("lanes L R opp: model | label")
        for s, station in enumerate(LANE_STATIONS_M):
            model = " ".join(f"{p:.1f}" for p in lane_prob[s])
            label = " ".join(str(int(v)) for v in lanes[s])
            lines.append(f"{station:>2.0f} m {model} | {label}")
    text = np.full((14 * len(lines) + 4, width, 3), 0, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(text, line, (3, 13 + 14 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.38, WHITE, 1)
    return np.concatenate([camera, text, bev], axis=0)


@torch.no_grad()
def draw_perception(
    checkpoint: str | Path, data: str | Path, out: str | Path, frames: int = 6, seed: int = 0
) -> Path:
    """Draw `frames` tiles side by side into the PNG `out` (see the module docstring)."""
    model, _ = load_drive_model(checkpoint)
    arrays = load_arrays(Path(data), model.cfg.encoder.history + 1, model.cfg.encoder.cameras)
    d, grid = arrays.data, model.cfg.perception
    picks = pick_frames(d["obstacles"], d["obstacle_mask"], d["episode"], grid, frames, seed)
    tokens, pooled = model.encoder(torch.from_numpy(d["image"][arrays.history[picks]]))
    heads = model.heads(tokens, pooled)
    occupancy = torch.sigmoid(heads["bev"]).numpy()
    tiles = []
    for i, row in enumerate(picks):
        has_lanes = "lanes" in heads and bool(d["lanes_known"][row])
        tiles.append(
            render_tile(
                d["image"][row, 0],
                d["obstacles"][row][d["obstacle_mask"][row]],
                grid,
                occupancy[i],
                heads["objects"][i].numpy() if "objects" in heads else None,
                torch.sigmoid(heads["lanes"][i]).numpy() if has_lanes else None,
                d["lanes"][row] if has_lanes else None,
                title=str(d["scenario"][row]),
            )
        )
    height = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, height - t.shape[0]), (0, 2), (0, 0))) for t in tiles]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.concatenate(tiles, axis=1)):
        raise ValueError(f"{out}: could not write the picture (a .png path?)")
    return out
