"""Ground-truth perception for the safety guard: an ablation, embedded simulator only.

    expert = ExpertDriver()                                  # agent/expert.py
    perception = GroundTruthPerception(model.cfg.perception)
    outputs = perception.outputs(expert.observe(simulator))  # a PerceptionOutputs

What it answers. The guarded agent scores about half the expert's Driving Score, and the
notes blame the perception heads (cones missed under glare, a 4 m grid that holds the car
behind the next lane's cones, construction flags raised in the rain). How much of the gap
would perfect heads close? Replace the heads' outputs, and only those, by what they are
trained to predict, computed from the simulator's ground truth exactly as the training
labels are (`agent.data.labels.label_frame`, `agent.model.losses.bev_targets` /
`bev_spans`), and drive the same planner and guard: the difference to the model's own
perception is what better perception can buy at most with this grid; what remains to the
expert is the planner's and the guard's.

What it gives, per tick, in the layout of `PerceptionOutputs`:
- occupancy: the BEV cells each class's true boxes touch (0 / 1), on the model's grid;
  spans (where across each cell the objects lie) when the model has a span head, or when
  asked (`spans=True`: what a perfect span head would add to this model);
- light: the governing light's state, one-hot;
- flags: the edge-case flags, 0 / 1, from the labeller, with the expert's plan of the tick
  (the labeller's lane-closed flag and intent read it, as during data collection; the
  caller's `ExpertDriver.observe` plans it, once per tick);
- intent: the expert's manoeuvre, one-hot;
- objects (`boxes=True`): the expert's view's obstacles whose centres lie on the model's
  grid, as exact boxes with yaw, velocity and the simulator's ids (`PerceivedObjects`):
  what a perfect detection head and tracker over the grid's extent would give. The
  guard's view then holds these instead of boxes made of 4 m cells; lanes, the stop
  line and the route stay the guard's own guesses (`perception_view`);
- lanes (`lanes=True`): the lanes beside the route at the dataset's stations, 0 / 1, as
  labelled (`agent.data.labels.lane_labels`): what a perfect lane head would give.
(The agent's `ground_truth_view` goes further and hands the guard the expert's whole view.)
The labeller's memory (standing vehicles, lead accelerations) is carried at the dataset's
2 Hz, as during collection, so the labels mean what they mean in the training data.

Not for CARLA: the agent observes through `sim.data_provider.DataProvider`, which only the
embedded simulator's harness sets (a Leaderboard agent has no ground truth), and refuses
the setting at setup when no simulator is registered.
"""

from __future__ import annotations

import numpy as np
import torch

from agent.data.labels import LabelMemory, label_frame
from agent.data.schema import INTENTS, LIGHT_STATES, SAMPLE_HZ
from agent.expert import ExpertObservation
from agent.model.config import PerceptionConfig
from agent.model.losses import bev_spans, bev_targets
from agent.safety.perception_view import PerceivedObjects, PerceptionOutputs

MEMORY_PERIOD_S = 1.0 / SAMPLE_HZ  # [s] the labeller's memory is carried at the dataset's rate


class GroundTruthPerception:
    """Perfect perception heads from the simulator (see the module docstring)."""

    def __init__(
        self, grid: PerceptionConfig, spans: bool = False, boxes: bool = False, lanes: bool = False
    ) -> None:
        self.grid = grid
        self.spans = spans or grid.bev_span
        self.boxes = boxes
        self.lanes = lanes
        self._memory: LabelMemory | None = None  # the labeller's, one route's

    def outputs(self, seen: ExpertObservation) -> PerceptionOutputs:
        """This tick's perception outputs from the expert's observation of it."""
        gt = seen.gt
        labels = label_frame(seen.view, seen.plan, gt, self._memory)
        if self._memory is None or gt.time_s - self._memory.time_s >= MEMORY_PERIOD_S - 1e-6:
            self._memory = LabelMemory.of(gt, self._memory)
        rows = torch.from_numpy(labels.obstacles)[None]
        mask = torch.from_numpy(labels.obstacle_mask)[None]
        occupancy = bev_targets(self.grid, rows, mask)[0].numpy()
        span = bev_spans(self.grid, rows, mask)[0].numpy() if self.spans else None
        return PerceptionOutputs(
            occupancy=occupancy,
            light=_one_hot(labels.light_state, len(LIGHT_STATES)),
            flags=labels.flags.astype(np.float64),
            intent=_one_hot(labels.intent, len(INTENTS)),
            span=span,
            objects=self._objects(seen) if self.boxes else None,
            lanes=labels.lanes.astype(np.float64) if self.lanes else None,
        )

    def _objects(self, seen: ExpertObservation) -> PerceivedObjects:
        """The expert's view's obstacles whose centres lie on the grid."""
        view = seen.view
        (x_lo, x_hi), (y_lo, y_hi) = self.grid.bev_x_m, self.grid.bev_y_m
        x, y = view.obstacle_xy[:, 0], view.obstacle_xy[:, 1]
        keep = (x >= x_lo) & (x < x_hi) & (y >= y_lo) & (y < y_hi)
        return PerceivedObjects(
            xy=view.obstacle_xy[keep],
            size=view.obstacle_size[keep],
            yaw=view.obstacle_yaw[keep],
            velocity=view.obstacle_velocity[keep],
            kind=tuple(k for k, kept in zip(view.obstacle_kind, keep, strict=True) if kept),
            ids=view.obstacle_id[keep],
        )


def _one_hot(index: int, size: int) -> np.ndarray:
    out = np.zeros(size)
    out[index] = 1.0
    return out
