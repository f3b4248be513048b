"""The moving parts of a WorldSpec on a CARLA server: background traffic, pedestrians,
scripted vehicles and scripted pedestrian crossings, and their triggers.

- Background vehicles: cars (`base_type` car) at the map's spawn points, in a seeded
  order, more than 30 m from the ego and 12 m from scenario objects, driven by the Traffic
  Manager (`client.get_trafficmanager(port)`, synchronous, `set_random_device_seed`),
  role_name `background` as the Leaderboard's BackgroundBehavior names them.
- Background pedestrians: `walker.pedestrian.*` at navigation-mesh points
  (`World.set_pedestrians_seed` makes them repeatable), each led by a
  `controller.ai.walker` to random destinations at its blueprint's walking speed, on
  sidewalks only (`set_pedestrians_cross_factor(0)`), as CARLA's generate_traffic.py does.
- Scripted vehicles (VehicleSpec) are placed on the route's lane (or `lane_offset` lanes
  beside it) at `route_s_m`: `stopped` holds its hand brake; `cruise`, `hard_brake` and
  `cut_in` drive under the Traffic Manager at `speed_mps` along the route; before their
  trigger, vehicles with `pace_gap_m` keep that gap ahead of the ego (the embedded
  simulator's pacing law, `pace_speed`); at the trigger (`trigger_s_m` of ego route
  progress; never when None, as in the embedded simulator) `hard_brake` leaves the
  Traffic Manager and brakes with `brake_decel_mps2 / MAX_BRAKE_DECEL_MPS2`, `cut_in` is
  forced into the route lane. `run_red_light` waits on a crossing approach of the first
  junction the route enters after `route_s_m` and is released so that it reaches the
  junction with the ego, ignoring lights (whether its light is red then depends on the
  junction's cycle: the light is not forced, unlike the embedded simulator).
- Scripted pedestrians (PedestrianSpec) stand `start_lateral_m` beside the route and walk
  across it with `carla.WalkerControl` once the ego's progress reaches `trigger_s_m`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.carla.props import (
    PROP_FALLBACK_SIZES,
    VEHICLE_Z_OFFSET_M,
    PropPlacement,
    crossing_plan,
    nearest_crosswalk_s,
    spawn_prop_commands,
)
from sim.carla.routes import classify_turn
from sim.control import RoadOption
from sim.route import Route
from sim.spec import PedestrianSpec, VehicleSpec, WorldSpec, WorldSpecError

log = logging.getLogger(__name__)

EGO_CLEARANCE_M = 30.0  # [m] no background vehicle spawns closer to the ego
SPAWN_CLEARANCE_M = 12.0  # [m] ... nor closer to a scenario object
MAX_BRAKE_DECEL_MPS2 = 8.0  # [m/s^2] roughly what brake = 1 gives a CARLA car on dry road
RUNNER_ACCEL_MPS2 = 2.0  # [m/s^2] assumed launch of a red-light runner, for its timing
RUNNER_MARGIN_S = 1.0  # [s] released this much early (it can slow down, not speed up)
RUNNER_MIN_RUN_UP_M = 20.0  # [m] a runner waits at least this far before its junction
PATH_POINT_SPACING_M = 10.0  # [m] spacing of Traffic Manager path points along the route
PROJECT_WINDOW = (20, 80)  # route points searched behind / ahead of the last projection


def pace_speed(gap_m: float, pace_gap_m: float, ego_speed_mps: float, cruise_mps: float) -> float:
    """[m/s] the speed that holds a scripted vehicle `pace_gap_m` ahead of the ego (the
    embedded simulator's law): the ego's speed, less half the excess gap."""
    ego = max(ego_speed_mps, 0.0)
    pace = ego - 0.5 * (gap_m - pace_gap_m)
    return float(np.clip(pace, 0.0, max(cruise_mps, ego + 3.0)))


def travel_time_s(
    distance_m: float, speed_mps: float, accel_mps2: float = RUNNER_ACCEL_MPS2
) -> float:
    """[s] time to cover `distance_m` from rest, accelerating at `accel_mps2` up to
    `speed_mps` and cruising after."""
    if distance_m <= 0.0:
        return 0.0
    speed = max(speed_mps, 0.1)
    ramp_m = speed**2 / (2.0 * accel_mps2)
    if distance_m <= ramp_m:
        return math.sqrt(2.0 * distance_m / accel_mps2)
    return speed / accel_mps2 + (distance_m - ramp_m) / speed


def project_on_route(route: Route, xy: tuple[float, float], hint: int) -> tuple[float, int]:
    """(route distance [m], index) of the route point nearest to `xy`, searched around
    the index `hint` of the last projection."""
    lo = max(hint - PROJECT_WINDOW[0], 0)
    hi = min(hint + PROJECT_WINDOW[1], len(route.points))
    pts = route.points[lo:hi]
    d2 = (pts[:, 0] - xy[0]) ** 2 + (pts[:, 1] - xy[1]) ** 2
    i = lo + int(np.argmin(d2))
    return float(route.s[i]), i


@dataclass
class ScriptedVehicle:
    spec: VehicleSpec
    actor: Any
    name: str  # the active-event name, as the embedded simulator reports it
    route_s: float  # [m] last projection on the route
    hint: int
    fired: bool = False
    junction_s: float = 0.0  # run_red_light: [m] route distance of its junction
    run_up_m: float = 0.0  # run_red_light: [m] it drives to the junction's middle
    path: tuple[Any, ...] = ()  # run_red_light: carla.Locations through the junction


@dataclass
class ScriptedWalker:
    actor: Any
    name: str
    direction: tuple[float, float]
    walk_m: float
    speed_mps: float
    trigger_s: float
    start_xy: tuple[float, float]
    state: str = "waiting"  # waiting -> walking -> done


@dataclass(frozen=True)
class DynamicActor:
    """What ground truth needs to know about a moving actor besides its pose."""

    type_id: str
    size: tuple[float, float, float]  # [m] length, width, height
    role: str  # "background" or "scenario"


def _size(actor: Any) -> tuple[float, float, float]:
    e = actor.bounding_box.extent
    return (2.0 * float(e.x), 2.0 * float(e.y), 2.0 * float(e.z))


class ScenarioActors:
    """Spawns and runs everything of a WorldSpec but the ego; every id goes into the
    session's registry the moment it exists (see sim/carla/actors.py)."""

    def __init__(
        self,
        session: Any,  # sim.carla.actors.WorldSession
        world_map: Any,  # carla.Map of session.world
        spec: WorldSpec,
        route: Route,
        z: np.ndarray,
        route_waypoints: tuple[Any, ...],
        seed: int,
    ) -> None:
        from sim.carla_compat import require_carla

        self.carla = require_carla()
        self.session = session
        self.world = session.world
        self.map = world_map
        self.library = self.world.get_blueprint_library()
        self.tm = session.traffic_manager()
        self.spec = spec
        self.route = route
        self.z = z
        self.route_waypoints = route_waypoints
        self.seed = seed
        self.dynamic: dict[int, DynamicActor] = {}
        self.props: dict[int, tuple[str, tuple[float, float, float]]] = {}  # id -> type, size
        self.vehicles: list[ScriptedVehicle] = []
        self.walkers: list[ScriptedWalker] = []
        self.active_events: list[str] = []
        self._taken: list[tuple[float, float]] = []  # scenario object positions
        self._cars: list[Any] | None = None

    # ----------------------------------------------------------------- spawning
    def spawn_props(self, placements: list[PropPlacement]) -> None:
        if not placements:
            return
        responses = self.session.client.apply_batch_sync(
            spawn_prop_commands(placements, self.library)
        )
        kinds: dict[int, str] = {}
        errors = []
        for placement, response in zip(placements, responses, strict=True):
            if response.error:
                errors.append(
                    f"could not spawn the {placement.kind} ({placement.blueprint}) at "
                    f"{placement.transform.location}: {response.error}"
                )
                continue
            self.session.registry.add(response.actor_id, "prop")
            kinds[response.actor_id] = placement.kind
            loc = placement.transform.location
            self._taken.append((loc.x, loc.y))
        if errors:  # the others are registered: the caller's cleanup removes them
            raise RuntimeError("; ".join(errors))
        for actor in self.world.get_actors(list(kinds)):
            size = _size(actor)
            if min(size[:2]) < 0.05:  # no bounding box reported
                size = PROP_FALLBACK_SIZES[kinds[actor.id]]
            self.props[actor.id] = (actor.type_id, size)

    def _car_blueprints(self) -> list[Any]:
        """Four-wheeled cars (`base_type` car), sorted by id so seeded choices repeat."""
        if self._cars is None:
            vehicles = sorted(self.library.filter("vehicle.*"), key=lambda bp: bp.id)
            cars = [
                bp
                for bp in vehicles
                if bp.has_attribute("base_type") and bp.get_attribute("base_type").as_str() == "car"
            ]
            self._cars = cars or vehicles
        return self._cars

    def _vehicle_blueprint(self, rng: np.random.Generator, role: str) -> Any:
        cars = self._car_blueprints()
        bp = cars[int(rng.integers(len(cars)))]
        if bp.has_attribute("color"):
            colours = list(bp.get_attribute("color").recommended_values)
            if colours:
                bp.set_attribute("color", colours[int(rng.integers(len(colours)))])
        if bp.has_attribute("role_name"):
            bp.set_attribute("role_name", role)
        return bp

    def _route_lane_waypoint(self, s_m: float, lane_offset: int) -> Any:
        i = int(np.clip(np.searchsorted(self.route.s, s_m), 0, len(self.route.s) - 1))
        wp = self.route_waypoints[i]
        steps = lane_offset
        while steps != 0:
            side = wp.get_left_lane() if steps > 0 else wp.get_right_lane()
            if (
                side is None
                or side.lane_type != self.carla.LaneType.Driving
                or side.lane_id * wp.lane_id <= 0
            ):
                raise WorldSpecError(
                    f"vehicle at route_s_m={s_m}: no lane {lane_offset:+d} beside the route "
                    "lane on the CARLA map"
                )
            wp = side
            steps += -1 if steps > 0 else 1
        return wp

    def _route_path(self, s_m: float) -> list[Any]:
        """carla.Locations along the route ahead of `s_m`, for `TrafficManager.set_path`."""
        out = []
        for s in np.arange(s_m + PATH_POINT_SPACING_M, self.route.length_m, PATH_POINT_SPACING_M):
            i = int(np.clip(np.searchsorted(self.route.s, s), 0, len(self.route.s) - 1))
            out.append(self.route_waypoints[i].transform.location)
        return out

    def _drive(self, actor: Any, speed_mps: float) -> None:
        actor.set_autopilot(True, self.session.tm_port)
        self.tm.auto_lane_change(actor, False)
        self.tm.set_desired_speed(actor, speed_mps * 3.6)  # the TM takes km/h

    def spawn_scripted_vehicles(self) -> None:
        rng = np.random.default_rng([self.seed, 7])
        for vspec in self.spec.vehicles:
            name = f"{vspec.behaviour}@{vspec.route_s_m:g}"
            if vspec.behaviour == "run_red_light":
                self._spawn_red_light_runner(vspec, name, rng)
                continue
            wp = self._route_lane_waypoint(vspec.route_s_m, vspec.lane_offset)
            transform = wp.transform
            transform.location.z += VEHICLE_Z_OFFSET_M
            actor = self.world.try_spawn_actor(self._vehicle_blueprint(rng, "scenario"), transform)
            if actor is None:
                raise RuntimeError(f"could not spawn the scripted vehicle {name} at {transform}")
            self.session.registry.add(actor.id, "vehicle")
            self.dynamic[actor.id] = DynamicActor(actor.type_id, _size(actor), "scenario")
            self._taken.append((transform.location.x, transform.location.y))
            sv = ScriptedVehicle(
                vspec,
                actor,
                name,
                vspec.route_s_m,
                int(np.searchsorted(self.route.s, vspec.route_s_m)),
            )
            self.vehicles.append(sv)
            if vspec.pace_gap_m is not None and vspec.behaviour not in ("hard_brake", "cut_in"):
                log.warning("%s: pace_gap_m is used by hard_brake / cut_in vehicles only", name)
            if vspec.behaviour == "stopped":
                actor.apply_control(self.carla.VehicleControl(brake=1.0, hand_brake=True))
                continue
            self._drive(actor, vspec.speed_mps)
            if vspec.lane_offset == 0:
                self.tm.set_path(actor, self._route_path(vspec.route_s_m))

    def _spawn_red_light_runner(
        self, vspec: VehicleSpec, name: str, rng: np.random.Generator
    ) -> None:
        """On a straight-through approach crossing the route at its first junction after
        `route_s_m`, max(4 s x speed, RUNNER_MIN_RUN_UP_M) before the junction."""
        i0 = int(np.searchsorted(self.route.s, vspec.route_s_m))
        for i in range(max(i0, 1), len(self.route_waypoints)):
            wp = self.route_waypoints[i]
            if not wp.is_junction:
                continue
            route_yaw = self.route_waypoints[i - 1].transform.rotation.yaw
            pairs = wp.get_junction().get_waypoints(self.carla.LaneType.Driving)
            for entry, exit_wp in pairs:
                crossing = (
                    abs(math.sin(math.radians(entry.transform.rotation.yaw - route_yaw))) > 0.7
                )
                straight = (
                    classify_turn(entry.transform.rotation.yaw, exit_wp.transform.rotation.yaw)
                    == RoadOption.STRAIGHT
                )
                if not (crossing and straight):
                    continue
                run_up = max(4.0 * vspec.speed_mps, RUNNER_MIN_RUN_UP_M)
                before = entry.previous(run_up)
                if not before:
                    continue
                transform = before[0].transform
                transform.location.z += VEHICLE_Z_OFFSET_M
                actor = self.world.try_spawn_actor(
                    self._vehicle_blueprint(rng, "scenario"), transform
                )
                if actor is None:
                    continue
                self.session.registry.add(actor.id, "vehicle")
                self.dynamic[actor.id] = DynamicActor(actor.type_id, _size(actor), "scenario")
                actor.apply_control(self.carla.VehicleControl(brake=1.0, hand_brake=True))
                half = entry.transform.location.distance(exit_wp.transform.location) / 2.0
                after = exit_wp.next(20.0)
                path = (entry.transform.location, exit_wp.transform.location) + (
                    (after[0].transform.location,) if after else ()
                )
                self.vehicles.append(
                    ScriptedVehicle(
                        vspec,
                        actor,
                        name,
                        vspec.route_s_m,
                        i,
                        junction_s=float(self.route.s[i]) + half,
                        run_up_m=run_up + half,
                        path=path,
                    )
                )
                return
        raise WorldSpecError(
            f"red_light_runner at route_s_m={vspec.route_s_m}: the route enters no junction "
            "with a straight crossing approach after that point on the CARLA map"
        )

    def spawn_scripted_pedestrians(self) -> None:
        rng = np.random.default_rng([self.seed, 8])
        walkers = sorted(self.library.filter("walker.pedestrian.*"), key=lambda bp: bp.id)
        centres: list[tuple[float, float]] | None = None
        for k, pspec in enumerate(self.spec.pedestrians):
            s_m = pspec.route_s_m
            if pspec.snap_to_crosswalk:
                if centres is None:
                    from sim.carla.maps import crosswalk_centres

                    centres = crosswalk_centres([(p.x, p.y) for p in self.map.get_crosswalks()])
                s_m = nearest_crosswalk_s(self.route, centres, s_m)
            self._spawn_crossing(k, pspec, s_m, walkers[int(rng.integers(len(walkers)))])

    def _spawn_crossing(self, k: int, pspec: PedestrianSpec, s_m: float, bp: Any) -> None:
        plan = crossing_plan(pspec, self.route, self.z, s_m)
        if bp.has_attribute("is_invincible"):
            bp.set_attribute("is_invincible", "false")  # collisions must count
        if bp.has_attribute("role_name"):
            bp.set_attribute("role_name", "scenario")
        yaw = math.degrees(math.atan2(plan.direction[1], plan.direction[0]))
        transform = self.carla.Transform(
            self.carla.Location(x=plan.start[0], y=plan.start[1], z=plan.start[2]),
            self.carla.Rotation(yaw=yaw),
        )
        actor = self.world.try_spawn_actor(bp, transform)
        if actor is None:
            raise RuntimeError(f"could not spawn the scripted pedestrian #{k} at {transform}")
        self.session.registry.add(actor.id, "walker")
        self.dynamic[actor.id] = DynamicActor(actor.type_id, _size(actor), "scenario")
        self._taken.append(plan.start[:2])
        self.walkers.append(
            ScriptedWalker(
                actor,
                f"pedestrian_crossing#{k}",
                plan.direction,
                plan.walk_m,
                plan.speed_mps,
                0.0 if pspec.trigger_s_m is None else pspec.trigger_s_m,
                plan.start[:2],
            )
        )

    def spawn_background_vehicles(self, count: int, ego_xy: tuple[float, float]) -> None:
        if count <= 0:
            return
        rng = np.random.default_rng([self.seed, 4])
        spawn_points = list(self.map.get_spawn_points())
        taken = list(self._taken)
        chosen = []
        for k in rng.permutation(len(spawn_points)).tolist():
            loc = spawn_points[k].location
            if math.dist((loc.x, loc.y), ego_xy) < EGO_CLEARANCE_M:
                continue
            if any(math.dist((loc.x, loc.y), p) < SPAWN_CLEARANCE_M for p in taken):
                continue
            chosen.append(spawn_points[k])
            taken.append((loc.x, loc.y))
            if len(chosen) == count:
                break
        if len(chosen) < count:
            log.warning(
                "only %d of %d background vehicles fit the map's spawn points", len(chosen), count
            )
        command = self.carla.command
        batch = [
            command.SpawnActor(self._vehicle_blueprint(rng, "background"), tf).then(
                command.SetAutopilot(command.FutureActor, True, self.session.tm_port)
            )
            for tf in chosen
        ]
        ids = [r.actor_id for r in self.session.client.apply_batch_sync(batch) if not r.error]
        self.session.registry.add_many(ids, "vehicle")
        for actor in self.world.get_actors(ids):
            self.dynamic[actor.id] = DynamicActor(actor.type_id, _size(actor), "background")

    def spawn_background_walkers(self, count: int) -> None:
        if count <= 0:
            return
        rng = np.random.default_rng([self.seed, 5])
        self.world.set_pedestrians_seed(int(self.seed % 2**31))
        self.world.set_pedestrians_cross_factor(0.0)
        walkers = sorted(self.library.filter("walker.pedestrian.*"), key=lambda bp: bp.id)
        command = self.carla.command
        batch, speeds = [], []
        for _ in range(count):
            loc = self.world.get_random_location_from_navigation()
            if loc is None:
                continue
            bp = walkers[int(rng.integers(len(walkers)))]
            if bp.has_attribute("is_invincible"):
                bp.set_attribute("is_invincible", "false")
            speed = 1.4  # [m/s]
            if bp.has_attribute("speed"):
                values = bp.get_attribute("speed").recommended_values
                if len(values) > 1:
                    speed = float(values[1])  # [still, walk, run]: walking speed
            batch.append(command.SpawnActor(bp, self.carla.Transform(loc)))
            speeds.append(speed)
        responses = self.session.client.apply_batch_sync(batch)
        walker_ids, walker_speeds = [], []
        for response, speed in zip(responses, speeds, strict=True):
            if not response.error:
                walker_ids.append(response.actor_id)
                walker_speeds.append(speed)
        self.session.registry.add_many(walker_ids, "walker")
        controller_bp = self.library.find("controller.ai.walker")
        responses = self.session.client.apply_batch_sync(
            [command.SpawnActor(controller_bp, self.carla.Transform(), w) for w in walker_ids]
        )
        pairs = [
            (r.actor_id, s) for r, s in zip(responses, walker_speeds, strict=True) if not r.error
        ]
        self.world.tick()  # controllers need a tick before they take commands
        controllers = {a.id: a for a in self.world.get_actors([c for c, _ in pairs])}
        for controller_id, speed in pairs:
            controller = controllers.get(controller_id)
            if controller is None:
                continue
            self.session.registry.add(controller_id, "controller", controller)
            controller.start()
            controller.go_to_location(self.world.get_random_location_from_navigation())
            controller.set_max_speed(speed)
        for actor in self.world.get_actors(walker_ids):
            self.dynamic[actor.id] = DynamicActor(actor.type_id, _size(actor), "background")

    # ----------------------------------------------------------------- per tick
    def step(self, progress_m: float, ego_speed_mps: float, snapshot: Any) -> None:
        """Triggers and pacing, before the world tick that applies them."""
        for sv in self.vehicles:
            if sv.spec.behaviour == "stopped" or not snapshot.has_actor(sv.actor.id):
                continue
            if sv.spec.behaviour == "run_red_light":
                self._time_runner(sv, progress_m, ego_speed_mps)
                continue
            trigger = sv.spec.trigger_s_m
            if not sv.fired and trigger is not None and progress_m >= trigger:
                self._fire(sv)
            elif not sv.fired and sv.spec.pace_gap_m is not None:
                loc = snapshot.find(sv.actor.id).get_transform().location
                sv.route_s, sv.hint = project_on_route(self.route, (loc.x, loc.y), sv.hint)
                speed = pace_speed(
                    sv.route_s - progress_m, sv.spec.pace_gap_m, ego_speed_mps, sv.spec.speed_mps
                )
                self.tm.set_desired_speed(sv.actor, speed * 3.6)
        for w in self.walkers:
            if w.state == "waiting" and progress_m >= w.trigger_s:
                direction = self.carla.Vector3D(x=w.direction[0], y=w.direction[1], z=0.0)
                w.actor.apply_control(self.carla.WalkerControl(direction, w.speed_mps))
                w.state = "walking"
                self.active_events.append(w.name)
            elif w.state == "walking" and snapshot.has_actor(w.actor.id):
                loc = snapshot.find(w.actor.id).get_transform().location
                if math.dist((loc.x, loc.y), w.start_xy) >= w.walk_m:
                    w.actor.apply_control(self.carla.WalkerControl(speed=0.0))
                    w.state = "done"

    def _fire(self, sv: ScriptedVehicle) -> None:
        sv.fired = True
        self.active_events.append(sv.name)
        if sv.spec.behaviour == "hard_brake":
            sv.actor.set_autopilot(False, self.session.tm_port)
            brake = min(sv.spec.brake_decel_mps2 / MAX_BRAKE_DECEL_MPS2, 1.0)
            sv.actor.apply_control(self.carla.VehicleControl(throttle=0.0, brake=brake))
        elif sv.spec.behaviour == "cut_in":
            # lane_offset > 0: it drives left of the route lane and cuts in to the right.
            self.tm.set_desired_speed(sv.actor, sv.spec.speed_mps * 3.6)
            self.tm.force_lane_change(sv.actor, sv.spec.lane_offset < 0)  # True = left
        elif sv.spec.pace_gap_m is not None:
            self.tm.set_desired_speed(sv.actor, sv.spec.speed_mps * 3.6)

    def _time_runner(self, sv: ScriptedVehicle, progress_m: float, ego_speed_mps: float) -> None:
        """Release the runner once the ego would reach the junction no later than it."""
        if sv.fired:
            return
        ego_time = (sv.junction_s - progress_m) / max(ego_speed_mps, 0.5)
        if ego_time <= travel_time_s(sv.run_up_m, sv.spec.speed_mps) + RUNNER_MARGIN_S:
            sv.fired = True
            self.active_events.append(sv.name)
            sv.actor.apply_control(self.carla.VehicleControl())  # hand brake off
            self._drive(sv.actor, sv.spec.speed_mps)
            self.tm.ignore_lights_percentage(sv.actor, 100.0)
            self.tm.set_path(sv.actor, list(sv.path))
