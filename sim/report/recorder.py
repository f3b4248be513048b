"""Per-route evaluation videos: front camera beside the ego-centred BEV, with the planned
trajectory and infraction banners drawn on.

The harness calls `RouteRecorder.add(...)` after every 0.05 s tick; the recorder keeps one
frame every `1 / fps` seconds, JPEG-compressed in memory, and writes the files on `close()`:

- `<out>.mp4`: MPEG-4 Part 2 (OpenCV's `mp4v`, always available with opencv's bundled FFmpeg);
  it plays in VLC / ffplay but NOT in browsers.
- `<out>.webm`: VP8 in WebM, for the HTML report. Browsers (Chromium, Firefox) play it. H.264
  (`avc1`) would be the usual choice, but the opencv-python wheels ship FFmpeg without an H.264
  encoder (opening an `avc1` writer fails here), and VP9 encodes ~7x slower than VP8.
- `<out>.jpg`: a poster frame (the first infraction if any, else the middle of the route).

Cost (768x304 frames, one core): rendering ~3-6 ms per kept frame in `add`; `close()` spends
~25-40 ms per frame encoding the WebM (VP8; opencv passes no speed options to the encoder) and
~2 ms on the mp4, so a full 600-frame video takes ~15-25 s to write. Pass
`browser_video=False` to skip the WebM (the report then shows the poster and links the mp4).

Long routes become time-lapses: when more than `max_video_s * fps` frames are kept, every
other frame is dropped and the sampling period doubles, so the video stays at most
`max_video_s` long at `fps` and still covers the whole route (the caption shows game time).

Frame layout, top to bottom: a status strip (`STRIP_HEIGHT_PX`: game time, speed, control;
red `BANNER_BGR` with the infraction's name and message for `BANNER_HOLD_S` after an event),
then camera | BEV and the caller's caption bar (`sim.lite.recording.composite`).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from sim.geometry import ego_to_world, world_to_ego
from sim.ground_truth import InfractionEvent
from sim.lite.bev import render_bev
from sim.lite.camera import CameraRenderer, project_points
from sim.lite.recording import composite
from sim.protocol import FIXED_DELTA_SECONDS
from sim.sensors import SensorSpec, default_front_camera, parse_sensor_spec

if TYPE_CHECKING:
    from sim.lite.world import LiteSimulator

CAMERA_WIDTH_PX = 320  # [px] recording camera (rendered for the video only)
CAMERA_HEIGHT_PX = 160  # [px]
CAMERA_FOV_DEG = 100.0  # [deg] horizontal
BEV_SIZE_PX = 256  # [px] square BEV panel
BEV_METERS = 64.0  # [m] side of the BEV crop; the ego sits at 3/4 of its height (bev.py)
STRIP_HEIGHT_PX = 26  # [px] status strip / infraction banner above the panels
STRIP_BGR = (40, 40, 40)
BANNER_BGR = (36, 36, 210)  # red infraction banner
BANNER_HOLD_S = 2.0  # [s] game time a banner stays up after its event
PLAN_BGR = (90, 255, 60)  # planned trajectory (green; amber would vanish on centre lines)
MARKER_BGR = (40, 40, 255)  # infraction location on the BEV
MAX_VIDEO_S = 60.0  # [s] longest video; longer routes are subsampled further
JPEG_QUALITY = 90  # in-memory frame buffer
TICK_HZ = 1.0 / FIXED_DELTA_SECONDS  # [Hz] simulator ticks

# Short names for the banner, by InfractionEvent.kind.
INFRACTION_LABELS: dict[str, str] = {
    "collisions_layout": "COLLISION (layout)",
    "collisions_pedestrian": "COLLISION (pedestrian)",
    "collisions_vehicle": "COLLISION (vehicle)",
    "red_light": "RED LIGHT",
    "stop_infraction": "STOP SIGN",
    "outside_route_lanes": "OUTSIDE ROUTE LANES",
    "min_speed_infractions": "MIN SPEED",
    "yield_emergency_vehicle_infractions": "NO YIELD TO EMERGENCY VEHICLE",
    "scenario_timeouts": "SCENARIO TIMEOUT",
    "route_dev": "ROUTE DEVIATION",
    "vehicle_blocked": "AGENT BLOCKED",
    "route_timeout": "ROUTE TIMEOUT",
}


def recording_camera_spec() -> SensorSpec:
    """The front camera rendered for videos, independent of the agent's sensors."""
    raw = default_front_camera(CAMERA_WIDTH_PX, CAMERA_HEIGHT_PX, CAMERA_FOV_DEG)
    return parse_sensor_spec({**raw, "id": "report_camera"})


