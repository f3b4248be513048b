"""Route planning over a town's lane graph (networkx), producing a dense `Route`.

A lane path is a list of lane ids in which consecutive lanes are either successors
(lane end -> connector -> lane start) or same-road neighbours (a lane change). The dense
route follows each lane at ~1 m, blends across a lane change over `LANE_CHANGE_M` metres
(those points carry CHANGELANELEFT/RIGHT), and marks points on junction connectors with
the connector's turn (LEFT/RIGHT/STRAIGHT), like CARLA's GlobalRoutePlanner.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np

from sim.control import RoadOption
from sim.geometry import GeoReference
from sim.lite import polyline as pl
from sim.lite.town import Lane, Town
from sim.route import Route
from sim.spec import RouteSpec, WorldSpecError

LANE_CHANGE_M = 20.0  # [m] distance over which a route changes lanes
_TURN = {"straight": RoadOption.STRAIGHT, "left": RoadOption.LEFT, "right": RoadOption.RIGHT}


class RoutePlanningError(ValueError):
    """No route satisfies the route spec in this town."""


def _lane_change_kind(a: Lane, b: Lane) -> RoadOption | None:
    if a.left_id == b.id:
        return RoadOption.CHANGELANELEFT
    if a.right_id == b.id:
        return RoadOption.CHANGELANERIGHT
    return None


def dense_route(
    town: Town, lane_path: list[int], start_s: float, end_s: float, geo: GeoReference
) -> Route:
    """Dense route along `lane_path` from `start_s` on the first lane to `end_s` on the last."""
    pts: list[np.ndarray] = []
    opts: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    s_in = start_s
    i = 0
    while i < len(lane_path):
        lane = town.lanes[lane_path[i]]
        nxt = town.lanes[lane_path[i + 1]] if i + 1 < len(lane_path) else None
        change = _lane_change_kind(lane, nxt) if nxt is not None else None
        if change is not None:
            assert nxt is not None
            # Drive part of this lane, then blend into the neighbour over LANE_CHANGE_M.
            room = lane.length - s_in
            c0 = s_in + max(min(room * 0.3, 15.0), 0.0)
            c1 = min(c0 + LANE_CHANGE_M, lane.length)
            seg = _slice(lane, s_in, c0)
            if len(seg):
                pts.append(seg)
                opts.append(np.full(len(seg), _option(lane)))
                ids.append(np.full(len(seg), lane.id))
            t = np.linspace(0.0, 1.0, max(int(c1 - c0), 2) + 1)[1:]
            a = np.stack([lane.point_at(c0 + k * (c1 - c0)) for k in t])
            b = np.stack([nxt.point_at(_matching_s(lane, nxt, c0 + k * (c1 - c0))) for k in t])
            smooth = (3 * t**2 - 2 * t**3)[:, None]
            pts.append(a * (1 - smooth) + b * smooth)
            # Like CARLA's GlobalRoutePlanner, only the points where the change starts
            # carry CHANGELANE*; the rest of the blend is lane following.
            blend_opts = np.full(len(t), int(RoadOption.LANEFOLLOW))
            blend_opts[:2] = int(change)
            opts.append(blend_opts)
            ids.append(np.full(len(t), -1))
            s_in = _matching_s(lane, nxt, c1)
            i += 1
            continue
        last = i == len(lane_path) - 1
        seg = _slice(lane, s_in, end_s if last else lane.length)
        if len(seg):
            pts.append(seg)
            opts.append(np.full(len(seg), _option(lane)))
            ids.append(np.full(len(seg), lane.id))
        s_in = 0.0
        i += 1
    points = np.concatenate(pts)
    options = np.concatenate(opts)
    lane_ids = np.concatenate(ids)
    # Drop duplicate points at lane joins (zero-length segments).
    keep = np.concatenate([[True], np.linalg.norm(np.diff(points, axis=0), axis=1) > 0.05])
    points, options, lane_ids = points[keep], options[keep], lane_ids[keep]
    if len(points) < 2:
        raise RoutePlanningError("route is shorter than 2 points")
    return Route(
        points=points, yaw=pl.headings(points), options=options, geo=geo, lane_ids=lane_ids
    )


def _option(lane: Lane) -> int:
    return int(lane.turn) if lane.is_junction else int(RoadOption.LANEFOLLOW)


def _slice(lane: Lane, s0: float, s1: float) -> np.ndarray:
    if s1 - s0 < 0.05:
        return np.zeros((0, 2))
    inner = lane.points[(lane.s > s0) & (lane.s < s1)]
    return np.concatenate([lane.point_at(s0)[None], inner, lane.point_at(s1)[None]])


def _matching_s(a: Lane, b: Lane, s_a: float) -> float:
    """Arc length on neighbour lane b beside arc length s_a on lane a."""
    return pl.project(b.points, b.s, a.point_at(s_a))[0]


class RoutePlanner:
    def __init__(self, town: Town, geo: GeoReference) -> None:
        self.town = town
        self.geo = geo

    def plan(self, spec: RouteSpec, rng: np.random.Generator) -> Route:
        if spec.waypoints:
            return self._through(list(spec.waypoints))
        if spec.start is not None and spec.end is not None:
            return self._through([spec.start, spec.end])
        return self._walk(spec, rng)

    def _through(self, waypoints: list[tuple[float, float]]) -> Route:
        if len(waypoints) < 2:
            raise RoutePlanningError("a route needs at least two waypoints")
        town = self.town
        located = []
        for k, wp in enumerate(waypoints):
            xy = np.asarray(wp, dtype=float)
            heading = None
            if k + 1 < len(waypoints):
                d = np.asarray(waypoints[k + 1], float) - xy
                heading = math.atan2(d[1], d[0])
            try:
                located.append(town.nearest_lane(xy, heading))
            except ValueError:
                located.append(town.nearest_lane(xy))
        path: list[int] = [located[0][0]]
        for (a, _), (b, _) in zip(located, located[1:], strict=False):
            try:
                leg = nx.shortest_path(town.lane_graph, a, b, weight="weight")
            except nx.NetworkXNoPath:
                raise RoutePlanningError(
                    f"no lane path from waypoint near lane {a} to lane {b}"
                ) from None
            path.extend(leg[1:])
        return dense_route(town, path, located[0][1], located[-1][1], self.geo)

    def _walk(self, spec: RouteSpec, rng: np.random.Generator) -> Route:
        """A seeded route from a random road lane, taking `spec.manoeuvres` at successive
        junctions (changing lanes beforehand when the turn needs another lane)."""
        town = self.town
        n = town.spec.lanes_per_direction
        candidates = [
            lane
            for lane in town.lanes
            if lane.road_id >= 0
            and lane.length > 40.0
            and (spec.start_lane_index is None or lane.index == min(spec.start_lane_index, n - 1))
        ]
        if not candidates:
            raise WorldSpecError("route: no road lane long enough to start a route")
        for _attempt in range(50):
            lane = candidates[int(rng.integers(len(candidates)))]
            start_s = float(rng.uniform(0.0, min(lane.length * 0.3, 20.0)))
            path = [lane.id]
            length = lane.length - start_s
            manoeuvres = list(spec.manoeuvres)
            ok = True
            while length < spec.length_m or manoeuvres:
                cur = town.lanes[path[-1]]
                if not cur.successors:
                    ok = not manoeuvres
                    break
                conns = [town.lanes[c] for c in cur.successors]
                if conns[0].is_junction and manoeuvres:
                    want = _TURN[manoeuvres[0]]
                    conn = self._turn_from(path, want)
                    if conn is None:
                        ok = False
                        break
                    manoeuvres.pop(0)
                elif conns[0].is_junction:
                    conn = conns[int(rng.integers(len(conns)))]
                else:
                    conn = conns[0]
                path.append(conn.id)
                path.append(conn.successors[0])
                length += conn.length + town.lanes[conn.successors[0]].length
            if ok:
                end_lane = town.lanes[path[-1]]
                end_s = min(end_lane.length, max(end_lane.length * 0.6, 5.0))
                return dense_route(town, path, start_s, end_s, self.geo)
        raise RoutePlanningError(
            f"no route with manoeuvres {list(spec.manoeuvres)} found in this town after 50 tries"
        )

    def _turn_from(self, path: list[int], want: RoadOption) -> Lane | None:
        """The connector making turn `want` from the road lane at the end of `path`,
        inserting lane changes into `path` if that turn leaves from another lane."""
        town = self.town
        lane = town.lanes[path[-1]]
        for step in ("left_id", "right_id", None):
            probe = lane
            extra: list[int] = []
            while True:
                for c in probe.successors:
                    if town.lanes[c].turn == want:
                        path.extend(extra)
                        return town.lanes[c]
                if step is None:
                    break
                nxt = getattr(probe, step)
                if nxt < 0:
                    break
                extra.append(nxt)
                probe = town.lanes[nxt]
        return None
