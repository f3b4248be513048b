"""Scenario events on a CARLA map: which blueprint each object of a WorldSpec becomes and
where it goes.

A WorldSpec places objects by route distance (`route_s_m`) and lateral offset to the LEFT
of the route (`lateral_m`), so the same spec resolves on any map once the route exists.
Blueprints follow the Leaderboard 2.0 scenarios: a construction zone
(`ConstructionObstacle`) is `static.prop.constructioncone`s, the `static.prop.trafficwarning`
arrow board across the closed lane (our `warning_sign`) and `static.prop.dirtdebris02`;
props are spawned 0.2 m above the road with physics off, as that scenario does. (Its
roadside `static.prop.warningconstruction` sign has no PropSpec kind, so it is not placed.)
The embedded simulator uses the same blueprint names as `type_id`s, so ground truth and
collision classes (`static.*` -> layout, `vehicle.*` -> vehicle) match between backends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.carla.routes import route_pose, route_transform
from sim.route import Route
from sim.spec import PedestrianSpec, PropSpec

PROP_Z_OFFSET_M = 0.2  # [m] props spawn this far above the road (ConstructionObstacle)
VEHICLE_Z_OFFSET_M = 0.5  # [m] vehicles spawn this far up (RouteScenario's ego elevation)
WALKER_Z_OFFSET_M = 1.0  # [m] a walker's origin is at its hips

# PropSpec.kind -> CARLA blueprint (the same names the embedded simulator reports).
PROP_BLUEPRINTS: dict[str, str] = {
    "cone": "static.prop.constructioncone",
    "barrier": "static.prop.streetbarrier",
    "warning_sign": "static.prop.trafficwarning",
    "debris": "static.prop.dirtdebris02",
}
# (length, width, height) [m] for ground truth when CARLA reports an empty bounding box
# (some static props have none); the embedded simulator's sizes.
PROP_FALLBACK_SIZES: dict[str, tuple[float, float, float]] = {
    "cone": (0.45, 0.45, 0.75),
    "barrier": (0.6, 2.0, 1.0),
    "warning_sign": (0.6, 2.4, 2.2),
    "debris": (1.6, 1.4, 0.25),
    "parked_vehicle": (4.6, 1.9, 1.5),
}
# Parked vehicles are real cars (there is no `vehicle.parked.*` blueprint); one is chosen
# per prop with the world seed. All four ship with CARLA 0.9.16.
PARKED_VEHICLE_BLUEPRINTS: tuple[str, ...] = (
    "vehicle.tesla.model3",
    "vehicle.toyota.prius",
    "vehicle.audi.a2",
    "vehicle.seat.leon",
)


@dataclass(frozen=True)
class PropPlacement:
    """One static object to spawn: blueprint, `carla.Transform`, and whether physics runs
    (off for props so cones do not topple; on for parked cars so they rest on the road)."""

    kind: str  # PropSpec.kind
    blueprint: str
    transform: Any  # carla.Transform
    simulate_physics: bool


def prop_blueprint(kind: str, rng: np.random.Generator) -> str:
    """The blueprint for a PropSpec kind; parked vehicles draw one from the seed."""
    if kind == "parked_vehicle":
        return PARKED_VEHICLE_BLUEPRINTS[int(rng.integers(len(PARKED_VEHICLE_BLUEPRINTS)))]
    try:
        return PROP_BLUEPRINTS[kind]
    except KeyError:
        valid = ", ".join([*PROP_BLUEPRINTS, "parked_vehicle"])
        raise ValueError(f"prop.kind: unknown kind {kind!r}; valid: {valid}") from None


def prop_placements(
    props: tuple[PropSpec, ...], route: Route, z: np.ndarray, rng: np.random.Generator
) -> list[PropPlacement]:
    """Blueprint and pose of every prop of a spec, along the route on the CARLA map."""
    out = []
    for prop in props:
        vehicle = prop.kind == "parked_vehicle"
        out.append(
            PropPlacement(
                kind=prop.kind,
                blueprint=prop_blueprint(prop.kind, rng),
                transform=route_transform(
                    route,
                    z,
                    prop.route_s_m,
                    prop.lateral_m,
                    prop.yaw_offset_deg,
                    VEHICLE_Z_OFFSET_M if vehicle else PROP_Z_OFFSET_M,
                ),
                simulate_physics=vehicle,
            )
        )
    return out


def spawn_prop_commands(placements: list[PropPlacement], library: Any) -> list[Any]:
    """`carla.command.SpawnActor(...).then(SetSimulatePhysics(...))` for each placement,
    for one `client.apply_batch_sync` (responses come back in this order)."""
    from sim.carla_compat import require_carla

    carla = require_carla()
    commands = []
    for p in placements:
        bp = library.find(p.blueprint)
        if bp.has_attribute("role_name"):
            bp.set_attribute("role_name", "scenario")
        commands.append(
            carla.command.SpawnActor(bp, p.transform).then(
                carla.command.SetSimulatePhysics(carla.command.FutureActor, p.simulate_physics)
            )
        )
    return commands


@dataclass(frozen=True)
class CrossingPlan:
    """A scripted pedestrian crossing: start pose, unit walking direction (world, z = 0),
    distance [m] and speed [m/s]."""

    start: tuple[float, float, float]  # [m] x, y, z of the walker's origin
    direction: tuple[float, float]  # unit vector, CARLA world frame
    walk_m: float
    speed_mps: float


def crossing_plan(pspec: PedestrianSpec, route: Route, z: np.ndarray, s_m: float) -> CrossingPlan:
    """Where a scripted pedestrian starts and which way it walks, across the route at
    `s_m` (its `route_s_m`, or the crosswalk it snapped to): from `start_lateral_m` on its
    `side` toward the other side, like the embedded simulator."""
    lateral = pspec.start_lateral_m if pspec.side == "left" else -pspec.start_lateral_m
    x, y, height, yaw_deg = route_pose(route, z, s_m, lateral)
    yaw = math.radians(yaw_deg)
    left = (math.sin(yaw), -math.cos(yaw))  # the route's left in CARLA's frame
    sign = -1.0 if pspec.side == "left" else 1.0  # walk toward the other side
    return CrossingPlan(
        start=(x, y, height + WALKER_Z_OFFSET_M),
        direction=(sign * left[0], sign * left[1]),
        walk_m=pspec.walk_m,
        speed_mps=pspec.speed_mps,
    )


def nearest_crosswalk_s(
    route: Route, centres: list[tuple[float, float]], s_m: float, within_m: float = 40.0
) -> float:
    """Route distance of the crosswalk nearest to `s_m` (within `within_m` along the route
    and 6 m across it, i.e. on the route's road), else `s_m` itself."""
    best, best_d = s_m, within_m
    for cx, cy in centres:
        d2 = (route.points[:, 0] - cx) ** 2 + (route.points[:, 1] - cy) ** 2
        i = int(np.argmin(d2))
        if d2[i] < 6.0**2 and abs(float(route.s[i]) - s_m) < best_d:
            best, best_d = float(route.s[i]), abs(float(route.s[i]) - s_m)
    return best
