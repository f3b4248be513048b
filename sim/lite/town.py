"""Procedural towns: a road graph, its lanes, junctions, lights, crosswalks and rasters.

A town is built from a `TownSpec` and a seed, deterministically:

1. A node graph. `urban`: a grid of `blocks_x x blocks_y` blocks; some interior edges are
   removed (T junctions appear where they were) while the graph stays connected.
   `highway`: a chain of long segments (dead ends at both ends). Nodes of degree >= 3 are
   junctions (signalized with probability `signalized_fraction`), nodes of degree 2 are
   bends, degree 1 are road ends.
2. Roads between nodes: a centreline (curved by a sin^2 bulge scaled by `curvature`,
   so it leaves each node straight), trimmed by the node's junction size, with
   `lanes_per_direction` lanes each way (right-hand traffic, CARLA's convention).
3. Connectors inside nodes: cubic Beziers from every incoming lane end to the outgoing
   lane starts it may use (straight: same index; right turn: rightmost lane; left turn:
   innermost lane). Connector `turn` carries the RoadOption (LEFT/RIGHT/STRAIGHT inside
   junctions, LANEFOLLOW through bends).
4. Rasters: the ground colours (grass, sidewalks, asphalt, markings, crosswalks, stop
   lines) and a lane-label raster for O(1) "which lane is this point on" queries.

Lanes are resampled at ~1 m. All geometry is in CARLA's world frame (x east, y south).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import cv2
import networkx as nx
import numpy as np

from sim.control import RoadOption
from sim.lite import polyline as pl
from sim.lite.scene import RasterMap

RASTER_RES_M = 0.2  # [m/px] ground raster resolution
STOP_LINE_BACKOFF_M = 4.0  # [m] stop line distance before the end of an incoming lane
CROSSWALK_WIDTH_M = 3.0  # [m] zebra crossing band at the end of urban roads

# Ground colours (BGR).
GRASS_BGR = (58, 104, 70)
SIDEWALK_BGR = (150, 152, 156)
CURB_BGR = (185, 185, 190)
ASPHALT_BGR = (72, 70, 68)
WHITE_BGR = (225, 228, 230)
YELLOW_BGR = (40, 180, 220)

LABEL_OFFROAD = 0
LABEL_JUNCTION = 65535


class TownSpecError(ValueError):
    """A town parameter is out of range."""


@dataclass(frozen=True)
class TownSpec:
    """Parameters of a procedural town (embedded simulator)."""

    road_type: Literal["urban", "highway"] = "urban"
    blocks_x: int = 3  # urban: grid cells east-west
    blocks_y: int = 3  # urban: grid cells north-south; highway: number of segments
    block_m: float = 110.0  # [m] grid spacing (urban) / segment length (highway)
    lanes_per_direction: int = 2  # 1..3
    lane_width_m: float = 3.5  # [m]
    curvature: float = 0.3  # 0 = straight roads, 1 = strongly curved
    signalized_fraction: float = 0.7  # share of junctions with traffic lights
    t_junction_fraction: float = 0.25  # share of interior grid edges removed (urban)
    sidewalk_m: float = 3.0  # [m]
    crosswalks: bool = True
    speed_limit_kmh: float = 50.0  # [km/h]; highways default to 100 via `for_highway`

    def __post_init__(self) -> None:
        checks = {
            "road_type": self.road_type in ("urban", "highway"),
            "blocks_x": 1 <= self.blocks_x <= 8,
            "blocks_y": 1 <= self.blocks_y <= 8,
            "block_m": 60.0 <= self.block_m <= 1000.0,
            "lanes_per_direction": 1 <= self.lanes_per_direction <= 3,
            "lane_width_m": 2.5 <= self.lane_width_m <= 5.0,
            "curvature": 0.0 <= self.curvature <= 1.0,
            "signalized_fraction": 0.0 <= self.signalized_fraction <= 1.0,
            "t_junction_fraction": 0.0 <= self.t_junction_fraction <= 0.6,
            "sidewalk_m": 0.0 <= self.sidewalk_m <= 6.0,
            "speed_limit_kmh": 10.0 <= self.speed_limit_kmh <= 130.0,
        }
        ranges = {
            "road_type": "'urban' or 'highway'",
            "blocks_x": "[1, 8]",
            "blocks_y": "[1, 8]",
            "block_m": "[60, 1000] m",
            "lanes_per_direction": "[1, 3]",
            "lane_width_m": "[2.5, 5] m",
            "curvature": "[0, 1]",
            "signalized_fraction": "[0, 1]",
            "t_junction_fraction": "[0, 0.6]",
            "sidewalk_m": "[0, 6] m",
            "speed_limit_kmh": "[10, 130] km/h",
        }
        for name, ok in checks.items():
            if not ok:
                raise TownSpecError(
                    f"town.{name} = {getattr(self, name)!r} must be in {ranges[name]}"
                )

    @staticmethod
    def for_highway(**overrides: object) -> TownSpec:
        params: dict[str, object] = dict(
            road_type="highway",
            blocks_x=1,
            blocks_y=5,
            block_m=350.0,
            lanes_per_direction=3,
            lane_width_m=3.75,
            curvature=0.25,
            signalized_fraction=0.0,
            t_junction_fraction=0.0,
            sidewalk_m=0.0,
            crosswalks=False,
            speed_limit_kmh=100.0,
        )
        params.update(overrides)
        return TownSpec(**params)  # type: ignore[arg-type]


@dataclass
class Lane:
    """A directed lane centreline. Road lanes: `road_id >= 0`; connectors: `node_id >= 0`."""

    id: int
    points: np.ndarray  # (N, 2) [m] world, ~1 m spacing, in driving direction
    width: float  # [m]
    speed_limit_mps: float  # [m/s]
    road_id: int = -1
    direction: int = 0  # +1: from road.node_a to node_b; -1: the other way
    index: int = 0  # 0 = innermost (next to the centre line)
    node_id: int = -1  # the node a connector lies in
    is_junction: bool = False  # a connector inside a junction (not a bend)
    turn: RoadOption = RoadOption.LANEFOLLOW
    successors: list[int] = field(default_factory=list)
    predecessors: list[int] = field(default_factory=list)
    left_id: int = -1  # same-direction neighbour toward the centre line
    right_id: int = -1  # same-direction neighbour toward the kerb
    light_id: int = -1  # traffic light controlling the end of this lane (stop line)
    s: np.ndarray = field(init=False)
    heading: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.points.ndim != 2 or self.points.shape[1] != 2 or len(self.points) < 2:
            raise ValueError(f"Lane.points must be (N>=2, 2), got {self.points.shape}")
        self.s = pl.cumulative_length(self.points)
        self.heading = pl.headings(self.points)

    @property
    def length(self) -> float:
        return float(self.s[-1])

    @property
    def stop_s(self) -> float:
        """Arc length of the stop line on a lane entering a signalized junction [m]."""
        return max(self.length - STOP_LINE_BACKOFF_M, 0.0)

    def point_at(self, s_m: float) -> np.ndarray:
        s_m = min(max(s_m, 0.0), self.length)
        return np.array(
            [np.interp(s_m, self.s, self.points[:, 0]), np.interp(s_m, self.s, self.points[:, 1])]
        )

    def heading_at(self, s_m: float) -> float:
        i = int(np.clip(np.searchsorted(self.s, s_m), 0, len(self.s) - 1))
        return float(self.heading[i])


@dataclass
class Road:
    id: int
    node_a: int
    node_b: int
    centre: np.ndarray  # (N, 2) [m] from node_a to node_b, trimmed at both nodes
    lanes_ab: list[int]  # lane ids driving a -> b, innermost first
    lanes_ba: list[int]
    half_width: float  # [m] asphalt half width


@dataclass
class TrafficLight:
    """One signal head per junction approach. `phase_offset_s` staggers a junction's cycle."""

    id: int
    node_id: int
    road_id: int
    position: np.ndarray  # (2,) [m] pole position at the kerb, right of the stop line
    stop_line: np.ndarray  # (2, 2) [m] segment across the approach's lanes
    heading: float  # [rad] driving direction of the approach
    lane_ids: list[int]  # incoming lanes it controls
    cycle_index: int  # order of this approach's green within the junction's cycle
    cycle_count: int  # number of approaches of the junction
    phase_offset_s: float  # [s]


