"""Open-loop evaluation (`vlmdrive eval-open`) on held-out frames (the eval suite).

Reported per reasoning source (`vlm`: the VLM's embedding, flags and intent; `distilled`:
the model's distillation head, VLM off):
- L2 [m] between the chosen (highest-scoring) trajectory and the expert's, at 1, 2 and 3 s
  (poses 2, 4, 6 of 0.5 s) and averaged up to each horizon (ST-P3 convention);
- collision rate: frames whose chosen trajectory enters a ground-truth obstacle box
  (moved at constant velocity, ego radius EGO_RADIUS_M) where the expert's does not;
- per-flag precision / recall / support, macro recall over flags with support, and event
  recall (was each hazard flagged on at least one of its frames; see `flag_metrics`);
- intent accuracy;
- perception (the auxiliary heads the safety guard plans from, source-independent): BEV
  occupancy precision / recall / IoU per class against `losses.bev_targets` of the
  ground-truth obstacles, overall and in the ego's corridor (the cell columns that reach
  within 1.46 m of the ego's centre line, 0-28 m ahead: what the guard's path checks
  read), and the light head's accuracy
  and red recall;
- reasoning text similarity (VLM only): ROUGE-L F1 over words and exact-match rate of the
  generated text against the auto-labelled text, on up to `text_frames` frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent.data.schema import FLAGS, INTENTS, LANE_COLUMNS, LIGHT_STATES, POSE_DT_S
from agent.model.checkpoint import VLM_DIR, load_drive_model
from agent.model.config import PerceptionConfig
from agent.model.drive_model import OBJECT_CHANNELS, OBJECT_VELOCITY_SCALE_MPS, DriveInputs
from agent.model.losses import bev_spans, bev_targets, box_penetration
from agent.model.objects import object_targets
from agent.safety.guard import GuardConfig, SafetyGuard
from agent.safety.offline import plan_check_rates
from agent.training.trainer import load_arrays

GUARD_FRAMES = 1500  # frames (evenly spaced) the guard's path checks are replayed on
# BEV occupancy thresholds the guard's checks are also replayed at (the guard view's
# `occupancy_threshold`): the trade between stopping good plans and catching hazards
GUARD_THRESHOLDS = (0.3, 0.4, 0.5)

HORIZONS_S = (1.0, 2.0, 3.0)
FLAG_THRESHOLD = 0.5


def pose_index(horizon_s: float) -> int:
    """The trajectory pose at `horizon_s` (pose k lies at (k + 1) * POSE_DT_S)."""
    return round(horizon_s / POSE_DT_S) - 1


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased words (longest common subsequence)."""
    a, b = candidate.lower().split(), reference.lower().split()
    if not a or not b:
        return float(a == b)
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def flag_events(truth: np.ndarray, episode: np.ndarray) -> list[np.ndarray]:
    """truth bool (N,), episode (N,) -> the frame indices of each event: a maximal run of
    consecutive flagged frames of one episode (frames of an episode are consecutive and in
    time order, see `agent.data.schema`)."""
    continues = truth[:-1] & truth[1:] & (episode[1:] == episode[:-1])  # frame i -> i + 1
    starts = truth & ~np.r_[False, continues]
    ends = truth & ~np.r_[continues, False]
    return [
        np.arange(a, b + 1)
        for a, b in zip(np.flatnonzero(starts), np.flatnonzero(ends), strict=True)
    ]


# [m] distance bands of `flag_metrics`' recall by distance (the labels reach 60 m ahead)
DISTANCE_BANDS_M: tuple[float, ...] = (0.0, 20.0, 40.0, 60.0)


def band_name(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g} m"


