"""A minimal Leaderboard agent around the learned model (issue 5): camera -> model ->
the planner's highest-scoring trajectory -> the project's PID (`sim.tracking`).

No safety layer yet (that agent is agent/leaderboard_agent.py, issue 6). Its inference
path sees Leaderboard sensor data only: the front camera, GNSS + IMU (for the route
planner's target point and command) and the speedometer.

Per 20 Hz tick: the camera frame is encoded once; the features of the frame 10 ticks
(0.5 s) earlier are reused from a ring buffer as the history step, exactly the spacing the
model was trained with. The reasoner (VLM) runs as configured:
- `off`: no reasoning token (the planner's learned "no reasoning" embedding);
- `async`: the VLM runs in the background at `vlm_rate_hz`; the last result is used;
- `sync`: the VLM runs inside run_step at `vlm_rate_hz` (slow; for analysis);
In both, `vlm_worker: process` (default) serves the VLM from a child process
(agent/reasoner/process.py) so its `generate` loop never holds the control step's GIL;
`thread` keeps it in this process (one process less, a slower control step).
- `distilled`: the model's distillation head predicts the VLM embedding and flags from
  the visual features; the VLM is not loaded.

Agent config (YAML, every key optional, unknown keys rejected):
    checkpoint: checkpoints/vlmdrive-tiny
    vlm_mode: distilled          # off | async | sync | distilled
    vlm_rate_hz: 2.0             # [Hz] reasoning rate in async / sync mode
    vlm_latency_s: null          # [s] async only: reasonings land this much game time after
                                 # their image (reproducible scores); null: wall clock
    vlm_worker: process          # process | thread: where the VLM runs (async / sync)
    vlm_threads: 1               # torch threads of the VLM child process
    threads: 1                   # torch threads of the control step
    seed: 0                      # diffusion noise
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from agent.data.schema import FLAGS, INTENTS
from agent.model.checkpoint import VLM_DIR, load_drive_model
from agent.model.config import PerceptionConfig
from agent.model.drive_model import DriveInputs, DriveModel
from agent.model.inference import prepare_for_inference
from agent.model.objects import decode_objects
from agent.navigation import RoutePlanner
from agent.safety.perception_view import PerceivedObjects
from scenarios.loader import load_typed_yaml
from sim.agent_loading import AutonomousAgent, Track
from sim.control import VehicleControl
from sim.sensors import default_sensor_suite
from sim.tracking import WaypointTracker

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "vlmdrive-tiny"
TICKS_PER_HISTORY_STEP = 10  # 0.5 s at 20 Hz: the dataset's frame spacing
FLAG_THRESHOLD = 0.5
OBJECT_THRESHOLD = 0.5  # [-] default: a detection cell at or above holds an object


def get_entry_point() -> str:
    return "ModelAgent"


@dataclass(frozen=True)
class ModelStep:
    """What the model produced on one tick; ego frame [m], x forward, y left.

    trajectory (T, 2) the highest-scoring mode; candidates (K, T, 2) and scores (K,)
    probabilities; confidence = the chosen mode's probability; bev_probs (classes, rows,
    cols) occupancy probabilities (PerceptionConfig grid); light_probs (LIGHT_STATES,);
    flag_probs (FLAGS,) and intent_probs (INTENTS,) from the reasoning source in use; target
    points from navigation; bev_span (classes, 2, rows, cols) where across each cell its
    objects lie (fractions of the cell's width), None for a model without the span head;
    objects: the detection head's boxes at `ModelAgentConfig.object_threshold`
    (`agent.model.objects`), None without the head; lane_probs (stations, columns) the
    lanes beside the route (`schema.LANE_COLUMNS`), None without the lane head.
    """

    trajectory: np.ndarray
    candidates: np.ndarray
    scores: np.ndarray
    confidence: float
    bev_probs: np.ndarray
    light_probs: np.ndarray
    flag_probs: np.ndarray
    intent: str
    intent_probs: np.ndarray  # (INTENTS,) from the reasoning source in use
    target_point: np.ndarray
    next_target_point: np.ndarray
    bev_span: np.ndarray | None = None
    objects: PerceivedObjects | None = None
    lane_probs: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.trajectory.ndim != 2 or self.trajectory.shape[1] != 2:
            raise ValueError(f"ModelStep.trajectory must be (T, 2), got {self.trajectory.shape}")
        if self.candidates.ndim != 3 or self.candidates.shape[0] != len(self.scores):
            raise ValueError(
                f"ModelStep.candidates must be (K, T, 2) with K = len(scores) "
                f"({len(self.scores)}), got {self.candidates.shape}"
            )
        if self.flag_probs.shape != (len(FLAGS),):
            raise ValueError(
                f"ModelStep.flag_probs must be ({len(FLAGS)},), got {self.flag_probs.shape}"
            )


def latency_needs_async(value: float | None, info: ValidationInfo) -> float | None:
    """`vlm_latency_s` is a property of the async runtime; elsewhere it would be ignored."""
    mode = info.data.get("vlm_mode")
    if value is not None and mode != "async":
        raise ValueError(f"applies to vlm_mode 'async' only (vlm_mode is {mode!r})")
    return value


class ModelAgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: Path = DEFAULT_CHECKPOINT
    vlm_mode: Literal["off", "async", "sync", "distilled"] = "distilled"
    vlm_path: Path | None = None  # a local HF VLM directory; default <checkpoint>/vlm
    vlm_rate_hz: float = Field(2.0, gt=0)
    # Async only: model the VLM's latency in game time (agent.reasoner.runtime, "Reproducible
    # async") so an evaluation scores the same on every run; None runs on the wall clock.
    vlm_latency_s: float | None = Field(None, gt=0, lt=2.0)

    @field_validator("vlm_latency_s")
    @classmethod
    def _latency_needs_async(cls, value: float | None, info: ValidationInfo) -> float | None:
        return latency_needs_async(value, info)

    vlm_worker: Literal["process", "thread"] = "process"
    vlm_threads: int = Field(1, ge=1)  # torch threads of the VLM child process
    device: str = "cpu"  # torch device of the driving model ("cpu", "cuda", "cuda:1"...)
    threads: int = Field(1, ge=1)
    seed: int = 0
    # [-] a detection-head cell whose centre probability reaches this holds an object box
    # (a model with `perception.objects` only). Higher: fewer phantom boxes, more missed.
    object_threshold: float = Field(OBJECT_THRESHOLD, gt=0.0, lt=1.0)


def perceived_objects(
    logits: np.ndarray, grid: PerceptionConfig, threshold: float = OBJECT_THRESHOLD
) -> PerceivedObjects:
    """One frame's detection-head output (classes, OBJECT_CHANNELS, R, C) -> the boxes the
    guard plans from (`agent.model.objects`): axis-aligned (yaw 0), ids the cells' (stable
    while the object stays in its cell, as the grid's are)."""
    xy, size, velocity, kinds, ids, _ = decode_objects(logits, grid, threshold)
    return PerceivedObjects(xy, size, np.zeros(len(kinds)), velocity, kinds, ids)


class ModelDriver:
    """The model's inference path for one route: sensor data -> (control, trajectory)."""

    def __init__(self, config: ModelAgentConfig) -> None:
        self.config = config
        torch.set_num_threads(config.threads)
        self.model: DriveModel
        self.model, self.meta = load_drive_model(config.checkpoint)
        prepare_for_inference(self.model)  # BN folded, channels-last backbone (same outputs)
        try:
            self.device = torch.device(config.device)
            self.model.to(self.device)
        except (RuntimeError, AssertionError) as exc:  # e.g. "cuda" on a CPU-only torch
            raise ValueError(f"device: cannot use {config.device!r} here ({exc})") from None
        self.steps = self.model.cfg.encoder.history + 1
        self.tracker = WaypointTracker()
        self.route = RoutePlanner()
        self.generator = torch.Generator().manual_seed(config.seed)
        self.features: deque[torch.Tensor] = deque(
            maxlen=TICKS_PER_HISTORY_STEP * (self.steps - 1) + 1
        )
        self.runtime = None
        self.vlm_process = None  # the ProcessReasoner, closed with the runtime
        if config.vlm_mode in ("async", "sync"):
            from agent.reasoner.runtime import ReasonerRuntime
            from agent.reasoner.types import ReasoningModel

            vlm_dir = config.vlm_path or Path(config.checkpoint) / VLM_DIR
            vlm: ReasoningModel
            if config.vlm_worker == "process":
                from agent.reasoner.process import ProcessReasoner

                if not Path(vlm_dir).is_dir():  # fail here, before a child process starts
                    raise FileNotFoundError(
                        f"vlm_path: reasoner directory {str(vlm_dir)!r} does not exist"
                    )
                vlm = self.vlm_process = ProcessReasoner(vlm_dir, threads=config.vlm_threads)
            else:
                from agent.reasoner.vlm import VLMReasoner

                vlm = VLMReasoner.from_pretrained(vlm_dir).eval()
            self.runtime = ReasonerRuntime(
                vlm,
                config.vlm_mode,
                rate_hz=config.vlm_rate_hz,
                latency_s=config.vlm_latency_s,
            )
        self.tick = 0
        self.trajectory: np.ndarray | None = None
        self.candidates: np.ndarray | None = None
        self.confidence = 0.0
        self.reasoning_text = ""
        self.flags: tuple[str, ...] = ()
        self.intent = ""

    def set_route(self, global_plan_gps: list) -> None:
        self.route.set_route(global_plan_gps)

    @torch.no_grad()
    def infer(
        self,
        image_bgr: np.ndarray,
        speed_mps: float,
        gnss: np.ndarray,
        compass: float,
        time_s: float,
    ) -> ModelStep:
        """One tick of the model: sensors -> candidates, perception, reasoning."""
        nav = self.route.update(gnss, compass)
        frame = torch.from_numpy(np.ascontiguousarray(image_bgr))[None, None].to(self.device)
        current = self.model.encoder.encode_frames(frame)  # (1, C, h*w, d)
        self.features.append(current)
        history = [
            self.features[max(0, len(self.features) - 1 - TICKS_PER_HISTORY_STEP * k)]
            for k in range(self.steps - 1, 0, -1)
        ]
        tokens, pooled = self.model.encoder.assemble(torch.stack([*history, current], dim=1))
        heads = self.model.heads(tokens, pooled)
        reasoning, flags, intent = self._reasoning(image_bgr, heads, time_s)
        x = DriveInputs(
            frames=frame[:, None],
            speed_mps=torch.tensor([speed_mps], dtype=torch.float32, device=self.device),
            command=torch.tensor([nav.command], device=self.device),
            target_point=torch.from_numpy(np.asarray(nav.target_point, dtype=np.float32))[None].to(
                self.device
            ),
            reasoning=None if reasoning is None else reasoning.to(self.device),
        )
        out = self.model.from_tokens(
            tokens, pooled, x, sample=True, generator=self.generator, heads=heads
        )
        chosen, prob = out.plan.best()
        self.trajectory = chosen[0].cpu().numpy().astype(np.float64)
        self.candidates = out.plan.trajectories[0].cpu().numpy()
        self.confidence = float(prob[0])
        self.flags = tuple(f for f, p in zip(FLAGS, flags, strict=True) if p >= FLAG_THRESHOLD)
        self.intent = INTENTS[int(np.argmax(intent))]
        self.tick += 1
        return ModelStep(
            trajectory=self.trajectory,
            candidates=self.candidates,
            scores=out.plan.scores[0].softmax(-1).cpu().numpy(),
            confidence=self.confidence,
            bev_probs=torch.sigmoid(out.bev_logits[0]).cpu().numpy(),
            light_probs=out.light_logits[0].softmax(-1).cpu().numpy(),
            flag_probs=np.asarray(flags, dtype=np.float32),
            intent=self.intent,
            intent_probs=np.asarray(intent, dtype=np.float32),
            target_point=np.asarray(nav.target_point, dtype=np.float64),
            next_target_point=np.asarray(nav.next_target_point, dtype=np.float64),
            bev_span=None
            if out.bev_span_logits is None
            else torch.sigmoid(out.bev_span_logits[0]).cpu().numpy(),
            objects=None
            if out.object_logits is None
            else perceived_objects(
                out.object_logits[0].cpu().numpy(),
                self.model.cfg.perception,
                self.config.object_threshold,
            ),
            lane_probs=None
            if out.lane_logits is None
            else torch.sigmoid(out.lane_logits[0]).cpu().numpy(),
        )

    def step(
        self,
        image_bgr: np.ndarray,
        speed_mps: float,
        gnss: np.ndarray,
        compass: float,
        time_s: float,
    ) -> VehicleControl:
        """`infer`, then track the highest-scoring trajectory with the PID."""
        model_step = self.infer(image_bgr, speed_mps, gnss, compass, time_s)
        return self.tracker.control(model_step.trajectory, speed_mps)

    def _reasoning(self, image_bgr: np.ndarray, heads: dict[str, torch.Tensor], time_s: float):
        """(embedding (1, E) or None, flag probabilities (F,), intent probabilities (I,))."""
        emb = heads["emb"]
        flags = torch.sigmoid(heads["flags"][0]).cpu().numpy()
        intent = heads["intent"][0].softmax(-1).cpu().numpy()
        mode = self.config.vlm_mode
        if mode == "distilled":
            self.reasoning_text = "(distilled) " + ", ".join(
                f for f, p in zip(FLAGS, flags, strict=True) if p >= FLAG_THRESHOLD
            )
            return emb, flags, intent
        if self.runtime is None:  # off
            return None, flags, intent
        self.runtime.submit(image_bgr, self.tick, time_s)
        latest = self.runtime.latest()
        if latest is None:
            return None, flags, intent
        self.reasoning_text = latest.text
        return torch.from_numpy(latest.embedding)[None], latest.flags, latest.intent

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None
        if self.vlm_process is not None:
            self.vlm_process.close()
            self.vlm_process = None


class ModelAgent(AutonomousAgent):
    """Leaderboard agent: see the module docstring."""

    def setup(self, path_to_conf_file: str) -> None:
        self.track = Track.SENSORS
        if path_to_conf_file and Path(path_to_conf_file).is_file():
            self.config = load_typed_yaml(path_to_conf_file, ModelAgentConfig, "agent config")
        else:
            self.config = ModelAgentConfig.model_validate({})
        self.driver = ModelDriver(self.config)
        plan = getattr(self, "_global_plan", None)
        if plan:
            self.driver.set_route(plan)
        self.planned_trajectory: np.ndarray | None = None

    def sensors(self) -> list[dict]:
        return default_sensor_suite()

    def run_step(self, input_data: dict, timestamp: float):
        image = input_data["rgb_front"][1][:, :, :3]
        speed = float(input_data["speedometer"][1]["speed"])
        gnss = np.asarray(input_data["gps"][1], dtype=np.float64)
        compass = float(np.asarray(input_data["imu"][1])[-1])
        control = self.driver.step(image, speed, gnss, compass, float(timestamp))
        self.planned_trajectory = self.driver.trajectory
        self.reasoning_text = self.driver.reasoning_text
        return control

    def destroy(self) -> None:
        if hasattr(self, "driver"):
            self.driver.close()
