"""Leaderboard 2.0 statistics (route and global records, results JSON) and Bench2Drive's extras.

Re-implements the arithmetic of the Leaderboard's `statistics_manager.py`:
- route: Infraction Penalty IP = product over events of PENALTY_VALUES[kind]; the
  percentage events multiply it by `1 - (1 - p) * pct / 100` ('increases', outside route
  lanes with p = 0) or `1 - (1 - p) * (1 - pct / 100)` ('decreases', min speed with p = 0.7);
  Route Completion RC from the route criteria; Driving Score = max(RC * IP, 0). Scores are
  rounded to 6 digits, meta to 3. Status `Perfect` (RC 100, no infraction), `Completed`
  (RC 100), else `Failed[ - reason]`; a route timeout, a deviation or a block sets the
  reason like the Leaderboard does, overriding a reason passed in.
- global: means over routes, sample standard deviation (n - 1, 0 for one route, rounded to
  3 digits), infractions per km driven (sum of route length x RC), except
  `outside_route_lanes`, which is km driven outside the lanes, read from the message.
Min speed: Leaderboard 2.0's published scoring table (and its `leaderboard-2.0` branch)
applies the 'decreases' penalty per checkpoint; the newer master marks it 'unused' (events
still listed, no penalty). We default to 'decreases' because that is the documented
Leaderboard 2.0 Driving Score; pass `min_speed_policy="unused"` to compare with master or
Bench2Drive numbers.

Bench2Drive extras (its `tools/` scripts, re-implemented): Success Rate (route Completed or
Perfect with no infraction other than min speed), Efficiency (per route the mean of the
min-speed checkpoint values <= 1000 %, then the mean over routes that have one) and
Comfortness (see `comfort_metrics`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sim.ground_truth import INFRACTION_KEYS, InfractionEvent

MinSpeedPolicy = Literal["decreases", "unused"]
MIN_SPEED_POLICIES: tuple[str, ...] = ("decreases", "unused")
DEFAULT_MIN_SPEED_POLICY: MinSpeedPolicy = "decreases"

# Events that multiply the penalty by a fixed value (PENALTY_VALUE_DICT).
PENALTY_VALUES: dict[str, float] = {
    "collisions_pedestrian": 0.5,
    "collisions_vehicle": 0.6,
    "collisions_layout": 0.65,
    "red_light": 0.7,
    "stop_infraction": 0.8,
    "scenario_timeouts": 0.7,
    "yield_emergency_vehicle_infractions": 0.7,
}
# Events whose penalty depends on data["percentage"] (PENALTY_PERC_DICT): (value, type).
OUTSIDE_LANES_PENALTY = (0.0, "increases")
MIN_SPEED_PENALTY_VALUE = 0.7

ENTRY_STATUS_VALUES: tuple[str, ...] = ("Started", "Finished", "Rejected", "Crashed", "Invalid")
ELIGIBLE_VALUES: dict[str, bool] = {
    "Started": False,
    "Finished": True,
    "Rejected": False,
    "Crashed": False,
    "Invalid": False,
}
# Route failure -> (entry status, status text), as in the Leaderboard.
FAILURE_MESSAGES: dict[str, tuple[str, str]] = {
    "Simulation": ("Crashed", "Simulation crashed"),
    "Sensors": ("Rejected", "Agent's sensors were invalid"),
    "Agent_init": ("Started", "Agent couldn't be set up"),
    "Agent_runtime": ("Started", "Agent crashed"),
}
ROUTE_DEVIATION_MESSAGE = "Agent deviated from the route"
BLOCKED_MESSAGE = "Agent got blocked"
TIMEOUT_MESSAGE = "Agent timed out"

ROUND_DIGITS = 3
ROUND_DIGITS_SCORE = 6

# leaderboard_evaluator.py saves `[sensors_to_icons[s['type']] for s in sensors]`.
SENSOR_ICONS: dict[str, str] = {
    "sensor.camera.rgb": "carla_camera",
    "sensor.lidar.ray_cast": "carla_lidar",
    "sensor.other.radar": "carla_radar",
    "sensor.other.gnss": "carla_gnss",
    "sensor.other.imu": "carla_imu",
    "sensor.opendrive_map": "carla_opendrive_map",
    "sensor.speedometer": "carla_speedometer",
}

# `values` / `labels` of the results JSON, in the Leaderboard's order (15 entries).
LABELS: tuple[str, ...] = (
    "Avg. driving score",
    "Avg. route completion",
    "Avg. infraction penalty",
    "Collisions with pedestrians",
    "Collisions with vehicles",
    "Collisions with layout",
    "Red lights infractions",
    "Stop sign infractions",
    "Off-road infractions",
    "Route deviations",
    "Route timeouts",
    "Agent blocked",
    "Yield emergency vehicles infractions",
    "Scenario timeouts",
    "Min speed infractions",
)
_VALUE_INFRACTIONS: tuple[str, ...] = (
    "collisions_pedestrian",
    "collisions_vehicle",
    "collisions_layout",
    "red_light",
    "stop_infraction",
    "outside_route_lanes",
    "route_dev",
    "route_timeout",
    "vehicle_blocked",
    "yield_emergency_vehicle_infractions",
    "scenario_timeouts",
    "min_speed_infractions",
)
ROUTE_RECORD_KEYS: tuple[str, ...] = (
    "index",
    "route_id",
    "scenario_name",
    "weather_id",
    "save_name",
    "status",
    "num_infractions",
    "infractions",
    "scores",
    "meta",
    "town_name",
)
_ROUTE_ID = re.compile(r"^[^_]+_(\d+)(?:_.*)?_rep(\d+)$")


def route_id(route: int, repetition: int) -> str:
    """`RouteScenario_{route}_rep{repetition}`, the Leaderboard's route record id."""
    if route < 0 or repetition < 0:
        raise ValueError(f"route ({route}) and repetition ({repetition}) must be >= 0")
    return f"RouteScenario_{route}_rep{repetition}"


