"""The model's own perception -> an `ObstacleView`, so the rule set can plan the fallback.

The third source of the rule set's one view type (ARCHITECTURE.md, "the privileged rule
set"): instead of ground truth, the driving model's auxiliary heads, the ego speed and the
route ahead from navigation. What the heads cannot tell is filled in conservatively:

- Obstacles: every BEV cell whose occupancy probability is >= `occupancy_threshold` becomes
  one box at the cell's centre, of the cell's class, `cell_box_scale` times the cell's
  length and width. The grid has no velocities: every box stands still (velocity 0, yaw 0).
  Obstacle ids are the cell's flat index, so they are stable across ticks.
  A cell is labelled occupied when an object's box touches the cell
  (`agent.model.losses.bev_targets`), so where in the cell the object is, is unknown: the
  cell itself (scale 1) is the box every such object overlaps; twice the cell is the
  strictly conservative hull. Measured with ground-truth occupancy on 1500 eval-suite
  frames (how often the guard's checks flag the expert's own plan / catch the true hazards
  of a blind straight-on plan): the shipped 4 m grid (columns split at y = 0) at scale
  0.5 (the default) 7.0 % / 99 %, at scale 1 9.4 % / 100 %; a 2 x 1 m grid centred on the
  ego at scale 1 2.5 % / 97 %. Use `cell_box_scale: 1.0` with such a grid.
  On the shipped model's heads (`eval-open`'s guard rows, 1,500 eval frames) a lower
  `occupancy_threshold` trades good plans stopped for hazards caught: 0.5 (the default)
  9.7 % / 55.6 %, 0.4 13.9 % / 68.1 %, 0.3 20.7 % / 75.0 %. In closed loop 0.4 did not
  pay (suite_quick, seeds 0-2: Driving Score 41.65 -> 41.43, route completion lower,
  collisions 74 -> 68): the car held longer behind the parked car in glare, then still
  hit it when the hold ran out.
  A model with the span head (`PerceptionConfig.bev_span`) also says where across the cell
  its objects lie (`PerceptionOutputs.span`): the box then covers that span widened by
  `span_margin_m` each side (within the cell). With ground-truth spans on the shipped 4 m
  grid the guard's path checks fail the expert's plan on 1.7 % of 1,500 eval frames
  instead of 7.9 %, catching the same 85 % of straight-on hazards (`agent.safety.offline`;
  its probe differs from the figures above).
- Objects instead of cells: outputs that carry `PerceptionOutputs.objects` (boxes with
  yaw and velocity, as a detection head and a tracker would give them) put those boxes in
  the view and leave the grid out (`object_cells: replace`), or add the occupied cells
  that no object of their class touches (`object_cells: uncovered`: what a detection
  head misses and the grid sees still counts). A model with the detection head
  (`PerceptionConfig.objects`, `agent.model.objects`) fills them, and so does the
  ground-truth ablation (`agent.safety.ground_truth_perception`, `boxes=True`). Measured
  with it (README, "The Leaderboard agent"): on exact boxes the guard lets the expert's
  own passes through (87.65 against 68.10 on perfect 4 m cells); the learned planner
  offers no pass, and gains only when the lanes below are perceived too (51.17 against
  45.62).
- Light: the light head says which state governs the route within
  `agent.data.schema.LIGHT_RANGE_M`, not where its stop line is. The state is the first of
  red, yellow, green whose probability reaches `light_threshold` (red first: the
  conservative order). The stop line is assumed just beyond where a stop from the current
  speed at `light_decel_mps2` (scaled by friction, as the rules scale braking) ends: the
  rules then stop the ego as soon as they comfortably can, and once standing it stays.
  A real stop line nearer than that is overrun; a farther one is stopped short of.
- Road conditions: friction and visibility [m] from the rain / fog / night flags, as the
  worst weather each flag stands for (numbers from `sim.weather.Weather`, the project's one
  definition): dry 0.9 / rain 0.45 (CARLA HardRainNoon); visibility ~10 km clear, ~510 m
  in heavy rain, ~30 m in the densest fog (fog_density 100 from 0 m), `night_visibility_m`
  (low-beam reach) at night.
- Lanes: one lane of `lane_width_m`, no same-direction or oncoming lane beside it
  (`left_same` = `right_same` = 0, `left_opposite` False). Lane structure is not perceived,
  so the fallback never plans a pass: it stops behind whatever closes the lane. Outputs
  that carry `PerceptionOutputs.lanes` (the lanes beside the route at
  `agent.data.schema.LANE_STATIONS_M`, as the dataset labels them) set them: each route
  point takes the nearest station at or before it, a lane counting where its probability
  reaches `lane_threshold`. A model with the lane head (`PerceptionConfig.lanes`) fills
  them, and so does the ground-truth ablation.
- Route: the caller's (M, 2) polyline ahead, ego frame. The view starts it at the ego's
  projection and resamples it every `ROUTE_STEP_M` to `horizon_m`, carrying straight on
  past its end. `route_from_targets` builds it from the navigation's target points (all a
  Leaderboard agent has): straight chords, so on a bend the fallback cuts the corner.
- Speed limit: not perceived; `speed_limit_mps` (urban 50 km/h by default) everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agent.data.schema import FLAGS, INTENTS, LANE_COLUMNS, LANE_STATIONS_M, LIGHT_STATES
from agent.model.config import PerceptionConfig
from agent.rules.planner import DRY_FRICTION
from agent.rules.view import KINDS, ROUTE_STEP_M, ObstacleView
from sim.ground_truth import TrafficLightState
from sim.weather import Weather

EGO_LENGTH_M = 4.89  # [m] Lincoln MKZ 2020 bounding box, the Leaderboard's ego
EGO_WIDTH_M = 2.12  # [m] with mirrors
REMAINING_UNKNOWN_M = 1.0e6  # [m] the route's remaining length is not known at inference

# The worst weather each flag stands for (see `agent.data.labels`: rain from precipitation
# 30, fog from density 30 starting nearer than 30 m).
DRY_WEATHER = Weather.preset("ClearNoon")  # friction 0.9, visibility ~10 km
RAIN_WEATHER = Weather.preset("HardRainNoon")  # friction 0.45, visibility ~510 m
FOG_WEATHER = Weather(fog_density=100.0, fog_distance=0.0)  # visibility ~30 m

_LIGHT_ORDER = (  # conservative: a red that reaches the threshold wins over anything else
    ("red", TrafficLightState.Red),
    ("yellow", TrafficLightState.Yellow),
    ("green", TrafficLightState.Green),
)


class PerceptionViewConfig(BaseModel):
    """How perception outputs become a view. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    occupancy_threshold: float = Field(0.5, gt=0.0, le=1.0)  # [-] a cell at or above is occupied
    cell_box_scale: float = Field(0.5, gt=0.0)  # [-] box of an occupied cell / the cell
    # (across the cell only without a span head: with one, the predicted span decides)
    span_margin_m: float = Field(0.25, ge=0.0)  # [m] each side of a predicted span
    light_threshold: float = Field(0.5, gt=0.0, le=1.0)  # [-] light state probability
    lane_threshold: float = Field(0.5, gt=0.0, le=1.0)  # [-] a lane beside the route
    # With perceived objects: "replace" = the view holds the objects alone (the grid is
    # left out); "uncovered" = also the occupied cells that no object box of their class
    # touches (a detection head that misses what the grid sees still leaves the cell).
    object_cells: Literal["replace", "uncovered"] = "replace"
    flag_threshold: float = Field(0.5, gt=0.0, le=1.0)  # [-] rain / fog / night flags
    light_decel_mps2: float = Field(3.0, gt=0.0)  # [m/s^2] (dry) assumed stop before a light
    light_margin_m: float = Field(1.0, ge=0.0)  # [m] assumed stop line beyond that stop
    night_visibility_m: float = Field(50.0, gt=0.0)  # [m] low-beam headlight reach
    speed_limit_mps: float = Field(13.9, gt=0.0)  # [m/s] assumed limit (50 km/h)
    lane_width_m: float = Field(3.5, gt=0.0)  # [m]
    horizon_m: float = Field(80.0, gt=ROUTE_STEP_M)  # [m] route length ahead in the view
    ego_length_m: float = Field(EGO_LENGTH_M, gt=0.0)  # [m]
    ego_width_m: float = Field(EGO_WIDTH_M, gt=0.0)  # [m]


