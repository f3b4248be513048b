"""Reading a collected dataset: shards -> in-memory arrays, and history windows.

`load_shards` concatenates and validates the shards (the lead's trainer works on these
arrays); `history_index` gives each frame's rows of its past frames in the same episode
(frames of one episode are consecutive and in time order, see `agent.data.schema`).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from agent.data.schema import FIELDS, HISTORY_STRIDE, check_shard


class DatasetError(ValueError):
    """A missing or corrupt shard; the message names the file."""


def shard_files(path: str | Path) -> list[Path]:
    """The shards of a dataset folder (in `index.json` order, else sorted), or one file."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DatasetError(f"no dataset at {path}: not a shard file or a folder")
    index = path / "index.json"
    if index.is_file():
        try:
            shards = json.loads(index.read_text(encoding="utf-8"))["shards"]
            return [path / s["file"] for s in shards]
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{index}: not a dataset index ({exc!r})") from None
    files = sorted(path.glob("shard-*.npz"))
    if not files:
        raise DatasetError(f"{path}: no index.json and no shard-*.npz files")
    return files


def dataset_summary(path: str | Path) -> dict | None:
    """What a dataset's `index.json` says about it: episodes, frames, the frames the model
    drove (DAgger) and the `collect` arguments; None when there is no readable index."""
    index = Path(path) / "index.json"
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        return {
            "episodes": data["episodes"],
            "frames": data["frames"],
            "policy_frames": data["counts"]["policy_frames"],
            "args": data["args"],
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_shard(file: str | Path) -> dict[str, np.ndarray]:
    """One shard's FIELDS arrays, validated."""
    file = Path(file)
    if not file.is_file():
        raise DatasetError(f"{file}: shard file is missing")
    try:
        with np.load(file, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files if name in FIELDS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise DatasetError(f"{file}: corrupt shard ({exc})") from None
    try:
        check_shard(arrays, where=str(file))
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    return arrays


def load_shards(path: str | Path) -> dict[str, np.ndarray]:
    """Every shard of the dataset at `path`, concatenated: {field: (N, ...) array}."""
    parts = [load_shard(f) for f in shard_files(path)]
    if not parts:
        raise DatasetError(f"{path}: the index lists no shards")
    return {
        name: np.concatenate([p[name] for p in parts])
        for name in FIELDS
        if all(name in p for p in parts)  # an ADDED_FIELDS field only if every shard has it
    }


def history_index(episode: np.ndarray, history: int, stride: int = HISTORY_STRIDE) -> np.ndarray:
    """(N, history + 1) row indices, oldest first, last column the frame itself.

    Column k holds the row `(history - k) * stride` rows earlier in the same episode; where
    the episode has no such frame the episode's first frame is repeated. Raises ValueError
    if an episode's frames are not one consecutive block.
    """
    episode = np.asarray(episode)
    if episode.ndim != 1:
        raise ValueError(f"`episode` must be 1-D (N,), got shape {episode.shape}")
    if history < 0:
        raise ValueError(f"`history` must be >= 0, got {history}")
    if stride < 1:
        raise ValueError(f"`stride` must be >= 1, got {stride}")
    n = len(episode)
    rows = np.arange(n)
    if n == 0:
        return np.zeros((0, history + 1), np.int64)
    new_block = np.concatenate([[True], episode[1:] != episode[:-1]])
    starts = rows[new_block]
    if len(np.unique(episode[starts])) != len(starts):
        raise ValueError("`episode`: the frames of an episode must be consecutive rows")
    first = np.maximum.accumulate(np.where(new_block, rows, 0))
    back = (history - np.arange(history + 1)) * stride  # (H+1,) rows back, oldest first
    return np.maximum(rows[:, None] - back[None, :], first[:, None]).astype(np.int64)
