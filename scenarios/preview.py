"""A picture of a scenario before running it: a top-down map of the route with its events,
props and trigger points, beside the ego's camera view just before the first event in that
scenario's weather at that point of the route."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from scenarios.compile import compile_scenario, first_event_s
from scenarios.schema import Scenario
from sim.lite.camera import CameraRenderer
from sim.lite.world import LiteSimulator
from sim.sensors import default_front_camera, parse_sensor_spec
from sim.spec import WorldSpec

MAP_PX = 512  # [px] side of the top-down panel
CAMERA_SIZE = (512, 256)  # [px] width, height of the camera panel
MARGIN_M = 25.0  # [m] around the route in the top-down panel
LOOK_BACK_M = 25.0  # [m] the camera stands this far before the first event
TRIGGER_BGR = (0, 220, 255)
ROUTE_BGR = (200, 60, 200)


def _label(img: np.ndarray, text: str, org: tuple[int, int], colour=(255, 255, 255)) -> None:
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)


def _top_down(sim: LiteSimulator, spec: WorldSpec) -> np.ndarray:
    raster = sim.town.raster
    route = sim.route.points
    lo = route.min(axis=0) - MARGIN_M
    hi = route.max(axis=0) + MARGIN_M
    side = float(max(hi - lo))  # square crop in metres
    centre = (lo + hi) / 2
    lo = centre - side / 2
    scale = MAP_PX / side  # [px/m]
    # Affine: world -> panel pixel; raster pixel -> world is x0 + col * res.
    m = np.array(
        [
            [scale * raster.res, 0.0, scale * (raster.x0 - lo[0])],
            [0.0, scale * raster.res, scale * (raster.y0 - lo[1])],
        ]
    )
    img = cv2.warpAffine(
        raster.bgr,
        m,
        (MAP_PX, MAP_PX),
        flags=cv2.INTER_AREA,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(58, 104, 70),
    )

    def px(xy: np.ndarray) -> np.ndarray:
        return np.round((np.asarray(xy) - lo) * scale).astype(np.int32)

    cv2.polylines(img, [px(route)], False, ROUTE_BGR, 3, cv2.LINE_AA)
    cv2.circle(img, tuple(px(route[0])), 6, (255, 255, 255), -1, cv2.LINE_AA)
    _label(img, "start", tuple(px(route[0]) + [8, -8]))
    cv2.drawMarker(img, tuple(px(route[-1])), (255, 255, 255), cv2.MARKER_TILTED_CROSS, 14, 2)
    _label(img, "end", tuple(px(route[-1]) + [8, -8]))
    boxes = sim.scene_boxes()
    for xy, yaw, size, bgr, kind in zip(
        boxes.center_xy[1:],
        boxes.yaw[1:],
        boxes.size[1:],
        boxes.bgr[1:],
        boxes.kind[1:],
        strict=True,
    ):
        if kind == 7:  # buildings stay as the raster shows them (not drawn)
            continue
        rect = (
            (float(px(xy)[0]), float(px(xy)[1])),
            (max(size[0] * scale, 3.0), max(size[1] * scale, 3.0)),
            math.degrees(yaw),
        )
        corners = cv2.boxPoints(rect).astype(np.int32)
        cv2.fillConvexPoly(img, corners, tuple(int(c) for c in bgr), cv2.LINE_AA)
        cv2.polylines(img, [corners], True, (20, 20, 20), 1, cv2.LINE_AA)
    triggers = [(p.trigger_s_m, "ped") for p in spec.pedestrians if p.trigger_s_m]
    triggers += [(v.trigger_s_m, v.behaviour) for v in spec.vehicles if v.trigger_s_m]
    for s, name in triggers:
        p = px(sim.route.point_at(float(s)))
        cv2.circle(img, tuple(p), 7, TRIGGER_BGR, 2, cv2.LINE_AA)
        _label(img, f"trigger: {name}", tuple(p + [9, 4]), TRIGGER_BGR)
    for zone in spec.speed_zones:
        p = px(sim.route.point_at(zone.start_m))
        _label(img, f"{zone.limit_mps * 3.6:.0f} km/h zone", tuple(p + [9, -10]), (120, 255, 255))
    cv2.line(img, (10, MAP_PX - 14), (10 + int(50 * scale), MAP_PX - 14), (255, 255, 255), 2)
    _label(img, "50 m", (12, MAP_PX - 20))
    return img


def _camera(sim: LiteSimulator, spec: WorldSpec) -> tuple[np.ndarray, float]:
    s = max(first_event_s(spec) - LOOK_BACK_M, 0.0)
    xy = sim.route.point_at(s)
    yaw = sim.route.yaw_at(s)
    camera = parse_sensor_spec(default_front_camera(*CAMERA_SIZE))
    weather = spec.weather_at(s / sim.route.length_m)
    frame = CameraRenderer(camera, sim.town.raster).render(xy, yaw, sim.scene_boxes(), weather, 0)
    return frame[..., :3], s


def render_preview(scenario: Scenario, seed: int = 0, file: str = "<scenario>") -> np.ndarray:
    """(H, W, 3) BGR: top-down panel | camera panel, with a caption."""
    spec = compile_scenario(scenario, file)
    sim = LiteSimulator()
    sim.reset(spec, seed)
    top = _top_down(sim, spec)
    cam, s = _camera(sim, spec)
    right = np.zeros((MAP_PX, cam.shape[1], 3), np.uint8)
    right[: cam.shape[0]] = cam
    w = spec.weather_at(s / sim.route.length_m)
    lines = [
        scenario.name,
        f"events: {', '.join(e.type for e in scenario.events) or 'none'}",
        f"weather at {s:.0f} m: fog {w.fog_density:.0f}, rain {w.precipitation:.0f}, "
        f"sun altitude {w.sun_altitude_angle:.0f} deg, friction {w.friction:.2f}",
        f"camera: {LOOK_BACK_M:.0f} m before the first event (route {s:.0f} m of {sim.route.length_m:.0f} m)",
        f"traffic: {spec.num_vehicles} vehicles, {spec.num_pedestrians} pedestrians",
    ]
    for i, text in enumerate(lines):
        _label(right, text[:80], (10, cam.shape[0] + 24 + 20 * i))
    return np.concatenate([top, right], axis=1)


def write_preview(scenario: Scenario, out: Path, seed: int = 0, file: str = "<scenario>") -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), render_preview(scenario, seed, file))
    return out