def companion_files(video: Path) -> tuple[Path | None, Path | None]:
    """(browser-playable WebM, poster JPEG) written next to `video` by `close()`, if present."""
    webm, jpg = video.with_suffix(".webm"), video.with_suffix(".jpg")
    return (webm if webm.is_file() else None, jpg if jpg.is_file() else None)


def _ego_to_bev_px(points_ego: np.ndarray) -> np.ndarray:
    """Ego-frame points (N, 2) (x forward, y left) [m] -> BEV pixel coords (N, 2) (col, row),
    matching `render_bev(..., size_px=BEV_SIZE_PX, meters=BEV_METERS, heading_up=True)`."""
    ppm = BEV_SIZE_PX / BEV_METERS
    cx, cy = BEV_SIZE_PX / 2.0 - 0.5, BEV_SIZE_PX * 0.75 - 0.5
    p = np.asarray(points_ego, np.float64).reshape(-1, 2)
    return np.stack([cx - ppm * p[:, 1], cy - ppm * p[:, 0]], -1)


def _fit_text(text: str, width_px: int, scale: float) -> str:
    """`text` shortened with an ellipsis so that it fits `width_px` in HERSHEY_SIMPLEX."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    if cv2.getTextSize(text, font, scale, 1)[0][0] <= width_px:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if cv2.getTextSize(text[:mid] + "...", font, scale, 1)[0][0] <= width_px:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "..."


def _decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise RuntimeError("a buffered video frame could not be decoded")
    return img


def _validated_plan(planned_xy_ego: np.ndarray | None) -> np.ndarray | None:
    if planned_xy_ego is None:
        return None
    plan = np.asarray(planned_xy_ego, np.float64)
    if plan.ndim != 2 or plan.shape[1] != 2:
        raise ValueError(f"planned_xy_ego must be (T, 2) ego-frame metres, got shape {plan.shape}")
    plan = plan[np.isfinite(plan).all(axis=1)]
    return plan if len(plan) else None


class RouteRecorder:
    """Records one route to `out_path` (.mp4, plus .webm and .jpg next to it); see the module
    docstring. `fps` [Hz] is the sampling rate of game time and the playback rate."""

    def __init__(
        self,
        out_path: Path,
        fps: float = 10.0,
        max_video_s: float = MAX_VIDEO_S,
        browser_video: bool = True,
    ) -> None:
        if not (math.isfinite(fps) and 0.0 < fps <= TICK_HZ):
            raise ValueError(f"fps must be in (0, {TICK_HZ:g}] Hz, got {fps}")
        if not max_video_s > 0.0:
            raise ValueError(f"max_video_s must be > 0 s, got {max_video_s}")
        out_path = Path(out_path)
        self.out_path = (
            out_path if out_path.suffix == ".mp4" else out_path.with_name(f"{out_path.name}.mp4")
        )
        self.fps = float(fps)
        self.browser_video = browser_video
        self.stride_ticks = max(int(round(TICK_HZ / self.fps)), 1)  # ticks between frames
        self.max_frames = max(int(max_video_s * self.fps), 2)
        self.browser_video_path: Path | None = None
        self.poster_path: Path | None = None
        self.frames_written = 0
        self._ticks = 0
        self._frames: list[tuple[int, bytes]] = []  # (tick index, JPEG)
        self._first_event_tick: int | None = None
        self._events: list[InfractionEvent] = []  # every event so far (markers)
        self._banners: list[tuple[float, InfractionEvent]] = []  # (until game time [s], event)
        self._camera: CameraRenderer | None = None
        self._camera_spec = recording_camera_spec()
        self._closed = False

    # ------------------------------------------------------------------ per tick
    def add(
        self,
        sim: LiteSimulator,
        control: Any,
        planned_xy_ego: np.ndarray | None,
        events: Sequence[InfractionEvent],
        caption: str,
    ) -> None:
        """Register one tick (after `sim.tick`): its events always, a frame every
        `stride_ticks` ticks. `planned_xy_ego`: (T, 2) [m] x forward, y left, or None."""
        if self._closed:
            raise RuntimeError("RouteRecorder.add() after close()")
        tick = self._ticks
        self._ticks += 1
        now = float(sim.time_s)
        for ev in events:
            self._events.append(ev)
            self._banners.append((now + BANNER_HOLD_S, ev))
        self._banners = [(until, ev) for until, ev in self._banners if until > now]
        if events and self._first_event_tick is None:
            self._first_event_tick = tick
        if tick % self.stride_ticks:
            return
        frame = self._render(sim, control, _validated_plan(planned_xy_ego), caption)
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("JPEG encoding of a video frame failed")
        self._frames.append((tick, jpeg.tobytes()))
        if len(self._frames) > self.max_frames:  # time-lapse: halve the frame rate so far
            self.stride_ticks *= 2
            self._frames = [(t, f) for t, f in self._frames if t % self.stride_ticks == 0]

    def _render(
        self, sim: LiteSimulator, control: Any, plan: np.ndarray | None, caption: str
    ) -> np.ndarray:
        if self._camera is None:
            if not hasattr(sim, "town") or not hasattr(sim, "scene_boxes"):
                raise TypeError(
                    "RouteRecorder renders from the embedded simulator's map and boxes "
                    f"(LiteSimulator); got {type(sim).__name__}"
                )
            self._camera = CameraRenderer(self._camera_spec, sim.town.raster)
        ego_xy = np.array([sim.ego.x, sim.ego.y])
        yaw = float(sim.ego.yaw)
        boxes = sim.scene_boxes()
        cam = self._camera.render(ego_xy, yaw, boxes, sim.weather, sim.frame)[..., :3].copy()
        bev = render_bev(
            sim.town.raster,
            boxes,
            ego_xy,
            yaw,
            route_xy=sim.route.points,
            size_px=BEV_SIZE_PX,
            meters=BEV_METERS,
        )
        self._draw_markers(bev, ego_xy, yaw)
        if plan is not None:
            self._draw_plan_bev(bev, plan)
            self._draw_plan_camera(cam, plan, ego_xy, yaw)
        body = composite(cam, bev, caption)
        return np.concatenate([self._strip(sim, control, body.shape[1]), body], axis=0)

    def _draw_markers(self, bev: np.ndarray, ego_xy: np.ndarray, yaw: float) -> None:
        # route-wide events (no location) have no place to mark
        located = [(ev, ev.location[:2]) for ev in self._events if ev.location is not None]
        if not located:
            return
        xy = np.array([loc for _, loc in located], np.float64)
        px = _ego_to_bev_px(world_to_ego(xy, ego_xy, yaw))
        active = {id(ev) for _, ev in self._banners}
        for (ev, _), (u, v) in zip(located, px.tolist(), strict=True):
            if not (-10 < u < BEV_SIZE_PX + 10 and -10 < v < BEV_SIZE_PX + 10):
                continue
            c = (int(round(u)), int(round(v)))
            cv2.drawMarker(bev, c, MARKER_BGR, cv2.MARKER_TILTED_CROSS, 9, 2)
            if id(ev) in active:
                cv2.circle(bev, c, 9, MARKER_BGR, 2, cv2.LINE_AA)

    @staticmethod
    def _draw_plan_bev(bev: np.ndarray, plan: np.ndarray) -> None:
        px = _ego_to_bev_px(np.vstack([[0.0, 0.0], plan]))
        pts = np.rint(np.clip(px, -1e4, 1e4) * 16).astype(np.int32)
        cv2.polylines(bev, [pts], False, PLAN_BGR, 2, cv2.LINE_AA, 4)
        for p in pts[1:]:
            cv2.circle(bev, (int(p[0]), int(p[1])), 2 * 16, PLAN_BGR, -1, cv2.LINE_AA, 4)

    def _draw_plan_camera(
        self, cam: np.ndarray, plan: np.ndarray, ego_xy: np.ndarray, yaw: float
    ) -> None:
        world = ego_to_world(plan, ego_xy, yaw)
        xyz = np.concatenate([world, np.zeros((len(world), 1))], axis=1)
        uv, depth = project_points(self._camera_spec, ego_xy, yaw, xyz)
        keep = (depth > 1.0) & np.isfinite(uv).all(axis=1)
        if keep.sum() == 0:
            return
        # project_points gives continuous coordinates; pixel j covers [j, j + 1).
        pts = np.rint(np.clip(uv[keep] - 0.5, -1e4, 1e4) * 16).astype(np.int32)
        if len(pts) > 1:
            cv2.polylines(cam, [pts], False, PLAN_BGR, 1, cv2.LINE_AA, 4)
        for p in pts:
            cv2.circle(cam, (int(p[0]), int(p[1])), 2 * 16, PLAN_BGR, -1, cv2.LINE_AA, 4)

    def _strip(self, sim: LiteSimulator, control: Any, width: int) -> np.ndarray:
        font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
        if self._banners:
            strip = np.full((STRIP_HEIGHT_PX, width, 3), BANNER_BGR, np.uint8)
            ev = self._banners[-1][1]
            text = f"{INFRACTION_LABELS.get(ev.kind, ev.kind)}: {ev.message}"
            if len(self._banners) > 1:
                text = f"(+{len(self._banners) - 1}) {text}"
            colour = (255, 255, 255)
        else:
            strip = np.full((STRIP_HEIGHT_PX, width, 3), STRIP_BGR, np.uint8)
            thr = float(getattr(control, "throttle", 0.0))
            brk = float(getattr(control, "brake", 0.0))
            ste = float(getattr(control, "steer", 0.0))
            text = (
                f"t {sim.time_s:6.1f} s   v {sim.ego.speed * 3.6:5.1f} km/h   "
                f"throttle {thr:4.2f}  brake {brk:4.2f}  steer {ste:+5.2f}   "
                f"infractions {len(self._events)}"
            )
            colour = (235, 235, 235)
        text = _fit_text(text, width - 12, scale)
        cv2.putText(strip, text, (6, 18), font, scale, colour, 1, cv2.LINE_AA)
        return strip

    # ------------------------------------------------------------------ output
    @property
    def frames_buffered(self) -> int:
        return len(self._frames)

    def close(self) -> Path | None:
        """Write the mp4 (+ webm and poster jpg); the mp4 path, or None if no frame was kept.
        Files are written under temporary names and renamed, so a crash leaves no half file."""
        if self._closed:
            return self.out_path if self.frames_written else None
        self._closed = True
        frames, self._frames = self._frames, []
        if not frames:
            return None
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        first = _decode(frames[0][1])
        size = (first.shape[1], first.shape[0])
        targets = [(self.out_path, "mp4v")]
        if self.browser_video:
            targets.append((self.out_path.with_suffix(".webm"), "VP80"))
        writers: list[tuple[Path, Path, cv2.VideoWriter]] = []
        try:
            for final, fourcc in targets:
                tmp = final.with_name(f".{final.stem}.part{final.suffix}")
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*fourcc), self.fps, size)
                if not writer.isOpened():
                    if fourcc == "mp4v":
                        raise RuntimeError(f"OpenCV cannot write {final} with the mp4v codec")
                    continue  # no browser video; the report links the mp4
                writers.append((final, tmp, writer))
            poster_tick = self._first_event_tick
            if poster_tick is None:
                poster_tick = frames[len(frames) // 2][0]
            poster = None
            for tick, jpeg in frames:
                img = _decode(jpeg)
                for _, _, writer in writers:
                    writer.write(img)
                if poster is None and tick >= poster_tick:
                    poster = jpeg
            for final, tmp, writer in writers:
                writer.release()
                os.replace(tmp, final)
                if final.suffix == ".webm":
                    self.browser_video_path = final
        finally:
            for _, tmp, writer in writers:
                writer.release()
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        poster_path = self.out_path.with_suffix(".jpg")
        poster_path.write_bytes(poster if poster is not None else frames[-1][1])
        self.poster_path = poster_path
        self.frames_written = len(frames)
        return self.out_path