def route_sort_key(rid: str) -> tuple[int, int]:
    """The Leaderboard's record order: the number after the first '_', then the repetition."""
    match = _ROUTE_ID.match(rid)
    if match is None:
        raise ValueError(f"route_id {rid!r} is not of the form <name>_<number>_rep<repetition>")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class RouteMeta:
    """What a route record says about the route itself (not about the drive)."""

    index: int  # position in the sorted records
    route_id: str  # RouteScenario_{i}_rep{r}
    scenario_name: str
    weather_id: str
    save_name: str
    town_name: str
    route_length_m: float  # [m]

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"RouteMeta.index must be >= 0, got {self.index}")
        route_sort_key(self.route_id)
        if not math.isfinite(self.route_length_m) or self.route_length_m < 0.0:
            raise ValueError(
                f"RouteMeta.route_length_m must be finite and >= 0, got {self.route_length_m}"
            )


def percentage_factor(kind: str, percentage: float, min_speed_policy: str) -> float:
    """Penalty multiplier of a percentage-based event (outside lanes, min speed)."""
    if kind == "outside_route_lanes":
        value, ptype = OUTSIDE_LANES_PENALTY
    elif kind == "min_speed_infractions":
        if min_speed_policy not in MIN_SPEED_POLICIES:
            raise ValueError(
                f"min_speed_policy {min_speed_policy!r} is not one of {MIN_SPEED_POLICIES}"
            )
        value, ptype = MIN_SPEED_PENALTY_VALUE, min_speed_policy
    else:
        raise ValueError(f"{kind!r} is not a percentage-based infraction")
    if ptype == "decreases":
        return 1.0 - (1.0 - value) * (1.0 - percentage / 100.0)
    if ptype == "increases":
        return 1.0 - (1.0 - value) * percentage / 100.0
    return 1.0  # "unused"


