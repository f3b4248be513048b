"""`LiteSimulator`: the embedded backend of the `Simulator` protocol.

One tick (0.05 s): sanitise the control -> ego dynamics (friction from the current
weather) -> traffic lights -> NPC vehicles (IDM) and pedestrians -> scripted triggers ->
collisions (oriented boxes) -> route criteria (Leaderboard rules) -> sensors.
Deterministic: all randomness comes from generators seeded by the reset seed, and no
wall-clock time is read.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from sim.control import RoadOption, VehicleControl
from sim.criteria import Collision, LaneQuery, RouteCriteria, RouteStatus
from sim.geometry import GeoReference, Transform, yaw_to_compass
from sim.ground_truth import (
    ActorState,
    GroundTruth,
    InfractionEvent,
    TrafficLightInfo,
    TrafficLightState,
)
from sim.lite import polyline as pl
from sim.lite.dynamics import MKZ_HEIGHT_M, MKZ_LENGTH_M, MKZ_WIDTH_M, EgoState, step_ego
from sim.lite.pedestrians import PEDESTRIAN_SIZE_M, Pedestrians
from sim.lite.routing import RoutePlanner
from sim.lite.scene import BoxKind, SceneBoxes
from sim.lite.town import Town, TownSpec
from sim.lite.traffic import (
    BEHAVIOUR_HARD_BRAKE,
    BEHAVIOUR_NORMAL,
    BEHAVIOUR_STOPPED,
    BEHAVIOUR_WAITING,
    DECISION_HZ,
    IDM_MAX_ACCEL_MPS2,
    NPC_HEIGHT_M,
    NPC_LENGTH_M,
    NPC_WIDTH_M,
    Obstacles,
    Traffic,
)
from sim.protocol import FIXED_DELTA_SECONDS, SensorData
from sim.route import LaneLayout, Route
from sim.sensors import (
    CAMERA,
    GNSS,
    IMU,
    LIDAR,
    RADAR,
    SPEEDOMETER,
    SensorSpec,
    SensorSpecError,
    parse_sensor_specs,
)
from sim.spec import VehicleSpec, WorldSpec, WorldSpecError
from sim.weather import GRAVITY_MPS2

EGO_ID = 1
CUT_IN_MIN_M = 12.0  # [m] a cut-in merges over at least this distance...
CUT_IN_TIME_S = 1.5  # [s] ...plus this long at its speed
STUCK_AT_PROP_S = 8.0  # [s] a background NPC standing this long next to a prop is removed...
STUCK_PROP_RADIUS_M = 12.0  # [m] ...when a prop is this close (it waits at a closed lane)
EGO_TYPE_ID = "vehicle.lincoln.mkz_2020"
GEO_REFERENCE = GeoReference(lat_ref=42.0, lon_ref=2.0)  # the Leaderboard's default
LIGHT_GREEN_S = 10.0  # [s] per approach, CARLA's default cycle
LIGHT_YELLOW_S = 3.0  # [s]
LIGHT_ALL_RED_S = 2.0  # [s]
LIGHT_POLE_SIZE_M = (0.35, 0.35, 4.5)

# kind -> (CARLA blueprint, size (l, w, h) [m], BoxKind, colour BGR)
PROP_TYPES: dict[str, tuple[str, tuple[float, float, float], BoxKind, tuple[int, int, int]]] = {
    "cone": ("static.prop.constructioncone", (0.45, 0.45, 0.75), BoxKind.CONE, (20, 110, 245)),
    "barrier": ("static.prop.streetbarrier", (0.6, 2.0, 1.0), BoxKind.BARRIER, (60, 80, 225)),
    "warning_sign": (
        "static.prop.trafficwarning",
        (0.6, 2.4, 2.2),
        BoxKind.WARNING_SIGN,
        (30, 170, 245),
    ),
    "debris": ("static.prop.dirtdebris02", (1.6, 1.4, 0.25), BoxKind.DEBRIS, (60, 75, 95)),
    "parked_vehicle": ("vehicle.parked.sedan", (4.6, 1.9, 1.5), BoxKind.VEHICLE, (120, 120, 125)),
}


@lru_cache(maxsize=4)
def build_town(spec: TownSpec, seed: int) -> Town:
    """Towns are immutable, so evaluations over one town build it once per process."""
    return Town(spec, seed)


def obb_overlap(
    centre: np.ndarray,
    yaw: float,
    half: np.ndarray,
    centres: np.ndarray,
    yaws: np.ndarray,
    halves: np.ndarray,
) -> np.ndarray:
    """Separating-axis test of one oriented box against M boxes: (M,) bool."""
    if len(centres) == 0:
        return np.zeros(0, bool)
    ax = np.array([[math.cos(yaw), math.sin(yaw)], [-math.sin(yaw), math.cos(yaw)]])  # (2, 2)
    bx = np.stack(
        [np.stack([np.cos(yaws), np.sin(yaws)], -1), np.stack([-np.sin(yaws), np.cos(yaws)], -1)], 1
    )  # (M, 2, 2)
    d = centres - centre  # (M, 2)
    overlap = np.ones(len(centres), bool)
    for k in range(2):  # axes of box A
        axis = ax[k]
        ra = half[k]
        rb = np.abs(bx[:, 0] @ axis) * halves[:, 0] + np.abs(bx[:, 1] @ axis) * halves[:, 1]
        overlap &= np.abs(d @ axis) <= ra + rb
    for k in range(2):  # axes of the M boxes
        axis = bx[:, k]  # (M, 2)
        ra = np.abs(axis @ ax[0]) * half[0] + np.abs(axis @ ax[1]) * half[1]
        overlap &= np.abs((d * axis).sum(1)) <= ra + halves[:, k]
    return overlap


class LiteSimulator:
    """The embedded simulator. Use `reset`, `setup_sensors`, then `tick` at 20 Hz."""

    backend = "lite"

    def __init__(self) -> None:
        self._spec: WorldSpec | None = None
        self._sensors: list[SensorSpec] = []
        self._renderers: dict[str, Any] = {}
        self._events: list[InfractionEvent] = []
        self._layout: LaneLayout | None = None

    # ----------------------------------------------------------------- reset
    def reset(self, spec: WorldSpec, seed: int) -> None:
        if not isinstance(spec, WorldSpec):
            raise TypeError(f"reset() needs a WorldSpec, got {type(spec).__name__}")
        self._spec = spec
        self._layout = None
        self.seed = int(seed)
        self.town = build_town(spec.town, self.seed)
        self._route = RoutePlanner(self.town, GEO_REFERENCE).plan(
            spec.route, np.random.default_rng([self.seed, 2])
        )
        self.rng = np.random.default_rng([self.seed, 3])
        palette = np.array(
            [[92, 100, 112], [120, 128, 140], [70, 84, 110], [150, 150, 145], [96, 110, 128]]
        )
        self._building_bgr = (
            palette[
                np.random.default_rng([self.seed, 6]).integers(
                    len(palette), size=len(self.town.buildings)
                )
            ]
            .astype(np.uint8)
            .reshape(-1, 3)
        )
        self._frame = 0
        self._time_s = 0.0
        self._events = []
        self._next_id = EGO_ID + 1
        p0, yaw0 = self._route.points[0], float(self._route.yaw[0])
        self.ego = EgoState(x=float(p0[0]), y=float(p0[1]), yaw=yaw0)
        self._control = VehicleControl()
        self.weather = spec.weather_at(0.0)
        self._active_events: list[str] = []
        self._heading_hint = (-1, 0)  # (lane id, point index) of the last lane query
        self._lights_near_ego: list[int] = []
        self._decision_period = max(int(round(1.0 / (DECISION_HZ * FIXED_DELTA_SECONDS))), 1)
        self._lights_setup()
        self._props_setup(spec)
        self.traffic = Traffic(self.town, np.random.default_rng([self.seed, 4]))
        self.pedestrians = Pedestrians(self.town, np.random.default_rng([self.seed, 5]))
        self._scripted_vehicles: list[tuple[int, VehicleSpec]] = []
        self._scripted_route_s: dict[int, float] = {}  # NPC index -> route distance [m]
        self._runner_timing: dict[int, tuple[float, float]] = {}  # NPC -> (junction s, path m)
        self._runner_ego_light: dict[int, int] = {}  # NPC -> the ego's light at its junction
        self._runner_speed: dict[int, float] = {}  # NPC -> scripted speed [m/s]
        for vspec in spec.vehicles:
            self._add_scripted_vehicle(vspec)
        for pspec in spec.pedestrians:
            self._add_scripted_pedestrian(pspec)
        self._spawn_background_vehicles(spec.num_vehicles)
        self._npc_still_s = np.zeros(self.traffic.n)
        self.pedestrians.spawn_background(
            spec.num_pedestrians,
            [self._new_id() for _ in range(spec.num_pedestrians)],
            np.array([self.ego.x, self.ego.y]),
        )
        self.criteria = RouteCriteria(
            self._route,
            spec.town.speed_limit_kmh / 3.6,
            MKZ_LENGTH_M / 2.0,
            spec.timeout_s,
            spec.oncoming_zones,
        )
        self._light_states = self._compute_light_states(0.0)
        if self._sensors:
            self.setup_sensors([s.to_dict() for s in self._sensors])

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _route_pose(self, s_m: float, lateral_m: float) -> tuple[np.ndarray, float]:
        """World point `s_m` along the route, `lateral_m` to its left; and the route yaw."""
        if not 0.0 <= s_m <= self._route.length_m:
            raise WorldSpecError(
                f"route_s_m = {s_m} lies outside the route (length {self._route.length_m:.1f} m)"
            )
        p = self._route.point_at(s_m)
        yaw = self._route.yaw_at(s_m)
        left = np.array([math.sin(yaw), -math.cos(yaw)])
        return p + lateral_m * left, yaw

    def _props_setup(self, spec: WorldSpec) -> None:
        xy, yaw, size, kind, colour, type_ids, ids = [], [], [], [], [], [], []
        for prop in spec.props:
            type_id, dims, box_kind, bgr = PROP_TYPES[prop.kind]
            p, route_yaw = self._route_pose(prop.route_s_m, prop.lateral_m)
            xy.append(p)
            yaw.append(route_yaw + math.radians(prop.yaw_offset_deg))
            size.append(dims)
            kind.append(int(box_kind))
            colour.append(prop.bgr or bgr)
            type_ids.append(type_id)
            ids.append(self._new_id())
        for light in self.town.lights:  # poles are static layout obstacles, as in CARLA
            xy.append(light.position)
            yaw.append(light.heading)
            size.append(LIGHT_POLE_SIZE_M)
            kind.append(int(BoxKind.TRAFFIC_LIGHT))
            colour.append((50, 50, 50))
            type_ids.append("traffic.traffic_light")
            ids.append(self._new_id())
        self.prop_xy = np.array(xy, float).reshape(-1, 2)
        self.prop_yaw = np.array(yaw, float)
        self.prop_size = np.array(size, float).reshape(-1, 3)
        self.prop_kind = np.array(kind, np.int64)
        self.prop_bgr = np.array(colour, np.uint8).reshape(-1, 3)
        self.prop_type_ids = type_ids
        self.prop_ids = np.array(ids, np.int64)
        self._n_props = len(spec.props)  # the rest are light poles
        # Constant obstacle arrays for the NPC model, sized once per reset.
        # Props are oriented boxes for the NPCs too: half width across, half length along.
        self._prop_half_width = self.prop_size[:, 1] / 2
        self._prop_half_len = self.prop_size[:, 0] / 2
        self._prop_zeros = np.zeros(len(self.prop_xy))
        cap = (
            spec.num_vehicles
            + len(spec.vehicles)
            + spec.num_pedestrians
            + len(spec.pedestrians)
            + len(self.prop_xy)
            + 1
        )
        self._ego_radius = np.array([MKZ_WIDTH_M / 2 + 0.1])
        self._ego_half_length = np.array([MKZ_LENGTH_M / 2])
        self._npc_radius = np.full(cap, NPC_WIDTH_M / 2 + 0.1)
        self._npc_half_length = np.full(cap, NPC_LENGTH_M / 2)
        self._ped_radius = np.full(cap, 0.4)
        self._minus_ones = np.full(cap, -1)
        self._ego_half_extent = np.array([MKZ_LENGTH_M / 2, MKZ_WIDTH_M / 2])
        self._prop_half_extent = self.prop_size[:, :2] / 2
        self._npc_half_extent = np.tile([NPC_LENGTH_M / 2, NPC_WIDTH_M / 2], (cap, 1))
        self._ped_half_extent = np.tile(
            [PEDESTRIAN_SIZE_M[0] / 2, PEDESTRIAN_SIZE_M[1] / 2], (cap, 1)
        )
        self._pole_light_index = np.arange(len(self.town.lights))

    def _route_lane_at(self, s_m: float, road_only: bool = False) -> tuple[int, float]:
        """(lane id, arc length on it) of the route lane nearest to `s_m` along the route;
        `road_only` skips junction/bend connectors (they have no side neighbours)."""
        i = int(np.clip(np.searchsorted(self._route.s, s_m), 0, len(self._route.s) - 1))
        order = sorted(range(len(self._route.s)), key=lambda j: abs(j - i))
        for j in order:
            lane_id = int(self._route.lane_ids[j])
            if lane_id < 0 or (road_only and self.town.lanes[lane_id].road_id < 0):
                continue
            lane = self.town.lanes[lane_id]
            return lane_id, pl.project(lane.points, lane.s, self._route.points[j])[0]
        raise WorldSpecError("the route has no lane to place a vehicle on")

    def _route_lanes_from(self, lane_id: int) -> list[int]:
        ids = [int(i) for i in self._route.lane_ids if i >= 0]
        out: list[int] = []
        started = False
        for i in ids:
            if i == lane_id:
                started = True
            if started and (not out or out[-1] != i):
                out.append(i)
        return out or [lane_id]

    def _add_scripted_vehicle(self, vspec: VehicleSpec) -> None:
        if vspec.behaviour == "run_red_light":
            self._add_red_light_runner(vspec)
            return
        lane_id, s_on_lane = self._route_lane_at(vspec.route_s_m, road_only=vspec.lane_offset != 0)
        lane = self.town.lanes[lane_id]
        steps = vspec.lane_offset
        while steps != 0:
            nxt = lane.left_id if steps > 0 else lane.right_id
            if nxt < 0:
                raise WorldSpecError(
                    f"vehicle at route_s_m={vspec.route_s_m}: no lane {vspec.lane_offset:+d} "
                    f"beside the route lane (road has {self.town.spec.lanes_per_direction} per direction)"
                )
            s_on_lane = pl.project(
                self.town.lanes[nxt].points, self.town.lanes[nxt].s, lane.point_at(s_on_lane)
            )[0]
            lane = self.town.lanes[nxt]
            steps += -1 if steps > 0 else 1
        path = self._route_lanes_from(lane.id) if vspec.lane_offset == 0 else [lane.id]
        behaviour = {
            "stopped": BEHAVIOUR_STOPPED,
            "hard_brake": BEHAVIOUR_HARD_BRAKE,
        }.get(vspec.behaviour, BEHAVIOUR_NORMAL)
        trigger = vspec.trigger_s_m if vspec.trigger_s_m is not None else math.inf
        speed = 0.0 if vspec.behaviour == "stopped" else vspec.speed_mps
        k = self.traffic.add(
            path,
            s_on_lane,
            speed,
            vspec.speed_mps,
            self._new_id(),
            ignore_lights=vspec.behaviour == "run_red_light",
            behaviour=behaviour,
            trigger_s=trigger,
            brake_decel=vspec.brake_decel_mps2,
            respawnable=False,
        )
        self._scripted_vehicles.append((k, vspec))
        self._scripted_route_s[k] = float(vspec.route_s_m)
        if vspec.pace_gap_m is not None:
            self.traffic.v[k] = 0.0  # it waits for the ego, then paces it

    def _add_scripted_pedestrian(self, pspec) -> None:
        sign = -1.0 if pspec.side == "right" else 1.0  # lateral_m is to the left
        s_m = pspec.route_s_m
        if pspec.snap_to_crosswalk:
            s_m = self._nearest_crosswalk_s(s_m)
        start, yaw = self._route_pose(s_m, sign * pspec.start_lateral_m)
        left = np.array([math.sin(yaw), -math.cos(yaw)])
        end = start - sign * pspec.walk_m * left
        trigger = pspec.trigger_s_m if pspec.trigger_s_m is not None else 0.0
        self.pedestrians.spawn_scripted(start, end, pspec.speed_mps, trigger, self._new_id())

    def _time_red_light_runner(self, k: int, progress: float, ego_v: float) -> None:
        """Start the runner so it reaches the junction's middle when the ego does, then
        keep adjusting its desired speed toward that meeting."""
        junction_s, path_m = self._runner_timing[k]
        # The ego's arrival, assuming it keeps at least 80 % of the limit (it is usually
        # still accelerating when this matters); the runner re-times itself as it goes.
        assert self._spec is not None  # only called between reset() and close()
        expected_v = max(ego_v, 0.8 * self._spec.speed_limit_at(progress), 3.0)
        t_ego = (junction_s - progress) / expected_v
        if self.traffic.triggered[k]:
            # Launched: keep matching the ego's arrival while short of the junction middle.
            remaining = path_m - float(self.traffic.s[k])
            if remaining > 0.0 and t_ego > 0.0:
                needed = remaining / max(t_ego, 0.5)
                speed_cap = 1.5 * self._runner_speed[k]
                self.traffic.v_desired[k] = float(np.clip(needed, 3.0, speed_cap))
            return
        speed = max(self._runner_speed[k], 1.0)
        # Its travel time from rest under the IDM free-road law the traffic model applies,
        # plus a second of margin: launched early it can still slow down to meet the ego,
        # launched late it cannot accelerate harder than IDM allows.
        t_runner, v, x = 0.0, 0.0, 0.0
        while x < path_m and t_runner < 60.0:
            v += IDM_MAX_ACCEL_MPS2 * (1.0 - (v / speed) ** 4) * 0.1
            x += v * 0.1
            t_runner += 0.1
        t_runner += 1.0
        if t_ego <= t_runner:
            self.traffic.triggered[k] = True
            self._green_for(self._runner_ego_light.get(k, -1), hold_s=t_ego + 2.0)

    def _green_for(self, light_id: int, hold_s: float) -> None:
        """Shift a junction's cycle so `light_id` turns green now (for at least `hold_s`,
        up to a full green phase): the crossing runner then runs a real red."""
        if light_id < 0:
            return
        light = self.town.lights[light_id]
        phase = LIGHT_GREEN_S + LIGHT_YELLOW_S + LIGHT_ALL_RED_S
        cycle = phase * light.cycle_count
        start_in_green = max(LIGHT_GREEN_S - max(hold_s, 0.0), 0.0)
        offset = (light.cycle_index * phase + start_in_green - self._time_s) % cycle
        for j, other in enumerate(self.town.lights):
            if other.node_id == light.node_id:
                self._light_offset[j] = offset
        self._light_states = self._compute_light_states(self._time_s)

    def _nearest_crosswalk_s(self, s_m: float, within_m: float = 40.0) -> float:
        """Route distance of the crosswalk crossing the route nearest to `s_m`."""
        best, best_d = s_m, within_m
        for cw in self.town.crosswalks:
            centre = 0.5 * (cw.start + cw.end)
            s_cw, dist, _ = pl.project(self._route.points, self._route.s, centre)
            if dist < 3.0 and abs(s_cw - s_m) < best_d:
                best, best_d = s_cw, abs(s_cw - s_m)
        return best

    def _add_red_light_runner(self, vspec: VehicleSpec) -> None:
        """Place the runner on a crossing approach of the first signalized junction the
        route enters after `route_s_m`, `4 s x speed` before its stop line; it waits until
        the trigger, then drives through ignoring its (red) light."""
        town = self.town
        i0 = int(np.searchsorted(self._route.s, vspec.route_s_m))
        for i in range(i0, len(self._route.s)):
            lane_id = int(self._route.lane_ids[i])
            if lane_id < 0 or not town.lanes[lane_id].is_junction:
                continue
            node = town.nodes[town.lanes[lane_id].node_id]
            if not node.signalized:
                continue
            route_heading = town.lanes[lane_id].heading[0]
            for road in town.roads_at(node.id):
                incoming = town.incoming_lanes(road, node.id)
                lane = town.lanes[incoming[0]]
                crossing = abs(math.sin(lane.heading[-1] - route_heading)) > 0.7
                straight = [c for c in lane.successors if town.lanes[c].turn == RoadOption.STRAIGHT]
                if not crossing or not straight:
                    continue
                start_s = max(lane.length - max(4.0 * vspec.speed_mps, 20.0), 0.0)
                conn = town.lanes[straight[0]]
                k = self.traffic.add(
                    [lane.id, conn.id, conn.successors[0]],
                    start_s,
                    0.0,
                    vspec.speed_mps,
                    self._new_id(),
                    ignore_lights=True,
                    behaviour=BEHAVIOUR_WAITING,
                    trigger_s=math.inf,  # fired by _time_red_light_runner
                    respawnable=False,
                )
                self._scripted_vehicles.append((k, vspec))
                # Distance the runner drives to the middle of the junction.
                path_m = lane.length - start_s + conn.length / 2
                self._runner_timing[k] = (float(self._route.s[i]) + conn.length / 2, path_m)
                prior = [int(x) for x in self._route.lane_ids[:i] if x >= 0]
                ego_lights = [lt.id for lt in town.lights if prior and prior[-1] in lt.lane_ids]
                self._runner_ego_light[k] = ego_lights[0] if ego_lights else -1
                self._runner_speed[k] = vspec.speed_mps
                return
        raise WorldSpecError(
            f"red_light_runner at route_s_m={vspec.route_s_m}: the route enters no signalized "
            "junction with a crossing road after that point"
        )

    def _spawn_background_vehicles(self, count: int) -> None:
        town = self.town
        lanes = [lane for lane in town.lanes if lane.road_id >= 0 and lane.length > 15.0]
        taken = [np.array([self.ego.x, self.ego.y])]
        taken += list(self.traffic.positions()[0]) + list(self.prop_xy[: self._n_props])
        for _ in range(count):
            for _attempt in range(40):
                lane = lanes[int(self.rng.integers(len(lanes)))]
                s = float(self.rng.uniform(2.0, lane.length - 2.0))
                p = lane.point_at(s)
                ego_d = float(np.linalg.norm(p - taken[0]))
                if ego_d > 30.0 and all(np.linalg.norm(p - q) > 12.0 for q in taken[1:]):
                    break
            else:
                continue
            v_des = lane.speed_limit_mps * float(self.rng.uniform(0.7, 1.0))
            # Start at half the desired speed, unless so close to a stop line that the
            # NPC could not stop for a red light it has not yet perceived.
            near_stop = lane.light_id >= 0 and lane.stop_s - s < 25.0
            self.traffic.add([lane.id], s, 0.0 if near_stop else v_des * 0.5, v_des, self._new_id())
            taken.append(p)

    def _stuck_behind_props(self) -> list[int]:
        """Background NPCs that have stood for STUCK_AT_PROP_S within STUCK_PROP_RADIUS_M of
        a prop: a closed lane they cannot pass (NPCs do not overtake). Like the
        Leaderboard's scenarios clearing the road ahead, they are taken away."""
        period = 1.0 / DECISION_HZ
        still = (self.traffic.v < 0.1) & self.traffic.respawnable
        if len(self._npc_still_s) != len(still):
            self._npc_still_s = np.zeros(len(still))
        self._npc_still_s = np.where(still, self._npc_still_s + period, 0.0)
        if not self._n_props or not (self._npc_still_s > STUCK_AT_PROP_S).any():
            return []
        xy, _ = self.traffic.positions()
        out = []
        for k in np.nonzero(self._npc_still_s > STUCK_AT_PROP_S)[0]:
            d = np.linalg.norm(self.prop_xy[: self._n_props] - xy[k], axis=1)
            if d.min() < STUCK_PROP_RADIUS_M:
                out.append(int(k))
                self._npc_still_s[k] = 0.0
        return out

    def _respawn(self, k: int) -> None:
        ego = np.array([self.ego.x, self.ego.y])
        lanes = [lane for lane in self.town.lanes if lane.road_id >= 0 and lane.length > 15.0]
        others, _ = self.traffic.positions()
        for _attempt in range(40):
            lane = lanes[int(self.rng.integers(len(lanes)))]
            s = float(self.rng.uniform(2.0, lane.length - 2.0))
            p = lane.point_at(s)
            if np.linalg.norm(p - ego) > 80.0 and (np.linalg.norm(others - p, axis=1) > 12.0).all():
                self.traffic.add_repath(k, [lane.id], s, lane.point_at(s)[None])
                self.traffic.place(k, 0.0, speed=0.0)
                return

    # ---------------------------------------------------------------- lights
    def _lights_setup(self) -> None:
        lights = self.town.lights
        self._light_cycle_index = np.array([lt.cycle_index for lt in lights], float)
        self._light_cycle_count = np.array([lt.cycle_count for lt in lights], float)
        self._light_offset = np.array([lt.phase_offset_s for lt in lights], float)
        self._stop_line_centres = np.array([lt.stop_line.mean(axis=0) for lt in lights]).reshape(
            -1, 2
        )

    def _compute_light_states(self, t: float) -> np.ndarray:
        """(L,) TrafficLightState values: approaches of a junction take turns (like a CARLA
        traffic-light group): green, yellow, then all-red before the next approach."""
        if len(self.town.lights) == 0:
            return np.zeros(0, np.int64)
        phase = LIGHT_GREEN_S + LIGHT_YELLOW_S + LIGHT_ALL_RED_S
        tc = (t + self._light_offset) % (phase * self._light_cycle_count)
        active = np.floor(tc / phase)
        within = tc - active * phase
        mine = active == self._light_cycle_index
        state = np.full(len(tc), int(TrafficLightState.Red))
        state[mine & (within < LIGHT_GREEN_S)] = int(TrafficLightState.Green)
        state[mine & (within >= LIGHT_GREEN_S) & (within < LIGHT_GREEN_S + LIGHT_YELLOW_S)] = int(
            TrafficLightState.Yellow
        )
        return state

    # --------------------------------------------------------------- sensors
    def setup_sensors(self, sensor_specs: list[dict], track: str = "SENSORS") -> list[SensorSpec]:
        specs = parse_sensor_specs(sensor_specs, track)
        for s in specs:
            if s.type in (LIDAR, RADAR):
                raise SensorSpecError(
                    f"sensor {s.id!r}: {s.type} is valid for the Leaderboard but the embedded "
                    "simulator renders cameras, gnss, imu and speedometer only; use the carla backend"
                )
        self._sensors = specs
        self._renderers = {}
        if any(s.type == CAMERA for s in specs):
            from sim.lite.camera import CameraRenderer

            for s in specs:
                if s.type == CAMERA:
                    self._renderers[s.id] = CameraRenderer(s, self.town.raster)
        return specs

    # ------------------------------------------------------------------ tick
    def tick(self, control: Any, render: bool = True) -> SensorData:
        if self._spec is None:
            raise RuntimeError("tick() before reset()")
        dt = FIXED_DELTA_SECONDS
        ctrl = VehicleControl.sanitized(control)
        self._control = ctrl
        self._frame += 1
        self._time_s = self._frame * dt
        progress = self.criteria.progress_m
        # Keyframed weather moves in steps of 1 % of the route: the camera caches its
        # per-weather maps, and a new weather every tick would rebuild them every frame.
        self.weather = self._spec.weather_at(round(progress / self._route.length_m, 2))
        self.ego = step_ego(self.ego, ctrl, self.weather.friction, dt)
        ego_xy = np.array([self.ego.x, self.ego.y])
        npc_xy, _ = self.traffic.positions()
        ped_xy, _ = self.pedestrians.positions()
        if self._frame % self._decision_period == 1 or self._decision_period == 1:
            self._decide(ego_xy, npc_xy, ped_xy, progress)
        self.traffic.integrate(dt)
        self.pedestrians.step(dt, progress, npc_xy, self.traffic.v, ego_xy, abs(self.ego.speed))

        label = self.town.label_at(ego_xy)
        collisions = self._collisions(ego_xy, off_road=label == -1)
        lane = LaneQuery(
            on_driving_lane=label >= 0,
            in_junction=label == -2,
            lane_heading=self._lane_heading(label, ego_xy) if label >= 0 else None,
        )
        red_lights = [
            self._light_info(i)
            for i in self._lights_near_ego
            if self._light_states[i] == int(TrafficLightState.Red)
        ]
        self._events = self.criteria.update(
            self._frame,
            self._time_s,
            ego_xy,
            self.ego.yaw,
            abs(self.ego.speed),
            lane,
            collisions,
            red_lights,
        )
        return self._sensor_data(render)

    def sensor_data(self) -> SensorData:
        # The camera is a pure function of the world's current state (poses, weather,
        # frame), so rendering after the tick gives the image the tick would have.
        if self._spec is None:
            raise RuntimeError("sensor_data() before reset()")
        return self._sensor_data(render=True)

    def _decide(
        self, ego_xy: np.ndarray, npc_xy: np.ndarray, ped_xy: np.ndarray, progress: float
    ) -> None:
        """The world's slow loop (DECISION_HZ): light phases, NPC decisions, scripted
        triggers, respawns, and which lights are near enough for the red-light check."""
        # Lights change state on whole phases, so the decision rate resolves them.
        self._light_states = self._compute_light_states(self._time_s)
        self.traffic.decide(
            self._obstacles(ego_xy, npc_xy, ped_xy),
            self._light_states != int(TrafficLightState.Green),
            progress,
            self._ego_junction(ego_xy),
            light_yellow=self._light_states == int(TrafficLightState.Yellow),
        )
        self._scripted_triggers(progress)
        for k in np.nonzero(self.traffic.dead_ended())[0]:
            self._respawn(int(k))
        for stuck in self._stuck_behind_props():
            self._respawn(stuck)
        if len(self.town.lights):
            # The red-light rule looks 15 m around the ego; the ego covers < 10 m between
            # decisions, so lights within 30 m now are all it can need until the next one.
            d = np.abs(self._stop_line_centres - ego_xy).max(axis=1)
            self._lights_near_ego = np.nonzero(d < 30.0)[0].tolist()

    def _obstacles(self, ego_xy: np.ndarray, npc_xy: np.ndarray, ped_xy: np.ndarray) -> Obstacles:
        """Everything an NPC must not drive into: ego, other NPCs, pedestrians, props."""
        n_npc, n_ped = len(npc_xy), len(ped_xy)
        n_prop = len(self.prop_xy)
        return Obstacles(
            xy=np.concatenate([ego_xy[None], npc_xy, ped_xy, self.prop_xy]),
            radius=np.concatenate(
                [
                    self._ego_radius,
                    self._npc_radius[:n_npc],
                    self._ped_radius[:n_ped],
                    self._prop_half_width,
                ]
            ),
            owner=np.concatenate([[-1], np.arange(n_npc), self._minus_ones[: n_ped + n_prop]]),
            speed=np.concatenate(
                [
                    [max(self.ego.speed, 0.0)],
                    self.traffic.v,
                    self.pedestrians.velocities(),
                    self._prop_zeros,
                ]
            ),
            half_length=np.concatenate(
                [
                    self._ego_half_length,
                    self._npc_half_length[:n_npc],
                    self._ped_radius[:n_ped],
                    self._prop_half_len,
                ]
            ),
            yaw=np.concatenate(
                [[self.ego.yaw], self.traffic.positions()[1], np.full(n_ped, np.nan), self.prop_yaw]
            ),
        )

    def _lane_heading(self, lane_id: int, xy: np.ndarray) -> float:
        """Heading [rad] of `lane_id` beside `xy`. The ego moves < 2 m a tick, so the search
        starts from the last index found on the same lane and walks downhill."""
        lane = self.town.lanes[lane_id]
        pts = lane.points
        if lane_id != self._heading_hint[0]:
            i = int(np.argmin(((pts - xy) ** 2).sum(1)))
        else:
            i = self._heading_hint[1]
            x, y = float(xy[0]), float(xy[1])

            def d2(k: int) -> float:
                return (pts[k, 0] - x) ** 2 + (pts[k, 1] - y) ** 2

            while i + 1 < len(pts) and d2(i + 1) < d2(i):
                i += 1
            while i > 0 and d2(i - 1) < d2(i):
                i -= 1
        self._heading_hint = (lane_id, i)
        return float(lane.heading[i])

    def _ego_junction(self, ego_xy: np.ndarray) -> int:
        if self.town.label_at(ego_xy) != -2:
            return -1
        for node in self.town.nodes:
            if node.is_junction and np.abs(ego_xy - node.position).max() <= node.radius + 1.0:
                return node.id
        return -1

    def _scripted_triggers(self, progress: float) -> None:
        dt = 1.0 / DECISION_HZ
        ego_v = max(self.ego.speed, 0.0)
        for k, vspec in self._scripted_vehicles:
            name = f"{vspec.behaviour}@{vspec.route_s_m:g}"
            if vspec.behaviour == "run_red_light":
                self._time_red_light_runner(k, progress, ego_v)
            elif not self.traffic.triggered[k] and vspec.pace_gap_m is not None:
                # Route distance of the vehicle, advanced with its own speed (it drives
                # along the route's lanes or beside them).
                self._scripted_route_s[k] += float(self.traffic.v[k]) * dt
                gap = self._scripted_route_s[k] - progress
                pace = ego_v - 0.5 * (gap - vspec.pace_gap_m)  # too far ahead: slower
                self.traffic.v_desired[k] = float(
                    np.clip(pace, 0.0, max(vspec.speed_mps, ego_v + 3.0))
                )
            fired = self.traffic.triggered[k]
            if fired and name not in self._active_events:
                self._active_events.append(name)
                if vspec.pace_gap_m is not None:
                    # Pacing ends with the trigger: once its manoeuvre is done it drives
                    # like background traffic (up to its lane's limit).
                    self.traffic.v_desired[k] = math.inf
                if vspec.behaviour == "cut_in":
                    self._cut_in(k)
        n_ped_fired = int(
            (
                self.pedestrians.scripted & (self.pedestrians.walking | (self.pedestrians.s > 0))
            ).sum()
        )
        for i in range(n_ped_fired):
            name = f"pedestrian_crossing#{i}"
            if name not in self._active_events:
                self._active_events.append(name)

    def _cut_in(self, k: int) -> None:
        """Re-path NPC k from its lane into the route lane beside it, over CUT_IN_MIN_M
        plus CUT_IN_TIME_S of its speed (a lane change takes time, not distance)."""
        xy, yaw = self.traffic.positions()
        here = xy[k]
        s_route = pl.project(self._route.points, self._route.s, here)[0]
        merge_m = CUT_IN_MIN_M + CUT_IN_TIME_S * float(self.traffic.v[k])
        lane_id, s_lane = self._route_lane_at(min(s_route + merge_m, self._route.length_m))
        lane = self.town.lanes[lane_id]
        target = lane.point_at(s_lane)
        merge = pl.bezier(here, float(yaw[k]), target, lane.heading_at(s_lane))
        v = self.traffic.v[k]
        self.traffic.add_repath(k, self._route_lanes_from(lane_id), s_lane, merge)
        self.traffic.v[k] = v

    def _collisions(self, ego_xy: np.ndarray, off_road: bool = False) -> list[Collision]:
        """Ego box against every vehicle, pedestrian, prop and pole box (and buildings when
        off the road). Broad phase: centres within 6 m; narrow phase: separating axes."""
        out = self._building_collisions(ego_xy) if off_road else []
        npc_xy, npc_yaw = self.traffic.positions()
        ped_xy, ped_yaw = self.pedestrians.positions()
        centres = np.concatenate([npc_xy, ped_xy, self.prop_xy])
        d = centres - ego_xy
        near = np.nonzero(np.einsum("mc,mc->m", d, d) < 36.0)[0]
        if len(near) == 0:
            return out
        n_npc, n_ped = len(npc_xy), len(ped_xy)
        yaws = np.concatenate([npc_yaw, ped_yaw, self.prop_yaw])[near]
        halves = np.concatenate(
            [self._npc_half_extent[:n_npc], self._ped_half_extent[:n_ped], self._prop_half_extent]
        )[near]
        hit = obb_overlap(ego_xy, self.ego.yaw, self._ego_half_extent, centres[near], yaws, halves)
        for i in near[hit].tolist():
            xy = (float(centres[i, 0]), float(centres[i, 1]))
            if i < n_npc:
                out.append(Collision(int(self.traffic.ids[i]), "vehicle.npc.sedan", xy))
            elif i < n_npc + n_ped:
                pid = int(self.pedestrians.ids[i - n_npc])
                out.append(Collision(pid, "walker.pedestrian.0001", xy))
            else:
                j = i - n_npc - n_ped
                out.append(Collision(int(self.prop_ids[j]), self.prop_type_ids[j], xy))
        return out

    def _building_collisions(self, ego_xy: np.ndarray) -> list[Collision]:
        """Buildings are map geometry (CARLA reports them with id 0, type static.building)."""
        bld = self.town.buildings
        if len(bld) == 0:
            return []
        hit = obb_overlap(
            ego_xy,
            self.ego.yaw,
            self._ego_half_extent,
            bld[:, :2],
            np.zeros(len(bld)),
            bld[:, 2:4] / 2,
        )
        return [Collision(0, "static.building", (float(b[0]), float(b[1]))) for b in bld[hit]]

    def _light_info(self, i: int) -> TrafficLightInfo:
        light = self.town.lights[i]
        return TrafficLightInfo(
            id=light.id,
            state=TrafficLightState(int(self._light_states[i])),
            x=float(light.position[0]),
            y=float(light.position[1]),
            stop_line=(
                (float(light.stop_line[0, 0]), float(light.stop_line[0, 1])),
                (float(light.stop_line[1, 0]), float(light.stop_line[1, 1])),
            ),
            heading=light.heading,
            lane_ids=tuple(light.lane_ids),
        )

    def _light_infos(self) -> list[TrafficLightInfo]:
        return [self._light_info(i) for i in range(len(self.town.lights))]

    def ground_truth_lights(
        self, near_xy: np.ndarray, radius_m: float = 40.0
    ) -> list[TrafficLightInfo]:
        """Traffic lights whose stop line lies within `radius_m` (Chebyshev) of `near_xy`."""
        if not len(self.town.lights):
            return []
        d = np.abs(self._stop_line_centres - near_xy).max(axis=1)
        return [self._light_info(i) for i in np.nonzero(d < radius_m)[0].tolist()]

    def _sensor_data(self, render: bool) -> SensorData:
        data: SensorData = {}
        if not self._sensors:
            return data
        boxes = self.scene_boxes() if self._renderers and render else None
        for s in self._sensors:
            if s.type == CAMERA:
                if not render:
                    continue
                img = self._renderers[s.id].render(
                    np.array([self.ego.x, self.ego.y]),
                    self.ego.yaw,
                    boxes,
                    self.weather,
                    self._frame,
                )
                data[s.id] = (self._frame, img)
            elif s.type == GNSS:
                lat, lon, alt = GEO_REFERENCE.to_gps(self.ego.x, self.ego.y, 0.0)
                data[s.id] = (self._frame, np.array([lat, lon, alt], np.float64))
            elif s.type == IMU:
                data[s.id] = (
                    self._frame,
                    np.array(
                        [
                            self.ego.accel,
                            self.ego.lateral_accel,
                            GRAVITY_MPS2,
                            0.0,
                            0.0,
                            self.ego.yaw_rate,
                            yaw_to_compass(self.ego.yaw),
                        ],
                        np.float64,
                    ),
                )
            elif s.type == SPEEDOMETER:
                data[s.id] = (self._frame, {"speed": float(self.ego.speed)})
        return data

    # ------------------------------------------------------------ rendering
    def scene_boxes(self) -> SceneBoxes:
        """Every object as a box, for the renderers: ego (kind EGO), NPCs, pedestrians,
        props and light poles (lamp colour in `light_bgr`), buildings."""
        npc_xy, npc_yaw = self.traffic.positions()
        ped_xy, ped_yaw = self.pedestrians.positions()
        n_npc, n_ped, n_prop = len(npc_xy), len(ped_xy), len(self.prop_xy)
        bld = self.town.buildings
        n_bld = len(bld)
        prop_light = np.zeros((n_prop, 3), np.uint8)
        if len(self.town.lights):
            lamp = np.array([[40, 40, 255], [0, 200, 255], [80, 255, 80]], np.uint8)
            prop_light[self._n_props :] = lamp[np.minimum(self._light_states, 2)]
        braking = (self.traffic.v < 0.5)[:, None]
        tail = np.where(braking, [[40, 40, 255]], [[20, 20, 160]]).astype(np.uint8)
        return SceneBoxes(
            center_xy=np.concatenate(
                [[[self.ego.x, self.ego.y]], npc_xy, ped_xy, self.prop_xy, bld[:, :2]]
            ),
            yaw=np.concatenate([[self.ego.yaw], npc_yaw, ped_yaw, self.prop_yaw, np.zeros(n_bld)]),
            size=np.concatenate(
                [
                    [[MKZ_LENGTH_M, MKZ_WIDTH_M, MKZ_HEIGHT_M]],
                    np.tile([NPC_LENGTH_M, NPC_WIDTH_M, NPC_HEIGHT_M], (n_npc, 1)),
                    np.tile(PEDESTRIAN_SIZE_M, (n_ped, 1)),
                    self.prop_size,
                    bld[:, 2:5],
                ]
            ),
            base_z=np.zeros(1 + n_npc + n_ped + n_prop + n_bld),
            bgr=np.concatenate(
                [
                    [[200, 200, 200]],
                    self.traffic.colour,
                    self.pedestrians.colour,
                    self.prop_bgr,
                    self._building_bgr,
                ]
            ).astype(np.uint8),
            kind=np.concatenate(
                [
                    [int(BoxKind.EGO)],
                    np.full(n_npc, int(BoxKind.VEHICLE)),
                    np.full(n_ped, int(BoxKind.PEDESTRIAN)),
                    self.prop_kind,
                    np.full(n_bld, int(BoxKind.BUILDING)),
                ]
            ).astype(np.int64),
            light_bgr=np.concatenate(
                [[[0, 0, 0]], tail, np.zeros((n_ped, 3)), prop_light, np.zeros((n_bld, 3))]
            ).astype(np.uint8),
            ids=np.concatenate(
                [
                    [EGO_ID],
                    self.traffic.ids,
                    self.pedestrians.ids,
                    self.prop_ids,
                    np.full(n_bld, -1),
                ]
            ).astype(np.int64),
        )

    # ------------------------------------------------------------ properties
    ego_half_length_m = MKZ_LENGTH_M / 2

    @property
    def speed_limit_mps(self) -> float:
        """[m/s] the town's speed limit."""
        return self._spec.town.speed_limit_kmh / 3.6 if self._spec else 0.0

    def speed_limit_at(self, route_s_m: float) -> float:
        """[m/s] the limit at a route distance (the town's, lowered in speed zones)."""
        return self._spec.speed_limit_at(route_s_m) if self._spec else 0.0

    @property
    def frame(self) -> int:
        return self._frame

    @property
    def time_s(self) -> float:
        return self._time_s

    @property
    def route(self) -> Route:
        return self._route

    def global_plan(
        self,
    ) -> tuple[list[tuple[dict, RoadOption]], list[tuple[Transform, RoadOption]]]:
        return self._route.global_plan()

    @property
    def events(self) -> list[InfractionEvent]:
        return list(self._events)

    @property
    def route_status(self) -> RouteStatus:
        return self.criteria.status

    @property
    def sensors(self) -> list[SensorSpec]:
        return list(self._sensors)

    def lane_layout(self) -> LaneLayout:
        """Lateral room beside the route (see `sim.route.LaneLayout`), from the town's lanes."""
        if self._layout is not None:
            return self._layout
        ids = self._route.lane_ids
        n = len(ids)
        width = np.full(n, self.town.spec.lane_width_m)
        left = np.zeros(n, np.int64)
        right = np.zeros(n, np.int64)
        opposite = np.zeros(n, bool)
        per_dir = self.town.spec.lanes_per_direction
        last = -1
        for j in range(n):
            lane_id = int(ids[j]) if ids[j] >= 0 else last  # mid lane change: the lane left
            last = lane_id
            if lane_id < 0:
                continue
            lane = self.town.lanes[lane_id]
            if lane.road_id < 0:  # junction or bend connector
                continue
            width[j] = lane.width
            left[j] = lane.index
            right[j] = per_dir - 1 - lane.index
            road = self.town.roads[lane.road_id]
            opposite[j] = lane.index == 0 and bool(road.lanes_ab) and bool(road.lanes_ba)
        self._layout = LaneLayout(width, left, right, opposite)
        return self._layout

    def ground_truth(self) -> GroundTruth:
        npc_xy, npc_yaw = self.traffic.positions()
        ped_xy, ped_yaw = self.pedestrians.positions()
        ped_v = self.pedestrians.velocities()
        scripted = {k for k, _ in self._scripted_vehicles}
        actors = [
            ActorState(
                int(self.traffic.ids[i]),
                "vehicle.npc.sedan",
                float(npc_xy[i, 0]),
                float(npc_xy[i, 1]),
                float(npc_yaw[i]),
                float(self.traffic.v[i]),
                (NPC_LENGTH_M, NPC_WIDTH_M, NPC_HEIGHT_M),
                "scenario" if i in scripted else "background",
            )
            for i in range(len(npc_xy))
        ]
        actors += [
            ActorState(
                int(self.pedestrians.ids[i]),
                "walker.pedestrian.0001",
                float(ped_xy[i, 0]),
                float(ped_xy[i, 1]),
                float(ped_yaw[i]),
                float(ped_v[i]),
                PEDESTRIAN_SIZE_M,
                "scenario" if self.pedestrians.scripted[i] else "background",
            )
            for i in range(len(ped_xy))
        ]
        props = [
            ActorState(
                int(self.prop_ids[i]),
                self.prop_type_ids[i],
                float(self.prop_xy[i, 0]),
                float(self.prop_xy[i, 1]),
                float(self.prop_yaw[i]),
                0.0,
                (
                    float(self.prop_size[i, 0]),
                    float(self.prop_size[i, 1]),
                    float(self.prop_size[i, 2]),
                ),
                "scenario",
            )
            for i in range(self._n_props)
        ]
        status = self.criteria.status
        return GroundTruth(
            frame=self._frame,
            time_s=self._time_s,
            ego=ActorState(
                EGO_ID,
                EGO_TYPE_ID,
                self.ego.x,
                self.ego.y,
                self.ego.yaw,
                self.ego.speed,
                (MKZ_LENGTH_M, MKZ_WIDTH_M, MKZ_HEIGHT_M),
                "hero",
            ),
            actors=tuple(actors),
            props=tuple(props),
            traffic_lights=tuple(self._light_infos()),
            weather=self.weather,
            friction=self.weather.friction,
            route_progress_m=status.progress_m,
            route_completion=status.completion,
            active_events=tuple(self._active_events),
            speed_limit_mps=self._spec.speed_limit_at(status.progress_m) if self._spec else 0.0,
        )

    def close(self) -> None:
        self._renderers = {}
