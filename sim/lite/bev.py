"""Top-down (BEV) views of the embedded simulator: an ego-centred crop and a town overview.

- `render_bev(raster, boxes, ego_xy, ego_yaw_rad, route_xy=None, size_px=256, meters=64.0,
  heading_up=True)` -> (size_px, size_px, 3) uint8 BGR. One `cv2.warpAffine` of the raster;
  the ego sits at 3/4 of the image height (more view ahead than behind), heading up when
  `heading_up` (else north up). Boxes are filled rotated rectangles in their colours (the ego
  highlighted with a white outline and a nose mark), traffic lights coloured dots (their lamp
  colour), the route a semi-transparent thick line.
- `render_map_overview(raster, boxes, route_xy=None, max_px=1024)` -> BGR image of the whole
  raster downscaled so that its longer side is <= max_px, with the route, buildings, actors
  and the ego.
World frame is CARLA's: x east, y south; heading (cos yaw, sin yaw), right (-sin yaw, cos yaw).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from sim.lite.scene import BoxKind, RasterMap, SceneBoxes

EGO_COLOR = (255, 200, 0)  # BGR, bright cyan-blue
ROUTE_COLOR = (255, 80, 200)  # BGR, magenta
_SHIFT = 4
_SCALE = float(1 << _SHIFT)
_BORDER = (40, 40, 40)


def _world_to_bev(
    ego_xy, ego_yaw_rad: float, size_px: int, meters: float, heading_up: bool
) -> np.ndarray:
    """2x3 affine: world (x, y) -> BEV pixel index (col, row)."""
    ppm = size_px / meters
    cx, cy = size_px / 2.0 - 0.5, size_px * 0.75 - 0.5
    if heading_up:
        c, s = math.cos(ego_yaw_rad), math.sin(ego_yaw_rad)
        # col = cx + ppm * (d . right), row = cy - ppm * (d . heading)
        a = np.array([[-s, c], [-c, -s]]) * ppm
    else:  # north up: col = cx + ppm dx, row = cy + ppm dy
        a = np.eye(2) * ppm
    b = np.array([cx, cy]) - a @ np.asarray(ego_xy, np.float64)
    return np.hstack([a, b[:, None]])


def _raster_to_world(raster: RasterMap) -> np.ndarray:
    """3x3: raster pixel index (col, row, 1) -> world (x, y, 1)."""
    r = raster.res
    return np.array([[r, 0.0, raster.x0 + 0.5 * r], [0.0, r, raster.y0 + 0.5 * r], [0, 0, 1]])


def _box_corners(boxes: SceneBoxes, idx: np.ndarray) -> np.ndarray:
    """Ground-plane corners (K, 4, 2) of the boxes `idx`, world frame."""
    yaw = np.asarray(boxes.yaw, np.float64)[idx]
    hd = np.stack([np.cos(yaw), np.sin(yaw)], -1)
    rt = np.stack([-hd[:, 1], hd[:, 0]], -1)
    half_l = np.asarray(boxes.size, np.float64)[idx, 0:1] / 2
    half_w = np.asarray(boxes.size, np.float64)[idx, 1:2] / 2
    c = np.asarray(boxes.center_xy, np.float64)[idx]
    return np.stack(
        [
            c + half_l * hd + half_w * rt,
            c + half_l * hd - half_w * rt,
            c - half_l * hd - half_w * rt,
            c - half_l * hd + half_w * rt,
        ],
        1,
    )


def _apply(aff: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ aff[:, :2].T + aff[:, 2]


def _draw_route(img: np.ndarray, aff: np.ndarray, route_xy, thickness: int) -> None:
    if route_xy is None or len(route_xy) < 2:
        return
    pts = _apply(aff, np.asarray(route_xy, np.float64)[:, :2])
    pts = np.rint(np.clip(pts, -1e5, 1e5) * _SCALE).astype(np.int32)
    overlay = img.copy()
    cv2.polylines(overlay, [pts], False, ROUTE_COLOR, thickness, cv2.LINE_AA, _SHIFT)
    cv2.addWeighted(overlay, 0.55, img, 0.45, 0.0, dst=img)


def _draw_boxes(img: np.ndarray, aff: np.ndarray, boxes: SceneBoxes, ppm: float) -> None:
    n = len(boxes)
    if n == 0:
        return
    kind = np.asarray(boxes.kind)
    h, w = img.shape[:2]
    centres = _apply(aff, np.asarray(boxes.center_xy, np.float64))
    rad = 0.5 * np.hypot(boxes.size[:, 0], boxes.size[:, 1]) * ppm + 2
    inside = (centres[:, 0] > -rad) & (centres[:, 0] < w + rad)
    inside &= (centres[:, 1] > -rad) & (centres[:, 1] < h + rad)
    tl = kind == BoxKind.TRAFFIC_LIGHT
    ego = kind == BoxKind.EGO
    # Buildings first, then the rest; the ego last.
    order = np.concatenate(
        [
            np.flatnonzero(inside & (kind == BoxKind.BUILDING)),
            np.flatnonzero(inside & (kind != BoxKind.BUILDING) & ~tl & ~ego),
        ]
    )
    if order.size:
        corners = _apply(aff, _box_corners(boxes, order).reshape(-1, 2)).reshape(-1, 4, 2)
        pts = np.rint(corners * _SCALE).astype(np.int32)
        for p, c in zip(pts, np.asarray(boxes.bgr)[order].tolist(), strict=True):
            cv2.fillConvexPoly(img, p, c, cv2.LINE_AA, _SHIFT)
    for i in np.flatnonzero(inside & tl):
        lc = np.asarray(boxes.light_bgr[i]).tolist()
        col = lc if any(lc) else [90, 90, 90]
        r = max(2, int(round(0.6 * ppm)))
        cen = (int(round(centres[i, 0])), int(round(centres[i, 1])))
        cv2.circle(img, cen, r + 1, (20, 20, 20), -1, cv2.LINE_AA)
        cv2.circle(img, cen, r, col, -1, cv2.LINE_AA)
    ego_idx = np.flatnonzero(inside & ego)
    if ego_idx.size:
        corners = _apply(aff, _box_corners(boxes, ego_idx).reshape(-1, 2)).reshape(-1, 4, 2)
        for q in corners:
            p = np.rint(q * _SCALE).astype(np.int32)
            cv2.fillConvexPoly(img, p, EGO_COLOR, cv2.LINE_AA, _SHIFT)
            cv2.polylines(img, [p], True, (255, 255, 255), 1, cv2.LINE_AA, _SHIFT)
            nose = np.rint(((q[0] + q[1]) / 2) * _SCALE).astype(np.int32)
            mid = np.rint(q.mean(axis=0) * _SCALE).astype(np.int32)
            cv2.line(
                img,
                tuple(mid.tolist()),
                tuple(nose.tolist()),
                (255, 255, 255),
                1,
                cv2.LINE_AA,
                _SHIFT,
            )


def render_bev(
    raster: RasterMap,
    boxes: SceneBoxes,
    ego_xy,
    ego_yaw_rad: float,
    route_xy=None,
    size_px: int = 256,
    meters: float = 64.0,
    heading_up: bool = True,
) -> np.ndarray:
    """Ego-centred top-down crop (size_px, size_px, 3) BGR; see the module docstring."""
    size_px = int(size_px)
    aff = _world_to_bev(ego_xy, float(ego_yaw_rad), size_px, float(meters), heading_up)
    # raster pixel -> BEV pixel = aff o raster_to_world
    m = np.vstack([aff, [0.0, 0.0, 1.0]]) @ _raster_to_world(raster)
    img = cv2.warpAffine(
        raster.bgr,
        m[:2],
        (size_px, size_px),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=_BORDER,
    )
    ppm = size_px / float(meters)
    _draw_route(img, aff, route_xy, max(2, int(round(1.5 * ppm))))
    _draw_boxes(img, aff, boxes, ppm)
    return img


def render_map_overview(
    raster: RasterMap, boxes: SceneBoxes, route_xy=None, max_px: int = 1024
) -> np.ndarray:
    """The whole town, downscaled to at most max_px on its longer side, BGR."""
    h, w = raster.bgr.shape[:2]
    scale = min(1.0, max_px / max(h, w))
    out_w, out_h = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    img = cv2.resize(raster.bgr, (out_w, out_h), interpolation=cv2.INTER_AREA)
    sx, sy = out_w / w, out_h / h
    # world -> overview pixel index: (x - x0) / res * s - 0.5
    aff = np.array(
        [
            [sx / raster.res, 0.0, -raster.x0 / raster.res * sx - 0.5],
            [0.0, sy / raster.res, -raster.y0 / raster.res * sy - 0.5],
        ]
    )
    ppm = sx / raster.res
    _draw_route(img, aff, route_xy, max(2, int(round(max(out_w, out_h) / 300))))
    _draw_boxes(img, aff, boxes, ppm)
    # Mark the ego with a ring: at town scale its box is a few pixels.
    for i in np.flatnonzero(np.asarray(boxes.kind) == BoxKind.EGO):
        c = _apply(aff, np.asarray(boxes.center_xy, np.float64)[i])
        cen = (int(round(c[0])), int(round(c[1])))
        r = max(4, max(out_w, out_h) // 100)
        cv2.circle(img, cen, r, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.circle(img, cen, r - 2, EGO_COLOR, 2, cv2.LINE_AA)
    return img
