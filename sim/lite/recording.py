"""Headless recording of a drive: camera + BEV side by side, to mp4 and PNG stills.

Used by `vlmdrive render` / `vlmdrive demo`; OpenCV's bundled FFmpeg writes the mp4
(`mp4v` codec), so no system video tools are needed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from sim.control import VehicleControl
from sim.ground_truth import InfractionEvent
from sim.lite.bev import render_bev
from sim.lite.world import LiteSimulator
from sim.protocol import FIXED_DELTA_SECONDS

PANEL_HEIGHT_PX = 256  # [px] height of each panel in the composite video frame


@dataclass
class DriveRecording:
    video: Path | None
    stills: list[Path] = field(default_factory=list)
    events: list[InfractionEvent] = field(default_factory=list)
    frames: int = 0


def ego_bev(sim: LiteSimulator, size_px: int = 256) -> np.ndarray:
    """Heading-up BEV around the ego with the route drawn: (size_px, size_px, 3) BGR."""
    return render_bev(
        sim.town.raster,
        sim.scene_boxes(),
        np.array([sim.ego.x, sim.ego.y]),
        sim.ego.yaw,
        route_xy=sim.route.points,
        size_px=size_px,
    )


def composite(camera_bgra: np.ndarray, bev_bgr: np.ndarray, caption: str) -> np.ndarray:
    """Camera (scaled to PANEL_HEIGHT_PX) beside the BEV, with a caption bar."""
    cam = camera_bgra[..., :3]
    scale = PANEL_HEIGHT_PX / cam.shape[0]
    cam = cv2.resize(
        cam, (int(round(cam.shape[1] * scale)), PANEL_HEIGHT_PX), interpolation=cv2.INTER_LINEAR
    )
    bev = cv2.resize(bev_bgr, (PANEL_HEIGHT_PX, PANEL_HEIGHT_PX), interpolation=cv2.INTER_AREA)
    frame = np.concatenate([cam, bev], axis=1)
    bar = np.zeros((22, frame.shape[1], 3), np.uint8)
    cv2.putText(
        bar, caption, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (235, 235, 235), 1, cv2.LINE_AA
    )
    return np.ascontiguousarray(np.concatenate([frame, bar], axis=0))


def record_drive(
    sim: LiteSimulator,
    driver: Callable[[], VehicleControl],
    seconds: float,
    out_dir: Path,
    name: str,
    camera_id: str,
    still_every_s: float = 5.0,
    video: bool = True,
) -> DriveRecording:
    """Drive for `seconds` (or until the route ends), writing `<name>.mp4` and stills."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rec = DriveRecording(video=out_dir / f"{name}.mp4" if video else None)
    writer = None
    n_ticks = int(round(seconds / FIXED_DELTA_SECONDS))
    still_every = max(int(round(still_every_s / FIXED_DELTA_SECONDS)), 1)
    fps = 1.0 / FIXED_DELTA_SECONDS
    for tick in range(n_ticks):
        data = sim.tick(driver())
        rec.events += sim.events
        rec.frames += 1
        want_still = tick % still_every == 0 or tick == n_ticks - 1
        if not (video or want_still):
            continue
        st = sim.route_status
        caption = (
            f"{name}  t={sim.time_s:5.1f}s  v={sim.ego.speed * 3.6:5.1f} km/h  "
            f"route {st.completion:5.1f}%  infractions {len(rec.events)}"
        )
        frame = composite(data[camera_id][1], ego_bev(sim), caption)
        if video:
            if writer is None:
                assert rec.video is not None
                writer = cv2.VideoWriter(
                    str(rec.video),
                    cv2.VideoWriter.fourcc(*"mp4v"),
                    fps,
                    (frame.shape[1], frame.shape[0]),
                )
            writer.write(frame)
        if want_still:
            path = out_dir / f"{name}_t{sim.time_s:05.1f}s.png"
            cv2.imwrite(str(path), frame)
            rec.stills.append(path)
        if st.ended:
            break
    if writer is not None:
        writer.release()
    return rec
