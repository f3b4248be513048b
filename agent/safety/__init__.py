"""The safety layer: checks the planner's trajectory every tick and falls back to the rule
set (planning from the model's own perception) or an emergency stop. See `guard`."""

from agent.safety.decision import Fallback, GuardDecision, ReasonCode
from agent.safety.guard import Guard, GuardConfig, GuardInputs, SafetyGuard
from agent.safety.health import CameraMonitor, VLMHealth, VLMWatch, frame_digest
from agent.safety.interventions import InterventionCounter
from agent.safety.perception_view import (
    PerceptionOutputs,
    PerceptionViewConfig,
    route_from_targets,
    view_from_perception,
)

__all__ = [
    "CameraMonitor",
    "Fallback",
    "Guard",
    "GuardConfig",
    "GuardDecision",
    "GuardInputs",
    "InterventionCounter",
    "PerceptionOutputs",
    "PerceptionViewConfig",
    "ReasonCode",
    "SafetyGuard",
    "VLMHealth",
    "VLMWatch",
    "frame_digest",
    "route_from_targets",
    "view_from_perception",
]
