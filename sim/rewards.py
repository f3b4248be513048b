"""Reward terms for `DrivingEnv`: named, computed raw, then weighted by an explicit config.

Every term is computed every simulator tick (0.05 s) and summed over an env step (the
action repeat). Raw values carry their sign (penalties are negative); the weights in
`RewardConfig` are the only scaling. The step reward is the sum of the weighted terms,
reported per term in `info["rewards"]`.

Terms (raw value per tick):
- `route_progress`: metres of route progress (the Leaderboard's route-completion index).
- one term per Leaderboard infraction with a fixed coefficient, named by its infraction
  key: each event contributes -(1 - factor), factor from the Leaderboard's penalty table
  (pedestrian 0.50, vehicle 0.60, layout 0.65, red light 0.70, stop sign 0.80, scenario
  timeout 0.70, yield to emergency vehicle 0.70). `min_speed_infractions` gives
  -0.3 * (1 - pct/100), pct from the event's `data["percentage"]` (0 if absent).
- `outside_route_lanes`: minus the metres of route progress driven outside the route lanes.
  The Leaderboard multiplies the score by (1 - outside/driven), so with the same weight as
  `route_progress` the reward of a route is proportional to (driven - outside) metres,
  which is that factor times the progress.
- `comfort`: relative excess over the nuPlan comfort bounds (longitudinal acceleration in
  [-4.05, 2.40] m/s^2, |lateral acceleration| <= 4.89 m/s^2, |jerk| <= 8.37 m/s^3),
  e.g. 0.5 for a value 50 % over its bound, summed over the three and integrated over
  time [s]; negative. Derivatives are finite differences at 20 Hz.
- `route_failure`: -1 on the tick the route fails (deviation, blocked, or timed out).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sim.ground_truth import InfractionEvent

# The Leaderboard's infraction factors (statistics_manager PENALTY_VALUE_DICT).
LEADERBOARD_PENALTY_FACTORS: Mapping[str, float] = MappingProxyType(
    {
        "collisions_pedestrian": 0.50,
        "collisions_vehicle": 0.60,
        "collisions_layout": 0.65,
        "red_light": 0.70,
        "stop_infraction": 0.80,
        "scenario_timeouts": 0.70,
        "yield_emergency_vehicle_infractions": 0.70,
    }
)
MIN_SPEED_PENALTY = 0.3  # [-] the Leaderboard's min-speed factor is 1 - 0.3 * (1 - pct/100)

# nuPlan comfort bounds, as used by Bench2Drive's comfortness metric.
MAX_LON_ACCEL_MPS2 = 2.40  # [m/s^2]
MIN_LON_ACCEL_MPS2 = -4.05  # [m/s^2]
MAX_LAT_ACCEL_MPS2 = 4.89  # [m/s^2] absolute
MAX_JERK_MPS3 = 8.37  # [m/s^3] magnitude of the jerk vector

# Event kinds that end the route: their penalty is the `route_failure` term.
ROUTE_FAILURE_KINDS = ("route_dev", "vehicle_blocked", "route_timeout")

REWARD_TERMS: tuple[str, ...] = (
    "route_progress",
    *LEADERBOARD_PENALTY_FACTORS,
    "min_speed_infractions",
    "outside_route_lanes",
    "comfort",
    "route_failure",
)

_DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        # 0.1 per metre: a 400 m route is worth 40 at most.
        "route_progress": 0.1,
        # 10 per unit of lost infraction factor: a pedestrian collision (-0.5) costs 5,
        # i.e. as much as 50 m of progress.
        **{kind: 10.0 for kind in LEADERBOARD_PENALTY_FACTORS},
        "min_speed_infractions": 10.0,
        # Same weight as progress: metres driven outside the lanes earn nothing.
        "outside_route_lanes": 0.1,
        "comfort": 0.1,
        "route_failure": 10.0,
    }
)


@dataclass(frozen=True)
class RewardConfig:
    """Weight per reward term. Unknown term names are refused; a term the env computes
    without a weight is an error (a weight of 0.0 switches a term off explicitly)."""

    weights: Mapping[str, float] = field(default_factory=lambda: dict(_DEFAULT_WEIGHTS))

    def __post_init__(self) -> None:
        if not isinstance(self.weights, Mapping):
            raise ValueError(
                f"RewardConfig.weights must be a mapping term -> weight, got {self.weights!r}"
            )
        unknown = sorted(set(self.weights) - set(REWARD_TERMS))
        if unknown:
            raise ValueError(
                f"RewardConfig.weights: unknown reward term(s) {unknown}; "
                f"valid terms: {', '.join(REWARD_TERMS)}"
            )
        clean: dict[str, float] = {}
        for name, weight in self.weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise ValueError(f"RewardConfig.weights[{name!r}] must be a number, got {weight!r}")
            if not math.isfinite(weight):
                raise ValueError(f"RewardConfig.weights[{name!r}] must be finite, got {weight}")
            clean[name] = float(weight)
        object.__setattr__(self, "weights", MappingProxyType(clean))

    @classmethod
    def default(cls, **overrides: float) -> RewardConfig:
        """The documented default weights, with `overrides` (term=weight) applied."""
        return cls({**_DEFAULT_WEIGHTS, **overrides})

    def require(self, terms: Iterable[str]) -> None:
        """Raise ValueError naming the first of `terms` that has no weight."""
        for term in terms:
            if term not in self.weights:
                raise ValueError(
                    f"reward term {term!r} has no weight in RewardConfig; give it one "
                    "(0.0 switches it off)"
                )

    def weigh(self, raw: Mapping[str, float]) -> dict[str, float]:
        """{term: weight * raw value}; a term without a weight is a ValueError naming it."""
        self.require(raw)
        return {term: self.weights[term] * float(value) for term, value in raw.items()}


def zero_terms() -> dict[str, float]:
    """Every term at 0.0, in REWARD_TERMS order (an accumulator for one env step)."""
    return dict.fromkeys(REWARD_TERMS, 0.0)


def infraction_terms(events: Iterable[InfractionEvent]) -> dict[str, float]:
    """Raw penalty per infraction term for the events of one tick (only non-zero terms)."""
    out: dict[str, float] = {}
    for event in events:
        if event.kind in LEADERBOARD_PENALTY_FACTORS:
            value = -(1.0 - LEADERBOARD_PENALTY_FACTORS[event.kind])
        elif event.kind == "min_speed_infractions":
            pct = float(event.data.get("percentage", 0.0))
            value = -MIN_SPEED_PENALTY * (1.0 - min(max(pct, 0.0), 100.0) / 100.0)
        else:  # route failures and the end-of-route outside-lanes event have own terms
            continue
        out[event.kind] = out.get(event.kind, 0.0) + value
    return out


def comfort_excess(lon_accel_mps2: float, lat_accel_mps2: float, jerk_mps3: float) -> float:
    """[-] summed relative excess over the nuPlan bounds (0 when all are within them)."""
    excess = max(lon_accel_mps2 - MAX_LON_ACCEL_MPS2, 0.0) / MAX_LON_ACCEL_MPS2
    excess += max(MIN_LON_ACCEL_MPS2 - lon_accel_mps2, 0.0) / -MIN_LON_ACCEL_MPS2
    excess += max(abs(lat_accel_mps2) - MAX_LAT_ACCEL_MPS2, 0.0) / MAX_LAT_ACCEL_MPS2
    excess += max(abs(jerk_mps3) - MAX_JERK_MPS3, 0.0) / MAX_JERK_MPS3
    return excess


def tick_terms(
    progress_gain_m: float,
    outside_gain_m: float,
    events: Iterable[InfractionEvent],
    comfort: float,
    dt_s: float,
    route_failed: bool,
) -> dict[str, float]:
    """Raw values of every term for one simulator tick.

    `progress_gain_m` / `outside_gain_m`: growth of the route progress and of the progress
    driven outside the route lanes this tick [m]; `comfort`: `comfort_excess(...)` of the
    tick; `route_failed`: the route failed on this tick.
    """
    terms = zero_terms()
    terms["route_progress"] = float(progress_gain_m)
    terms["outside_route_lanes"] = -float(outside_gain_m)
    terms.update(infraction_terms(events))
    terms["comfort"] = -float(comfort) * dt_s
    terms["route_failure"] = -1.0 if route_failed else 0.0
    return terms


@dataclass
class MotionTracker:
    """Finite-difference accelerations and jerk of the ego from its speed and yaw per tick.

    `reset` with the state at the episode start, then `update` with the signed forward
    speed [m/s] and yaw [rad] after each tick of `dt_s`; it returns
    (longitudinal accel [m/s^2], lateral accel [m/s^2], jerk magnitude [m/s^3]).
    """

    dt_s: float  # [s]
    _speed: float = 0.0  # [m/s] last tick
    _yaw: float = 0.0  # [rad]
    _lon: float = 0.0  # [m/s^2]
    _lat: float = 0.0  # [m/s^2]

    def reset(self, speed_mps: float, yaw_rad: float) -> None:
        self._speed, self._yaw, self._lon, self._lat = speed_mps, yaw_rad, 0.0, 0.0

    def update(self, speed_mps: float, yaw_rad: float) -> tuple[float, float, float]:
        lon = (speed_mps - self._speed) / self.dt_s
        yaw_rate = math.remainder(yaw_rad - self._yaw, 2.0 * math.pi) / self.dt_s
        lat = 0.5 * (speed_mps + self._speed) * yaw_rate
        jerk = math.hypot(lon - self._lon, lat - self._lat) / self.dt_s
        self._speed, self._yaw, self._lon, self._lat = speed_mps, yaw_rad, lon, lat
        return lon, lat, jerk