@dataclass(frozen=True)
class PerceivedObjects:
    """Object boxes for one tick, ego frame (x forward, y left), as the rule set's view
    holds them: centres xy (N, 2) [m], size (N, 2) [m] (length, width), yaw (N,) [rad]
    (0 = along the ego), velocity (N, 2) [m/s], kind (N,) rule-set kinds
    (`agent.rules.view.KINDS`), ids (N,) int, stable across ticks (the rules time how long
    a vehicle has stood by its id)."""

    xy: np.ndarray
    size: np.ndarray
    yaw: np.ndarray
    velocity: np.ndarray
    kind: tuple[str, ...]
    ids: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.kind)
        shapes = {"xy": (n, 2), "size": (n, 2), "yaw": (n,), "velocity": (n, 2), "ids": (n,)}
        for name, shape in shapes.items():
            value = np.asarray(getattr(self, name), dtype=np.int64 if name == "ids" else np.float64)
            if value.shape != shape:
                raise ValueError(f"PerceivedObjects.{name} must be {shape}, got {value.shape}")
            object.__setattr__(self, name, value)
        bad = sorted(set(self.kind) - set(KINDS))
        if bad:
            raise ValueError(f"PerceivedObjects.kind: unknown kinds {bad}; valid: {KINDS}")

    def is_finite(self) -> bool:
        return bool(
            np.isfinite(self.xy).all()
            and np.isfinite(self.size).all()
            and np.isfinite(self.yaw).all()
            and np.isfinite(self.velocity).all()
        )


