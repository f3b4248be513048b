"""Health of the guard's upstream sources: the camera (missing / frozen) and the VLM.

Camera: the agent hands the guard a `frame_digest` of the front image every tick (None when
the sensor delivered nothing). A digest identical on `frozen_ticks` consecutive ticks while
the ego moves means a frozen camera. Identical frames while standing still are expected — a
static scene renders bit-identically in the embedded simulator — so standing ticks neither
count nor reset the streak.

VLM: `VLMHealth` is what the guard reads; `VLMWatch` derives it from the reasoner runtime's
counters (`agent.reasoner.runtime.RuntimeStatus`) tick by tick.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from agent.reasoner.runtime import RuntimeStatus
from agent.safety.decision import ReasonCode

DIGEST_STRIDE_PX = 4  # [px] every 4th row and column is hashed: a moving ego changes them all


def frame_digest(image: np.ndarray | None, stride_px: int = DIGEST_STRIDE_PX) -> int | None:
    """A cheap 64-bit fingerprint of a camera frame (H, W[, C]) from a subsampled grid of
    pixels; None for a missing (None or empty) frame. ~10 us for 256x128 BGRA."""
    if image is None:
        return None
    arr = np.asarray(image)
    if arr.size == 0:
        return None
    sub = np.ascontiguousarray(arr[::stride_px, ::stride_px])
    h = hashlib.blake2b(sub.tobytes(), digest_size=8)
    h.update(repr((arr.shape, arr.dtype.str)).encode())
    return int.from_bytes(h.digest(), "little")


@dataclass
class CameraMonitor:
    """Missing / frozen camera detection for one route (see the module docstring)."""

    frozen_ticks: int = 10  # consecutive identical moving ticks (first one included) = frozen
    min_speed_mps: float = 1.0  # [m/s] below this the image may legitimately stay the same
    _last: int | None = None
    _streak: int = 0  # ticks the current digest has been seen (moving ticks after the first)

    def __post_init__(self) -> None:
        if self.frozen_ticks < 2:
            raise ValueError(f"CameraMonitor.frozen_ticks must be >= 2, got {self.frozen_ticks}")

    def reset(self) -> None:
        self._last = None
        self._streak = 0

    def update(self, digest: int | None, speed_mps: float) -> ReasonCode | None:
        """CAMERA_MISSING, CAMERA_FROZEN or None (healthy) for this tick."""
        if digest is None:
            self.reset()
            return ReasonCode.CAMERA_MISSING
        if digest != self._last:
            self._last, self._streak = digest, 1
        elif speed_mps >= self.min_speed_mps:  # False for NaN: a NaN speed is caught elsewhere
            self._streak += 1
        return ReasonCode.CAMERA_FROZEN if self._streak >= self.frozen_ticks else None


@dataclass(frozen=True)
class VLMHealth:
    """State of the VLM in the loop, as the guard sees it on one tick.

    error: the message of the last reasoning attempt if it failed and none succeeded since
        (None: the last attempt succeeded, or none has finished yet).
    age_s: [s] game time from the image of the reasoning in use to now; None before the
        first reasoning lands (the guard then times the route from its first tick).
    """

    error: str | None = None
    age_s: float | None = None  # a NaN age counts as timed out


class VLMWatch:
    """`RuntimeStatus` -> `VLMHealth`, one call per tick (one watch per route).

    The runtime only counts errors and completions, so the order within one tick is
    unknown: when both grew since the last call the tick counts as failed (conservative).
    Returns None in mode "off" (no VLM in the loop: nothing for the guard to check).
    """

    def __init__(self) -> None:
        self._completed = 0  # the runtime's counters at the last call
        self._errors = 0
        self._error: str | None = None

    def reset(self) -> None:
        self._completed = self._errors = 0
        self._error = None

    def update(self, status: RuntimeStatus) -> VLMHealth | None:
        if status.mode == "off":
            return None
        if status.completed > self._completed:
            self._error = None
        if status.errors > self._errors:
            self._error = status.last_error or "reasoning failed"
        self._completed, self._errors = status.completed, status.errors
        return VLMHealth(error=self._error, age_s=status.age_s)
