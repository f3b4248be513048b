"""The training loop: stages from the config, in order, resumable, logged to TensorBoard.

    vlm     tiny VLM from scratch (captions + QA)                 agent.reasoner.train
    frozen  encoder + perception + distillation + planner; VLM embeddings cached per frame
    lora    + LoRA adapters on the VLM's language model (peft), merged afterwards
    joint   everything, lower learning rate

`init: <checkpoint>` starts the driving model from a trained one (a fine-tune), and a
stage's `trainable` patterns restrict it to some parameters (e.g. the scorer alone).

Resumable state lives in `<run_dir>/state` (see state.py): saved every
`checkpoint_every` steps and at each stage's end; `--resume` continues from the last save
(the `vlm` stage resumes from its end only). The finished model goes to `cfg.out`.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch.utils.tensorboard import SummaryWriter

from agent.data.dataset import dataset_summary, history_index, load_shards
from agent.data.schema import LANE_COLUMNS, LANE_STATIONS_M
from agent.model.anchors import kmeans_anchors
from agent.model.checkpoint import (
    VLM_DIR,
    added_heads,
    load_drive_model,
    read_config,
    save_drive_model,
)
from agent.model.drive_model import DriveInputs, DriveModel
from agent.model.losses import LossWeights, Targets, compute_losses, flag_pos_weight
from agent.reasoner.vlm import VLMReasoner
from agent.training import state as st
from agent.training.augment import augment_frames
from agent.training.config import StageConfig, TrainConfig

log = logging.getLogger(__name__)

EMBED_BATCH = 64  # frames per no-grad VLM forward when caching embeddings


@dataclass
class Arrays:
    """The training frames in memory (see agent/data/schema.py)."""

    data: dict[str, np.ndarray]
    history: np.ndarray  # (N, S) row indices, oldest first

    def __len__(self) -> int:
        return len(self.data["speed_mps"])


def load_arrays(
    path: Path,
    steps: int,
    cameras: int,
    max_frames: int | None = None,
    extra: tuple[Path, ...] = (),
) -> Arrays:
    """The training frames of `path` (its first `max_frames`), then every frame of the
    `extra` datasets, whose episode ids are shifted past the ones before them (each
    dataset numbers its episodes from 0; the history index needs them distinct)."""
    data = _with_lanes_known(load_shards(path))
    if max_frames is not None:
        data = {k: v[:max_frames] for k, v in data.items()}
    for more_path in extra:
        more = _with_lanes_known(load_shards(more_path))
        more["episode"] = more["episode"] + (int(data["episode"].max(initial=-1)) + 1)
        # a field one dataset lacks (schema.ADDED_FIELDS) is dropped from the union; the
        # lanes are not: `_with_lanes_known` filled them, masked
        data = {k: np.concatenate([data[k], more[k]]) for k in data if k in more}
    if data["image"].shape[1] < cameras:
        raise ValueError(
            f"{path}: the model needs {cameras} cameras, the data has {data['image'].shape[1]}"
        )
    data["image"] = data["image"][:, :cameras]
    return Arrays(data, history_index(data["episode"], steps - 1))


def _with_lanes_known(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`data` with "lanes_known" (N,) bool: whether its frames have lane labels. A dataset
    collected before the `lanes` field gets all-False lanes that the loss masks out, so it
    still trains everything else alongside one that has them."""
    n = len(data["speed_mps"])
    known = "lanes" in data
    if not known:
        data = {**data, "lanes": np.zeros((n, len(LANE_STATIONS_M), len(LANE_COLUMNS)), bool)}
    return {**data, "lanes_known": np.full(n, known)}


def drive_batch(
    arrays: Arrays,
    rows: np.ndarray,
    reasoning: torch.Tensor | None,
    reasoning_dropout: float,
    generator: torch.Generator,
) -> tuple[DriveInputs, Targets]:
    d = arrays.data
    frames = torch.from_numpy(d["image"][arrays.history[rows]])  # (B, S, C, H, W, 3)
    mask = None
    if reasoning is not None:
        mask = torch.rand(len(rows), generator=generator) >= reasoning_dropout
    x = DriveInputs(
        frames=frames,
        speed_mps=torch.from_numpy(d["speed_mps"][rows]),
        command=torch.from_numpy(d["command"][rows]),
        target_point=torch.from_numpy(d["target_point"][rows]),
        reasoning=reasoning,
        reasoning_mask=mask,
    )
    t = Targets(
        trajectory=torch.from_numpy(d["trajectory"][rows]),
        obstacles=torch.from_numpy(d["obstacles"][rows]),
        obstacle_mask=torch.from_numpy(d["obstacle_mask"][rows]),
        light_state=torch.from_numpy(d["light_state"][rows]),
        flags=torch.from_numpy(d["flags"][rows]).float(),
        intent=torch.from_numpy(d["intent"][rows]),
        vlm_embedding=None if reasoning is None else reasoning.detach(),
        lanes=torch.from_numpy(d["lanes"][rows]).float(),  # load_arrays fills both
        lanes_known=torch.from_numpy(d["lanes_known"][rows]),
    )
    return x, t


