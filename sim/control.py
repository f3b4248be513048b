"""Vehicle control and route options with CARLA's semantics and integer values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum


class RoadOption(IntEnum):
    """CARLA's `agents.navigation.local_planner.RoadOption` values."""

    VOID = -1
    LEFT = 1
    RIGHT = 2
    STRAIGHT = 3
    LANEFOLLOW = 4
    CHANGELANELEFT = 5
    CHANGELANERIGHT = 6


def _clamp(name: str, value: float, low: float, high: float) -> float:
    value = float(value)
    if math.isnan(value):
        # Documented safe interpretation: a NaN command means "no input" for throttle and
        # steer and "full brake" for brake (see VehicleControl.sanitized).
        raise ValueError(f"VehicleControl.{name} is NaN")
    return min(max(value, low), high)


@dataclass(frozen=True)
class VehicleControl:
    """CARLA `VehicleControl`: throttle [0,1], steer [-1,1] (positive = right), brake [0,1].

    Construction clamps out-of-range values like CARLA does. NaN is refused by the
    constructor; simulators call `VehicleControl.sanitized(...)`, which maps a NaN in any
    field to the safe interpretation: throttle 0, steer 0, full brake.
    """

    throttle: float = 0.0
    steer: float = 0.0
    brake: float = 0.0
    hand_brake: bool = False
    reverse: bool = False
    manual_gear_shift: bool = False
    gear: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "throttle", _clamp("throttle", self.throttle, 0.0, 1.0))
        object.__setattr__(self, "steer", _clamp("steer", self.steer, -1.0, 1.0))
        object.__setattr__(self, "brake", _clamp("brake", self.brake, 0.0, 1.0))
        object.__setattr__(self, "hand_brake", bool(self.hand_brake))
        object.__setattr__(self, "reverse", bool(self.reverse))

    @property
    def is_safe_stop(self) -> bool:
        return self.throttle == 0.0 and self.brake == 1.0

    @classmethod
    def sanitized(cls, control: object) -> VehicleControl:
        """Accept our control, a `carla.VehicleControl`, or anything with the same fields.

        Any NaN or infinite throttle/steer/brake gives the safe stop (throttle 0, steer 0,
        brake 1): a broken agent must not steer the car into a wall.
        """
        if isinstance(control, VehicleControl):
            return control  # already clamped and NaN-free by construction
        fields: dict[str, float] = {}
        for name in ("throttle", "steer", "brake"):
            try:
                fields[name] = float(getattr(control, name, 0.0))
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"control.{name} must be a number, got {getattr(control, name)!r}"
                ) from exc
        if not all(math.isfinite(v) for v in fields.values()):
            return cls(throttle=0.0, steer=0.0, brake=1.0)
        return cls(
            throttle=fields["throttle"],
            steer=fields["steer"],
            brake=fields["brake"],
            hand_brake=bool(getattr(control, "hand_brake", False)),
            reverse=bool(getattr(control, "reverse", False)),
        )