@dataclass(frozen=True)
class PerceptionOutputs:
    """The model's auxiliary outputs for one tick, as probabilities in [0, 1].

    occupancy: (classes, R, C) BEV occupancy, classes in `PerceptionConfig.bev_classes`
        order; rows along x (forward), columns along y (left), as
        `PerceptionConfig.cell_centres` — the layout of `agent.model.losses.bev_targets`.
    light: (len(LIGHT_STATES),) state of the light governing the route ahead.
    flags: (len(FLAGS),) edge-case flags (distilled head or VLM), FLAGS order.
    intent: (len(INTENTS),) the reasoning's manoeuvre probabilities, INTENTS order, or None
        (no reasoning source gives one). The guard reads it to choose the side of a pass.
    span: (classes, 2, R, C) where across each cell its objects lie, [y_lo, y_hi] as
        fractions of the cell's width (`agent.model.losses.bev_spans`), or None (a model
        without the span head: an occupied cell is the whole cell).
    objects: object boxes with velocities (`PerceivedObjects`), or None. When given, the
        view holds these instead of boxes made of occupied cells.
    lanes: (len(LANE_STATIONS_M), len(LANE_COLUMNS)) the lanes beside the route, or None
        (not perceived: the view has one lane and nothing beside it).
    Shapes are checked here; values are not (a NaN is the guard's to catch).
    """

    occupancy: np.ndarray
    light: np.ndarray
    flags: np.ndarray
    intent: np.ndarray | None = None
    span: np.ndarray | None = None
    objects: PerceivedObjects | None = None
    lanes: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("occupancy", "light", "flags"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        if self.occupancy.ndim != 3 or 0 in self.occupancy.shape:
            raise ValueError(
                f"PerceptionOutputs.occupancy must be (classes, R, C), got {self.occupancy.shape}"
            )
        sizes = [("light", len(LIGHT_STATES)), ("flags", len(FLAGS))]
        if self.intent is not None:
            object.__setattr__(self, "intent", np.asarray(self.intent, dtype=np.float64))
            sizes.append(("intent", len(INTENTS)))
        for name, size in sizes:
            shape = getattr(self, name).shape
            if shape != (size,):
                raise ValueError(f"PerceptionOutputs.{name} must be ({size},), got {shape}")
        if self.span is not None:
            object.__setattr__(self, "span", np.asarray(self.span, dtype=np.float64))
            classes, *cells = self.occupancy.shape
            if self.span.shape != (classes, 2, *cells):
                raise ValueError(
                    f"PerceptionOutputs.span must be ({classes}, 2, {cells[0]}, {cells[1]}) "
                    f"like the occupancy, got {self.span.shape}"
                )
        if self.lanes is not None:
            object.__setattr__(self, "lanes", np.asarray(self.lanes, dtype=np.float64))
            want = (len(LANE_STATIONS_M), len(LANE_COLUMNS))
            if self.lanes.shape != want:
                raise ValueError(f"PerceptionOutputs.lanes must be {want}, got {self.lanes.shape}")

    @classmethod
    def from_logits(
        cls, bev_logits: np.ndarray, light_logits: np.ndarray, flag_logits: np.ndarray
    ) -> PerceptionOutputs:
        """From the heads' logits (`DriveModel.heads`: "bev", "light", "flags"), as numpy
        arrays with or without a batch dimension of 1: sigmoid for occupancy and flags,
        softmax for the light."""
        bev = _unbatch(np.asarray(bev_logits, dtype=np.float64), 3)
        light = _unbatch(np.asarray(light_logits, dtype=np.float64), 1)
        flags = _unbatch(np.asarray(flag_logits, dtype=np.float64), 1)
        z = np.exp(light - np.max(light))
        return cls(_sigmoid(bev), z / z.sum(), _sigmoid(flags))

    def light_prob(self, name: str) -> float:
        """Probability of the light state `name` (one of LIGHT_STATES)."""
        if name not in LIGHT_STATES:
            raise ValueError(f"unknown light state {name!r}; valid: {LIGHT_STATES}")
        return float(self.light[LIGHT_STATES.index(name)])

    def flag(self, name: str) -> float:
        """Probability of the flag `name` (one of FLAGS)."""
        if name not in FLAGS:
            raise ValueError(f"unknown flag {name!r}; valid: {FLAGS}")
        return float(self.flags[FLAGS.index(name)])

    def is_finite(self) -> bool:
        return bool(
            np.isfinite(self.occupancy).all()
            and np.isfinite(self.light).all()
            and np.isfinite(self.flags).all()
            and (self.intent is None or np.isfinite(self.intent).all())
            and (self.span is None or np.isfinite(self.span).all())
            and (self.objects is None or self.objects.is_finite())
            and (self.lanes is None or np.isfinite(self.lanes).all())
        )


def _lanes(lanes: np.ndarray | None, route_s: np.ndarray, threshold: float) -> dict:
    """The view's lane arrays along `route_s` from perceived lanes (see the module
    docstring); none beside the route when `lanes` is None."""
    m = len(route_s)
    if lanes is None:
        return {
            "left_same": np.zeros(m, np.int64),
            "right_same": np.zeros(m, np.int64),
            "left_opposite": np.zeros(m, bool),
        }
    station = np.searchsorted(np.asarray(LANE_STATIONS_M), route_s, side="right") - 1
    raised = lanes[np.clip(station, 0, len(LANE_STATIONS_M) - 1)] >= threshold  # (M, columns)
    left_same, right_same, left_opposite = raised.T  # LANE_COLUMNS order
    return {
        "left_same": left_same.astype(np.int64),
        "right_same": right_same.astype(np.int64),
        "left_opposite": left_opposite,
    }


def _unbatch(arr: np.ndarray, ndim: int) -> np.ndarray:
    while arr.ndim > ndim and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def road_conditions(
    flags: np.ndarray, threshold: float = 0.5, night_visibility_m: float = 50.0
) -> tuple[float, float]:
    """(friction [-], visibility [m]) from flag probabilities (FLAGS order): the worst
    weather each raised flag stands for (see the module docstring)."""

    def raised(name: str) -> bool:
        return float(flags[FLAGS.index(name)]) >= threshold

    weather = RAIN_WEATHER if raised("rain") else DRY_WEATHER
    visibility = weather.visibility_m
    if raised("fog"):
        visibility = min(visibility, FOG_WEATHER.visibility_m)
    if raised("night"):
        visibility = min(visibility, night_visibility_m)
    return float(weather.friction), float(visibility)


def cell_obstacles(
    occupancy: np.ndarray,
    grid: PerceptionConfig,
    threshold: float,
    box_scale: float = 1.0,
    span: np.ndarray | None = None,
    span_margin_m: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], np.ndarray]:
    """Occupied cells -> (centres (N, 2) [m] ego frame, sizes (N, 2) [m] (length along x,
    width along y), kinds (N,), ids (N,) int64).

    Each box is `box_scale` times the cell, centred on it. With `span` ((classes, 2, R, C),
    `PerceptionOutputs.span`) a box spans the cell's length times `box_scale` along x and,
    across, the predicted [y_lo, y_hi] widened by `span_margin_m` each side (kept inside
    the cell: the occupancy already says the object touches this cell, not its neighbour).
    Ids are flat indices into (classes, R, C). Kinds are the grid's class names, which must
    be rule-set kinds (`agent.rules.view.KINDS`)."""
    expected = (len(grid.bev_classes), *grid.bev_shape)
    if occupancy.shape != expected:
        raise ValueError(
            f"occupancy must be {expected} for the configured BEV grid, got {occupancy.shape}"
        )
    unknown = [k for k in grid.bev_classes if k not in KINDS]
    if unknown:
        raise ValueError(f"bev_classes {unknown} are not rule-set kinds {KINDS}")
    cls, row, col = np.nonzero(occupancy >= threshold)
    xs, ys = grid.cell_centres()
    width = grid.cell_size[1]
    centres = np.stack([xs[row], ys[col]], axis=1).astype(np.float64).reshape(-1, 2)
    sizes = np.tile(np.multiply(grid.cell_size, box_scale), (len(cls), 1)).astype(np.float64)
    if span is not None:
        frac = np.sort(span[cls, :, row, col], axis=1)  # (N, 2), lo <= hi
        right = ys[col] - width / 2
        lo = np.maximum(right + frac[:, 0] * width - span_margin_m, right)
        hi = np.minimum(right + frac[:, 1] * width + span_margin_m, right + width)
        centres[:, 1] = (lo + hi) / 2
        sizes[:, 1] = hi - lo
    ids = np.ravel_multi_index((cls, row, col), occupancy.shape).astype(np.int64)
    return centres, sizes, tuple(grid.bev_classes[int(c)] for c in cls), ids


