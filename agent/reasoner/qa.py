"""DriveLM-style training samples from the automatic labels: a small, regular language.

Per frame, `SAMPLES_PER_FRAME` (prompt, target) pairs, always in this order:
  0. the caption: `CAPTION_PROMPT` -> the reasoning text of the frame;
  1. "What should the car do?" -> the intent in words (`INTENT_WORDS`);
  2. "Which hazards are present?" -> the set flags in words, comma-separated, or "none";
  3... one yes/no question per flag, in FLAGS order (`FLAG_QUESTIONS`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from agent.data.schema import FLAGS, INTENTS

CAPTION_PROMPT = "Describe the driving scene: conditions, hazard, distance and action."
INTENT_PROMPT = "What should the car do?"
HAZARDS_PROMPT = "Which hazards are present?"

FLAG_QUESTIONS: dict[str, str] = {
    "construction": "Is there construction ahead?",
    "lane_closed": "Is the lane closed ahead?",
    "pedestrian_crossing": "Is a pedestrian crossing ahead?",
    "cut_in": "Is a vehicle cutting in?",
    "lead_braking": "Is the lead vehicle braking?",
    "red_light": "Is the light red ahead?",
    "obstacle": "Is the route blocked by an obstacle?",
    "rain": "Is it raining?",
    "fog": "Is it foggy?",
    "night": "Is it night?",
    "glare": "Is there sun glare?",
}
FLAG_WORDS: dict[str, str] = {
    "construction": "construction",
    "lane_closed": "closed lane",
    "pedestrian_crossing": "crossing pedestrian",
    "cut_in": "cut-in",
    "lead_braking": "braking lead",
    "red_light": "red light",
    "obstacle": "obstacle",
    "rain": "rain",
    "fog": "fog",
    "night": "night",
    "glare": "glare",
}
INTENT_WORDS: dict[str, str] = {
    "keep_lane": "keep the lane",
    "slow_down": "slow down",
    "stop": "stop",
    "change_left": "change to the left lane",
    "change_right": "change to the right lane",
    "pass_opposite": "pass using the oncoming lane",
    "yield": "yield",
}
if not set(FLAG_QUESTIONS) == set(FLAGS) == set(FLAG_WORDS) or set(INTENT_WORDS) != set(INTENTS):
    raise RuntimeError("agent.reasoner.qa: vocabulary out of date with agent.data.schema")

SAMPLES_PER_FRAME = 3 + len(FLAGS)


def frame_samples(
    text: str, flags: Sequence[bool] | np.ndarray, intent: int
) -> list[tuple[str, str]]:
    """The `SAMPLES_PER_FRAME` (prompt, target) pairs of one frame (order: module docstring)."""
    flags = np.asarray(flags, dtype=bool)
    if flags.shape != (len(FLAGS),):
        raise ValueError(f"`flags` must have shape ({len(FLAGS)},), got {flags.shape}")
    if not 0 <= int(intent) < len(INTENTS):
        raise ValueError(f"`intent` must be in [0, {len(INTENTS)}), got {intent}")
    present = [FLAG_WORDS[name] for name, on in zip(FLAGS, flags, strict=True) if on]
    samples = [
        (CAPTION_PROMPT, str(text).strip()),
        (INTENT_PROMPT, INTENT_WORDS[INTENTS[int(intent)]]),
        (HAZARDS_PROMPT, ", ".join(present) if present else "none"),
    ]
    samples += [
        (FLAG_QUESTIONS[name], "yes" if on else "no") for name, on in zip(FLAGS, flags, strict=True)
    ]
    return samples


def training_samples(
    texts: Sequence[str] | np.ndarray, flags: np.ndarray, intent: np.ndarray
) -> list[tuple[str, str]]:
    """All (prompt, target) pairs, frame-major: sample k belongs to frame k // SAMPLES_PER_FRAME.

    texts: (N,) reasoning strings; flags: (N, F) bool; intent: (N,) int index into INTENTS.
    """
    flags = np.asarray(flags)
    intent = np.asarray(intent)
    n = len(texts)
    if flags.shape != (n, len(FLAGS)):
        raise ValueError(f"`flags` must have shape ({n}, {len(FLAGS)}), got {flags.shape}")
    if intent.shape != (n,):
        raise ValueError(f"`intent` must have shape ({n},), got {intent.shape}")
    out: list[tuple[str, str]] = []
    for i in range(n):
        out += frame_samples(str(texts[i]), flags[i], int(intent[i]))
    return out


def template_texts() -> Iterable[str]:
    """Every fixed prompt and answer of the language (for training the tokenizer)."""
    yield CAPTION_PROMPT
    yield INTENT_PROMPT
    yield HAZARDS_PROMPT
    yield from FLAG_QUESTIONS.values()
    yield from FLAG_WORDS.values()
    yield from INTENT_WORDS.values()
    yield from ("yes", "no", "none")