def current_images(arrays: Arrays, rows: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) BGR of camera 0 at the frame itself: what the VLM sees."""
    return arrays.data["image"][rows, 0]


def with_init_model_config(cfg: TrainConfig) -> TrainConfig:
    """A fine-tune's model config is its init checkpoint's. One given in the training
    config must agree with it (a silent mismatch would load weights into another shape),
    except that it may add heads (`checkpoint.ADDABLE_HEADS`: they start untrained)."""
    assert cfg.init is not None
    init_model, _ = read_config(cfg.init)
    if "model" not in cfg.model_fields_set or cfg.model == init_model:
        return cfg.model_copy(update={"model": init_model})
    try:
        added_heads(init_model, cfg.model)
    except ValueError as exc:
        raise ValueError(
            f"model: differs from {cfg.init}'s model config {exc}; "
            "drop the model section to use the checkpoint's"
        ) from exc
    return cfg


def trainable_parameters(model: DriveModel, patterns: tuple[str, ...]) -> list[torch.nn.Parameter]:
    """The parameters a stage trains: those whose names match one of `patterns`
    (fnmatch), all of them when there are none. The others stop needing gradients, so
    backpropagation stops at the trained ones."""
    if not patterns:
        return list(model.parameters())
    chosen: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        p.requires_grad_(any(fnmatch.fnmatchcase(name, pat) for pat in patterns))
        if p.requires_grad:
            chosen.append(p)
    if not chosen:
        raise ValueError(f"trainable: {list(patterns)} match no parameter of the driving model")
    return chosen


class Trainer:
    def __init__(self, cfg: TrainConfig, progress: bool = True) -> None:
        if cfg.init is not None:
            cfg = with_init_model_config(cfg)
        self.cfg = cfg
        self.progress = progress
        self.state_dir = cfg.run_dir / "state"
        self.weights = LossWeights(**cfg.loss.model_dump(exclude={"vlm_lm"}))
        torch.set_num_threads(cfg.threads)

    # -------------------------------------------------------------- entry point
    def run(self, resume: bool = False) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        progress = st.read_progress(self.state_dir) if resume else None
        if resume and progress is None:
            log.warning("--resume: no saved state in %s; starting from scratch", self.state_dir)
        if not resume and self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        steps = cfg.model.encoder.history + 1
        arrays = load_arrays(
            cfg.data.train,
            steps,
            cfg.model.encoder.cameras,
            cfg.data.max_frames,
            cfg.data.extra,
        )
        log.info("training frames: %d", len(arrays))
        if cfg.model.perception.lanes and not arrays.data["lanes_known"].any():
            names = ", ".join(str(p) for p in (cfg.data.train, *cfg.data.extra))
            raise ValueError(
                f"model.perception.lanes: none of the training data ({names}) has lane "
                "labels (collected before the `lanes` field); collect data with this "
                "version of `vlmdrive collect`"
            )
        self.flag_weight = flag_pos_weight(arrays.data["flags"])
        self.writer = SummaryWriter(str(cfg.run_dir / "tb"))
        summary: dict[str, Any] = dict(progress.get("summary", {})) if progress else {}
        done = set(progress.get("done", [])) if progress else set()
        reasoner = self._reasoner(arrays, progress)
        if cfg.init is not None:
            # its anchors too, not re-clustered ones; heads the config adds start untrained
            model, _ = load_drive_model(cfg.init, cfg.model)
            summary.setdefault("init", str(cfg.init))
        else:
            anchors = torch.from_numpy(
                kmeans_anchors(
                    arrays.data["trajectory"], cfg.model.planner.num_modes, seed=cfg.seed
                )
            )
            model = DriveModel(cfg.model, anchors)
        if progress and (self.state_dir / "drive.safetensors").is_file():
            st.load_module(self.state_dir, "drive", model)
        for index, stage in enumerate(cfg.stages):
            if stage.name in done:
                continue
            start = int(progress["step"]) if progress and progress.get("stage") == stage.name else 0
            stage_t0 = time.perf_counter()
            result = self._stage(index, stage, arrays, model, reasoner, start, summary, done)
            summary[stage.name] = {
                **result,
                "wall_s": round(time.perf_counter() - stage_t0, 1),  # this process only
            }
            done.add(stage.name)
            self._save(stage.name, stage.steps, done, summary, model, reasoner, None, None)
        summary["train_wall_s"] = round(time.perf_counter() - t0, 1)
        summary["frames"] = len(arrays)
        summary["episodes"] = int(len(np.unique(arrays.data["episode"])))
        datasets = (cfg.data.train, *cfg.data.extra)
        summary["datasets"] = [str(p) for p in datasets]
        # what each dataset was when this model trained on it (the card reads this, not
        # whatever the folder holds later)
        summary["dataset_summaries"] = [dataset_summary(p) for p in datasets]
        self._export(model, reasoner, summary)
        self.writer.close()
        return summary

    # -------------------------------------------------------------- reasoner
    def _reasoner(self, arrays: Arrays, progress: dict | None) -> VLMReasoner:
        cfg = self.cfg
        saved = self.state_dir / VLM_DIR
        if progress and saved.is_dir():
            return VLMReasoner.from_pretrained(saved)
        if cfg.vlm.init is not None:
            return VLMReasoner.from_pretrained(cfg.vlm.init)
        return VLMReasoner.build_tiny(
            [str(t) for t in arrays.data["text"]],
            image_size=cfg.vlm.image_size,
            embedding_dim=cfg.model.reasoning_dim,
            vocab_size=cfg.vlm.vocab_size,
            seed=cfg.seed,
        )

    # -------------------------------------------------------------- stages
    def _stage(
        self,
        index: int,
        stage: StageConfig,
        arrays: Arrays,
        model: DriveModel,
        reasoner: VLMReasoner,
        start: int,
        summary: dict,
        done: set,
    ) -> dict[str, Any]:
        if stage.name == "vlm":
            from agent.reasoner.train import train_vlm

            d = arrays.data
            result = train_vlm(
                reasoner,
                d["image"][:, 0],
                [str(t) for t in d["text"]],
                d["flags"],
                d["intent"],
                steps=stage.steps,
                batch_size=stage.batch_size,
                lr=stage.lr,
                seed=self.cfg.seed,
                progress=self.progress,
                log=lambda name, value, step: self.writer.add_scalar(f"vlm/{name}", value, step),
                flag_weight=self.flag_weight,
            )
            return {k: round(float(v), 4) for k, v in result.items() if isinstance(v, (int, float))}
        generator = torch.Generator().manual_seed(self.cfg.seed * 1000 + index)
        cached: torch.Tensor | None = None
        if stage.name == "frozen":
            reasoner.freeze()
            cached = self._cache_embeddings(reasoner, arrays)
            params = trainable_parameters(model, stage.trainable)
        elif stage.name == "lora":
            reasoner.freeze()
            if not reasoner.has_lora:
                reasoner.add_lora(r=stage.lora_r, alpha=stage.lora_alpha)
            if start > 0 and (self.state_dir / "reasoner.safetensors").is_file():
                st.load_module(self.state_dir, "reasoner", reasoner)  # mid-stage adapters
            params = list(model.parameters()) + [
                p for p in reasoner.parameters() if p.requires_grad
            ]
        else:  # joint
            reasoner.unfreeze()
            params = list(model.parameters()) + list(reasoner.parameters())
        opt = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=stage.lr, total_steps=max(stage.steps, 1), pct_start=0.05
        )
        if start > 0:
            st.load_extras(self.state_dir, opt, generator)
            for _ in range(start):
                sched.step()
        # A partial stage keeps the frozen parts exactly as they were: eval mode, so the
        # encoder's batch-norm statistics do not drift either.
        model.train(not stage.trainable)
        reasoner.train(stage.name != "frozen")
        n = len(arrays)
        last: dict[str, float] = {}
        with self._bar(stage, start) as (bar, task):
            for step in range(start, stage.steps):
                rows = torch.randint(n, (stage.batch_size,), generator=generator).numpy()
                vlm_terms: dict[str, torch.Tensor] = {}
                if cached is not None:
                    reasoning = cached[rows]
                else:
                    images = current_images(arrays, rows)
                    out = reasoner(reasoner.encode(images))
                    reasoning = out.embedding
                    texts = [str(t) for t in arrays.data["text"][rows]]
                    # The VLM keeps its own objectives while the planner's losses move its
                    # embedding: the language model, and the flag / intent heads (without
                    # these the heads collapse, as the shipped model's first version did).
                    vlm_terms["vlm_lm"] = reasoner(reasoner.encode(images, targets=texts)).lm_loss
                    vlm_terms["vlm_flags"] = F.binary_cross_entropy_with_logits(
                        out.flag_logits,
                        torch.from_numpy(arrays.data["flags"][rows]).float(),
                        pos_weight=self.flag_weight,
                    )
                    vlm_terms["vlm_intent"] = F.cross_entropy(
                        out.intent_logits, torch.from_numpy(arrays.data["intent"][rows])
                    )
                x, targets = drive_batch(
                    arrays, rows, reasoning, self.cfg.model.reasoning_dropout, generator
                )
                x = replace(x, frames=augment_frames(x.frames, self.cfg.augment, generator))
                if cached is None:  # the alignment loss trains the VLM: keep its gradient
                    targets = replace(targets, vlm_embedding=reasoning)
                losses = compute_losses(model, model(x), targets, self.weights, self.flag_weight)
                total = losses["total"]
                if vlm_terms:
                    losses.update(vlm_terms)
                    total = total + self.cfg.loss.vlm_lm * vlm_terms["vlm_lm"]
                    total = total + vlm_terms["vlm_flags"] + vlm_terms["vlm_intent"]
                opt.zero_grad(set_to_none=True)
                total.backward()
                torch.nn.utils.clip_grad_norm_(params, 5.0)
                opt.step()
                sched.step()
                last = {k: float(v.detach()) for k, v in losses.items()}
                global_step = sum(s.steps for s in self.cfg.stages[:index]) + step
                if step % 10 == 0 or step == stage.steps - 1:
                    for k, v in last.items():
                        self.writer.add_scalar(f"losses/{k}", v, global_step)
                    self.writer.add_scalar("charts/lr", sched.get_last_lr()[0], global_step)
                bar.update(task, advance=1, loss=last["total"], l1=last["traj"])
                if (step + 1) % self.cfg.checkpoint_every == 0 and step + 1 < stage.steps:
                    self._save(stage.name, step + 1, done, summary, model, reasoner, opt, generator)
        if stage.name == "lora" and reasoner.has_lora:
            reasoner.merge_lora()
        reasoner.freeze()
        model.requires_grad_(True)  # undo a partial stage's freeze for the next stage
        model.eval()
        return {k: round(v, 4) for k, v in last.items()}

    @torch.no_grad()
    def _cache_embeddings(self, reasoner: VLMReasoner, arrays: Arrays) -> torch.Tensor:
        reasoner.eval()
        out = []
        images = arrays.data["image"][:, 0]
        for i in range(0, len(arrays), EMBED_BATCH):
            out.append(reasoner(reasoner.encode(images[i : i + EMBED_BATCH])).embedding)
        return torch.cat(out)

    # -------------------------------------------------------------- plumbing
    @contextmanager
    def _bar(self, stage: StageConfig, start: int) -> Iterator[tuple[Progress, TaskID]]:
        with Progress(
            TextColumn(f"[bold]{stage.name}[/]"),
            BarColumn(),
            TextColumn(
                "{task.completed}/{task.total} loss {task.fields[loss]:.3f} L1 {task.fields[l1]:.2f} m"
            ),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not self.progress,
        ) as bar:
            yield (
                bar,
                bar.add_task(stage.name, total=stage.steps, completed=start, loss=0.0, l1=0.0),
            )

    def _save(
        self, stage: str, step: int, done: set, summary: dict, model, reasoner, opt, generator
    ) -> None:
        progress = {"stage": stage, "step": step, "done": sorted(done), "summary": summary}
        modules: dict[str, torch.nn.Module] = {"drive": model}
        if reasoner.has_lora:
            # Mid-LoRA: the VLM directory keeps the base model (from the last save); the
            # state dict holds base + adapter weights, loaded after `add_lora` on resume.
            modules["reasoner"] = reasoner
            previous = self.state_dir / VLM_DIR

            def write_extra(tmp: Path) -> None:
                shutil.copytree(previous, tmp / VLM_DIR)
        else:

            def write_extra(tmp: Path) -> None:
                reasoner.save_pretrained(tmp / VLM_DIR)

        st.save_state(self.state_dir, progress, modules, opt, generator, write_extra)

    def _export(self, model: DriveModel, reasoner: VLMReasoner, summary: dict) -> None:
        out = self.cfg.out
        out.mkdir(parents=True, exist_ok=True)
        meta = {"training": summary, "config": json.loads(self.cfg.model_dump_json())}
        save_drive_model(model, out, meta)
        vlm_dir = out / VLM_DIR
        if vlm_dir.exists():
            shutil.rmtree(vlm_dir)
        reasoner.save_pretrained(vlm_dir)