def _uncovered_cells(
    cells: tuple[np.ndarray, np.ndarray, tuple[str, ...], np.ndarray],
    objects: PerceivedObjects,
    grid: PerceptionConfig,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], np.ndarray]:
    """Of the occupied cells (`cell_obstacles`' output), those that no perceived object of
    the cell's class touches (its box, taken as axis-aligned, overlaps the whole cell)."""
    centres, sizes, kinds, ids = cells
    if not len(kinds) or not len(objects.kind):
        return centres, sizes, kinds, ids
    half_cell = np.asarray(grid.cell_size) / 2
    gap = np.abs(centres[:, None, :] - objects.xy[None]) - half_cell - objects.size[None] / 2
    touches = (gap <= 0.0).all(-1)  # (cells, objects)
    same = np.asarray(kinds)[:, None] == np.asarray(objects.kind)[None]
    keep = ~(touches & same).any(1)
    return (
        centres[keep],
        sizes[keep],
        tuple(k for k, kept in zip(kinds, keep, strict=True) if kept),
        ids[keep],
    )


def assumed_stop_line_m(speed_mps: float, friction: float, config: PerceptionViewConfig) -> float:
    """[m] along the route from the ego's centre to where a perceived light's stop line is
    assumed (the module docstring): just beyond a stop from `speed_mps` at
    `light_decel_mps2`, scaled by `friction` as the rules scale their braking."""
    grip = max(friction / DRY_FRICTION, 0.3)
    stop_m = max(speed_mps, 0.0) ** 2 / (2.0 * config.light_decel_mps2 * grip)
    return config.ego_length_m / 2 + stop_m + config.light_margin_m


