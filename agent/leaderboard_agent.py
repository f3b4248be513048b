"""The vlmdrive Leaderboard agent: camera -> model -> safety guard -> PID -> control.

This is the file users hand to CARLA's `leaderboard_evaluator.py` (`--agent`) and to
`vlmdrive eval --agent`. Per 20 Hz tick:

    input_data (rgb_front, gps, imu, speedometer)        Leaderboard formats
      -> ModelDriver.infer      encoder, reasoning (VLM / distilled), diffusion planner,
                                perception heads (BEV occupancy, light, flags)
      -> SafetyGuard.check      accepts the planner's trajectory, slows it to a cap, or
                                replaces it with the rules' plan on the perceived view or an
                                emergency stop; returns the reason code
      -> WaypointTracker        lateral + longitudinal PID (sim/tracking.py)
      -> carla.VehicleControl   (our VehicleControl when `carla` is not installed)

No exception escapes `run_step`: a model that raises is an emergency stop (MODEL_ERROR, the
error logged and kept in `last_error`); a missing camera frame skips the model and the
guard stops (CAMERA_MISSING). An emergency stop is a full brake (throttle 0, brake 1),
not a zero trajectory through the PID, which brakes in proportion to the speed. Guard decisions
are counted per route in `interventions` (ticks, interventions, one count per reason code),
which `vlmdrive eval` writes into the results' details and report.

Base class: CARLA's `leaderboard.autoagents.autonomous_agent.AutonomousAgent` when a
Leaderboard checkout is importable, else the API-identical one in `sim.agent_loading`.
Lifecycle: the Leaderboard calls `set_global_plan` before `setup` and makes a new
instance per route; both orders are handled.

Agent config (YAML, every key optional, unknown keys rejected with file:line):

    checkpoint: checkpoints/vlmdrive-tiny   # the driving model
    vlm_mode: distilled                     # off | async | sync | distilled
    vlm_path: null                          # local HF VLM directory (default <checkpoint>/vlm)
    vlm_rate_hz: 2.0                        # [Hz] reasoning rate (async / sync)
    vlm_latency_s: null                     # [s] async: game-time VLM latency (reproducible)
    vlm_worker: process                     # process | thread: where the VLM runs
    vlm_threads: 1                          # torch threads of the VLM process
    device: cpu                             # torch device of the driving model
    threads: 1                              # torch threads of the control step
    seed: 0                                 # diffusion noise
    object_threshold: 0.5                   # detection head: a box at this probability
    planner: model                          # expert: the rules' plan on ground truth, an
                                            # ablation (embedded simulator only)
    safety:
      enabled: true                         # false: the planner drives unguarded
      perception: model                     # model_grid: the grid heads alone (a
                                            # model's detection / lane heads ignored);
                                            # ground_truth[_span|_boxes|_lanes|
                                            # _boxes_lanes|_view]: perfect heads (+ spans
                                            # | object boxes | lanes | both | the
                                            # expert's whole view), an ablation
                                            # (embedded simulator only)
      guard: {confidence_threshold: 0.1, ttc_threshold_s: 0.8, ...}  # agent/safety/guard.py

Running it in CARLA's own Leaderboard: docs/leaderboard_agent.md.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.expert import ExpertDriver, ExpertObservation
from agent.model.config import ModelConfig, PerceptionConfig
from agent.model_agent import (
    DEFAULT_CHECKPOINT,
    OBJECT_THRESHOLD,
    ModelAgentConfig,
    ModelDriver,
    ModelStep,
    latency_needs_async,
)
from agent.safety import (
    GuardConfig,
    GuardInputs,
    InterventionCounter,
    PerceptionOutputs,
    ReasonCode,
    SafetyGuard,
    VLMHealth,
    VLMWatch,
    frame_digest,
    route_from_targets,
)
from agent.safety.decision import GuardDecision
from agent.safety.ground_truth_perception import GroundTruthPerception
from scenarios.loader import load_typed_yaml
from sim.agent_loading import AutonomousAgent, Track
from sim.carla_compat import carla_available, to_carla_control
from sim.control import VehicleControl
from sim.data_provider import DataProvider
from sim.sensors import default_sensor_suite

log = logging.getLogger(__name__)

CAMERA_ID = "rgb_front"  # the default sensor suite's front camera (sim/sensors.py)


MODEL_PERCEPTION = ("model", "model_grid")  # safety.perception values from the model's heads


def get_entry_point() -> str:
    return "VLMDriveAgent"


class SafetyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    guard: GuardConfig = GuardConfig()
    # What the guard perceives with: the model's heads (with its detection and lane heads,
    # if it has them: `PerceptionConfig.objects` / `.lanes`); `model_grid`: the model's
    # grid heads alone, its detection and lane heads ignored (what they add, measured on
    # one checkpoint; runs anywhere); or (an ablation on the embedded simulator only)
    # perfect heads from ground truth (agent/safety/ground_truth_perception.py)
    # - ground_truth: the heads (grid occupancy, light, flags, intent);
    # - ground_truth_span: + where across each cell its objects lie;
    # - ground_truth_boxes: + exact object boxes with velocities on the grid's extent,
    #   which replace the cells in the guard's view (lanes, stop lines stay guessed);
    # - ground_truth_lanes: the heads + the lanes beside the route (the cells stay);
    # - ground_truth_boxes_lanes: the boxes and the lanes;
    # - ground_truth_view: the heads, and the expert's whole view (boxes, lanes, stop lines,
    #   route) instead of the one the guard builds (see `_Ablation`).
    perception: Literal[
        "model",
        "model_grid",
        "ground_truth",
        "ground_truth_span",
        "ground_truth_boxes",
        "ground_truth_lanes",
        "ground_truth_boxes_lanes",
        "ground_truth_view",
    ] = "model"


class AgentConfig(BaseModel):
    """The agent's YAML config (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: Path = DEFAULT_CHECKPOINT
    vlm_mode: Literal["off", "async", "sync", "distilled"] = "distilled"
    vlm_path: Path | None = None
    vlm_rate_hz: float = Field(2.0, gt=0)
    vlm_latency_s: float | None = Field(None, gt=0, lt=2.0)  # see ModelAgentConfig
    vlm_worker: Literal["process", "thread"] = "process"
    vlm_threads: int = Field(1, ge=1)
    device: str = "cpu"
    threads: int = Field(1, ge=1)
    seed: int = 0
    object_threshold: float = Field(OBJECT_THRESHOLD, gt=0.0, lt=1.0)  # see ModelAgentConfig
    # Whose trajectory the guard checks: the model's planner, or (an ablation on the embedded
    # simulator only) the expert's rules on ground truth, the model still running for the
    # guard's perception (see `_Ablation`).
    planner: Literal["model", "expert"] = "model"
    safety: SafetyConfig = SafetyConfig()

    _latency_needs_async = field_validator("vlm_latency_s")(latency_needs_async)

    def model_config_(self) -> ModelAgentConfig:
        return ModelAgentConfig(
            checkpoint=self.checkpoint,
            vlm_mode=self.vlm_mode,
            vlm_path=self.vlm_path,
            vlm_rate_hz=self.vlm_rate_hz,
            vlm_latency_s=self.vlm_latency_s,
            vlm_worker=self.vlm_worker,
            vlm_threads=self.vlm_threads,
            device=self.device,
            threads=self.threads,
            seed=self.seed,
            object_threshold=self.object_threshold,
        )


