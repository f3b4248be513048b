"""The guard's checks replayed on recorded frames (agent/safety/offline.py)."""

from __future__ import annotations

import numpy as np
import torch

from agent.model.config import PerceptionConfig
from agent.model.losses import bev_spans, bev_targets
from agent.safety.guard import GuardConfig, SafetyGuard
from agent.safety.offline import plan_check_rates

STATIC = 2.0  # agent.data.schema.OBSTACLE_COLUMNS "kind"


def frames() -> dict[str, np.ndarray]:
    """Three frames at 5 m/s on a straight route: a cone on the lane line 14 m ahead
    (passable), a cone on the ego's path 12 m ahead (the expert stops 6 m on), nothing."""
    t = np.arange(1, 9) * 0.5
    drive = np.stack([5.0 * t, 0.0 * t], axis=1)
    stop = np.stack([np.minimum(5.0 * t - 2.5 * t**2 / 2, 6.0), 0.0 * t], axis=1)
    obstacles = np.zeros((3, 2, 8), dtype=np.float32)
    mask = np.zeros((3, 2), dtype=bool)
    obstacles[0, 0] = [14.0, 2.0, 0.0, 0.0, 0.0, 0.4, 0.4, STATIC]
    obstacles[1, 0] = [12.0, 0.0, 0.0, 0.0, 0.0, 0.4, 0.4, STATIC]
    mask[0, 0] = mask[1, 0] = True
    return {
        "speed_mps": np.full(3, 5.0),
        "target_point": np.tile([[30.0, 0.0]], (3, 1)),
        "trajectory": np.stack([drive, stop, drive]),
        "obstacles": obstacles,
        "obstacle_mask": mask,
    }


def test_spans_stop_the_guard_flagging_a_good_plan_and_keep_the_real_hazard() -> None:
    grid = PerceptionConfig()
    f = frames()
    obstacles, mask = torch.from_numpy(f["obstacles"]), torch.from_numpy(f["obstacle_mask"])
    occupancy = bev_targets(grid, obstacles, mask).numpy()
    spans = bev_spans(grid, obstacles, mask).numpy()
    guard = SafetyGuard(GuardConfig(raise_errors=True), grid)
    args = (f["speed_mps"], f["target_point"], f["trajectory"], f["obstacles"], mask.numpy())
    whole = plan_check_rates(guard, occupancy, None, *args)
    # The lane-line cone's whole 4 m column blocks the expert's plan past it.
    assert whole == {
        "frames": 3,
        "expert_plan_flagged": round(1 / 3, 4),
        "hazards": 1,
        "hazards_caught": 1.0,
    }
    spanned = plan_check_rates(guard, occupancy, spans, *args)
    assert spanned["expert_plan_flagged"] == 0.0
    assert spanned["hazards"] == 1 and spanned["hazards_caught"] == 1.0
    # A blind perception catches nothing.
    blind = plan_check_rates(guard, np.zeros_like(occupancy), None, *args)
    assert blind["expert_plan_flagged"] == 0.0 and blind["hazards_caught"] == 0.0
