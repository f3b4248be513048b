"""Routes on a real CARLA map, in the same `Route` shape the embedded simulator produces.

How a route is chosen (`plan_route`):
1. Start: the map's spawn points (`Map.get_spawn_points()`, a fixed list per map) in an
   order shuffled by the seed; the first whose lane is not inside a junction, moved to
   `RouteSpec.start_lane_index` (0 = innermost lane, the lite convention) if asked.
2. A walk along the lanes in 1 m hops (`Waypoint.next(1.0)`, the Leaderboard's
   `hop_resolution`) following the lane (LANEFOLLOW) until `RouteSpec.length_m` is
   covered and every manoeuvre taken. At a junction the branch is the next entry of
   `RouteSpec.manoeuvres` (left / right / straight), else a seeded choice. A start whose
   walk dead-ends short of 90 % of the length, or cannot make a manoeuvre from its lane,
   is skipped for the next one.
3. Interpolation: if CARLA's `agents` package (PythonAPI/carla on PYTHONPATH) is
   importable, the route between the walk's key points (start, each junction exit, end)
   is traced with `agents.navigation.global_route_planner.GlobalRoutePlanner` at 1 m,
   exactly like the Leaderboard's `interpolate_trajectory`, so RoadOptions come from the
   planner itself. Otherwise the walk's own points are the route, with RoadOptions by
   the planner's rule (`classify_turn`): a junction crossing whose exit heading deviates
   less than 33 deg from the entry is STRAIGHT, otherwise LEFT/RIGHT by the turn's sign;
   road points are LANEFOLLOW.

`RouteSpec.waypoints` / `start` / `end` are coordinates in a procedural lite town and
mean nothing on a CARLA map: they are ignored (with a warning) unless the simulator is
told the spec was written for this CARLA map (`spec_xy_is_carla=True`), in which case
they are snapped to the nearest driving lane and joined with the GlobalRoutePlanner.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.control import RoadOption
from sim.geometry import GeoReference, Transform
from sim.route import LEADERBOARD_SAMPLE_FACTOR_M, Route, downsample_route
from sim.spec import RouteSpec, WorldSpecError

log = logging.getLogger(__name__)

HOP_M = 1.0  # [m] route resolution (the Leaderboard's `hop_resolution`)
TURN_THRESHOLD_DEG = 33.0  # [deg] GlobalRoutePlanner._turn_decision's straight threshold
MIN_LENGTH_FRACTION = 0.9  # a seeded route must reach this share of `length_m`
MAX_START_CANDIDATES = 40  # spawn points tried before giving up
MAX_JUNCTION_M = 150.0  # [m] longest junction crossing followed to find its exit
DUPLICATE_M = 0.05  # [m] consecutive route points closer than this are merged
MAX_EXTRA_WALK_M = 1000.0  # [m] the walk may run this far past `length_m` for manoeuvres
_MANOEUVRE_OPTION = {
    "straight": RoadOption.STRAIGHT,
    "left": RoadOption.LEFT,
    "right": RoadOption.RIGHT,
}


def classify_turn(entry_yaw_deg: float, exit_yaw_deg: float) -> RoadOption:
    """The RoadOption of a junction crossing from its entry and exit headings (CARLA yaw,
    degrees, positive clockwise seen from above, so a positive change is a RIGHT turn)."""
    change = math.remainder(exit_yaw_deg - entry_yaw_deg, 360.0)
    if abs(change) < TURN_THRESHOLD_DEG:
        return RoadOption.STRAIGHT
    return RoadOption.RIGHT if change > 0.0 else RoadOption.LEFT


@dataclass(frozen=True)
class RouteSamples:
    """A dense route as sampled on the map, before it becomes a `Route`.
    xyz (N, 3) [m]; yaw_deg (N,) [deg]; options (N,) RoadOption; lane_keys: N
    (road_id, section_id, lane_id) triples; waypoints: the N `carla.Waypoint`s (for
    lane queries), or () when not kept."""

    xyz: np.ndarray
    yaw_deg: np.ndarray
    options: np.ndarray
    lane_keys: tuple[tuple[int, int, int], ...]
    waypoints: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.xyz)
        if self.xyz.shape != (n, 3):
            raise ValueError(f"RouteSamples.xyz must be (N, 3), got {self.xyz.shape}")
        for name in ("yaw_deg", "options"):
            if np.shape(getattr(self, name)) != (n,):
                raise ValueError(
                    f"RouteSamples.{name} must be ({n},), got {np.shape(getattr(self, name))}"
                )
        if len(self.lane_keys) != n:
            raise ValueError(
                f"RouteSamples.lane_keys must have {n} entries, got {len(self.lane_keys)}"
            )
        if self.waypoints and len(self.waypoints) != n:
            raise ValueError(
                f"RouteSamples.waypoints must have {n} entries, got {len(self.waypoints)}"
            )

    @property
    def length_m(self) -> float:
        return float(np.linalg.norm(np.diff(self.xyz[:, :2], axis=0), axis=1).sum())


def dedupe(samples: RouteSamples, min_step_m: float = DUPLICATE_M) -> RouteSamples:
    """Drop points closer than `min_step_m` to the previous kept one (the planner repeats
    the joint between two traced legs)."""
    keep = [0]
    for i in range(1, len(samples.xyz)):
        if np.linalg.norm(samples.xyz[i, :2] - samples.xyz[keep[-1], :2]) >= min_step_m:
            keep.append(i)
    return RouteSamples(
        samples.xyz[keep],
        samples.yaw_deg[keep],
        samples.options[keep],
        tuple(samples.lane_keys[i] for i in keep),
        tuple(samples.waypoints[i] for i in keep) if samples.waypoints else (),
    )


def to_route(samples: RouteSamples, geo: GeoReference) -> tuple[Route, np.ndarray]:
    """(`Route`, z (N,) [m]): the backend-neutral route and the heights it drops.
    Lane ids are small integers, one per distinct OpenDRIVE (road, section, lane)."""
    samples = dedupe(samples)
    if len(samples.xyz) < 2:
        raise WorldSpecError("the route on the CARLA map has fewer than 2 distinct points")
    index: dict[tuple[int, int, int], int] = {}
    lane_ids = np.array([index.setdefault(k, len(index)) for k in samples.lane_keys], np.int64)
    route = Route(
        points=samples.xyz[:, :2].astype(np.float64),
        yaw=np.radians(samples.yaw_deg.astype(np.float64)),
        options=samples.options.astype(np.int64),
        geo=geo,
        lane_ids=lane_ids,
    )
    return route, samples.xyz[:, 2].astype(np.float64)


def route_pose(
    route: Route, z: np.ndarray, s_m: float, lateral_m: float = 0.0
) -> tuple[float, float, float, float]:
    """(x, y, z [m], yaw [deg]) at `s_m` metres along the route, `lateral_m` to its LEFT
    (ego-frame convention; in CARLA's frame the left of heading yaw is (sin yaw, -cos yaw))."""
    if not 0.0 <= s_m <= route.length_m:
        raise WorldSpecError(
            f"route_s_m = {s_m} lies outside the route (length {route.length_m:.1f} m)"
        )
    p = route.point_at(s_m)
    yaw = route.yaw_at(s_m)
    height = float(np.interp(s_m, route.s, z))
    x = float(p[0] + lateral_m * math.sin(yaw))
    y = float(p[1] - lateral_m * math.cos(yaw))
    return x, y, height, math.degrees(yaw)


def route_transform(
    route: Route,
    z: np.ndarray,
    s_m: float,
    lateral_m: float = 0.0,
    yaw_offset_deg: float = 0.0,
    z_offset_m: float = 0.0,
) -> Any:
    """`carla.Transform` at a route distance (see `route_pose`), rotated by
    `yaw_offset_deg` from the route direction and lifted by `z_offset_m`."""
    from sim.carla_compat import require_carla

    carla = require_carla()
    x, y, height, yaw = route_pose(route, z, s_m, lateral_m)
    return carla.Transform(
        carla.Location(x=x, y=y, z=height + z_offset_m),
        carla.Rotation(pitch=0.0, yaw=yaw + yaw_offset_deg, roll=0.0),
    )


def global_plan_with_z(
    route: Route, z: np.ndarray, sample_factor: float = LEADERBOARD_SAMPLE_FACTOR_M
) -> tuple[list[tuple[dict, RoadOption]], list[tuple[Transform, RoadOption]]]:
    """The Leaderboard's downsampled global plan (`downsample_route(route, 200)`), GPS
    through the Leaderboard's `_location_to_gps`, keeping the map's heights."""
    keep = downsample_route(route.points, route.options, sample_factor)
    gps: list[tuple[dict, RoadOption]] = []
    world: list[tuple[Transform, RoadOption]] = []
    for i in keep:
        x, y, height = float(route.points[i, 0]), float(route.points[i, 1]), float(z[i])
        lat, lon, alt = route.geo.to_gps(x, y, height)
        option = RoadOption(int(route.options[i]))
        gps.append(({"lat": lat, "lon": lon, "z": alt}, option))
        world.append((Transform.from_xy_yaw(x, y, math.degrees(route.yaw[i]), z=height), option))
    return gps, world


# ----------------------------------------------------------------- on the map
def _lane_key(wp: Any) -> tuple[int, int, int]:
    return (int(wp.road_id), int(wp.section_id), int(wp.lane_id))


def _sample(wps: list[Any], options: list[RoadOption]) -> RouteSamples:
    xyz = np.array(
        [[w.transform.location.x, w.transform.location.y, w.transform.location.z] for w in wps],
        np.float64,
    ).reshape(-1, 3)
    yaw = np.array([w.transform.rotation.yaw for w in wps], np.float64)
    return RouteSamples(
        xyz,
        yaw,
        np.array([int(o) for o in options], np.int64),
        tuple(map(_lane_key, wps)),
        tuple(wps),
    )


def _junction_exit(wp: Any) -> Any | None:
    """The first waypoint after the junction `wp` lies in (following the lane)."""
    travelled = 0.0
    while wp.is_junction and travelled < MAX_JUNCTION_M:
        nxt = wp.next(HOP_M)
        if not nxt:
            return None
        wp = nxt[0]
        travelled += HOP_M
    return None if wp.is_junction else wp


def _branch_option(before: Any, first: Any) -> RoadOption:
    """RoadOption of continuing from `before` (outside a junction) into `first`."""
    if not first.is_junction:
        return RoadOption.LANEFOLLOW
    exit_wp = _junction_exit(first)
    if exit_wp is None:
        return RoadOption.LANEFOLLOW
    return classify_turn(before.transform.rotation.yaw, exit_wp.transform.rotation.yaw)


def _to_lane_index(start: Any, lane_index: int) -> Any:
    """Move to lane `lane_index` counted from the innermost same-direction lane."""
    from sim.carla_compat import require_carla

    carla = require_carla()

    def same_direction(a: Any, b: Any | None) -> bool:
        return b is not None and b.lane_type == carla.LaneType.Driving and a.lane_id * b.lane_id > 0

    wp = start
    while same_direction(wp, wp.get_left_lane()):
        wp = wp.get_left_lane()
    for _ in range(lane_index):
        right = wp.get_right_lane()
        if not same_direction(wp, right):
            break
        wp = right
    return wp


def walk_route(
    start: Any, length_m: float, manoeuvres: tuple[str, ...], rng: np.random.Generator
) -> tuple[list[Any], list[RoadOption], list[Any]] | None:
    """Follow the lanes from `start` for `length_m` (see the module doc). Returns (dense
    waypoints, their RoadOptions, key points for the planner), or None when the
    manoeuvres cannot be driven from here."""
    wps, options, keys = [start], [RoadOption.LANEFOLLOW], [start]
    pending = list(manoeuvres)
    travelled = 0.0
    current = RoadOption.LANEFOLLOW  # option of the junction being crossed
    # Like the embedded simulator, walk on past `length_m` until every manoeuvre is done.
    while (travelled < length_m or pending) and travelled < length_m + MAX_EXTRA_WALK_M:
        wp = wps[-1]
        successors = list(wp.next(HOP_M))
        if not successors:
            break  # dead end
        if wp.is_junction:
            nxt = successors[0]  # inside a junction the lane is already chosen
        else:
            branches = [(s, _branch_option(wp, s)) for s in successors]
            if len(branches) > 1 and pending and any(s.is_junction for s, _ in branches):
                wanted = _MANOEUVRE_OPTION[pending.pop(0)]
                branches = [b for b in branches if b[1] == wanted]
                if not branches:
                    return None
            pick = int(rng.integers(len(branches))) if len(branches) > 1 else 0
            nxt, current = branches[pick]
        if not nxt.is_junction and wp.is_junction:
            keys.append(nxt)  # a junction exit pins the branch taken for the planner
        travelled += wp.transform.location.distance(nxt.transform.location)
        wps.append(nxt)
        options.append(current if nxt.is_junction else RoadOption.LANEFOLLOW)
    if pending:
        return None
    keys.append(wps[-1])
    return wps, options, keys


def _global_route_planner(world_map: Any) -> Any | None:
    """CARLA's GlobalRoutePlanner at HOP_M, or None when `agents` is not importable."""
    try:
        from agents.navigation.global_route_planner import GlobalRoutePlanner
    except ImportError:
        return None
    try:
        return GlobalRoutePlanner(world_map, HOP_M)  # CARLA >= 0.9.12
    except TypeError:  # older `agents`: GlobalRoutePlanner(dao) + setup()
        from agents.navigation.global_route_planner_dao import GlobalRoutePlannerDAO

        grp = GlobalRoutePlanner(GlobalRoutePlannerDAO(world_map, HOP_M))
        grp.setup()
        return grp


def _trace(grp: Any, keys: list[Any]) -> RouteSamples:
    """The Leaderboard's `interpolate_trajectory`: trace_route between key points."""
    wps: list[Any] = []
    options: list[RoadOption] = []
    for a, b in zip(keys, keys[1:], strict=False):
        for wp, option in grp.trace_route(a.transform.location, b.transform.location):
            wps.append(wp)
            options.append(RoadOption(int(option.value if hasattr(option, "value") else option)))
    return dedupe(_sample(wps, options))


def plan_route(
    world_map: Any, spec: RouteSpec, rng: np.random.Generator, spec_xy_is_carla: bool = False
) -> RouteSamples:
    """The dense route for `spec` on `world_map` (see the module doc)."""
    from sim.carla_compat import require_carla

    carla = require_carla()
    grp = _global_route_planner(world_map)
    explicit: list[tuple[float, float]] = list(spec.waypoints)
    if not explicit and spec.start is not None and spec.end is not None:
        explicit = [spec.start, spec.end]
    if explicit and spec_xy_is_carla:
        if grp is None:
            raise WorldSpecError(
                "route.waypoints / route.start+end on a CARLA map need CARLA's `agents` "
                "package (add PythonAPI/carla of your CARLA install to PYTHONPATH)"
            )
        keys = [
            world_map.get_waypoint(
                carla.Location(x=float(p[0]), y=float(p[1]), z=0.0),
                project_to_road=True,
                lane_type=carla.LaneType.Driving,
            )
            for p in explicit
        ]
        return _trace(grp, keys)
    if explicit:
        log.warning(
            "route.waypoints/start/end are procedural-town coordinates: ignored on the CARLA "
            "map, a seeded %.0f m route is used instead",
            spec.length_m,
        )
    spawn_points = list(world_map.get_spawn_points())
    if not spawn_points:
        raise WorldSpecError("the CARLA map has no spawn points to start a route from")
    order = rng.permutation(len(spawn_points))[:MAX_START_CANDIDATES]
    for k in order.tolist():
        start = world_map.get_waypoint(
            spawn_points[k].location, project_to_road=True, lane_type=carla.LaneType.Driving
        )
        if start is None or start.is_junction:
            continue
        if spec.start_lane_index is not None:
            start = _to_lane_index(start, spec.start_lane_index)
        walked = walk_route(start, spec.length_m, spec.manoeuvres, rng)
        if walked is None:
            continue
        wps, options, keys = walked
        samples = dedupe(_sample(wps, options))
        if samples.length_m < MIN_LENGTH_FRACTION * spec.length_m:
            continue
        if grp is not None:
            traced = _trace(grp, keys)
            # The planner joins key points by shortest paths; if that is not the walked
            # road (a shortcut between key points), keep the walk.
            if len(traced.xyz) >= 2 and traced.length_m <= 1.2 * samples.length_m:
                return traced
        return samples
    wanted = f" with manoeuvres {list(spec.manoeuvres)}" if spec.manoeuvres else ""
    raise WorldSpecError(
        f"no {spec.length_m:.0f} m route{wanted} found from {len(order)} start points "
        "of the CARLA map"
    )