def route_record(
    meta: RouteMeta,
    events: Sequence[InfractionEvent],
    route_completion: float,
    failure_message: str = "",
    duration_game_s: float = 0.0,
    duration_system_s: float = 0.0,
    min_speed_policy: str = DEFAULT_MIN_SPEED_POLICY,
) -> dict[str, Any]:
    """The Leaderboard's RouteRecord for one finished route, as a JSON-ready dict.

    `events` are every InfractionEvent of the route (collisions already de-duplicated by the
    route criteria), including the single outside-lanes event and the min-speed ones.
    `failure_message` is a FAILURE_MESSAGES text when the harness stopped the route
    (agent crash, setup failure...), "" otherwise.
    """
    if not 0.0 <= route_completion <= 100.0:
        raise ValueError(f"route_completion must be in [0, 100] %, got {route_completion}")
    infractions: dict[str, list[str]] = {key: [] for key in INFRACTION_KEYS}
    failure = failure_message
    penalty = 1.0
    if any(e.kind == "route_timeout" for e in events):
        infractions["route_timeout"].append("Route timeout.")
        failure = TIMEOUT_MESSAGE
    for event in events:
        kind = event.kind
        if kind in PENALTY_VALUES:
            penalty *= PENALTY_VALUES[kind]
        elif kind in ("outside_route_lanes", "min_speed_infractions"):
            if "percentage" not in event.data:
                raise ValueError(f"{kind} event at frame {event.frame} has no data['percentage']")
            penalty *= percentage_factor(kind, float(event.data["percentage"]), min_speed_policy)
        elif kind == "route_dev":
            failure = ROUTE_DEVIATION_MESSAGE
        elif kind == "vehicle_blocked":
            failure = BLOCKED_MESSAGE
        else:  # route_timeout: counted once above
            continue
        infractions[kind].append(event.message)
    num_infractions = sum(len(v) for v in infractions.values())
    if route_completion >= 100.0:
        status = "Completed" if num_infractions > 0 else "Perfect"
    else:
        status = "Failed" + (f" - {failure}" if failure else "")
    return {
        "index": meta.index,
        "route_id": meta.route_id,
        "scenario_name": meta.scenario_name,
        "weather_id": meta.weather_id,
        "save_name": meta.save_name,
        "status": status,
        "num_infractions": num_infractions,
        "infractions": infractions,
        "scores": {
            "score_route": round(route_completion, ROUND_DIGITS_SCORE),
            "score_penalty": round(penalty, ROUND_DIGITS_SCORE),
            "score_composed": round(max(route_completion * penalty, 0.0), ROUND_DIGITS_SCORE),
        },
        "meta": {
            "route_length": round(meta.route_length_m, ROUND_DIGITS),
            "duration_game": round(duration_game_s, ROUND_DIGITS),
            "duration_system": round(duration_system_s, ROUND_DIGITS),
        },
        "town_name": meta.town_name,
    }


def outside_lanes_km(record: Mapping[str, Any]) -> float:
    """[km] driven outside the route lanes, read from the message like the Leaderboard
    ("Agent went outside its route lanes for about X meters (...)": word 8 is X)."""
    messages = record["infractions"]["outside_route_lanes"]
    if not messages:
        return 0.0
    try:
        return float(messages[0].split(" ")[8]) / 1000.0
    except (IndexError, ValueError):
        raise ValueError(
            f"{record.get('route_id')}: outside_route_lanes message {messages[0]!r} does not "
            "carry the metres as its 9th word"
        ) from None


def global_record(
    records: Sequence[Mapping[str, Any]], total_routes: int | None = None
) -> dict[str, Any]:
    """The Leaderboard's GlobalRecord over route records (means divide by `total_routes`,
    the number of routes of the evaluation, default len(records))."""
    total = len(records) if total_routes is None else total_routes
    if total < 1:
        raise ValueError(f"total_routes must be >= 1, got {total}")
    score_keys = ("score_composed", "score_route", "score_penalty")
    means = dict.fromkeys(score_keys, 0.0)
    meta: dict[str, Any] = {
        "total_length": 0,
        "duration_game": 0,
        "duration_system": 0,
        "exceptions": [],
    }
    status = "Perfect"
    for record in records:
        for key in score_keys:
            means[key] += record["scores"][key] / total
        for key, src in (
            ("total_length", "route_length"),
            ("duration_game", "duration_game"),
            ("duration_system", "duration_system"),
        ):
            meta[key] += record["meta"][src]
        result = "Failed" if "Failed" in record["status"] else record["status"]
        if result == "Failed":
            meta["exceptions"].append([record["route_id"], record["index"], record["status"]])
            status = "Failed"
        elif status == "Perfect" and result != "Perfect":
            status = result
    means = {key: round(value, ROUND_DIGITS_SCORE) for key, value in means.items()}
    std: dict[str, float] = dict.fromkeys(score_keys, 0)  # type: ignore[arg-type]
    if total > 1:
        sums = dict.fromkeys(score_keys, 0.0)
        for record in records:
            for key in score_keys:
                sums[key] += (record["scores"][key] - means[key]) ** 2
        std = {key: round(math.sqrt(sums[key] / (total - 1)), ROUND_DIGITS) for key in score_keys}
    km_driven = 0.0
    infractions = dict.fromkeys(INFRACTION_KEYS, 0.0)
    for record in records:
        km_driven += record["meta"]["route_length"] / 1000 * record["scores"]["score_route"] / 100
        for key in INFRACTION_KEYS:
            if key == "outside_route_lanes":
                infractions[key] += outside_lanes_km(record)
            else:
                infractions[key] += len(record["infractions"][key])
    km_driven = max(km_driven, 0.001)
    for key in INFRACTION_KEYS:
        value = infractions[key] if key == "outside_route_lanes" else infractions[key] / km_driven
        infractions[key] = round(value, ROUND_DIGITS)
    return {
        "index": -1,
        "route_id": -1,
        "status": status,
        "infractions": infractions,
        "scores_mean": means,
        "scores_std_dev": std,
        "meta": meta,
    }


