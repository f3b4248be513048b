"""Automatic labels of one stored frame, from ground truth and the expert's plan.

Per frame: the edge-case flags (`schema.FLAGS`), the intended manoeuvre (`schema.INTENTS`),
a short reasoning text, the state of the light governing the route and the nearest
obstacles (`schema.OBSTACLE_COLUMNS`). Geometry is measured on the route ahead of the
`ObstacleView` (ego frame, x forward, y left): `along` is the distance along the route
from the ego's projection [m], `lateral` the offset left of the route centre line [m].

The texts use a small, regular vocabulary (a tiny language model is trained on them):
"<conditions>. <main hazard with its distance>; <action with the target speed>."
Distances are rounded to 5 m and speeds to 5 km/h.

Some flags need the previous stored frame (a lead's deceleration, how long a vehicle has
stood); `LabelMemory.of(gt, prev)` carries that from one call to the next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from agent.data.schema import (
    FLAGS,
    INTENTS,
    LANE_COLUMNS,
    LANE_STATIONS_M,
    LIGHT_RANGE_M,
    LIGHT_STATES,
    MAX_OBSTACLES,
)
from agent.rules import ObstacleView, Plan
from agent.rules.view import KINDS
from sim.ground_truth import ActorState, GroundTruth, TrafficLightState

# --- ranges [m] along the route ahead
CONSTRUCTION_RANGE_M = 60.0  # [m] construction props this far ahead...
CONSTRUCTION_LATERAL_M = 8.0  # [m] ...and this far beside the route centre line
BLOCKER_RANGE_M = 60.0  # [m] lane closures and obstacles
PEDESTRIAN_RANGE_M = 40.0  # [m]
CUT_IN_RANGE_M = 30.0  # [m]
LEAD_RANGE_M = 40.0  # [m]
OBSTACLE_ROWS_RANGE_M = 60.0  # [m] obstacle rows (Euclidean from the ego)
BEHIND_TOLERANCE_M = 2.0  # [m] things this far behind the ego's centre still count as beside it

# --- motion
PREDICTION_S = 3.0  # [s] constant-velocity prediction of pedestrians and cut-ins
PREDICTION_STEP_S = 0.5  # [s]
PEDESTRIAN_NEAR_LANE_M = 2.0  # [m] a walker predicted this close to the lane crosses
PEDESTRIAN_TOWARD_MPS = 0.3  # [m/s] ...if walking toward it at least this fast
CUT_IN_LATERAL_MPS = 0.3  # [m/s] lateral speed toward the ego lane of a cut-in
LEAD_BRAKING_MPS2 = -2.5  # [m/s^2] a lead decelerating harder than this brakes hard
LEAD_EVENT_DECEL_MPS2 = -0.5  # [m/s^2] while its hard-brake event is active
MAX_ACCEL_DT_S = 1.5  # [s] longer gaps between frames give no deceleration estimate
STANDING_MPS = 0.3  # [m/s] a vehicle slower than this stands
STALLED_AFTER_S = 3.0  # [s] a scenario vehicle standing this long is an obstacle
LANE_INTRUSION_M = 0.3  # [m] an object reaching this far into the lane closes it

# --- weather (CARLA WeatherParameters units)
RAIN_PRECIPITATION = 30.0  # [0-100] rain from this precipitation
HEAVY_RAIN_PRECIPITATION = 70.0  # [0-100] "heavy rain" in the text
FOG_DENSITY = 30.0  # [0-100] fog from this density...
FOG_NEAR_M = 30.0  # [m] ...starting nearer than this (CARLA's night presets have density 60
# starting at 75 m: a clear night, not fog)
FOG_VISIBILITY_M = 80.0  # [m] or visibility below this
GLARE_MAX_ALTITUDE_DEG = 25.0  # [deg] a sun between 0 and this altitude...
GLARE_AZIMUTH_DEG = 35.0  # [deg] ...this close to the ego's heading dazzles
GLARE_MAX_CLOUDINESS = 90.0  # [0-100] an overcast sky hides it (the camera renders none)

# --- intent
STOP_MPS = 0.5  # [m/s] a target below this is a stop
SLOW_FRACTION = 0.8  # [-] a target below this share of the limit is slowing down...
SLOW_MARGIN_MPS = 2.0  # [m/s] ...or more than this below the current speed
ACCEL_TOLERANCE_MPS = 0.5  # [m/s] a target above speed + this is speeding up, not slowing
LANE_SHIFT_M = 1.0  # [m] planned lateral shift that counts as a lane change...
LANE_SHIFT_LOOKAHEAD_M = 20.0  # [m] ...measured this far ahead on the planned path
PASS_SIDE_RANGE_M = 40.0  # [m] lane room checked for an oncoming pass

HERE_M = 5.0  # [m] hazards nearer than this (along the route) are "here"
TEXT_MAX_CHARS = 200  # reasoning texts are cut to this (they stay well below)

CONSTRUCTION_TYPES = ("constructioncone", "streetbarrier", "trafficwarning", "warningconstruction")
DEBRIS_TYPES = ("debris",)
YIELD_REASONS = ("pedestrian", "crossing")  # plan.reason prefixes: right of way to others


@dataclass(frozen=True)
class LabelMemory:
    """What labelling remembers between stored frames of one episode."""

    time_s: float  # [s] game time of the frame it was made at
    speeds: dict[int, float] = field(default_factory=dict)  # actor id -> [m/s]
    standing_since: dict[int, float] = field(default_factory=dict)  # vehicle id -> [s]

    @classmethod
    def of(cls, gt: GroundTruth, prev: LabelMemory | None = None) -> LabelMemory:
        """The memory after the frame `gt` (carrying `prev`'s standing times on)."""
        since: dict[int, float] = {}
        for a in gt.actors:
            if a.kind == "vehicle" and abs(a.speed) < STANDING_MPS:
                start = prev.standing_since.get(a.id, gt.time_s) if prev else gt.time_s
                since[a.id] = start
        return cls(gt.time_s, {a.id: float(a.speed) for a in gt.actors}, since)


@dataclass(frozen=True)
class FrameLabels:
    """Labels of one frame. Obstacle rows: ego frame, nearest first, padded with zeros."""

    flags: np.ndarray  # (len(FLAGS),) bool, FLAGS order
    intent: int  # index into INTENTS
    text: str  # reasoning text, <= 200 characters
    light_state: int  # index into LIGHT_STATES
    obstacles: np.ndarray  # (MAX_OBSTACLES, len(OBSTACLE_COLUMNS)) float32
    obstacle_mask: np.ndarray  # (MAX_OBSTACLES,) bool: which rows are real
    # (len(FLAGS),) float32 [m] along the route to the nearest hazard that raised each flag
    # (0 for weather and for a lane change under way with nothing ahead); NaN where off.
    flag_distance_m: np.ndarray
    # (len(LANE_STATIONS_M), len(LANE_COLUMNS)) bool: the lanes beside the route (`lane_labels`)
    lanes: np.ndarray

    def __post_init__(self) -> None:
        if self.flags.shape != (len(FLAGS),) or self.flags.dtype != bool:
            raise ValueError(f"FrameLabels.flags must be bool ({len(FLAGS)},), got {self.flags}")
        if not 0 <= self.intent < len(INTENTS):
            raise ValueError(f"FrameLabels.intent must index INTENTS, got {self.intent}")
        if not 0 <= self.light_state < len(LIGHT_STATES):
            raise ValueError(
                f"FrameLabels.light_state must index LIGHT_STATES, got {self.light_state}"
            )
        if self.obstacles.shape != (MAX_OBSTACLES, 8) or self.obstacles.dtype != np.float32:
            raise ValueError(
                f"FrameLabels.obstacles must be float32 ({MAX_OBSTACLES}, 8), got "
                f"{self.obstacles.dtype} {self.obstacles.shape}"
            )
        if self.obstacle_mask.shape != (MAX_OBSTACLES,):
            raise ValueError(
                f"FrameLabels.obstacle_mask must be ({MAX_OBSTACLES},), got {self.obstacle_mask.shape}"
            )
        if self.flag_distance_m.shape != (len(FLAGS),) or not np.array_equal(
            np.isnan(self.flag_distance_m), ~self.flags
        ):
            raise ValueError(
                "FrameLabels.flag_distance_m must be a distance exactly where a flag is on, "
                f"got {self.flag_distance_m} for {self.active_flags}"
            )

        lanes_shape = (len(LANE_STATIONS_M), len(LANE_COLUMNS))
        if self.lanes.shape != lanes_shape or self.lanes.dtype != bool:
            raise ValueError(
                f"FrameLabels.lanes must be bool {lanes_shape}, got {self.lanes.dtype} "
                f"{self.lanes.shape}"
            )

    @property
    def active_flags(self) -> tuple[str, ...]:
        return tuple(name for name, on in zip(FLAGS, self.flags, strict=True) if on)

    @property
    def intent_name(self) -> str:
        return INTENTS[self.intent]


@dataclass(frozen=True)
class _Geometry:
    """Every obstacle of the view measured on the route (arrays of length N)."""

    along: np.ndarray  # [m] along the route from the ego's projection
    lateral: np.ndarray  # [m] centre's offset left of the route centre line
    half_extent: np.ndarray  # [m] half of the footprint across the route
    v_lateral: np.ndarray  # [m/s] velocity across the route, left-positive
    v_along: np.ndarray  # [m/s]
    half_lane: np.ndarray  # [m] half the route lane's width where it is
    normal: np.ndarray  # (N, 2) the route's left normal where it is


def _measure(view: ObstacleView) -> _Geometry:
    route = view.route_xy
    seg = np.diff(route, axis=0)  # (M-1, 2)
    length = np.maximum(np.linalg.norm(seg, axis=1), 1e-9)
    tangent = seg / length[:, None]
    pts = view.obstacle_xy
    if len(pts) == 0:
        z = np.zeros(0)
        return _Geometry(z, z, z, z, z, z, np.zeros((0, 2)))
    rel = pts[:, None, :] - route[None, :-1, :]  # (N, M-1, 2)
    t = (rel * tangent[None]).sum(axis=2) / length[None]
    t_clip = np.clip(t, 0.0, 1.0)
    foot = route[None, :-1] + t_clip[..., None] * seg[None]
    j = np.argmin(np.linalg.norm(pts[:, None, :] - foot, axis=2), axis=1)
    n = np.arange(len(pts))
    tj = t[n, j]
    # Before the first and past the last segment the route extends straight.
    tj = np.where((j == 0) & (tj < 0.0), tj, np.where(j == len(seg) - 1, tj, t_clip[n, j]))
    along = view.route_s[j] + tj * length[j]
    tan = tangent[j]
    normal = np.stack([-tan[:, 1], tan[:, 0]], axis=1)
    lateral = ((pts - route[j]) * normal).sum(axis=1)
    heading = np.arctan2(tan[:, 1], tan[:, 0])
    rel_yaw = view.obstacle_yaw - heading
    half_extent = (
        np.abs(np.sin(rel_yaw)) * view.obstacle_size[:, 0] / 2
        + np.abs(np.cos(rel_yaw)) * view.obstacle_size[:, 1] / 2
    )
    vel = view.obstacle_velocity
    return _Geometry(
        along=along,
        lateral=lateral,
        half_extent=half_extent,
        v_lateral=(vel * normal).sum(axis=1),
        v_along=(vel * tan).sum(axis=1),
        half_lane=view.lane_width_m[j] / 2.0,
        normal=normal,
    )


def _type_ids(gt: GroundTruth) -> dict[int, ActorState]:
    return {a.id: a for a in gt.actors + gt.props}


def _is_type(actor: ActorState | None, names: tuple[str, ...]) -> bool:
    return actor is not None and any(n in actor.type_id for n in names)


def _round5(value: float) -> int:
    return int(5 * round(value / 5.0))


def _distance_text(along_m: float) -> str:
    """'35 m ahead', or 'here' for what the ego has reached."""
    if along_m < HERE_M:
        return "here"
    return f"{max(_round5(along_m), 5)} m ahead"


def _kmh(speed_mps: float) -> int:
    return max(_round5(speed_mps * 3.6), 0)


def weather_flags(gt: GroundTruth) -> dict[str, bool]:
    """rain / fog / night / glare of the frame (see the module constants)."""
    w = gt.weather
    sun_off = math.degrees(
        (math.radians(w.sun_azimuth_angle) - gt.ego.yaw + math.pi) % (2 * math.pi) - math.pi
    )
    return {
        "rain": w.precipitation >= RAIN_PRECIPITATION,
        "fog": (w.fog_density >= FOG_DENSITY and w.fog_distance < FOG_NEAR_M)
        or w.visibility_m < FOG_VISIBILITY_M,
        "night": w.sun_altitude_angle < 0.0,
        "glare": 0.0 <= w.sun_altitude_angle <= GLARE_MAX_ALTITUDE_DEG
        and abs(sun_off) <= GLARE_AZIMUTH_DEG
        and w.cloudiness < GLARE_MAX_CLOUDINESS,
    }


def light_state(view: ObstacleView) -> int:
    """Index into LIGHT_STATES of the nearest light governing the route within range."""
    for dist, state in view.lights:
        if dist > LIGHT_RANGE_M:
            break
        name = {
            TrafficLightState.Red: "red",
            TrafficLightState.Yellow: "yellow",
            TrafficLightState.Green: "green",
        }.get(TrafficLightState(state))
        return LIGHT_STATES.index(name) if name else 0
    return 0


def obstacle_rows(view: ObstacleView) -> tuple[np.ndarray, np.ndarray]:
    """The nearest MAX_OBSTACLES obstacles within OBSTACLE_ROWS_RANGE_M, OBSTACLE_COLUMNS."""
    rows = np.zeros((MAX_OBSTACLES, 8), np.float32)
    mask = np.zeros(MAX_OBSTACLES, bool)
    dist = np.linalg.norm(view.obstacle_xy, axis=1) if len(view.obstacle_kind) else np.zeros(0)
    order = [int(i) for i in np.argsort(dist, kind="stable") if dist[i] <= OBSTACLE_ROWS_RANGE_M]
    for r, i in enumerate(order[:MAX_OBSTACLES]):
        rows[r] = (
            view.obstacle_xy[i, 0],
            view.obstacle_xy[i, 1],
            view.obstacle_yaw[i],
            view.obstacle_velocity[i, 0],
            view.obstacle_velocity[i, 1],
            view.obstacle_size[i, 0],
            view.obstacle_size[i, 1],
            KINDS.index(view.obstacle_kind[i]),
        )
        mask[r] = True
    return rows, mask


@dataclass(frozen=True)
class _Hazard:
    flag: str  # FLAGS name; obstacles split into "obstacle_vehicle" / "obstacle_debris"
    along_m: float
    phrase: str  # "<subject> <verb> {d}", {d} filled with the rounded distance


def label_frame(
    view: ObstacleView, plan: Plan, gt: GroundTruth, prev: LabelMemory | None = None
) -> FrameLabels:
    """Labels of one frame. `view` and `plan` are the expert's of this frame; `prev` the
    memory after the previous stored frame of the episode (None for the first)."""
    geo = _measure(view)
    actors = _type_ids(gt)
    n = len(view.obstacle_kind)
    objs = [actors.get(int(i)) for i in view.obstacle_id]
    prop_ids = {a.id for a in gt.props}
    width = float(view.lane_width_m[0])
    ego_lane = round(view.lateral_offset_m / width) * width if width > 0 else 0.0
    hazards: list[_Hazard] = []
    flags = dict.fromkeys(FLAGS, False)
    flags.update(weather_flags(gt))

    ahead = geo.along >= -BEHIND_TOLERANCE_M
    gap_to_lane = np.abs(geo.lateral) - geo.half_extent - geo.half_lane  # < 0: inside
    speed = np.linalg.norm(view.obstacle_velocity, axis=1) if n else np.zeros(0)

    # Construction: cones, barriers, warning signs beside or on the route ahead.
    construction = [
        i
        for i in range(n)
        if _is_type(objs[i], CONSTRUCTION_TYPES)
        and ahead[i]
        and geo.along[i] <= CONSTRUCTION_RANGE_M
        and abs(geo.lateral[i]) <= CONSTRUCTION_LATERAL_M
    ]

    # Standing vehicles that stay: parked / crashed cars (props) and scenario vehicles
    # standing for STALLED_AFTER_S (a queue of traffic is not an obstacle).
    def stays(i: int) -> bool:
        a = objs[i]
        if a is None or view.obstacle_kind[i] != "vehicle" or speed[i] >= STANDING_MPS:
            return False
        if a.id in prop_ids:
            return True
        since = prev.standing_since.get(a.id) if prev else None
        return a.role == "scenario" and since is not None and gt.time_s - since >= STALLED_AFTER_S

    in_range = ahead & (geo.along <= BLOCKER_RANGE_M)
    debris = [i for i in range(n) if _is_type(objs[i], DEBRIS_TYPES)]
    blockers = [
        i
        for i in range(n)
        if in_range[i]
        and (view.obstacle_kind[i] == "static" or stays(i))
        and gap_to_lane[i] < -LANE_INTRUSION_M
    ]
    obstacles = [
        i for i in range(n) if in_range[i] and (stays(i) or i in debris) and gap_to_lane[i] < 0.0
    ]
    if construction:
        flags["construction"] = True
    flags["lane_closed"] = plan.lane_offset_m != 0.0 or bool(blockers)
    if obstacles:
        flags["obstacle"] = True

    # Pedestrians in the lane, or walking toward it and predicted close to it within 3 s.
    times = np.arange(0.0, PREDICTION_S + 1e-6, PREDICTION_STEP_S)
    for i in range(n):
        if view.obstacle_kind[i] != "pedestrian" or not ahead[i]:
            continue
        if geo.along[i] > PEDESTRIAN_RANGE_M:
            continue
        lat_t = geo.lateral[i] + geo.v_lateral[i] * times
        gap_t = np.abs(lat_t) - geo.half_lane[i]
        toward = -np.sign(geo.lateral[i]) * geo.v_lateral[i]
        if gap_t[0] <= 0.0 or (
            toward > PEDESTRIAN_TOWARD_MPS and gap_t.min() <= PEDESTRIAN_NEAR_LANE_M
        ):
            flags["pedestrian_crossing"] = True
            hazards.append(_Hazard("pedestrian_crossing", geo.along[i], "a pedestrian crosses {d}"))

    # Cut-ins: a vehicle beside the ego lane moving into it, inside it within 3 s.
    for i in range(n):
        if view.obstacle_kind[i] != "vehicle" or not 0.0 < geo.along[i] <= CUT_IN_RANGE_M:
            continue
        off = geo.lateral[i] - ego_lane
        if abs(off) < geo.half_lane[i]:
            continue  # already in the ego lane
        toward = -np.sign(off) * geo.v_lateral[i]
        if toward <= CUT_IN_LATERAL_MPS:
            continue
        gap = abs(off) - geo.half_extent[i] - geo.half_lane[i]
        if gap / toward <= PREDICTION_S:
            flags["cut_in"] = True
            side = "left" if off > 0 else "right"
            hazards.append(
                _Hazard("cut_in", geo.along[i], f"a vehicle cuts in from the {side} {{d}}")
            )

    # Lead braking: the nearest vehicle ahead in the ego lane.
    lead = None
    for i in np.argsort(geo.along, kind="stable"):
        i = int(i)
        if view.obstacle_kind[i] == "vehicle" and 0.0 < geo.along[i] <= LEAD_RANGE_M:
            if abs(geo.lateral[i] - ego_lane) < geo.half_lane[i]:
                lead = i
                break
    if lead is not None and objs[lead] is not None:
        a = objs[lead]
        assert a is not None
        accel = None
        if (
            prev is not None
            and a.id in prev.speeds
            and 0.0 < gt.time_s - prev.time_s <= MAX_ACCEL_DT_S
        ):
            accel = (a.speed - prev.speeds[a.id]) / (gt.time_s - prev.time_s)
        event = a.role == "scenario" and any(e.startswith("hard_brake") for e in gt.active_events)
        braking = accel is not None and accel < LEAD_BRAKING_MPS2
        braking |= (
            event and a.speed > STANDING_MPS and (accel is None or accel < LEAD_EVENT_DECEL_MPS2)
        )
        if braking:
            flags["lead_braking"] = True
            hazards.append(
                _Hazard("lead_braking", geo.along[lead], "the lead vehicle brakes hard {d}")
            )

    # Red (or yellow) light governing the route.
    state = light_state(view)
    if LIGHT_STATES[state] in ("red", "yellow"):
        flags["red_light"] = True
        dist = next(d for d, _ in view.lights)
        hazards.append(_Hazard("red_light", dist, f"the light {{d}} is {LIGHT_STATES[state]}"))

    if construction:
        near = min(construction, key=lambda i: geo.along[i])
        if flags["lane_closed"]:
            side = _closed_side(view)
            phrase = f"construction closes the {side}lane {{d}}"
        else:
            phrase = "construction beside the road {d}"
        hazards.append(_Hazard("construction", max(geo.along[near], 0.0), phrase))
    for i in obstacles:
        a = objs[i]
        if i in debris:
            kind, subject = "debris", "debris blocks"
        elif a is not None and a.id in prop_ids:
            kind, subject = "vehicle", "a stopped vehicle blocks"  # parked or crashed
        else:
            kind, subject = "vehicle", "a stopped vehicle blocks"
        hazards.append(
            _Hazard(f"obstacle_{kind}", max(geo.along[i], 0.0), subject + " the lane {d}")
        )
    if blockers and not construction and not obstacles:
        near = min(blockers, key=lambda i: geo.along[i])
        hazards.append(
            _Hazard("lane_closed", max(geo.along[near], 0.0), "an object blocks the lane {d}")
        )

    flag_array = np.array([flags[name] for name in FLAGS], bool)
    intent = _intent(view, plan)
    conditions = _conditions(flags, gt)
    text = _text(view, plan, flags["fog"], conditions, hazards, intent, lead, geo)
    rows, mask = obstacle_rows(view)
    distance = _flag_distances(flag_array, hazards, [geo.along[i] for i in blockers])
    return FrameLabels(
        flag_array, INTENTS.index(intent), text, state, rows, mask, distance, lane_labels(view)
    )


def lane_labels(view: ObstacleView) -> np.ndarray:
    """(len(LANE_STATIONS_M), len(LANE_COLUMNS)) bool: at each station along the route
    (from the ego's projection; past the view's end, its last point), whether a
    same-direction lane lies to the left, one to the right, an oncoming lane directly to
    the left (LANE_COLUMNS), as the view's lane layout says."""
    at = np.searchsorted(view.route_s, np.asarray(LANE_STATIONS_M), side="right") - 1
    at = np.clip(at, 0, len(view.route_s) - 1)
    return np.stack(
        [view.left_same[at] > 0, view.right_same[at] > 0, view.left_opposite[at].astype(bool)],
        axis=1,
    )


def _flag_distances(
    flags: np.ndarray, hazards: list[_Hazard], blocker_along: list[float]
) -> np.ndarray:
    """(len(FLAGS),) float32: per flag that is on, the distance [m] along the route to the
    nearest hazard that raised it; NaN where off. Weather is everywhere (0). A lane is
    closed by its nearest blocker or construction; with neither in range the flag comes
    from the expert's lane offset (a change under way), and the hazard is here (0)."""
    nearest: dict[str, float] = {}
    for h in hazards:
        name = "obstacle" if h.flag.startswith("obstacle_") else h.flag
        nearest[name] = min(nearest.get(name, np.inf), max(h.along_m, 0.0))
    closers = [max(a, 0.0) for a in blocker_along]
    if "construction" in nearest:
        closers.append(nearest["construction"])
    nearest["lane_closed"] = min(closers, default=0.0)
    out = np.full(len(FLAGS), np.nan, np.float32)
    for i, name in enumerate(FLAGS):
        if flags[i]:
            out[i] = nearest.get(name, 0.0)  # weather flags raise no hazard: 0
    return out


def _closed_side(view: ObstacleView) -> str:
    """'right ' / 'left ' when the road has another lane in the ego's direction, else ''."""
    k = max(int(np.searchsorted(view.route_s, BLOCKER_RANGE_M)), 1)
    left, right = int(view.left_same[:k].max()), int(view.right_same[:k].max())
    if left > 0 and right == 0:
        return "right "
    if right > 0 and left == 0:
        return "left "
    return ""


def _planned_shift(view: ObstacleView, plan: Plan) -> float:
    """[m] lateral offset (left of the route) of the planned path LANE_SHIFT_LOOKAHEAD_M
    ahead, minus the ego's offset now: where the plan moves the ego across the road."""
    m = min(len(plan.path), len(view.route_xy))
    if m < 2:
        return 0.0
    j = int(np.clip(np.searchsorted(view.route_s[:m], LANE_SHIFT_LOOKAHEAD_M), 0, m - 2))
    tangent = view.route_xy[j + 1] - view.route_xy[j]
    tangent = tangent / max(float(np.linalg.norm(tangent)), 1e-9)
    normal = np.array([-tangent[1], tangent[0]])
    ahead = float((plan.path[j] - view.route_xy[j]) @ normal)
    return ahead - view.lateral_offset_m


def _intent(view: ObstacleView, plan: Plan) -> str:
    target, speed = plan.target_speed_mps, view.speed_mps
    limit = float(view.speed_limit_mps[0])
    side = int(np.sign(plan.lane_offset_m))
    if side == 0:
        shift = _planned_shift(view, plan)
        side = int(np.sign(shift)) if abs(shift) > LANE_SHIFT_M else 0
    if side > 0:
        k = max(int(np.searchsorted(view.route_s, PASS_SIDE_RANGE_M)), 1)
        oncoming = plan.reason.startswith("pass oncoming") or (
            view.left_same[:k].max() == 0 and bool(view.left_opposite[:k].any())
        )
        return "pass_opposite" if oncoming else "change_left"
    if side < 0:
        return "change_right"
    slowing = (
        target < STOP_MPS or target < speed - ACCEL_TOLERANCE_MPS or target < SLOW_FRACTION * limit
    )
    if plan.reason.startswith(YIELD_REASONS) and slowing:
        return "yield"
    if target < STOP_MPS and plan.reason != "cruise":
        return "stop"
    if (target < SLOW_FRACTION * limit and target <= speed + ACCEL_TOLERANCE_MPS) or (
        target < speed - SLOW_MARGIN_MPS
    ):
        return "slow_down"
    return "keep_lane"


def _conditions(flags: dict[str, bool], gt: GroundTruth) -> str:
    parts = []
    if flags["rain"]:
        heavy = gt.weather.precipitation >= HEAVY_RAIN_PRECIPITATION
        parts.append("heavy rain" if heavy else "rain")
    if flags["fog"]:
        parts.append("fog")
    if parts:
        text = " and ".join(parts).capitalize() + (" at night" if flags["night"] else "")
    else:
        text = "Clear night" if flags["night"] else "Clear day"
    if flags["glare"]:
        text += ", low sun ahead"
    return text + "."


def _text(
    view: ObstacleView,
    plan: Plan,
    fog: bool,
    conditions: str,
    hazards: list[_Hazard],
    intent: str,
    lead: int | None,
    geo: _Geometry,
) -> str:
    # The main hazard: the first flagged one in this order of urgency.
    order = (
        "pedestrian_crossing",
        "cut_in",
        "lead_braking",
        "red_light",
        "obstacle_vehicle",  # a crashed / stalled car explains more than its warning sign
        "construction",
        "obstacle_debris",
        "lane_closed",
    )
    near_route = view.route_s <= BLOCKER_RANGE_M
    main = min(hazards, key=lambda h: (order.index(h.flag), h.along_m), default=None)
    if main is not None:
        hazard = main.phrase.format(d=_distance_text(main.along_m))
    elif plan.reason.startswith("crossing vehicle"):
        hazard = "a vehicle crosses ahead"
    elif lead is not None:
        hazard = f"a vehicle drives {_distance_text(float(geo.along[lead]))}"
    elif float(view.speed_limit_mps[near_route].min()) < float(view.speed_limit_mps[0]) - 0.5:
        hazard = "the speed limit drops ahead"
    elif plan.reason == "curve":
        hazard = "a curve lies ahead"
    elif fog:
        hazard = "visibility is low"
    else:
        hazard = "road ahead is free"
    v = _kmh(plan.target_speed_mps)
    slower = plan.target_speed_mps < view.speed_mps - 1.0
    pace = f"slow to {v} km/h" if slower else f"drive at {v} km/h"
    action = {
        "keep_lane": f"keep the lane at {v} km/h",
        "slow_down": f"slow to {v} km/h",
        "stop": "stop",
        "yield": "yield and stop"
        if plan.target_speed_mps < STOP_MPS
        else f"yield and slow to {v} km/h",
        "change_left": f"change to the left lane and {pace}",
        "change_right": f"change to the right lane and {pace}",
        "pass_opposite": f"pass in the oncoming lane and {pace}",
    }[intent]
    text = f"{conditions} {hazard[0].upper()}{hazard[1:]}; {action}."
    return text[:TEXT_MAX_CHARS]
