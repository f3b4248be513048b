"""Encoder features of recently seen camera frames, looked up by the frames' bytes.

Acting in a rollout, the policy sees `history + 1` frames per env and step, 0.5 s apart:
the earlier frame is the frame that was current `HISTORY_STRIDE` steps before, and the
encoder (most of a policy step's time) encoded it then. The Leaderboard agent keeps such
features in a ring buffer; a rollout policy cannot, because it serves a batch of envs that
reset and restart independently (and on Ray, whichever envs its worker owns). So this
cache is content-addressed instead: the key is a digest of the frame's bytes, so a hit is
the same image by construction, whatever env, step or episode it came from, and a miss
just encodes.

Only valid while the encoder's weights stay put: `PlannerPolicy` uses it when the encoder
is frozen (`train_encoder: false`, the default) and clears it whenever weights are loaded.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import torch

DEFAULT_CAPACITY = 256  # frames (~64 KB of features each for the shipped encoder)


def frame_key(frame: torch.Tensor) -> bytes:
    """A 128-bit digest of one frame's bytes (uint8, any shape) and its shape."""
    digest = hashlib.blake2b(frame.cpu().numpy().tobytes(), digest_size=16)
    digest.update(repr(tuple(frame.shape)).encode())
    return digest.digest()


class FrameFeatureCache:
    """Least-recently-used map from a frame's digest to its encoder features."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._store: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()

    def features(
        self, frames: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Features of `frames` (N, ...) uint8: cached rows are looked up, the others go
        through `encode` as one batch (N', ...) -> (N', ...features) and are stored."""
        keys = [frame_key(f) for f in frames]
        # The first row of each frame not yet cached: a frame repeated within the batch
        # (an env's history at the start of an episode) is encoded once.
        first: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in self._store:
                first.setdefault(key, i)
        if first:
            rows = list(first.values())
            encoded = encode(frames[rows])
            for key, value in zip(first, encoded, strict=True):
                self._store[key] = value
        self.misses += len(first)
        self.hits += len(keys) - len(first)
        out = []
        for key in keys:
            self._store.move_to_end(key)
            out.append(self._store[key])
        while len(self._store) > self.capacity:
            self._store.popitem(last=False)
        return torch.stack(out)
