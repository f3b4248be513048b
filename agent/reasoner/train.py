"""Stage 1: train the VLM reasoner (from scratch for the tiny VLM, or its LoRA adapters).

Each step samples `batch_size` frames; each frame contributes one sequence, the caption with
probability `caption_fraction`, otherwise one of its QA pairs (`agent.reasoner.qa`). Loss:

  total = lm + BCE(flag_logits, flags) + CE(intent_logits, intent)

with lm averaged over all answer tokens of the batch, and the two head losses over the
caption rows only: the heads are used at inference with the caption prompt, and their input
(pooled image + prompt states) depends on the prompt.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from agent.data.schema import FLAGS, INTENTS
from agent.reasoner.qa import SAMPLES_PER_FRAME, frame_samples
from agent.reasoner.vlm import VLMReasoner

LogFn = Callable[[str, float, int], None]  # (name, value, step), e.g. ("losses/lm", 1.2, 100)

WARMUP_STEPS = 20  # linear learning-rate warm-up, then cosine decay to 10 %
FINAL_WINDOW = 20  # the returned losses are means over the last steps


def _lr_factor(step: int, steps: int) -> float:
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_vlm(
    reasoner: VLMReasoner,
    images: np.ndarray,
    texts: Sequence[str] | np.ndarray,
    flags: np.ndarray,
    intent: np.ndarray,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    log: LogFn | None = None,
    caption_fraction: float = 0.5,
    weight_decay: float = 0.01,
    grad_clip: float = 1.0,
    flag_weight: torch.Tensor | None = None,
) -> dict[str, float]:
    """Train the reasoner's trainable parameters in place with AdamW.

    images: (N, H, W, 3) uint8 BGR (camera 0); texts: (N,) reasoning strings;
    flags: (N, F) bool; intent: (N,) int index into INTENTS; flag_weight: (F,) BCE
    positive weights (rare flags, see agent.model.losses.flag_pos_weight).
    Returns the losses ("lm", "flags", "intent", "total") averaged over the last
    `FINAL_WINDOW` steps, and "steps_per_s". `log` receives "losses/*" every step and
    "charts/steps_per_s" at the end. Leaves the reasoner in eval mode.
    """
    images = np.asarray(images)
    n = len(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"`images` must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
    flags = np.asarray(flags)
    intent = np.asarray(intent)
    if len(texts) != n:
        raise ValueError(f"`texts` must have {n} entries, got {len(texts)}")
    if flags.shape != (n, len(FLAGS)):
        raise ValueError(f"`flags` must have shape ({n}, {len(FLAGS)}), got {flags.shape}")
    if intent.shape != (n,) or n and not (0 <= intent.min() and intent.max() < len(INTENTS)):
        raise ValueError(f"`intent` must be ({n},) ints in [0, {len(INTENTS)}), got {intent.shape}")
    if n == 0 or steps <= 0 or batch_size <= 0:
        raise ValueError(
            f"need frames, `steps` > 0 and `batch_size` > 0, got N={n}, {steps}, {batch_size}"
        )
    if not 0.0 <= caption_fraction <= 1.0:
        raise ValueError(f"`caption_fraction` must be in [0, 1], got {caption_fraction}")

    images = reasoner.resize_for_model(images)  # once, not per step
    samples = [frame_samples(str(texts[i]), flags[i], int(intent[i])) for i in range(n)]
    flags_t = torch.as_tensor(flags, dtype=torch.float32)
    intent_t = torch.as_tensor(intent, dtype=torch.long)
    rng = np.random.default_rng(seed)

    params = [p for p in reasoner.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the reasoner has no trainable parameters (frozen?)")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, steps))
    history: dict[str, list[float]] = {"lm": [], "flags": [], "intent": [], "total": []}
    reasoner.train()
    t0 = time.perf_counter()
    every = max(1, steps // 10)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(steps):
            idx = rng.choice(n, size=batch_size, replace=n < batch_size)
            caption = rng.random(batch_size) < caption_fraction
            pick = np.where(caption, 0, rng.integers(1, SAMPLES_PER_FRAME, size=batch_size))
            pairs = [samples[i][k] for i, k in zip(idx, pick, strict=True)]
            batch = reasoner.encode(images[idx], [p for p, _ in pairs], [t for _, t in pairs])
            out = reasoner(batch)
            if out.lm_loss is None:  # cannot happen: targets were given
                raise RuntimeError("the reasoner returned no LM loss for a batch with targets")
            rows = torch.as_tensor(caption)
            zero = out.lm_loss.new_zeros(())
            if rows.any():
                ix = torch.as_tensor(idx)[rows]
                flag_loss = F.binary_cross_entropy_with_logits(
                    out.flag_logits[rows], flags_t[ix], pos_weight=flag_weight
                )
                intent_loss = F.cross_entropy(out.intent_logits[rows], intent_t[ix])
            else:
                flag_loss = intent_loss = zero
            loss = out.lm_loss + flag_loss + intent_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            sched.step()
            values = {
                "lm": out.lm_loss.item(),
                "flags": flag_loss.item(),
                "intent": intent_loss.item(),
                "total": loss.item(),
            }
            for key, value in values.items():
                history[key].append(value)
                if log is not None:
                    log(f"losses/{key}", value, step)
            if progress and (step % every == 0 or step == steps - 1):
                rate = (step + 1) / (time.perf_counter() - t0)
                print(
                    f"reasoner step {step + 1}/{steps}  lm {values['lm']:.3f}  "
                    f"flags {values['flags']:.3f}  intent {values['intent']:.3f}  "
                    f"({rate:.2f} steps/s)",
                    file=sys.stderr,
                )
    reasoner.eval()
    steps_per_s = steps / (time.perf_counter() - t0)
    if log is not None:
        log("charts/steps_per_s", steps_per_s, steps)
    result = {key: float(np.mean(vals[-FINAL_WINDOW:])) for key, vals in history.items()}
    result["steps_per_s"] = steps_per_s
    return result
