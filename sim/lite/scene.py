"""What the embedded simulator hands to its renderers each frame.

The world owns the state; renderers (`camera.py`, `bev.py`) only read these two views:
- `RasterMap`: the static top-down raster of the town (ground colours), built once;
- `SceneBoxes`: every 3-D object as an oriented box, in arrays (one row per object).
World frame is CARLA's: x east, y south, z up, yaw [rad] positive toward +y.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class BoxKind(IntEnum):
    """Kinds of 3-D boxes; renderers pick shading and lights by kind."""

    VEHICLE = 0
    PEDESTRIAN = 1
    CONE = 2
    BARRIER = 3
    WARNING_SIGN = 4
    DEBRIS = 5
    TRAFFIC_LIGHT = 6  # the pole and head; colour of the lit lamp in `light_bgr`
    BUILDING = 7
    EGO = 8


@dataclass(frozen=True)
class RasterMap:
    """Top-down ground raster. Pixel (row, col) covers world x = x0 + (col + 0.5) * res,
    y = y0 + (row + 0.5) * res. North (-y) is up, like CARLA's map views."""

    bgr: np.ndarray  # (H, W, 3) uint8 ground colours: road, markings, sidewalks, grass
    x0: float  # [m] world x of the raster's left edge
    y0: float  # [m] world y of the raster's top edge
    res: float  # [m/px]
    road_mask: np.ndarray  # (H, W) uint8, 255 on asphalt (roads and junctions)

    def __post_init__(self) -> None:
        if self.bgr.ndim != 3 or self.bgr.shape[2] != 3 or self.bgr.dtype != np.uint8:
            raise ValueError(f"RasterMap.bgr must be (H, W, 3) uint8, got {self.bgr.shape}")
        if self.road_mask.shape != self.bgr.shape[:2]:
            raise ValueError(
                f"RasterMap.road_mask must be {self.bgr.shape[:2]}, got {self.road_mask.shape}"
            )

    def world_to_pixel(self, xy: np.ndarray) -> np.ndarray:
        """World (N, 2) [m] -> continuous pixel coordinates (N, 2) as (col, row)."""
        xy = np.asarray(xy, dtype=np.float64)
        return np.stack([(xy[..., 0] - self.x0) / self.res, (xy[..., 1] - self.y0) / self.res], -1)


@dataclass(frozen=True)
class SceneBoxes:
    """All 3-D objects of one frame as oriented boxes standing on the ground (z = 0)."""

    center_xy: np.ndarray  # (N, 2) [m] world
    yaw: np.ndarray  # (N,) [rad]
    size: np.ndarray  # (N, 3) [m] length, width, height
    base_z: np.ndarray  # (N,) [m] bottom of the box above ground (0 for most)
    bgr: np.ndarray  # (N, 3) uint8 body colour
    kind: np.ndarray  # (N,) int BoxKind
    light_bgr: np.ndarray  # (N, 3) uint8 emissive colour (lit lamp / tail lights), 0 = none
    ids: np.ndarray  # (N,) int actor ids (-1 for scenery)

    def __post_init__(self) -> None:
        n = len(self.yaw)
        for name, shape in (
            ("center_xy", (n, 2)),
            ("size", (n, 3)),
            ("base_z", (n,)),
            ("bgr", (n, 3)),
            ("kind", (n,)),
            ("light_bgr", (n, 3)),
            ("ids", (n,)),
        ):
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(f"SceneBoxes.{name} must have shape {shape}, got {got}")

    def __len__(self) -> int:
        return len(self.yaw)