@dataclass
class Crosswalk:
    road_id: int
    node_id: int
    polygon: np.ndarray  # (4, 2) [m]
    start: np.ndarray  # (2,) [m] kerb-side end (one sidewalk)
    end: np.ndarray  # (2,) [m] other sidewalk


@dataclass
class Node:
    id: int
    position: np.ndarray  # (2,) [m]
    degree: int
    radius: float  # [m] half size of the junction square / bend area
    signalized: bool

    @property
    def is_junction(self) -> bool:
        return self.degree >= 3


class Town:
    """A built town; read-only after construction."""

    def __init__(self, spec: TownSpec, seed: int) -> None:
        self.spec = spec
        self.seed = int(seed)
        rng = np.random.default_rng([self.seed, 7919])
        self.lanes: list[Lane] = []
        self.roads: list[Road] = []
        self.lights: list[TrafficLight] = []
        self.crosswalks: list[Crosswalk] = []
        self.nodes: list[Node] = []
        graph = self._node_graph(rng)
        self._build_nodes(graph, rng)
        self._build_roads(graph, rng)
        self._build_connectors()
        self._build_lights(rng)
        self.lane_graph = self._lane_graph()
        self.raster, self.labels = self._rasterise()
        self.buildings = self._place_buildings(np.random.default_rng([self.seed, 15485863]))

    # ------------------------------------------------------------------ graph
    def _node_graph(self, rng: np.random.Generator) -> nx.Graph:
        spec = self.spec
        g = nx.Graph()
        if spec.road_type == "highway":
            # A gently zig-zagging chain heading east.
            pos = np.zeros(2)
            for i in range(spec.blocks_y + 1):
                g.add_node(i, pos=pos.copy())
                if i:
                    g.add_edge(i - 1, i)
                angle = rng.uniform(-0.25, 0.25) * spec.curvature * 2.0
                pos = pos + spec.block_m * np.array([math.cos(angle), math.sin(angle)])
            return g
        for i in range(spec.blocks_x + 1):
            for j in range(spec.blocks_y + 1):
                g.add_node((i, j), pos=np.array([i * spec.block_m, j * spec.block_m]))
        for i in range(spec.blocks_x + 1):
            for j in range(spec.blocks_y + 1):
                if i < spec.blocks_x:
                    g.add_edge((i, j), (i + 1, j))
                if j < spec.blocks_y:
                    g.add_edge((i, j), (i, j + 1))
        interior = [
            e
            for e in g.edges
            if not (e[0][0] == e[1][0] and e[0][0] in (0, spec.blocks_x))
            and not (e[0][1] == e[1][1] and e[0][1] in (0, spec.blocks_y))
        ]
        order = rng.permutation(len(interior))
        to_remove = int(round(spec.t_junction_fraction * len(interior)))
        for k in order:
            if to_remove <= 0:
                break
            a, b = interior[k]
            # Keep every node at degree >= 2 (no dead ends) and the graph connected.
            if g.degree[a] <= 2 or g.degree[b] <= 2:
                continue
            g.remove_edge(a, b)
            if nx.is_connected(g):
                to_remove -= 1
            else:
                g.add_edge(a, b)
        return nx.convert_node_labels_to_integers(g, ordering="sorted")

    def _build_nodes(self, g: nx.Graph, rng: np.random.Generator) -> None:
        spec = self.spec
        half = spec.lanes_per_direction * spec.lane_width_m
        for n in sorted(g.nodes):
            deg = g.degree[n]
            if deg >= 3:
                radius = half + (CROSSWALK_WIDTH_M + 2.0 if spec.crosswalks else 3.0)
            elif deg == 2:
                radius = half + 4.0
            else:
                radius = 0.0
            signalized = deg >= 3 and bool(rng.random() < spec.signalized_fraction)
            self.nodes.append(
                Node(n, np.asarray(g.nodes[n]["pos"], float), deg, radius, signalized)
            )

    def _new_lane(self, **kwargs: object) -> Lane:
        lane = Lane(id=len(self.lanes), **kwargs)  # type: ignore[arg-type]
        self.lanes.append(lane)
        return lane

    def _build_roads(self, g: nx.Graph, rng: np.random.Generator) -> None:
        spec = self.spec
        n_lanes, w = spec.lanes_per_direction, spec.lane_width_m
        speed = spec.speed_limit_kmh / 3.6
        for a, b in sorted(tuple(sorted(e)) for e in g.edges):
            pa, pb = self.nodes[a].position, self.nodes[b].position
            length = float(np.linalg.norm(pb - pa))
            direction = (pb - pa) / length
            normal = np.array([-direction[1], direction[0]])
            t = np.linspace(0.0, 1.0, max(int(length), 2) + 1)
            bulge = spec.curvature * 0.07 * length * rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
            centre = (
                pa
                + np.outer(t * length, direction)
                + np.outer(bulge * np.sin(np.pi * t) ** 2, normal)
            )
            s = pl.cumulative_length(centre)
            keep = (s >= self.nodes[a].radius) & (s <= s[-1] - self.nodes[b].radius)
            centre = pl.resample(centre[keep], 1.0)
            road = Road(len(self.roads), a, b, centre, [], [], n_lanes * w)
            reverse = centre[::-1].copy()
            for k in range(n_lanes):
                off = (k + 0.5) * w
                lane_ab = self._new_lane(
                    points=pl.offset(centre, off),
                    width=w,
                    speed_limit_mps=speed,
                    road_id=road.id,
                    direction=+1,
                    index=k,
                )
                lane_ba = self._new_lane(
                    points=pl.offset(reverse, off),
                    width=w,
                    speed_limit_mps=speed,
                    road_id=road.id,
                    direction=-1,
                    index=k,
                )
                road.lanes_ab.append(lane_ab.id)
                road.lanes_ba.append(lane_ba.id)
            for ids in (road.lanes_ab, road.lanes_ba):
                for k, lane_id in enumerate(ids):
                    self.lanes[lane_id].left_id = ids[k - 1] if k > 0 else -1
                    self.lanes[lane_id].right_id = ids[k + 1] if k + 1 < len(ids) else -1
            self.roads.append(road)

    def incoming_lanes(self, road: Road, node_id: int) -> list[int]:
        """Lanes of `road` that end at `node_id`, innermost first."""
        return road.lanes_ab if road.node_b == node_id else road.lanes_ba

    def outgoing_lanes(self, road: Road, node_id: int) -> list[int]:
        return road.lanes_ab if road.node_a == node_id else road.lanes_ba

    def roads_at(self, node_id: int) -> list[Road]:
        return [r for r in self.roads if node_id in (r.node_a, r.node_b)]

    def _build_connectors(self) -> None:
        n_lanes = self.spec.lanes_per_direction
        for node in self.nodes:
            roads = self.roads_at(node.id)
            for r_in in roads:
                for r_out in roads:
                    if r_in.id == r_out.id:
                        continue
                    ins, outs = (
                        self.incoming_lanes(r_in, node.id),
                        self.outgoing_lanes(r_out, node.id),
                    )
                    h_in = self.lanes[ins[0]].heading[-1]
                    h_out = self.lanes[outs[0]].heading[0]
                    dyaw = math.degrees(float(np.angle(np.exp(1j * (h_out - h_in)))))
                    if not node.is_junction:
                        turn, pairs = RoadOption.LANEFOLLOW, [(k, k) for k in range(n_lanes)]
                    elif abs(dyaw) < 35.0:
                        turn, pairs = RoadOption.STRAIGHT, [(k, k) for k in range(n_lanes)]
                    elif dyaw < 0.0:  # yaw decreasing = counter-clockwise from above = left
                        turn, pairs = RoadOption.LEFT, [(0, 0)]
                    else:
                        turn, pairs = RoadOption.RIGHT, [(n_lanes - 1, n_lanes - 1)]
                    for k_in, k_out in pairs:
                        lane_in, lane_out = self.lanes[ins[k_in]], self.lanes[outs[k_out]]
                        pts = pl.bezier(
                            lane_in.points[-1],
                            float(lane_in.heading[-1]),
                            lane_out.points[0],
                            float(lane_out.heading[0]),
                        )
                        conn = self._new_lane(
                            points=pts,
                            width=lane_in.width,
                            speed_limit_mps=lane_in.speed_limit_mps,
                            node_id=node.id,
                            is_junction=node.is_junction,
                            turn=turn,
                        )
                        conn.predecessors.append(lane_in.id)
                        conn.successors.append(lane_out.id)
                        lane_in.successors.append(conn.id)
                        lane_out.predecessors.append(conn.id)

    def _build_lights(self, rng: np.random.Generator) -> None:
        w = self.spec.lane_width_m
        for node in self.nodes:
            if not node.is_junction:
                continue
            roads = self.roads_at(node.id)

            # Approaches in angular order, so the cycle goes round the junction.
            def angle(road: Road, node: Node = node) -> float:
                end = self.lanes[self.incoming_lanes(road, node.id)[0]].points[-1]
                return math.atan2(end[1] - node.position[1], end[0] - node.position[0])

            roads = sorted(roads, key=angle)
            offset = float(rng.uniform(0.0, 60.0))
            for k, road in enumerate(roads):
                ins = self.incoming_lanes(road, node.id)
                inner, outer = self.lanes[ins[0]], self.lanes[ins[-1]]
                h = float(inner.heading[-1])
                right = np.array([-math.sin(h), math.cos(h)])
                p_inner = inner.point_at(inner.stop_s) - right * w / 2.0
                p_outer = outer.point_at(outer.stop_s) + right * w / 2.0
                if self.spec.crosswalks:
                    self._add_crosswalk(road, node, ins)
                if not node.signalized:
                    continue
                light = TrafficLight(
                    id=len(self.lights),
                    node_id=node.id,
                    road_id=road.id,
                    position=p_outer + right * 1.2,
                    stop_line=np.stack([p_inner, p_outer]),
                    heading=h,
                    lane_ids=list(ins),
                    cycle_index=k,
                    cycle_count=len(roads),
                    phase_offset_s=offset,
                )
                for lane_id in ins:
                    self.lanes[lane_id].light_id = light.id
                self.lights.append(light)

    def _add_crosswalk(self, road: Road, node: Node, ins: list[int]) -> None:
        lane = self.lanes[ins[0]]
        h = float(lane.heading[-1])
        fwd = np.array([math.cos(h), math.sin(h)])
        right = np.array([-math.sin(h), math.cos(h)])
        # Centre of the road at the end of the incoming lanes.
        centre = lane.points[-1] - right * lane.width / 2.0
        mid = centre - fwd * (CROSSWALK_WIDTH_M / 2.0 + 0.5)
        half_w = road.half_width
        a = mid + right * (half_w + 0.3)
        b = mid - right * (half_w + 0.3)
        half_band = fwd * CROSSWALK_WIDTH_M / 2.0
        poly = np.stack([a - half_band, a + half_band, b + half_band, b - half_band])
        self.crosswalks.append(Crosswalk(road.id, node.id, poly, a + right * 1.0, b - right * 1.0))

    # ------------------------------------------------------------- lane graph
    def _lane_graph(self) -> nx.DiGraph:
        """Lanes as nodes; successor edges (cost = length) and lane changes (cost with
        a penalty so routes change lanes only when it pays off)."""
        g = nx.DiGraph()
        for lane in self.lanes:
            g.add_node(lane.id)
            for succ in lane.successors:
                g.add_edge(lane.id, succ, weight=lane.length, kind=RoadOption.LANEFOLLOW)
            if lane.road_id >= 0:
                if lane.left_id >= 0:
                    g.add_edge(lane.id, lane.left_id, weight=25.0, kind=RoadOption.CHANGELANELEFT)
                if lane.right_id >= 0:
                    g.add_edge(lane.id, lane.right_id, weight=25.0, kind=RoadOption.CHANGELANERIGHT)
        return g

    # ---------------------------------------------------------------- rasters
    @property
    def bounds(self) -> tuple[float, float, float, float]:
        pts = np.concatenate([lane.points for lane in self.lanes])
        margin = 40.0
        return (
            float(pts[:, 0].min() - margin),
            float(pts[:, 1].min() - margin),
            float(pts[:, 0].max() + margin),
            float(pts[:, 1].max() + margin),
        )

    def _rasterise(self) -> tuple[RasterMap, np.ndarray]:
        x0, y0, x1, y1 = self.bounds
        res = RASTER_RES_M
        width, height = int(math.ceil((x1 - x0) / res)), int(math.ceil((y1 - y0) / res))
        shift = 3  # sub-pixel bits for cv2 drawing
        scale = (1 << shift) / res

        def px(points: np.ndarray) -> np.ndarray:
            return np.round((points - np.array([x0, y0])) * scale).astype(np.int32)

        def thick(m: float) -> int:
            return max(int(round(m / res)), 1)

        rng = np.random.default_rng([self.seed, 104729])
        noise = cv2.resize(
            rng.normal(0.0, 1.0, (height // 16 + 1, width // 16 + 1)).astype(np.float32),
            (width, height),
            interpolation=cv2.INTER_CUBIC,
        )
        grain = rng.normal(0.0, 1.0, (height, width)).astype(np.float32)
        img = np.empty((height, width, 3), np.uint8)
        img[:] = GRASS_BGR
        road_mask = np.zeros((height, width), np.uint8)
        walk_mask = np.zeros((height, width), np.uint8)
        spec = self.spec
        w = spec.lane_width_m

        for road in self.roads:
            p = px(road.centre)
            if spec.sidewalk_m > 0:
                cv2.polylines(
                    walk_mask,
                    [p],
                    False,
                    255,
                    thick(2 * (road.half_width + spec.sidewalk_m)),
                    cv2.LINE_8,
                    shift,
                )
            cv2.polylines(road_mask, [p], False, 255, thick(2 * road.half_width), cv2.LINE_8, shift)
        for node in self.nodes:
            if node.radius <= 0:
                continue
            c = px(node.position[None])[0]
            if node.is_junction:
                r_road = node.radius
                r_walk = node.radius + spec.sidewalk_m
                for mask, r in ((walk_mask, r_walk), (road_mask, r_road)):
                    if mask is walk_mask and spec.sidewalk_m <= 0:
                        continue
                    rr = int(r * scale)
                    cv2.rectangle(
                        mask,
                        (int(c[0] - rr), int(c[1] - rr)),
                        (int(c[0] + rr), int(c[1] + rr)),
                        255,
                        -1,
                        cv2.LINE_8,
                        shift,
                    )
        for lane in self.lanes:
            if lane.node_id >= 0:
                pts = px(lane.points)
                cv2.polylines(road_mask, [pts], False, 255, thick(w * 1.6), cv2.LINE_8, shift)
                if spec.sidewalk_m > 0:
                    cv2.polylines(
                        walk_mask,
                        [pts],
                        False,
                        255,
                        thick(w * 1.6 + 2 * spec.sidewalk_m),
                        cv2.LINE_8,
                        shift,
                    )

        self._paved = cv2.dilate(cv2.bitwise_or(walk_mask, road_mask), np.ones((11, 11), np.uint8))
        img[walk_mask > 0] = SIDEWALK_BGR
        img[road_mask > 0] = ASPHALT_BGR
        # Texture: low-frequency patches and grain, stronger on grass.
        tex = noise * 6.0 + grain * 3.0
        tex[road_mask == 0] *= 2.0
        img = np.clip(img.astype(np.float32) + tex[..., None], 0, 255).astype(np.uint8)

        # Markings.
        for road in self.roads:
            c = road.centre
            if len(c) < 2:
                continue
            # Centre line: double solid yellow.
            for off in (-0.15, 0.15):
                cv2.polylines(
                    img, [px(pl.offset(c, off))], False, YELLOW_BGR, thick(0.12), cv2.LINE_AA, shift
                )
            for k in range(1, spec.lanes_per_direction):
                for side in (1.0, -1.0):
                    self._dashed(img, pl.offset(c, side * k * w), px, thick(0.15), shift)
            for side in (1.0, -1.0):
                edge = pl.offset(c, side * (road.half_width - 0.25))
                cv2.polylines(img, [px(edge)], False, WHITE_BGR, thick(0.15), cv2.LINE_AA, shift)
        for cw in self.crosswalks:
            self._zebra(img, cw, px, shift)
        for light in self.lights:
            cv2.polylines(
                img, [px(light.stop_line)], False, WHITE_BGR, thick(0.4), cv2.LINE_AA, shift
            )

        # Lane labels: id + 1 per road lane (0 = off the driving lanes, 65535 = junction).
        labels = np.zeros((height, width), np.uint16)
        for widen in (1.0, 0.0):  # outer lanes get LB's 0.5 m tolerance, interiors stay exact
            for lane in self.lanes:
                if lane.road_id >= 0:
                    cv2.polylines(
                        labels,
                        [px(lane.points)],
                        False,
                        lane.id + 1,
                        thick(lane.width + widen),
                        cv2.LINE_8,
                        shift,
                    )
        for node in self.nodes:
            if node.is_junction:
                c = px(node.position[None])[0]
                rr = int(node.radius * scale)
                cv2.rectangle(
                    labels,
                    (int(c[0] - rr), int(c[1] - rr)),
                    (int(c[0] + rr), int(c[1] + rr)),
                    LABEL_JUNCTION,
                    -1,
                    cv2.LINE_8,
                    shift,
                )
        for lane in self.lanes:
            if lane.node_id >= 0 and not lane.is_junction:  # bends belong to no junction
                cv2.polylines(
                    labels,
                    [px(lane.points)],
                    False,
                    LABEL_JUNCTION,
                    thick(lane.width + 1.0),
                    cv2.LINE_8,
                    shift,
                )
        raster = RasterMap(bgr=img, x0=x0, y0=y0, res=res, road_mask=road_mask)
        return raster, labels

    @staticmethod
    def _dashed(img: np.ndarray, pts: np.ndarray, px, thickness: int, shift: int) -> None:
        s = pl.cumulative_length(pts)
        on = (s % 9.0) < 3.0  # 3 m dash, 6 m gap
        start = None
        for i, flag in enumerate(on):
            if flag and start is None:
                start = i
            if (not flag or i == len(on) - 1) and start is not None:
                if i - start >= 1:
                    cv2.polylines(
                        img,
                        [px(pts[start : i + 1])],
                        False,
                        WHITE_BGR,
                        thickness,
                        cv2.LINE_AA,
                        shift,
                    )
                start = None

    @staticmethod
    def _zebra(img: np.ndarray, cw: Crosswalk, px, shift: int) -> None:
        a, b = cw.start, cw.end
        length = float(np.linalg.norm(b - a))
        across = (b - a) / length
        along = np.array([-across[1], across[0]]) * CROSSWALK_WIDTH_M / 2.0
        n = int(length / 1.0)
        for k in range(n):
            if k % 2:
                continue
            p0 = a + across * (k * 1.0 + 0.25)
            p1 = p0 + across * 0.5
            poly = np.stack([p0 - along, p0 + along, p1 + along, p1 - along])
            cv2.fillConvexPoly(img, px(poly), WHITE_BGR, cv2.LINE_AA, shift)

    def _place_buildings(self, rng: np.random.Generator) -> np.ndarray:
        """Scenery: (B, 5) rows of (x, y, length, width, height) [m], axis-aligned blocks
        standing on grass (never on roads or sidewalks). Urban towns only."""
        if self.spec.road_type != "urban":
            return np.zeros((0, 5))
        x0, y0, x1, y1 = self.bounds
        res = self.raster.res
        out: list[np.ndarray] = []
        attempts = int(
            12 * self.spec.blocks_x * self.spec.blocks_y * (self.spec.block_m / 100.0) ** 2
        )
        for _ in range(attempts):
            length, width = rng.uniform(10.0, 28.0), rng.uniform(10.0, 24.0)
            cx, cy = rng.uniform(x0 - 30.0, x1 + 30.0), rng.uniform(y0 - 30.0, y1 + 30.0)
            xs = np.linspace(cx - length / 2 - 2.0, cx + length / 2 + 2.0, 7)
            ys = np.linspace(cy - width / 2 - 2.0, cy + width / 2 + 2.0, 7)
            gx, gy = np.meshgrid(xs, ys)
            cols = ((gx - x0) / res).astype(int).clip(0, self._paved.shape[1] - 1)
            rows = ((gy - y0) / res).astype(int).clip(0, self._paved.shape[0] - 1)
            if self._paved[rows, cols].any():
                continue
            box = np.array([cx, cy, length, width, rng.uniform(6.0, 24.0)])
            if out:
                other = np.array(out)
                if (
                    (np.abs(other[:, 0] - cx) < (other[:, 2] + length) / 2 + 2.0)
                    & (np.abs(other[:, 1] - cy) < (other[:, 3] + width) / 2 + 2.0)
                ).any():
                    continue
            out.append(box)
        return np.array(out).reshape(-1, 5)

    # ---------------------------------------------------------------- queries
    def label_at(self, xy: np.ndarray) -> int:
        """Lane id under a world point, -1 off the driving lanes, -2 inside a junction/bend."""
        r = self.raster
        col = int((xy[0] - r.x0) / r.res)
        row = int((xy[1] - r.y0) / r.res)
        if not (0 <= row < self.labels.shape[0] and 0 <= col < self.labels.shape[1]):
            return -1
        v = int(self.labels[row, col])
        if v == LABEL_OFFROAD:
            return -1
        if v == LABEL_JUNCTION:
            return -2
        return v - 1

    def nearest_lane(
        self, xy: np.ndarray, heading: float | None = None, road_only: bool = True
    ) -> tuple[int, float]:
        """(lane id, arc length s) of the lane closest to `xy` (optionally heading-aligned)."""
        best = (-1, 0.0, math.inf)
        for lane in self.lanes:
            if road_only and lane.road_id < 0:
                continue
            d2 = ((lane.points - xy) ** 2).sum(1)
            i = int(np.argmin(d2))
            if heading is not None and math.cos(lane.heading[i] - heading) < 0.3:
                continue
            if d2[i] < best[2]:
                best = (lane.id, float(lane.s[i]), float(d2[i]))
        if best[0] < 0:
            raise ValueError(f"no lane near ({xy[0]:.1f}, {xy[1]:.1f})")
        return best[0], best[1]

    def light_state_lane_ids(self) -> dict[int, list[int]]:
        return {light.id: light.lane_ids for light in self.lights}