def load_agent_config(path: str | None) -> AgentConfig:
    """The config at `path`; defaults when `path` is empty (the Leaderboard passes "")."""
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"agent config {path}: no such file")
        return load_typed_yaml(path, AgentConfig, "agent config")
    return AgentConfig()


class VLMDriveAgent(AutonomousAgent):
    """The guarded model agent (see the module docstring)."""

    def setup(self, path_to_conf_file: str) -> None:
        self.track = Track.SENSORS
        self.config = load_agent_config(path_to_conf_file)
        self.driver = ModelDriver(self.config.model_config_())
        self.guard: SafetyGuard | None = None
        if self.config.safety.enabled:
            self.guard = SafetyGuard(
                self.config.safety.guard, grid=self.driver.model.cfg.perception
            )
        self.ablation = _Ablation.build(
            self.config, path_to_conf_file, self.driver.model.cfg.perception
        )
        self.counter = InterventionCounter()
        self.vlm_watch = VLMWatch()
        self.num_poses = self.driver.model.cfg.planner.num_poses
        self.last_decision: GuardDecision | None = None
        self.last_error: str | None = None  # the model's last exception, if any
        self.planned_trajectory: np.ndarray | None = None
        self.reasoning_text = ""
        plan = getattr(self, "_global_plan", None)
        if plan:
            self.driver.set_route(plan)

    def set_global_plan(self, global_plan_gps: Any, global_plan_world_coord: Any) -> None:
        super().set_global_plan(global_plan_gps, global_plan_world_coord)
        if hasattr(self, "driver"):  # setup ran first (not the Leaderboard's order)
            self.driver.set_route(self._global_plan)

    def sensors(self) -> list[dict]:
        return default_sensor_suite()

    @property
    def interventions(self) -> dict[str, int]:
        """This route's guard tally: ticks, interventions and each reason code that fired."""
        tally = self.counter.as_dict()
        out = {"ticks": tally["ticks"], "interventions": tally["interventions"]}
        out.update({code: n for code, n in tally["reasons"].items() if n and code != "ACCEPTED"})
        return out

    def run_step(self, input_data: dict, timestamp: float) -> Any:
        control = self._step(input_data, float(timestamp))
        return to_carla_control(control) if carla_available() else control

    def _step(self, input_data: dict, time_s: float) -> VehicleControl:
        speed = _speed(input_data)
        image = _camera(input_data)
        step: ModelStep | None = None
        error: str | None = None
        if image is not None:
            try:
                gnss = np.asarray(input_data["gps"][1], dtype=np.float64)
                compass = float(np.asarray(input_data["imu"][1])[-1])
                step = self.driver.infer(image, speed, gnss, compass, time_s)
                if self.config.safety.perception == "model_grid":
                    step = dataclasses.replace(step, objects=None, lane_probs=None)
                if self.ablation is not None:
                    step = self.ablation.observe(step)
            except Exception as exc:  # the guard turns a broken model into a stop
                error = self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("model step failed at t=%.2f s: the guard stops", time_s)
        self.reasoning_text = self.driver.reasoning_text
        decision = self._guard(step, image, speed, time_s, error)
        self.last_decision = decision
        self.counter.record(decision)
        trajectory = decision.trajectory
        self.planned_trajectory = trajectory
        if decision.intervened:
            self.reasoning_text = f"[guard: {decision.reason.value}] {self.reasoning_text}"
        if decision.fallback == "emergency_stop":
            self.driver.tracker.reset()
            return VehicleControl(throttle=0.0, steer=0.0, brake=1.0)
        return self.driver.tracker.control(trajectory, speed if np.isfinite(speed) else 0.0)

    def _guard(
        self,
        step: ModelStep | None,
        image: np.ndarray | None,
        speed: float,
        time_s: float,
        error: str | None,
    ) -> GuardDecision:
        if self.guard is None:  # guard off: the planner drives (a broken plan still stops)
            trajectory = np.full((self.num_poses, 2), np.nan) if step is None else step.trajectory
            if error is None and np.isfinite(trajectory).all():
                return GuardDecision(
                    trajectory, ReasonCode.ACCEPTED, (ReasonCode.ACCEPTED,), "none"
                )
            code = ReasonCode.MODEL_ERROR if error else ReasonCode.NONFINITE_PLAN
            return GuardDecision(np.zeros((self.num_poses, 2)), code, (code,), "emergency_stop")
        runtime = self.driver.runtime
        vlm = None if runtime is None else self.vlm_watch.update(runtime.status())
        inputs = guard_inputs(step, image, speed, time_s, self.driver.model.cfg, error, vlm)
        if self.ablation is not None and step is not None:
            inputs = self.ablation.perceive(inputs)
        return self.guard.check(inputs)

    def destroy(self) -> None:
        if hasattr(self, "driver"):
            self.driver.close()