def flag_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    episode: np.ndarray | None = None,
    distance: np.ndarray | None = None,
) -> dict[str, Any]:
    """pred/truth bool (N, F) -> per-flag precision, recall, support; macro recall.

    With `episode` (N,) also event recall: the share of events (`flag_events`: one hazard
    or weather spell, seen over consecutive frames) flagged on at least one of their frames,
    and the mean number of frames from an event's first frame to its first flagged frame
    (detected events only, 0.5 s each at `SAMPLE_HZ`). Frame recall counts every frame: a
    cone line 60 m ahead (the label's range, about one pixel wide in a 256-pixel camera)
    counts as missed until it is close enough to see; event recall asks whether the hazard
    was flagged before it was passed.

    With `distance` (N, F) [m] (the labels' `flag_distance_m`: how far along the route the
    hazard that raised the flag is) also the frame recall per DISTANCE_BANDS_M band
    ("recall_by_distance", with "support_by_distance"), as detection benchmarks report
    recall by range: it tells a flag missed at 50 m, where its hazard is a few pixels
    wide, from one missed next to the car. A macro recall over the first (nearest) band
    sums it up ("macro_recall_near").
    """
    per: dict[str, dict[str, Any]] = {}
    recalls, event_recalls, near_recalls = [], [], []
    edges = DISTANCE_BANDS_M
    bands = [  # (name, lo, hi); the last band keeps anything beyond its end
        (band_name(lo, hi), lo, np.inf if hi == edges[-1] else hi)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True)
    ]
    for i, name in enumerate(FLAGS):
        tp = int((pred[:, i] & truth[:, i]).sum())
        support = int(truth[:, i].sum())
        predicted = int(pred[:, i].sum())
        precision = tp / predicted if predicted else float("nan")
        recall = tp / support if support else float("nan")
        per[name] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "support": support,
        }
        if support:
            recalls.append(recall)
        if episode is not None:
            events = flag_events(truth[:, i], episode)
            hits = [np.flatnonzero(pred[ev, i]) for ev in events]
            detected = [int(h[0]) for h in hits if len(h)]
            per[name]["events"] = len(events)
            per[name]["event_recall"] = (
                round(len(detected) / len(events), 4) if events else float("nan")
            )
            per[name]["frames_to_detect"] = (
                round(float(np.mean(detected)), 2) if detected else float("nan")
            )
            if events:
                event_recalls.append(len(detected) / len(events))
        if distance is not None:
            by, counts = {}, {}
            for band, lo, hi in bands:
                inside = truth[:, i] & (distance[:, i] >= lo) & (distance[:, i] < hi)
                counts[band] = k = int(inside.sum())
                by[band] = round(float(pred[inside, i].mean()), 4) if k else float("nan")
            per[name]["recall_by_distance"] = by
            per[name]["support_by_distance"] = counts
            if counts[bands[0][0]]:
                near_recalls.append(by[bands[0][0]])
    out: dict[str, Any] = {
        "per_flag": per,
        "macro_recall": round(float(np.mean(recalls)), 4) if recalls else None,
    }
    if episode is not None:
        out["macro_event_recall"] = (
            round(float(np.mean(event_recalls)), 4) if event_recalls else None
        )
    if distance is not None:
        out["macro_recall_near"] = round(float(np.mean(near_recalls)), 4) if near_recalls else None
    return out


CORRIDOR_AHEAD_M = (0.0, 28.0)  # [m] rows of the corridor metric (the guard's reach)
CORRIDOR_HALF_WIDTH_M = 1.46  # [m] the ego's half width (2.12 m / 2) + the guard's 0.4 m


