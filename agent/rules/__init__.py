"""The privileged rule set: one planner, three views (expert, safety fallback, RL shield)."""

from agent.rules.planner import Plan, RulePlanner, RulesConfig
from agent.rules.view import ObstacleView, view_from_ground_truth

__all__ = ["ObstacleView", "Plan", "RulePlanner", "RulesConfig", "view_from_ground_truth"]