def global_values(record: Mapping[str, Any]) -> list[str]:
    """The 15 `values` strings matching LABELS."""
    scores = record["scores_mean"]
    out = [
        str(scores["score_composed"]),
        str(scores["score_route"]),
        str(scores["score_penalty"]),
    ]
    return out + [str(record["infractions"][key]) for key in _VALUE_INFRACTIONS]


def entry_status_of(records: Sequence[Mapping[str, Any]]) -> str:
    """'Finished', or 'Crashed' / 'Rejected' when a route says so (the last one wins)."""
    status = "Finished"
    for record in records:
        if "Simulation crashed" in record["status"]:
            status = "Crashed"
        elif "Agent's sensors were invalid" in record["status"]:
            status = "Rejected"
    return status


def results_json(
    records: Sequence[Mapping[str, Any]],
    progress: tuple[int, int],
    sensors: Sequence[str],
    entry_status: str,
    global_rec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Leaderboard's results/checkpoint JSON. Without `global_rec` (an evaluation still
    running or stopped by a crash) `global_record` is {} and `values`/`labels` are empty."""
    if entry_status not in ENTRY_STATUS_VALUES:
        raise ValueError(f"entry_status {entry_status!r} is not one of {ENTRY_STATUS_VALUES}")
    return {
        "_checkpoint": {
            "global_record": dict(global_rec) if global_rec else {},
            "progress": [int(progress[0]), int(progress[1])],
            "records": [dict(r) for r in records],
        },
        "entry_status": entry_status,
        "eligible": ELIGIBLE_VALUES[entry_status],
        "sensors": list(sensors),
        "values": global_values(global_rec) if global_rec else [],
        "labels": list(LABELS) if global_rec else [],
    }


def final_results(
    records: Sequence[Mapping[str, Any]],
    total_routes: int,
    sensors: Sequence[str],
    sensors_initialized: bool,
) -> dict[str, Any]:
    """Results of a finished evaluation: global statistics, entry status, then the
    Leaderboard's validation (badly formed statistics make the entry 'Invalid')."""
    grec = global_record(records, total_routes)
    status = entry_status_of(records)
    progress = (len(records), total_routes)
    if (
        (sensors_initialized and not sensors)
        or progress[0] != progress[1]
        or any(r["status"] == "Started" for r in records)
    ):
        status = "Invalid"
    return results_json(records, progress, sensors, status, grec)


# ------------------------------------------------------------------ Bench2Drive
EFFICIENCY_MAX_PERCENTAGE = 1000.0  # [%] Bench2Drive drops checkpoint values above this
COMFORT_SAMPLE_S = 0.1  # [s] Bench2Drive logs the ego at 10 Hz
COMFORT_SEGMENT_SAMPLES = 20  # samples per segment (2 s)
COMFORT_WINDOW = 7  # Savitzky-Golay window [samples]
COMFORT_POLY_ORDER = 2
# nuPlan comfort bounds, as Bench2Drive uses them (all strict inequalities).
MAX_ABS_JERK_MPS3 = 8.37  # [m/s^3] of the acceleration magnitude
MAX_ABS_LAT_ACCEL_MPS2 = 4.89  # [m/s^2]
MAX_LON_ACCEL_MPS2 = 2.40  # [m/s^2]
MIN_LON_ACCEL_MPS2 = -4.05  # [m/s^2]
MAX_ABS_YAW_ACCEL_RPS2 = 1.93  # [rad/s^2]
MAX_ABS_LON_JERK_MPS3 = 4.13  # [m/s^3]
MAX_ABS_YAW_RATE_RPS = 0.95  # [rad/s]
COMFORT_CHANNELS: tuple[str, ...] = (
    "lon_accel",
    "lat_accel",
    "jerk",
    "lon_jerk",
    "yaw_accel",
    "yaw_rate",
)