def _prf(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    tp = int((pred & truth).sum())
    npred, ntrue = int(pred.sum()), int(truth.sum())
    union = int((pred | truth).sum())
    return {
        "precision": round(tp / npred, 4) if npred else None,
        "recall": round(tp / ntrue, 4) if ntrue else None,
        "iou": round(tp / union, 4) if union else None,
        "support": ntrue,
    }


def perception_metrics(
    bev_pred: np.ndarray,
    bev_truth: np.ndarray,
    light_pred: np.ndarray,
    light_truth: np.ndarray,
    grid: PerceptionConfig,
) -> dict[str, Any]:
    """bev_pred / bev_truth bool (N, classes, rows, cols); light_pred / light_truth (N,)
    indices into LIGHT_STATES -> per-class BEV precision / recall / IoU (whole grid and the
    ego corridor) and light accuracy / red recall."""
    x, y = grid.cell_centres()
    ahead = (x >= CORRIDOR_AHEAD_M[0]) & (x <= CORRIDOR_AHEAD_M[1])
    # Columns that reach into the ego's swept corridor (half width + the guard's margin).
    centre = np.abs(y) - grid.cell_size[1] / 2 < CORRIDOR_HALF_WIDTH_M
    bev: dict[str, Any] = {}
    for c, name in enumerate(grid.bev_classes):
        bev[name] = {
            "grid": _prf(bev_pred[:, c], bev_truth[:, c]),
            "corridor": _prf(
                bev_pred[:, c][:, ahead][:, :, centre], bev_truth[:, c][:, ahead][:, :, centre]
            ),
        }
    red = LIGHT_STATES.index("red")
    reds = light_truth == red
    return {
        "threshold": FLAG_THRESHOLD,
        "bev": bev,
        "light_accuracy": round(float((light_pred == light_truth).mean()), 4),
        "red_light_recall": round(float((light_pred[reds] == red).mean()), 4)
        if reds.any()
        else None,
    }


def span_metrics(
    span_pred: np.ndarray,
    span_truth: np.ndarray,
    bev_pred: np.ndarray,
    bev_truth: np.ndarray,
    grid: PerceptionConfig,
) -> dict[str, Any]:
    """span_pred / span_truth (N, classes, 2, rows, cols) fractions of the cell's width
    (`losses.bev_spans`); bev_pred / bev_truth bool (N, classes, rows, cols) -> per class,
    on the cells both predicted and truly occupied: the mean absolute error of the span's
    two edges [m] and how many cells that is."""
    width = grid.cell_size[1]
    out: dict[str, Any] = {}
    for c, name in enumerate(grid.bev_classes):
        both = bev_pred[:, c] & bev_truth[:, c]  # (N, rows, cols)
        pred = np.sort(span_pred[:, c], axis=1).transpose(0, 2, 3, 1)[both]  # (K, 2)
        truth = span_truth[:, c].transpose(0, 2, 3, 1)[both]
        out[name] = {
            "cells": int(both.sum()),
            "edge_mae_m": round(float(np.abs(pred - truth).mean() * width), 3)
            if len(pred)
            else None,
        }
    return out


def object_metrics(
    object_pred: np.ndarray,
    centre_truth: np.ndarray,
    box_truth: np.ndarray,
    grid: PerceptionConfig,
) -> dict[str, Any]:
    """The detection head (`agent.model.objects`): object_pred (N, classes, 7, rows, cols)
    its outputs, centre_truth (N, classes, rows, cols) {0, 1} and box_truth (N, classes, 6,
    rows, cols) from `object_targets` -> per class, the centre cells' precision / recall,
    the same within one cell (a predicted centre with a true one in its 3 x 3
    neighbourhood counts, and the other way round: a 4 m cell is a coarse depth bin for a
    camera), and on the cells both predicted and true the mean absolute error of the
    hull's edges [m] and of the velocity [m/s]."""
    cx, cy = grid.cell_size
    scale = np.array([cx, cx, cy, cy])[:, None]  # hull channels in cell sizes -> [m]
    out: dict[str, Any] = {"threshold": FLAG_THRESHOLD}
    for c, name in enumerate(grid.bev_classes):
        pred = object_pred[:, c, 0] >= 0.0  # logit 0 = probability FLAG_THRESHOLD (0.5)
        truth = centre_truth[:, c] > 0.5
        both = pred & truth  # (N, rows, cols)
        reg_pred = object_pred[:, c, 1:].transpose(1, 0, 2, 3)[:, both]  # (6, K)
        reg_truth = box_truth[:, c].transpose(1, 0, 2, 3)[:, both]
        err = np.abs(reg_pred.astype(np.float64) - reg_truth)
        found = bool(both.any())
        near_truth, near_pred = _neighbourhood(truth), _neighbourhood(pred)
        out[name] = {
            **{k: v for k, v in _prf(pred, truth).items() if k != "iou"},
            "precision_1cell": round(float((pred & near_truth).sum() / pred.sum()), 4)
            if pred.any()
            else None,
            "recall_1cell": round(float((truth & near_pred).sum() / truth.sum()), 4)
            if truth.any()
            else None,
            "edge_mae_m": round(float((err[:4] * scale).mean()), 3) if found else None,
            "velocity_mae_mps": round(float(err[4:].mean() * OBJECT_VELOCITY_SCALE_MPS), 3)
            if found
            else None,
        }
    return out


def _neighbourhood(cells: np.ndarray) -> np.ndarray:
    """(N, rows, cols) bool -> the cells with a set cell in their 3 x 3 neighbourhood."""
    padded = np.pad(cells, ((0, 0), (1, 1), (1, 1)))
    rows, cols = cells.shape[1:]
    out = np.zeros_like(cells)
    for dr in range(3):
        for dc in range(3):
            out |= padded[:, dr : dr + rows, dc : dc + cols]
    return out


def lane_metrics(lane_prob: np.ndarray, lanes: np.ndarray) -> dict[str, Any]:
    """The lane head: lane_prob / lanes (N, stations, columns) -> per column
    (`schema.LANE_COLUMNS`, all stations together) accuracy at FLAG_THRESHOLD, the
    majority-class accuracy to beat, precision and recall."""
    out: dict[str, Any] = {"threshold": FLAG_THRESHOLD}
    for c, name in enumerate(LANE_COLUMNS):
        pred, truth = lane_prob[:, :, c] >= FLAG_THRESHOLD, lanes[:, :, c].astype(bool)
        share = float(truth.mean())
        out[name] = {
            "accuracy": round(float((pred == truth).mean()), 4),
            "majority_accuracy": round(max(share, 1.0 - share), 4),
            **{k: v for k, v in _prf(pred, truth).items() if k != "iou"},
        }
    return out


@torch.no_grad()
def evaluate_open_loop(
    checkpoint: str | Path,
    data: str | Path,
    batch_size: int = 64,
    text_frames: int = 200,
    sources: tuple[str, ...] = ("vlm", "distilled"),
    seed: int = 0,
) -> dict[str, Any]:
    model, meta = load_drive_model(checkpoint)
    arrays = load_arrays(Path(data), model.cfg.encoder.history + 1, model.cfg.encoder.cameras)
    d = arrays.data
    n = len(arrays)
    reasoner = None
    if "vlm" in sources:
        from agent.reasoner.vlm import VLMReasoner

        reasoner = VLMReasoner.from_pretrained(Path(checkpoint) / VLM_DIR).eval()
    generator = torch.Generator().manual_seed(seed)
    results: dict[str, Any] = {"frames": n, "checkpoint": str(checkpoint), "data": str(data)}
    gt = d["trajectory"]
    grid = model.cfg.perception
    bev_prob = np.zeros((n, len(grid.bev_classes), *grid.bev_shape), dtype=np.float16)
    span_shape = (n, len(grid.bev_classes), 2, *grid.bev_shape)
    span_pred = np.zeros(span_shape, dtype=np.float32) if grid.bev_span else None
    light_pred = np.zeros(n, dtype=np.int64)
    object_pred = (
        np.zeros((n, len(grid.bev_classes), OBJECT_CHANNELS, *grid.bev_shape), np.float32)
        if grid.objects
        else None
    )
    # lane labels (datasets collected before the field have none: the head is not scored)
    lane_prob = (
        np.zeros(d["lanes"].shape, np.float32) if grid.lanes and d["lanes_known"].all() else None
    )
    for source in sources:
        chosen = np.zeros_like(gt)
        best_of_k = np.zeros(n)  # [m] the nearest candidate's error at 3 s
        flags = np.zeros((n, len(FLAGS)), dtype=bool)
        intent = np.zeros(n, dtype=np.int64)
        for i in range(0, n, batch_size):
            rows = np.arange(i, min(n, i + batch_size))
            frames = torch.from_numpy(d["image"][arrays.history[rows]])
            tokens, pooled = model.encoder(frames)
            heads = model.heads(tokens, pooled)
            bev_prob[rows] = torch.sigmoid(heads["bev"]).numpy()
            if span_pred is not None:
                span_pred[rows] = torch.sigmoid(heads["bev_span"]).numpy()
            if object_pred is not None:
                object_pred[rows] = heads["objects"].numpy()
            if lane_prob is not None:
                lane_prob[rows] = torch.sigmoid(heads["lanes"]).numpy()
            light_pred[rows] = heads["light"].argmax(-1).numpy()
            emb, flag_logits, intent_logits = heads["emb"], heads["flags"], heads["intent"]
            if source == "vlm":
                assert reasoner is not None
                out = reasoner(reasoner.encode(d["image"][rows, 0]))
                emb, flag_logits, intent_logits = out.embedding, out.flag_logits, out.intent_logits
            x = DriveInputs(
                frames=frames,
                speed_mps=torch.from_numpy(d["speed_mps"][rows]),
                command=torch.from_numpy(d["command"][rows]),
                target_point=torch.from_numpy(d["target_point"][rows]),
                reasoning=emb,
            )
            plan = model.from_tokens(
                tokens, pooled, x, sample=True, generator=generator, heads=heads
            ).plan
            chosen[rows] = plan.best()[0].numpy()
            at_3s = plan.trajectories.numpy()[:, :, pose_index(3.0)]  # (B, K, 2)
            truth = gt[rows, None, pose_index(3.0)]
            best_of_k[rows] = np.linalg.norm(at_3s - truth, axis=-1).min(-1)
            flags[rows] = (torch.sigmoid(flag_logits) >= FLAG_THRESHOLD).numpy()
            intent[rows] = intent_logits.argmax(-1).numpy()
        err = np.linalg.norm(chosen - gt, axis=-1)  # (N, T)
        l2 = {}
        for h in HORIZONS_S:
            k = pose_index(h)
            l2[f"L2@{h:g}s"] = round(float(err[:, k].mean()), 4)
            l2[f"L2avg@{h:g}s"] = round(float(err[:, : k + 1].mean()), 4)
        # Best of K (minFDE at 3 s): how near the nearest candidate comes. Small under a
        # large L2@3s: the scores pick the wrong candidate; large: no candidate is right.
        l2["minL2@3s"] = round(float(best_of_k.mean()), 4)
        obstacles = torch.from_numpy(d["obstacles"])
        mask = torch.from_numpy(d["obstacle_mask"])
        pen_pred = box_penetration(torch.from_numpy(chosen), obstacles, mask).amax(dim=(1, 2))
        pen_gt = box_penetration(torch.from_numpy(gt), obstacles, mask).amax(dim=(1, 2))
        collisions = (pen_pred > 0) & (pen_gt <= 0)
        results[source] = {
            **l2,
            "collision_rate": round(float(collisions.float().mean()), 4),
            "flags": flag_metrics(flags, d["flags"], d["episode"], d.get("flag_distance_m")),
            "intent_accuracy": round(float((intent == d["intent"]).mean()), 4),
        }
    bev_pred = bev_prob >= FLAG_THRESHOLD
    bev_truth = np.zeros_like(bev_pred)
    span_truth = None if span_pred is None else np.zeros_like(span_pred)
    for i in range(0, n, 512):
        block = slice(i, min(n, i + 512))
        boxes = torch.from_numpy(d["obstacles"][block])
        box_mask = torch.from_numpy(d["obstacle_mask"][block])
        bev_truth[block] = bev_targets(grid, boxes, box_mask).numpy() > 0.5
        if span_truth is not None:
            span_truth[block] = bev_spans(grid, boxes, box_mask).numpy()
    results["perception"] = perception_metrics(
        bev_pred, bev_truth, light_pred, d["light_state"], grid
    )
    if span_pred is not None and span_truth is not None:
        results["perception"]["span"] = span_metrics(
            span_pred, span_truth, bev_pred, bev_truth, grid
        )
    if object_pred is not None:
        centre_truth = np.zeros(object_pred[:, :, 0].shape, np.float32)
        box_truth = np.zeros_like(object_pred[:, :, 1:])
        for i in range(0, n, 512):
            block = slice(i, min(n, i + 512))
            centre, boxes = object_targets(
                grid,
                torch.from_numpy(d["obstacles"][block]),
                torch.from_numpy(d["obstacle_mask"][block]),
            )
            centre_truth[block], box_truth[block] = centre.numpy(), boxes.numpy()
        results["perception"]["objects"] = object_metrics(
            object_pred, centre_truth, box_truth, grid
        )
    if lane_prob is not None:
        results["perception"]["lanes"] = lane_metrics(lane_prob, d["lanes"])
    results["perception"]["guard_checks"] = guard_checks(
        d, bev_prob, span_pred, bev_truth, span_truth, grid
    )
    if reasoner is not None and text_frames > 0:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(n, size=min(n, text_frames), replace=False))
        texts: list[str] = []
        for i in range(0, len(rows), 32):
            texts += reasoner.generate_text(d["image"][rows[i : i + 32], 0])
        refs = [str(t) for t in d["text"][rows]]
        scores = [rouge_l(a, b) for a, b in zip(texts, refs, strict=True)]
        results["vlm"]["text"] = {
            "frames": len(rows),
            "rouge_l_f1": round(float(np.mean(scores)), 4),
            "exact_match": round(
                float(np.mean([a.strip() == b.strip() for a, b in zip(texts, refs, strict=True)])),
                4,
            ),
            "examples": [
                {"generated": a, "reference": b} for a, b in list(zip(texts, refs, strict=True))[:5]
            ],
        }
    results["intents"] = list(INTENTS)
    return results