class _Ablation:
    """The ablations on the embedded simulator (`planner: expert`, `safety.perception:
    ground_truth[_span]`), from one expert observation of each tick (`ExpertDriver.observe`:
    the rules on the simulator's ground truth, as `agent.expert` drives).

    - planner: expert: the model's chosen trajectory is replaced by the expert's plan, at
      full confidence; the model's candidates, perception and reasoning stay, so the guard
      runs as usual. Model planner vs expert planner under the same guard tells how much
      of the gap to the expert is the learned planner's.
    - perception: the guard's perception outputs are replaced by perfect heads
      (agent/safety/ground_truth_perception.py); the planner drives as configured. With
      `ground_truth_boxes` the guard's view holds exact object boxes with velocities
      instead of boxes made of 4 m BEV cells, with `ground_truth_lanes` the lanes beside
      the route, with `ground_truth_boxes_lanes` both; with `ground_truth_view` the guard checks
      against the expert's whole view (`GuardInputs.view`: the boxes, the lanes, the stop
      lines, the route). Heads vs boxes vs view tells what the grid itself costs and
      what the missing lanes cost.
    """

    def __init__(
        self,
        simulator,
        expert_plans: bool,
        perception: GroundTruthPerception | None,
        whole_view: bool = False,
    ) -> None:
        self.simulator = simulator
        self.expert = ExpertDriver()
        self.expert_plans = expert_plans
        self.perception = perception
        self.whole_view = whole_view  # the guard checks against the expert's view
        self._seen: ExpertObservation | None = None  # this tick's

    @classmethod
    def build(cls, config: AgentConfig, path: str, grid: PerceptionConfig) -> _Ablation | None:
        """The configured ablation (None: none), or a clear error where it cannot run."""
        wants = [f"planner: {config.planner}"] if config.planner != "model" else []
        if config.safety.perception not in MODEL_PERCEPTION:
            wants.append(f"safety.perception: {config.safety.perception}")
        if not wants:
            return None
        where = f"agent config {path or '(defaults)'}: {', '.join(wants)}"
        if config.safety.perception not in MODEL_PERCEPTION and not config.safety.enabled:
            raise ValueError(
                f"{where} replaces the guard's perception, but safety.enabled is false"
            )
        if not DataProvider.registered():
            raise ValueError(
                f"{where} reads the embedded simulator's ground truth, and none is registered "
                "(it runs under `vlmdrive eval` on the embedded simulator, not in CARLA)"
            )
        mode = config.safety.perception
        perception = None
        if mode not in MODEL_PERCEPTION:
            perception = GroundTruthPerception(
                grid,
                spans=mode == "ground_truth_span",
                boxes=mode in ("ground_truth_boxes", "ground_truth_boxes_lanes"),
                lanes=mode in ("ground_truth_lanes", "ground_truth_boxes_lanes"),
            )
        whole_view = mode == "ground_truth_view"
        return cls(DataProvider.simulator(), config.planner == "expert", perception, whole_view)

    def observe(self, step: ModelStep) -> ModelStep:
        """Plan the tick as the expert; with `planner: expert`, drive its plan."""
        self._seen = seen = self.expert.observe(self.simulator)
        if not self.expert_plans:
            return step
        trajectory = seen.plan.trajectory[: len(step.trajectory)].astype(step.trajectory.dtype)
        return dataclasses.replace(step, trajectory=trajectory, confidence=1.0)

    def perceive(self, inputs: GuardInputs) -> GuardInputs:
        """With a ground-truth perception, the guard reads it instead of the model's heads
        (and with `ground_truth_view`, the expert's view instead of its own)."""
        if self.perception is None or self._seen is None:
            return inputs
        view = self._seen.view if self.whole_view else None
        return dataclasses.replace(
            inputs, perception=self.perception.outputs(self._seen), view=view
        )