def perceived_light(
    light: np.ndarray, threshold: float
) -> TrafficLightState | None:  # None: no light governs
    for name, state in _LIGHT_ORDER:
        if float(light[LIGHT_STATES.index(name)]) >= threshold:
            return state
    return None


def route_from_targets(
    target_point: np.ndarray, next_target_point: np.ndarray | None = None, min_ahead_m: float = 1.0
) -> np.ndarray:
    """(M, 2) [m] ego-frame route polyline from the navigation's target points
    (`agent.navigation.Navigation`): the ego, then the targets that lie ahead
    (x > `min_ahead_m`). With none ahead: straight on. `view_from_perception` extends it."""
    points = [np.zeros(2)]
    for p in (target_point, next_target_point):
        if p is None:
            continue
        p = np.asarray(p, dtype=np.float64).reshape(2)
        if p[0] > min_ahead_m and np.linalg.norm(p - points[-1]) > 1e-3:
            points.append(p)
    if len(points) == 1:
        points.append(np.array([ROUTE_STEP_M, 0.0]))
    return np.stack(points)


def _route_ahead(route_xy: np.ndarray, horizon_m: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The route from the ego's projection, resampled every ROUTE_STEP_M up to horizon_m and
    carried straight on past its end: (points (M, 2), s (M,), ego offset left of it [m])."""
    starts, ends = route_xy[:-1], route_xy[1:]
    keep = np.linalg.norm(ends - starts, axis=1) > 1e-6
    if not keep.any():  # a degenerate route: straight on
        starts, ends = np.zeros((1, 2)), np.array([[ROUTE_STEP_M, 0.0]])
    else:
        starts, ends = starts[keep], ends[keep]
    seg = ends - starts
    length2 = (seg * seg).sum(axis=1)
    # The foot of the ego (the origin) on the nearest segment.
    t = np.clip(-(starts * seg).sum(axis=1) / length2, 0.0, 1.0)
    foot = starts + t[:, None] * seg
    k = int(np.argmin(np.linalg.norm(foot, axis=1)))
    tangent = seg[k] / math.sqrt(length2[k])
    lateral = float(-(foot[k] @ np.array([-tangent[1], tangent[0]])))
    vertices = np.concatenate([foot[k : k + 1], ends[k:]])
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(vertices, axis=0), axis=1))])
    s = np.arange(0.0, horizon_m + 1e-6, ROUTE_STEP_M)
    points = np.stack([np.interp(s, cum, vertices[:, 0]), np.interp(s, cum, vertices[:, 1])], 1)
    beyond = s > cum[-1]
    if beyond.any():  # on along the last segment's direction
        direction = seg[-1] / math.sqrt(length2[-1])
        points[beyond] = vertices[-1] + np.outer(s[beyond] - cum[-1], direction)
    return points, s, lateral


def view_from_perception(
    perception: PerceptionOutputs,
    speed_mps: float,
    route_xy: np.ndarray,
    config: PerceptionViewConfig | None = None,
    grid: PerceptionConfig | None = None,
) -> ObstacleView:
    """The view the safety fallback plans from (see the module docstring).

    perception: this tick's head outputs; speed_mps [m/s]; route_xy (M >= 2, 2) [m] the
    route ahead in the ego frame (e.g. `route_from_targets`); grid: the model's BEV grid
    (`ModelConfig.perception`). Inputs must be finite (the guard checks before)."""
    config = config or PerceptionViewConfig()
    grid = grid or PerceptionConfig()
    route_xy = np.asarray(route_xy, dtype=np.float64)
    if route_xy.ndim != 2 or route_xy.shape[1] != 2 or len(route_xy) < 2:
        raise ValueError(f"route_xy must be (M>=2, 2), got {route_xy.shape}")
    points, s, lateral = _route_ahead(route_xy, config.horizon_m)
    m = len(s)

    objects = perception.objects
    cells = None
    if objects is None or config.object_cells == "uncovered":
        cells = cell_obstacles(
            perception.occupancy,
            grid,
            config.occupancy_threshold,
            config.cell_box_scale,
            perception.span,
            config.span_margin_m,
        )
    if objects is None:
        assert cells is not None
        centres, sizes, kinds, ids = cells
        n = len(kinds)
        yaw, velocity = np.zeros(n), np.zeros((n, 2))  # cells neither turn nor move
    else:
        centres, sizes, kinds, ids = objects.xy, objects.size, objects.kind, objects.ids
        yaw, velocity = objects.yaw, objects.velocity
        if cells is not None:  # object_cells: uncovered
            c_xy, c_size, c_kinds, c_ids = _uncovered_cells(cells, objects, grid)
            centres = np.concatenate([centres, c_xy])
            sizes = np.concatenate([sizes, c_size])
            kinds = (*kinds, *c_kinds)
            # cell ids after the objects' (both index (classes, R, C), so offset them)
            ids = np.concatenate([ids, c_ids + perception.occupancy.size])
            yaw = np.concatenate([yaw, np.zeros(len(c_kinds))])
            velocity = np.concatenate([velocity, np.zeros((len(c_kinds), 2))])
    friction, visibility = road_conditions(
        perception.flags, config.flag_threshold, config.night_visibility_m
    )
    lights: tuple[tuple[float, TrafficLightState], ...] = ()
    state = perceived_light(perception.light, config.light_threshold)
    if state is not None:
        lights = ((assumed_stop_line_m(speed_mps, friction, config), state),)

    return ObstacleView(
        speed_mps=float(speed_mps),
        progress_m=0.0,  # the route restarts at the ego every tick
        lateral_offset_m=lateral,
        route_xy=points,
        route_s=s,
        lane_width_m=np.full(m, config.lane_width_m),
        **_lanes(perception.lanes, s, config.lane_threshold),
        speed_limit_mps=np.full(m, config.speed_limit_mps),
        obstacle_xy=centres,
        obstacle_yaw=yaw,
        obstacle_velocity=velocity,
        obstacle_size=sizes,
        obstacle_kind=kinds,
        obstacle_id=ids,
        obstacle_scenario=np.zeros(len(kinds), bool),
        lights=lights,
        friction=friction,
        visibility_m=visibility,
        ego_size=(config.ego_length_m, config.ego_width_m),
        route_remaining_m=REMAINING_UNKNOWN_M,
    )
