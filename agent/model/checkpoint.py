"""Saving and loading the driving model: safetensors weights + the typed config, never pickle.

A checkpoint directory:
    model.safetensors   DriveModel weights (the k-means anchors are a buffer inside)
    model.yaml          {"model": ModelConfig, "meta": {...training summary...}}
    vlm/                the reasoner: a Hugging Face image-text-to-text model directory
                        (+ reasoner heads), loadable by AutoModelForImageTextToText
    README.md           the model card
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_file, save_file

from agent.model.config import ModelConfig
from agent.model.drive_model import DriveModel

WEIGHTS = "model.safetensors"
CONFIG = "model.yaml"
VLM_DIR = "vlm"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete or does not match its config."""


def save_drive_model(
    model: DriveModel, directory: str | Path, meta: dict[str, Any] | None = None
) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS, lambda tmp: save_file(state, tmp))
    doc = {"model": model.cfg.model_dump(mode="json"), "meta": meta or {}}
    atomic_write(
        directory / CONFIG, lambda tmp: Path(tmp).write_text(yaml.safe_dump(doc, sort_keys=False))
    )


def read_config(directory: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{path}: no model config (is {directory} a vlmdrive checkpoint?)")
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict) or "model" not in doc:
        raise CheckpointError(f"{path}: expected a mapping with a 'model' key")
    try:
        cfg = ModelConfig.model_validate(doc["model"])
    except Exception as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from exc
    return cfg, dict(doc.get("meta") or {})


# Heads a fine-tune may add to a checkpoint that lacks them: config switch -> the
# parameter-name prefix of the head (`agent.model.drive_model`). Starting from the
# checkpoint, the added head alone starts from random weights.
ADDABLE_HEADS: dict[str, str] = {
    "objects": "perception.objects.",
    "lanes": "lanes.",
}


def added_heads(base: ModelConfig, cfg: ModelConfig) -> list[str]:
    """The `ADDABLE_HEADS` that `cfg` switches on and `base` lacks, when that is the only
    difference between them; raises ValueError naming the fields that differ otherwise."""
    added = [
        h for h in ADDABLE_HEADS if getattr(cfg.perception, h) and not getattr(base.perception, h)
    ]
    same = cfg.model_copy(
        update={
            "perception": cfg.perception.model_copy(
                update={h: getattr(base.perception, h) for h in added}
            )
        }
    )
    if same != base:
        ours, theirs = same.model_dump(), base.model_dump()
        differ = sorted(k for k in ours if ours[k] != theirs.get(k))
        raise ValueError(f"in {differ}; only the heads {sorted(ADDABLE_HEADS)} may be added")
    return added


def load_drive_model(
    directory: str | Path, cfg: ModelConfig | None = None
) -> tuple[DriveModel, dict[str, Any]]:
    """The model in eval mode, and the checkpoint's meta data. `cfg`: a config that adds
    heads to the checkpoint's (`added_heads`); those start untrained, everything else is
    the checkpoint's."""
    saved, meta = read_config(directory)
    allowed: tuple[str, ...] = ()
    if cfg is None:
        cfg = saved
    else:
        try:
            allowed = tuple(ADDABLE_HEADS[h] for h in added_heads(saved, cfg))
        except ValueError as exc:
            raise CheckpointError(
                f"{Path(directory) / CONFIG}: the requested model config differs {exc}"
            ) from exc
    weights = Path(directory) / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing model weights")
    state = load_file(str(weights))
    anchors = state.get("planner.anchors")
    if anchors is None:
        raise CheckpointError(f"{weights}: no 'planner.anchors' tensor")
    model = DriveModel(cfg, anchors)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(allowed)]
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not match {CONFIG}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return model.eval(), meta


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Write `path` through `write(tmp)` on a temporary file beside it, then rename: a
    crash or Ctrl-C never leaves a half-written file (the old one stays)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