def route_success(record: Mapping[str, Any]) -> bool:
    """Bench2Drive: Completed/Perfect with no infraction other than min speed."""
    if record["status"] not in ("Completed", "Perfect"):
        return False
    return all(
        not messages
        for key, messages in record["infractions"].items()
        if key != "min_speed_infractions"
    )


def route_efficiency(checkpoint_values: Sequence[float]) -> float | None:
    """[%] Bench2Drive efficiency of one route: mean of the min-speed checkpoint values
    (ego speed / surrounding traffic speed) up to 1000 %; None without any."""
    kept = [float(v) for v in checkpoint_values if float(v) <= EFFICIENCY_MAX_PERCENTAGE]
    return sum(kept) / len(kept) if kept else None


def savgol(
    y: np.ndarray, window: int, poly_order: int, deriv: int = 0, delta: float = 1.0
) -> np.ndarray:
    """Savitzky-Golay filter (scipy's `savgol_filter`, mode 'interp'): a least-squares
    polynomial of `poly_order` over `window` samples (centred; the first and last windows
    at the ends), evaluated (or its `deriv`-th derivative, per `delta` of x) at each sample."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    w = min(window, n)
    if poly_order >= w:
        raise ValueError(f"poly_order {poly_order} must be < window {w}")
    offsets = np.arange(w, dtype=float)
    rows = np.zeros((w, w))
    for j in range(w):
        vander = np.vander((offsets - j) * delta, poly_order + 1, increasing=True)
        pinv = np.linalg.pinv(vander)
        if deriv <= poly_order:
            rows[j] = pinv[deriv] * math.factorial(deriv)
    starts = np.clip(np.arange(n) - w // 2, 0, n - w)
    windows = np.lib.stride_tricks.sliding_window_view(y, w)[starts]
    return np.einsum("nw,nw->n", windows, rows[np.arange(n) - starts])


def _segment_comfort(lon_acc: np.ndarray, lat_acc: np.ndarray, yaw_rate: np.ndarray) -> set[str]:
    """Channels out of their bounds in one segment (empty: comfortable)."""
    w, p, dt = COMFORT_WINDOW, COMFORT_POLY_ORDER, COMFORT_SAMPLE_S
    mag = savgol(np.hypot(lon_acc, lat_acc), w, p)
    lon = savgol(lon_acc, w, p)
    channels = {
        "lon_accel": (lon, MIN_LON_ACCEL_MPS2, MAX_LON_ACCEL_MPS2),
        "lat_accel": (savgol(lat_acc, w, p), -MAX_ABS_LAT_ACCEL_MPS2, MAX_ABS_LAT_ACCEL_MPS2),
        "jerk": (savgol(mag, w, p, 1, dt), -MAX_ABS_JERK_MPS3, MAX_ABS_JERK_MPS3),
        "lon_jerk": (savgol(lon, w, p, 1, dt), -MAX_ABS_LON_JERK_MPS3, MAX_ABS_LON_JERK_MPS3),
        "yaw_accel": (
            savgol(yaw_rate, w, p, 1, dt),
            -MAX_ABS_YAW_ACCEL_RPS2,
            MAX_ABS_YAW_ACCEL_RPS2,
        ),
        "yaw_rate": (savgol(yaw_rate, w, p), -MAX_ABS_YAW_RATE_RPS, MAX_ABS_YAW_RATE_RPS),
    }
    return {
        name
        for name, (values, low, high) in channels.items()
        if not bool(np.all((values > low) & (values < high)))
    }


def comfort_metrics(trajectory: np.ndarray) -> dict[str, Any]:
    """Bench2Drive's Comfortness of one route from the ego trajectory.

    `trajectory`: (N, 5) rows [t, x, y, yaw, speed] sampled every COMFORT_SAMPLE_S [s, m,
    rad, m/s]. Longitudinal acceleration = d(speed)/dt, yaw rate = d(yaw)/dt (unwrapped),
    lateral acceleration = speed x yaw rate (finite differences on the trajectory; Bench2Drive
    reads CARLA's acceleration vector instead). Like Bench2Drive, the route is cut into
    2 s segments of 20 samples (a route of <= 20 samples is one segment, a shorter last
    segment is dropped); per segment every channel is Savitzky-Golay smoothed (window 7,
    order 2, jerks and yaw acceleration as its derivative) and must stay strictly inside
    the nuPlan bounds. One deviation: Bench2Drive's script checks the *smoothed yaw rate*
    against the yaw-acceleration bound (it omits `deriv=1`); here the yaw acceleration is
    the derivative. Returns {"score": % of comfortable segments or None (< 3 samples),
    "segments": n, "comfortable": k, "exceeded": {channel: segments out of bounds}}.
    """
    traj = np.asarray(trajectory, dtype=float)
    if traj.ndim != 2 or traj.shape[1] != 5:
        raise ValueError(f"trajectory must be (N, 5) [t, x, y, yaw, speed], got {traj.shape}")
    exceeded = dict.fromkeys(COMFORT_CHANNELS, 0)
    n = len(traj)
    if n < COMFORT_POLY_ORDER + 1:
        return {"score": None, "segments": 0, "comfortable": 0, "exceeded": exceeded}
    speed = traj[:, 4]
    yaw_rate = np.gradient(np.unwrap(traj[:, 3]), COMFORT_SAMPLE_S)
    lon_acc = np.gradient(speed, COMFORT_SAMPLE_S)
    lat_acc = speed * yaw_rate
    seg = COMFORT_SEGMENT_SAMPLES
    bounds = [(0, n)] if n <= seg else [(i, i + seg) for i in range(0, n - seg + 1, seg)]
    comfortable = 0
    for lo, hi in bounds:
        bad = _segment_comfort(lon_acc[lo:hi], lat_acc[lo:hi], yaw_rate[lo:hi])
        comfortable += not bad
        for name in bad:
            exceeded[name] += 1
    return {
        "score": round(100.0 * comfortable / len(bounds), ROUND_DIGITS),
        "segments": len(bounds),
        "comfortable": comfortable,
        "exceeded": exceeded,
    }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def summary(routes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Headline numbers over finished routes (details entries with `scores`, `status`,
    `tags` and `bench2drive`): means of DS / RC / IP, Bench2Drive success rate [%],
    efficiency [%], comfortness [%], and the same per scenario tag."""

    def block(rs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {
            "routes": len(rs),
            "driving_score": _rounded(
                _mean([r["scores"]["score_composed"] for r in rs]), ROUND_DIGITS_SCORE
            ),
            "route_completion": _rounded(
                _mean([r["scores"]["score_route"] for r in rs]), ROUND_DIGITS_SCORE
            ),
            "success_rate": _rounded(
                _mean([100.0 * bool(r["bench2drive"]["success"]) for r in rs]), ROUND_DIGITS
            ),
        }

    overall = block(routes)
    efficiency = [
        r["bench2drive"]["efficiency"] for r in routes if r["bench2drive"]["efficiency"] is not None
    ]
    comfort = [
        r["bench2drive"]["comfort"]["score"]
        for r in routes
        if r["bench2drive"]["comfort"]["score"] is not None
    ]
    tags = sorted({t for r in routes for t in r["tags"]})
    return {
        "routes": overall["routes"],
        "driving_score": overall["driving_score"],
        "route_completion": overall["route_completion"],
        "infraction_penalty": _rounded(
            _mean([r["scores"]["score_penalty"] for r in routes]), ROUND_DIGITS_SCORE
        ),
        "success_rate": overall["success_rate"],
        "efficiency": _rounded(_mean(efficiency), ROUND_DIGITS),
        "comfortness": _rounded(_mean(comfort), ROUND_DIGITS),
        "by_tag": {tag: block([r for r in routes if tag in r["tags"]]) for tag in tags},
    }
