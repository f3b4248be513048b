"""What the reasoner hands to the planner, and the one protocol every reasoner follows.

A `Reasoning` is computed for one camera frame and may be reused for several later control
ticks (the VLM runs slower than 20 Hz, see `agent.reasoner.runtime`), so it records the
simulator frame it was computed for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from agent.data.schema import FLAGS, INTENTS


@dataclass(frozen=True)
class Reasoning:
    """One reasoning result.

    text: the generated reasoning sentence ("" if generation was skipped or failed).
    flags: (F,) float32 probabilities, F = len(FLAGS), in FLAGS order.
    intent: (I,) float32 probabilities summing to 1, I = len(INTENTS), in INTENTS order.
    embedding: (E,) float32, the token that conditions the planner.
    frame: the simulator frame of the image this was computed from.
    latency_s: [s] wall time of the computation.
    error: None on success; a message if the computation failed (outputs are then zeros).
    """

    text: str
    flags: np.ndarray
    intent: np.ndarray
    embedding: np.ndarray
    frame: int
    latency_s: float
    error: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise ValueError(f"`text` must be a str, got {type(self.text).__name__}")
        for name, want in (("flags", len(FLAGS)), ("intent", len(INTENTS))):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.shape != (want,):
                got = arr.shape if isinstance(arr, np.ndarray) else type(arr).__name__
                raise ValueError(f"`{name}` must be a ({want},) array, got {got}")
        emb = self.embedding
        if not isinstance(emb, np.ndarray) or emb.ndim != 1 or emb.shape[0] == 0:
            got = emb.shape if isinstance(emb, np.ndarray) else type(emb).__name__
            raise ValueError(f"`embedding` must be an (E,) array with E > 0, got {got}")
        for name in ("flags", "intent", "embedding"):
            if getattr(self, name).dtype != np.float32:
                raise ValueError(f"`{name}` must be float32, got {getattr(self, name).dtype}")
        if self.latency_s < 0:
            raise ValueError(f"`latency_s` must be >= 0, got {self.latency_s}")


@runtime_checkable
class ReasoningModel(Protocol):
    """Anything that reasons about one front-camera image."""

    embedding_dim: int

    def reason(self, image_bgr: np.ndarray, frame: int) -> Reasoning:
        """image_bgr: (H, W, 3) uint8 BGR (Leaderboard camera order, alpha dropped)."""
        ...
