"""Camera and BEV renderers: geometry, conventions, weather effects, determinism."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from sim.lite.bev import EGO_COLOR, render_bev, render_map_overview
from sim.lite.camera import CameraRenderer, project_points
from sim.lite.scene import BoxKind, RasterMap, SceneBoxes
from sim.sensors import default_front_camera, parse_sensor_spec
from sim.weather import Weather

W, H, FOV = 200, 100, 90.0  # f = 100 px
EGO = np.array([0.0, 0.0])


def _spec(**kw):
    raw = {**default_front_camera(W, H, FOV), "id": "rgb", **kw}
    return parse_sensor_spec(raw)


def _raster(marker_xy=None) -> RasterMap:
    """200 m x 200 m at 0.25 m/px: grass, a grey road along x (|y| <= 5 m) with white dashes;
    optionally a magenta 2 m x 2 m marker on the ground."""
    res, half = 0.25, 100.0
    n = int(2 * half / res)
    c = (np.arange(n) + 0.5) * res - half
    bgr = np.empty((n, n, 3), np.uint8)
    bgr[:] = (50, 140, 60)
    road = np.zeros((n, n), np.uint8)
    on_road = np.abs(c) <= 5.0
    bgr[on_road, :] = (80, 80, 80)
    road[on_road, :] = 255
    dash = np.mod(c, 8.0) < 3.0
    bgr[np.ix_(np.abs(c) <= 0.15, dash)] = (240, 240, 240)
    if marker_xy is not None:
        mx, my = marker_xy
        bgr[np.ix_(np.abs(c - my) <= 1.0, np.abs(c - mx) <= 1.0)] = (255, 0, 255)
    return RasterMap(bgr=bgr, x0=-half, y0=-half, res=res, road_mask=road)


def _boxes(rows) -> SceneBoxes:
    """rows: (x, y, yaw, (l, w, h), bgr, kind[, light_bgr])."""
    n = len(rows)
    light = [r[6] if len(r) > 6 else (0, 0, 0) for r in rows]
    return SceneBoxes(
        center_xy=np.array([[r[0], r[1]] for r in rows], np.float64).reshape(n, 2),
        yaw=np.array([r[2] for r in rows], np.float64),
        size=np.array([r[3] for r in rows], np.float64).reshape(n, 3),
        base_z=np.zeros(n),
        bgr=np.array([r[4] for r in rows], np.uint8).reshape(n, 3),
        kind=np.array([int(r[5]) for r in rows], np.int64),
        light_bgr=np.array(light, np.uint8).reshape(n, 3),
        ids=np.arange(n),
    )


RED = (0, 0, 255)


def _red_mask(img: np.ndarray) -> np.ndarray:
    r = img[..., 2].astype(int)
    return (r > 100) & (r - img[..., 1] > 60) & (r - img[..., 0] > 60)


@pytest.fixture(scope="module")
def raster() -> RasterMap:
    return _raster()


@pytest.fixture(scope="module")
def cam(raster) -> CameraRenderer:
    return CameraRenderer(_spec(), raster)


def _box_corners(x, y, yaw, size):
    length, w, h = size
    c, s = math.cos(yaw), math.sin(yaw)
    out = []
    for a in (-0.5, 0.5):
        for b in (-0.5, 0.5):
            for z in (0.0, h):
                out.append((x + a * length * c - b * w * s, y + a * length * s + b * w * c, z))
    return np.array(out)


# --- projection ---------------------------------------------------------------------------
def test_project_points_hand_computed():
    spec = _spec()
    # Camera at world (1.3, 0, 2.3) looking +x; the point is 20 m ahead, 5 m right, 2 m up.
    uv, depth = project_points(spec, EGO, 0.0, np.array([[21.3, 5.0, 4.3]]))
    assert depth[0] == pytest.approx(20.0)
    assert uv[0] == pytest.approx([100.0 + 100.0 * 5 / 20, 50.0 - 100.0 * 2 / 20])
    # Ego heading south (+y, yaw 90 deg): its right-hand side is west (-x).
    uv, depth = project_points(spec, EGO, math.pi / 2, np.array([[-5.0, 21.3, 4.3]]))
    assert depth[0] == pytest.approx(20.0)
    assert uv[0] == pytest.approx([125.0, 40.0])
    # Behind the camera: no pixel.
    uv, depth = project_points(spec, EGO, 0.0, np.array([[-10.0, 0.0, 1.0]]))
    assert depth[0] < 0 and np.isnan(uv).all()


def test_project_points_mount_yaw_and_pitch():
    # A camera yawed 90 deg right looks along the ego's right-hand side.
    spec = _spec(x=0.0, z=2.0, yaw=90.0)
    uv, depth = project_points(spec, EGO, 0.0, np.array([[0.0, 10.0, 2.0]]))
    assert depth[0] == pytest.approx(10.0)
    assert uv[0] == pytest.approx([100.0, 50.0])
    # Pitched up 10 deg: a point straight ahead at camera height is below the centre.
    spec = _spec(x=0.0, z=2.0, pitch=10.0)
    uv, _ = project_points(spec, EGO, 0.0, np.array([[10.0, 0.0, 2.0]]))
    assert uv[0, 1] == pytest.approx(50.0 + 100.0 * math.tan(math.radians(10.0)))


def test_ground_marker_lands_where_projected():
    raster = _raster(marker_xy=(15.0, 2.0))
    cam = CameraRenderer(_spec(), raster)
    img = cam.render(EGO, 0.0, _boxes([]), Weather.preset("ClearNoon"), 0)
    mag = (img[..., 0] > 150) & (img[..., 2] > 150) & (img[..., 1] < 90)
    rows, cols = np.nonzero(mag)
    assert rows.size > 10
    corners = np.array([[14.0, 1.0, 0], [16.0, 1.0, 0], [14.0, 3.0, 0], [16.0, 3.0, 0]])
    uv, _ = project_points(cam.spec, EGO, 0.0, corners)
    assert cols.min() == pytest.approx(uv[:, 0].min(), abs=2)
    assert cols.max() + 1 == pytest.approx(uv[:, 0].max(), abs=2)
    assert rows.min() == pytest.approx(uv[:, 1].min(), abs=2)
    assert rows.max() + 1 == pytest.approx(uv[:, 1].max(), abs=2)


# --- boxes --------------------------------------------------------------------------------
def test_box_ahead_lands_on_projected_pixels(cam):
    size = (1.0, 1.0, 6.0)
    boxes = _boxes([(21.3, 0.0, 0.0, size, RED, BoxKind.BARRIER)])
    boxes = replace(boxes, kind=np.array([int(BoxKind.DEBRIS)]))  # a single plain box
    img = cam.render(EGO, 0.0, boxes, Weather.preset("ClearNoon"), 0)
    mask = _red_mask(img)
    rows, cols = np.nonzero(mask)
    assert rows.size > 50
    uv, depth = project_points(cam.spec, EGO, 0.0, _box_corners(21.3, 0.0, 0.0, size))
    assert (depth > 0).all()
    # Centre column and pixel bbox match the projected corners (within 2 px).
    assert (cols.min() + cols.max() + 1) / 2 == pytest.approx(W / 2, abs=1)
    assert cols.min() == pytest.approx(uv[:, 0].min(), abs=2)
    assert cols.max() + 1 == pytest.approx(uv[:, 0].max(), abs=2)
    assert rows.min() == pytest.approx(max(uv[:, 1].min(), 0), abs=2)
    assert rows.max() + 1 == pytest.approx(uv[:, 1].max(), abs=2)
    u, v = uv.mean(axis=0).astype(int)
    assert mask[v, u]


def test_left_right_sign(cam):
    yaw = 0.3
    size = (1.0, 1.0, 2.0)
    weather = Weather.preset("ClearNoon")
    for side, ang in ((+1, yaw + math.radians(30)), (-1, yaw - math.radians(30))):
        x, y = 12 * math.cos(ang), 12 * math.sin(ang)
        img = cam.render(EGO, yaw, _boxes([(x, y, 0.0, size, RED, BoxKind.DEBRIS)]), weather, 0)
        cols = np.nonzero(_red_mask(img))[1]
        assert cols.size > 0
        assert np.sign(cols.mean() - W / 2) == side
    # The right-hand side of heading yaw is (-sin yaw, cos yaw).
    right = np.array([-math.sin(yaw), math.cos(yaw)]) * 3 + 20 * np.array(
        [math.cos(yaw), math.sin(yaw)]
    )
    uv, _ = project_points(cam.spec, EGO, yaw, np.array([[right[0], right[1], 1.0]]))
    assert uv[0, 0] > W / 2


def test_boxes_behind_far_or_crossing_near_plane(cam):
    weather = Weather.preset("ClearNoon")
    empty = cam.render(EGO, 0.0, _boxes([]), weather, 0)
    behind = _boxes(
        [
            (-15.0, 0.0, 0.0, (4, 2, 1.5), RED, BoxKind.VEHICLE),
            (300.0, 0.0, 0.0, (4, 2, 1.5), RED, BoxKind.VEHICLE),
        ]
    )
    assert np.array_equal(cam.render(EGO, 0.0, behind, weather, 0), empty)
    # A wall straddling the camera: clipped at the near plane, fills the bottom of the view.
    wall = _boxes([(2.0, 0.0, 0.0, (6.0, 30.0, 1.5), RED, BoxKind.DEBRIS)])
    img = cam.render(EGO, 0.0, wall, weather, 0)
    assert _red_mask(img)[-10:].mean() > 0.9


def test_ego_box_not_drawn_and_lights(cam):
    weather = Weather.preset("ClearNight")
    ego_box = _boxes([(0.0, 0.0, 0.0, (4.6, 1.9, 1.5), RED, BoxKind.EGO)])
    assert np.array_equal(
        cam.render(EGO, 0.0, ego_box, weather, 0), cam.render(EGO, 0.0, _boxes([]), weather, 0)
    )
    # Tail lights of a car ahead stay bright at night; a lit traffic light shows its lamp.
    car = _boxes(
        [
            (15.0, 0.0, 0.0, (4.5, 1.9, 1.5), (60, 60, 60), BoxKind.VEHICLE, (0, 0, 255)),
            (30.0, -4.0, 0.0, (0.4, 0.4, 5.0), (60, 60, 60), BoxKind.TRAFFIC_LIGHT, (0, 255, 0)),
        ]
    )
    img = cam.render(EGO, 0.0, car, weather, 0)
    assert (img[..., 2] > 180).sum() > 2  # red tail lights
    assert ((img[..., 1] > 180) & (img[..., 2] < 120)).sum() > 0  # green lamp


# --- output format, determinism, weather ---------------------------------------------------
SCENE = [
    (40.0, 0.0, 0.0, (4.5, 1.9, 1.5), RED, BoxKind.VEHICLE, (0, 0, 255)),
    (12.0, -3.0, 0.0, (0.4, 0.4, 0.7), (0, 120, 255), BoxKind.CONE),
    (20.0, 4.0, 0.0, (0.4, 0.5, 1.8), (150, 50, 50), BoxKind.PEDESTRIAN),
    (50.0, 12.0, 0.0, (12.0, 8.0, 9.0), (150, 170, 190), BoxKind.BUILDING),
]


def test_output_format_and_determinism(cam):
    boxes = _boxes(SCENE)
    for name in ("ClearNoon", "HardRainNight", "ClearSunset", "DustStorm", "WetNoon"):
        w = Weather.preset(name)
        a = cam.render(EGO, 0.1, boxes, w, 7)
        b = CameraRenderer(cam.spec, cam.raster).render(EGO, 0.1, boxes, w, 7)
        assert a.dtype == np.uint8 and a.shape == (H, W, 4)
        assert (a[..., 3] == 255).all()
        assert np.array_equal(a, b)


def test_fog_reduces_far_box_contrast(cam):
    boxes = _boxes([(51.3, 0.0, 0.0, (2.0, 2.0, 3.0), RED, BoxKind.DEBRIS)])
    uv, _ = project_points(cam.spec, EGO, 0.0, np.array([[50.3, 0.0, 1.5]]))
    u, v = uv[0].astype(int)

    def redness(w):
        px = cam.render(EGO, 0.0, boxes, w, 0)[v, u].astype(int)
        return px[2] - px[1]

    clear = redness(Weather.preset("ClearNoon"))
    assert clear > 100
    assert redness(Weather.preset("HardRainNight")) < 0.3 * clear
    assert redness(replace(Weather.preset("ClearNoon"), fog_density=100.0)) < 0.3 * clear


def test_night_darker_rain_differs(cam):
    boxes = _boxes(SCENE)
    day = cam.render(EGO, 0.0, boxes, Weather.preset("ClearNoon"), 0)
    night = cam.render(EGO, 0.0, boxes, Weather.preset("ClearNight"), 0)
    assert night[..., :3].mean() < 0.5 * day[..., :3].mean()
    rain_w = Weather.preset("HardRainNoon")
    rain0 = cam.render(EGO, 0.0, boxes, rain_w, 0)
    rain1 = cam.render(EGO, 0.0, boxes, rain_w, 1)
    assert np.abs(rain0.astype(int) - day).mean() > 5
    assert not np.array_equal(rain0, rain1)  # streak layers change with the frame


def test_wet_road_darker_and_glare(cam):
    boxes = _boxes([])
    dry = cam.render(EGO, 0.0, boxes, Weather.preset("ClearNoon"), 0)
    wet = cam.render(EGO, 0.0, boxes, replace(Weather.preset("ClearNoon"), wetness=100.0), 0)
    near_road = (slice(H - 10, H), slice(W // 2 - 10, W // 2 + 10))
    assert wet[near_road][..., :3].mean() < dry[near_road][..., :3].mean()
    # Low sun straight ahead: a bright bloom in the upper half; facing away: none.
    sunset = Weather.preset("ClearSunset")
    toward = cam.render(EGO, math.radians(sunset.sun_azimuth_angle), boxes, sunset, 0)
    away = cam.render(EGO, math.radians(sunset.sun_azimuth_angle) + math.pi, boxes, sunset, 0)
    assert toward[: H // 2, ..., :3].min(axis=-1).max() >= 250
    assert toward[..., :3].mean() > away[..., :3].mean() + 10


# --- BEV ----------------------------------------------------------------------------------
def test_render_bev_shape_ego_and_heading(raster):
    boxes = _boxes(
        [
            (0.0, 0.0, 0.0, (4.6, 1.9, 1.5), (0, 0, 0), BoxKind.EGO),
            (20.0, 0.0, 0.0, (4.5, 1.9, 1.5), RED, BoxKind.VEHICLE),
            (10.0, 6.0, 0.0, (0.4, 0.4, 5.0), (50, 50, 50), BoxKind.TRAFFIC_LIGHT, (0, 255, 0)),
        ]
    )
    route = np.array([[0.0, 0.0], [30.0, 0.0]])
    img = render_bev(raster, boxes, EGO, 0.0, route_xy=route, size_px=128, meters=32.0)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    ego_px = img[100, 62]  # ego at 3/4 height, centred (beside its white nose mark)
    assert np.abs(ego_px.astype(int) - EGO_COLOR).max() < 30
    red = np.nonzero(_red_mask(img))
    assert red[0].size > 0
    assert red[0].mean() < 96 - 30  # the car 20 m ahead is drawn above the ego
    assert abs(red[1].mean() - 64) < 3
    # Heading south (yaw 90 deg) with heading up: a car south of the ego is still above it.
    boxes2 = replace(boxes, center_xy=np.array([[0.0, 0.0], [0.0, 6.0], [6.0, 10.0]]))
    img2 = render_bev(raster, boxes2, EGO, math.pi / 2, size_px=128, meters=32.0)
    red2 = np.nonzero(_red_mask(img2))
    assert red2[0].mean() < 96 - 15 and abs(red2[1].mean() - 64) < 3
    # North up: the same car is below the ego (south = down).
    img3 = render_bev(raster, boxes2, EGO, math.pi / 2, size_px=128, meters=32.0, heading_up=False)
    assert np.nonzero(_red_mask(img3))[0].mean() > 96
    # The lamp of the traffic light (right-hand side when heading east) is green.
    green = (img[..., 1] > 200) & (img[..., 2] < 100) & (img[..., 0] < 100)
    assert green.any() and np.nonzero(green)[1].mean() > 64


def test_render_map_overview(raster):
    boxes = _boxes([(0.0, 0.0, 0.0, (4.6, 1.9, 1.5), (0, 0, 0), BoxKind.EGO)])
    img = render_map_overview(raster, boxes, route_xy=np.array([[0, 0], [50, 0]]), max_px=256)
    assert img.dtype == np.uint8 and img.ndim == 3 and max(img.shape[:2]) == 256