def guard_checks(
    d: dict[str, np.ndarray],
    bev_prob: np.ndarray,
    span_pred: np.ndarray | None,
    bev_truth: np.ndarray,
    span_truth: np.ndarray | None,
    grid: PerceptionConfig,
    frames: int = GUARD_FRAMES,
    thresholds: tuple[float, ...] = GUARD_THRESHOLDS,
) -> dict[str, Any]:
    """The safety guard's path checks (default `GuardConfig`) replayed on up to `frames`
    evenly spaced frames (`agent.safety.offline.plan_check_rates`): on the model's heads
    (`bev_prob`: occupancy probabilities) with cells occupied from the guard view's
    `occupancy_threshold` ("model") and from each of `thresholds` ("model_by_threshold"),
    and on ground truth in the same representation (cells, with spans when the model has
    them): what the grid could give the guard at best."""
    n = len(bev_prob)
    rows = np.unique(np.linspace(0, n - 1, min(n, frames)).astype(int))
    guard = SafetyGuard(GuardConfig(), grid)
    frame_args = tuple(
        d[k][rows]
        for k in ("speed_mps", "target_point", "trajectory", "obstacles", "obstacle_mask")
    )

    def rates(occupancy: np.ndarray, span: np.ndarray | None) -> dict[str, Any]:
        return plan_check_rates(
            guard,
            occupancy[rows].astype(np.float64),
            None if span is None else span[rows],
            *frame_args,
        )

    default = guard.config.view.occupancy_threshold
    by_threshold = {  # the guard's own threshold is replayed once, with the others
        f"{t:g}": rates(bev_prob >= t, span_pred) for t in sorted({*thresholds, default})
    }
    return {
        "model": by_threshold[f"{default:g}"],
        "model_threshold": default,
        "model_by_threshold": by_threshold,
        "ground_truth": rates(bev_truth, span_truth),
    }
