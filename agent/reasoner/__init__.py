"""The VLM reasoner: a Hugging Face image-text-to-text model + heads, its training, and the
runtime that runs it beside the control loop. See ARCHITECTURE.md, "Models"."""

from agent.reasoner.types import Reasoning, ReasoningModel

__all__ = ["Reasoning", "ReasoningModel"]
