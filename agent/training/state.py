"""Resumable training state in safetensors + JSON (no pickle): model and reasoner weights,
the AdamW moments, the batch sampler's RNG, the stage and step reached."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """AdamW state as flat tensors (`p<i>.<name>`) and its scalar part as JSON."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for pid, entry in sd["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value) and value.ndim > 0:
                tensors[f"p{pid}.{name}"] = value.contiguous()
            else:
                scalars["state"].setdefault(str(pid), {})[name] = (
                    float(value) if torch.is_tensor(value) else value
                )
    return tensors, scalars


def load_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], scalars: dict
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key[1:].split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, entry in scalars["state"].items():
        for name, value in entry.items():
            state.setdefault(int(pid), {})[name] = torch.tensor(value) if name == "step" else value
    opt.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})


def save_state(
    directory: Path,
    progress: dict[str, Any],
    modules: dict[str, torch.nn.Module],
    opt: torch.optim.Optimizer | None,
    generator: torch.Generator | None,
    write_extra: Callable[[Path], None] | None = None,
) -> None:
    """Write everything to `directory.tmp` (`write_extra(tmp)` adds more, e.g. the VLM
    directory), then swap it in: a crash mid-save keeps the previous state."""
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if write_extra is not None:
        write_extra(tmp)
    for name, module in modules.items():
        state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
        save_file(state, str(tmp / f"{name}.safetensors"))
    extra: dict[str, Any] = {}
    if opt is not None:
        tensors, scalars = optimizer_tensors(opt)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        extra["optimizer"] = scalars
    if generator is not None:
        save_file({"state": generator.get_state()}, str(tmp / "rng.safetensors"))
    (tmp / "progress.json").write_text(json.dumps({**progress, **extra}, indent=1))
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old.exists():
        shutil.rmtree(old)


def read_progress(directory: Path) -> dict[str, Any] | None:
    path = directory / "progress.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_module(directory: Path, name: str, module: torch.nn.Module) -> None:
    module.load_state_dict(load_file(str(directory / f"{name}.safetensors")))


def load_extras(
    directory: Path, opt: torch.optim.Optimizer | None, generator: torch.Generator | None
) -> None:
    progress = read_progress(directory) or {}
    if opt is not None and "optimizer" in progress:
        load_optimizer(
            opt, load_file(str(directory / "optimizer.safetensors")), progress["optimizer"]
        )
    if generator is not None and (directory / "rng.safetensors").is_file():
        generator.set_state(load_file(str(directory / "rng.safetensors"))["state"])