def guard_inputs(
    step: ModelStep | None,
    image: np.ndarray | None,
    speed: float,
    time_s: float,
    model_cfg: ModelConfig,
    error: str | None = None,
    vlm: VLMHealth | None = None,
) -> GuardInputs:
    """What the safety guard reads on one tick, from one model step (None: no camera, or
    the model raised, so nothing finite to offer: a NaN plan and empty perception, which
    the guard turns into a stop). The Leaderboard agent and the RL fine-tuning rollout
    (`rl_finetune.guarded`, the guard in the training loop) both build it here."""
    if step is None:
        perception = PerceptionOutputs(
            occupancy=np.zeros(
                (len(model_cfg.perception.bev_classes), *model_cfg.perception.bev_shape)
            ),
            light=np.full(model_cfg.num_light_states, np.nan),
            flags=np.full(model_cfg.num_flags, np.nan),
        )
        return GuardInputs(
            trajectory=np.full((model_cfg.planner.num_poses, 2), np.nan),
            confidence=0.0,
            speed_mps=speed,
            perception=perception,
            route_xy=route_from_targets(np.array([10.0, 0.0])),
            frame_digest=None if image is None else frame_digest(image),
            time_s=time_s,
            vlm=vlm,
            model_error=error,
        )
    return GuardInputs(
        trajectory=step.trajectory,
        confidence=step.confidence,
        speed_mps=speed,
        perception=PerceptionOutputs(
            step.bev_probs,
            step.light_probs,
            step.flag_probs,
            step.intent_probs,
            step.bev_span,
            objects=step.objects,
            lanes=step.lane_probs,
        ),
        route_xy=route_from_targets(step.target_point, step.next_target_point),
        frame_digest=None if image is None else frame_digest(image),
        time_s=time_s,
        vlm=vlm,
        model_error=error,
        candidates=step.candidates,
        candidate_probs=step.scores,
    )


def _camera(input_data: dict) -> np.ndarray | None:
    """The front camera's BGR image, or None when the frame is missing or malformed."""
    entry = input_data.get(CAMERA_ID)
    if entry is None or len(entry) < 2 or entry[1] is None:
        return None
    image = np.asarray(entry[1])
    if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
        return None
    return image[:, :, :3]


def _speed(input_data: dict) -> float:
    """[m/s] the speedometer, NaN when missing (the guard treats NaN as a bad input)."""
    try:
        return float(input_data["speedometer"][1]["speed"])
    except (KeyError, IndexError, TypeError, ValueError):
        return float("nan")
