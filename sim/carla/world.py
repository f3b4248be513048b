"""`CarlaSimulator`: the `Simulator` protocol on a real CARLA 0.9.16 server.

Lifecycle, following the Leaderboard's `LeaderboardEvaluator`:
- `__init__` connects (`sim/carla/connection.py`: timeout, retries, clear error).
- `reset(spec, seed)`: destroys the previous route's actors; loads the CARLA map standing
  in for `spec.town` if another one is loaded (`sim/carla/maps.py`); synchronous mode
  with `fixed_delta_seconds = 0.05` (20 Hz) and the Traffic Manager synchronous and
  seeded; plans the route on the map (`sim/carla/routes.py`); spawns the ego
  (`vehicle.lincoln.mkz_2020`, role_name `hero`, 0.5 m above the route start), the
  scenario's props, scripted vehicles and pedestrians, and the background traffic
  (`sim/carla/scenario.py`); attaches a collision and a lane-invasion sensor to the ego.
- `setup_sensors(specs)`: validates with `sim.sensors.parse_sensor_specs` (the
  Leaderboard's rules) and attaches them with the Leaderboard's attributes
  (`sim/carla/sensors.py`), then ticks 10 times and drops that data, as
  `AgentWrapper.setup_sensors` does.
- `tick(control)`: weather for the route progress, scenario triggers, the control, one
  `world.tick()`, then sensors (waited for by frame), ego state, the map's lane query,
  collisions and red lights into the shared `RouteCriteria` (sim/criteria.py), which
  produces the same `InfractionEvent`s and `RouteStatus` as the embedded simulator.
- `close()`: destroys every actor it spawned and restores the world settings it found
  (`sim/carla/actors.py`). The same happens when `reset` fails or is interrupted
  (KeyboardInterrupt included), and, as a last resort, at interpreter exit.

Frames: `frame` counts ticks since `reset` (0 after it), `time_s = frame * 0.05`, and
the frame in `input_data` is that counter too, so an agent sees the same numbering as
in the embedded simulator; warm-up ticks do not count.

Weather: `spec.weather_at(route fraction)` with keyframes interpolated along the route
progress in steps of 1 % (as the embedded simulator does), sent with
`World.set_weather` only when it changes. Ground-truth `friction` is the weather model's
(sim/weather.py), not CARLA's tyre physics.

Not like the embedded simulator: the lane-invasion sensor's crossings are reported in
`lane_invasions` (the Leaderboard scores no lane invasions; outside-route-lanes comes
from the map query, as in scenario_runner's `OutsideRouteLanesTest`); speed limits come
from the spec, not from the map's signs; traffic lights in ground truth are those within
120 m of the ego.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from typing import Any

import numpy as np

from sim.carla.actors import WorldSession
from sim.carla.connection import DEFAULT_ATTEMPTS, DEFAULT_TIMEOUT_S, connect
from sim.carla.maps import (
    carla_town_for,
    driving_neighbours,
    geo_reference_from_opendrive,
    lane_query_at,
    same_town,
    side_lanes,
    stop_line,
)
from sim.carla.props import VEHICLE_Z_OFFSET_M, prop_placements
from sim.carla.routes import dedupe, global_plan_with_z, plan_route, route_transform, to_route
from sim.carla.scenario import ScenarioActors
from sim.carla.sensors import (
    COLLISION_SENSOR,
    LANE_INVASION_SENSOR,
    SensorCollector,
    forward_speed,
    sensor_blueprint,
)
from sim.carla_compat import require_carla, to_carla_control, to_carla_weather
from sim.control import RoadOption, VehicleControl
from sim.criteria import Collision, RouteCriteria, RouteStatus
from sim.geometry import GeoReference, Transform
from sim.ground_truth import (
    ActorState,
    GroundTruth,
    InfractionEvent,
    TrafficLightInfo,
    TrafficLightState,
)
from sim.protocol import FIXED_DELTA_SECONDS, SensorData
from sim.route import LaneLayout, Route
from sim.sensors import OPENDRIVE_MAP, SPEEDOMETER, SensorSpec, parse_sensor_specs
from sim.spec import WorldSpec
from sim.weather import Weather

log = logging.getLogger(__name__)

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 2000  # CARLA's RPC port
DEFAULT_TM_PORT = 8000  # the Leaderboard's --traffic-manager-port default
EGO_BLUEPRINT = "vehicle.lincoln.mkz_2020"
EGO_ROLE_NAME = "hero"
SENSOR_WARMUP_TICKS = 10  # AgentWrapper.setup_sensors ticks this often and drops the data
RED_LIGHT_SEARCH_M = 30.0  # [m] lights whose stop line is this near are checked each tick
GT_LIGHT_RANGE_M = 120.0  # [m] lights reported in ground truth
LOAD_WORLD_TIMEOUT_S = 120.0  # [s] client timeout while the server loads a map
WEATHER_STEP = 0.01  # route fraction between weather updates (1 %)


def weather_at_progress(spec: WorldSpec, progress_m: float, route_length_m: float) -> Weather:
    """The spec's weather at a route progress, keyframes interpolated in 1 % steps of the
    route (the embedded simulator's rule; the Leaderboard's RouteWeatherBehavior
    interpolates per route point)."""
    fraction = progress_m / max(route_length_m, 1e-6)
    steps = round(min(max(fraction, 0.0), 1.0) / WEATHER_STEP)
    return spec.weather_at(steps * WEATHER_STEP)


def collision_from(other_actor: Any, fallback_xy: tuple[float, float]) -> Collision:
    """A CARLA collision event's other actor as the criteria's `Collision`. Map geometry
    has no actor: id 0 and `static.unknown` (a layout collision, as in CARLA)."""
    if other_actor is None:
        return Collision(0, "static.unknown", fallback_xy)
    loc = other_actor.get_location()
    return Collision(int(other_actor.id), str(other_actor.type_id), (float(loc.x), float(loc.y)))


class _Inbox:
    """A list filled by a sensor's listener thread and emptied by the simulation loop
    (kept apart from the simulator so a listening sensor does not keep it alive)."""

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._lock = threading.Lock()

    def put(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)

    def drain(self) -> list[Any]:
        with self._lock:
            items, self._items = self._items, []
        return items


class CarlaSimulator:
    """The `Simulator` protocol on a CARLA server (see the module doc).

    `town` forces one CARLA map instead of `carla_town_for(spec.town)`; `tm_port` is the
    Traffic Manager's port; `spec_xy_is_carla` treats a spec's explicit route coordinates
    as coordinates on the CARLA map (default: ignored, see sim/carla/routes.py);
    `client` uses an existing `carla.Client` instead of connecting.
    """

    backend = "carla"

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        town: str | None = None,
        tm_port: int = DEFAULT_TM_PORT,
        attempts: int = DEFAULT_ATTEMPTS,
        spec_xy_is_carla: bool = False,
        client: Any = None,
    ) -> None:
        self.host, self.port, self.timeout_s = host, int(port), float(timeout_s)
        self.town = town
        self.spec_xy_is_carla = spec_xy_is_carla
        self.client = client if client is not None else connect(host, port, timeout_s, attempts)
        self.session = WorldSession(self.client, tm_port)
        # Last resort: release the server at interpreter exit if close() never ran.
        self._finalizer = weakref.finalize(self, self.session.release)
        self._spec: WorldSpec | None = None
        self._sensors: list[SensorSpec] = []
        self._agent_sensor_ids: list[int] = []
        self._collector = SensorCollector(self.timeout_s)
        self._collisions = _Inbox()
        self._invasions = _Inbox()
        self._geo_cache: dict[str, GeoReference] = {}
        self._opendrive: tuple[str, str] | None = None  # (map name, OpenDRIVE text)
        self._events: list[InfractionEvent] = []
        self._layout: LaneLayout | None = None
        self._forget_route()

    def _forget_route(self) -> None:
        """Drop per-route state (actors are destroyed separately)."""
        self._ego: Any = None
        self._actors: ScenarioActors | None = None
        self._agent_sensor_ids = []
        self._collector.clear()
        self._collisions.drain()
        self._invasions.drain()
        self._frame = 0
        self._time_s = 0.0
        self._events = []
        self._layout = None
        self._last_data: SensorData | None = None  # the last tick's, for sensor_data()
        self.lane_invasions: list[str] = []  # lane markings the ego crossed in the last tick

    # ----------------------------------------------------------------- reset
    def reset(self, spec: WorldSpec, seed: int) -> None:
        if not isinstance(spec, WorldSpec):
            raise TypeError(f"reset() needs a WorldSpec, got {type(spec).__name__}")
        if not self._finalizer.alive:  # reset after close(): guard the new route too
            self._finalizer = weakref.finalize(self, self.session.release)
        self.session.destroy_actors()  # the previous route's
        self._forget_route()
        self._spec = spec
        self.seed = int(seed)
        try:
            self._prepare_world(spec, self.seed)
            self._build_route(spec, self.seed)
            self._populate(spec, self.seed)
            if self._sensors:
                self.setup_sensors([s.to_dict() for s in self._sensors])
        except BaseException:  # KeyboardInterrupt too: never leave actors or sync mode behind
            self._release()
            raise

    def _prepare_world(self, spec: WorldSpec, seed: int) -> None:
        """The Leaderboard's `_load_and_wait_for_world`, loading only when needed."""
        town = self.town or carla_town_for(spec.town)
        world = self.client.get_world()
        self.session.adopt_world(world)
        world_map = world.get_map()  # an RPC that downloads the OpenDRIVE: once per reset
        if not same_town(world_map.name, town):
            log.info("loading CARLA map %s", town)
            self.session.restore_settings()  # leave synchronous mode before a load
            self.client.set_timeout(max(self.timeout_s, LOAD_WORLD_TIMEOUT_S))
            try:
                world = self.client.load_world(town)
            finally:
                self.client.set_timeout(self.timeout_s)
            self.session.adopt_world(world)
            world_map = world.get_map()
        self.session.apply_synchronous(FIXED_DELTA_SECONDS)
        self.session.traffic_manager().set_random_device_seed(seed % 2**31)
        world.reset_all_traffic_lights()
        world.tick(self.timeout_s)
        self.world = world
        self.map = world_map
        if not same_town(self.map.name, town):
            raise RuntimeError(
                f"the CARLA server at {self.host}:{self.port} runs map {self.map.name}, "
                f"this route needs {town}"
            )

    def _geo_reference(self) -> GeoReference:
        name = self.map.name
        if name not in self._geo_cache:
            self._geo_cache[name] = geo_reference_from_opendrive(self._map_opendrive())
        return self._geo_cache[name]

    def _map_opendrive(self) -> str:
        """The loaded map's OpenDRIVE text (cached per map name)."""
        if self._opendrive is None or self._opendrive[0] != self.map.name:
            self._opendrive = (self.map.name, str(self.map.to_opendrive()))
        return self._opendrive[1]

    def _build_route(self, spec: WorldSpec, seed: int) -> None:
        samples = dedupe(
            plan_route(
                self.map, spec.route, np.random.default_rng([seed, 2]), self.spec_xy_is_carla
            )
        )
        self._route, self._z = to_route(samples, self._geo_reference())
        self._route_waypoints = samples.waypoints

    def _populate(self, spec: WorldSpec, seed: int) -> None:
        carla = require_carla()
        library = self.world.get_blueprint_library()
        ego_bp = library.find(EGO_BLUEPRINT)
        ego_bp.set_attribute("role_name", EGO_ROLE_NAME)
        start = route_transform(self._route, self._z, 0.0, z_offset_m=VEHICLE_Z_OFFSET_M)
        ego = self.world.try_spawn_actor(ego_bp, start)
        if ego is None:
            raise RuntimeError(
                f"could not spawn the ego ({EGO_BLUEPRINT}) at the route start {start}"
            )
        self.session.registry.add(ego.id, "ego")
        self._ego = ego
        extent = ego.bounding_box.extent
        self._ego_size = (2.0 * extent.x, 2.0 * extent.y, 2.0 * extent.z)

        actors = ScenarioActors(
            self.session, self.map, spec, self._route, self._z, self._route_waypoints, seed
        )
        self._actors = actors
        actors.spawn_props(
            prop_placements(spec.props, self._route, self._z, np.random.default_rng([seed, 6]))
        )
        actors.spawn_scripted_vehicles()
        actors.spawn_scripted_pedestrians()
        ego_xy = (float(self._route.points[0, 0]), float(self._route.points[0, 1]))
        actors.spawn_background_vehicles(spec.num_vehicles, ego_xy)
        actors.spawn_background_walkers(spec.num_pedestrians)

        for type_id, inbox in (
            (COLLISION_SENSOR, self._collisions),
            (LANE_INVASION_SENSOR, self._invasions),
        ):
            sensor = self.world.spawn_actor(library.find(type_id), carla.Transform(), attach_to=ego)
            self.session.registry.add(sensor.id, "sensor", sensor)
            if type_id == COLLISION_SENSOR:
                sensor.listen(lambda event, box=inbox: box.put(event.other_actor))
            else:
                sensor.listen(
                    lambda event, box=inbox: box.put(
                        [str(m.type) for m in event.crossed_lane_markings]
                    )
                )

        self._lights = self._traffic_lights()
        self.criteria = RouteCriteria(
            self._route,
            spec.town.speed_limit_kmh / 3.6,
            self._ego_size[0] / 2.0,
            spec.timeout_s,
            spec.oncoming_zones,
        )
        self.weather = weather_at_progress(spec, 0.0, self._route.length_m)
        self.world.set_weather(to_carla_weather(self.weather))
        self.world.tick(self.timeout_s)  # the Leaderboard ticks once after placing the ego
        self._collisions.drain()  # settling onto the road is not an infraction
        self._read_ego(self.world.get_snapshot())

    def _traffic_lights(self) -> list[tuple[Any, TrafficLightInfo]]:
        """Every traffic light of the map with its stop line (from its stop waypoints)."""
        out = []
        for light in self.world.get_actors().filter("traffic.traffic_light"):
            stops = light.get_stop_waypoints()
            if not stops:
                continue
            line, heading = stop_line(
                [
                    (
                        w.transform.location.x,
                        w.transform.location.y,
                        w.transform.rotation.yaw,
                        w.lane_width,
                    )
                    for w in stops
                ]
            )
            pos = light.get_transform().location
            info = TrafficLightInfo(
                id=int(light.id),
                state=TrafficLightState.Unknown,
                x=float(pos.x),
                y=float(pos.y),
                stop_line=line,
                heading=heading,
                lane_ids=(),
            )
            out.append((light, info))
        self._stop_line_centres = np.array(
            [np.mean(info.stop_line, axis=0) for _, info in out], float
        ).reshape(-1, 2)
        return out

    def _lights_within(self, radius_m: float) -> list[TrafficLightInfo]:
        if not self._lights:
            return []
        d = np.abs(self._stop_line_centres - np.array(self._ego_xy)).max(axis=1)
        out = []
        for i in np.nonzero(d < radius_m)[0].tolist():
            light, info = self._lights[i]
            state = TrafficLightState(int(light.state))
            out.append(
                TrafficLightInfo(info.id, state, info.x, info.y, info.stop_line, info.heading, ())
            )
        return out

    # --------------------------------------------------------------- sensors
    def setup_sensors(self, sensor_specs: list[dict], track: str = "SENSORS") -> list[SensorSpec]:
        specs = parse_sensor_specs(sensor_specs, track)
        if self._ego is None:
            raise RuntimeError("setup_sensors() before reset()")
        if self._agent_sensor_ids:  # a second call replaces the first set
            self.session.registry.destroy(self.client, self._agent_sensor_ids)
            self._agent_sensor_ids = []
        self._collector.clear()
        library = self.world.get_blueprint_library()
        for spec in specs:
            blueprint = sensor_blueprint(spec, FIXED_DELTA_SECONDS)
            if blueprint.is_pseudo:
                continue  # read from the world each tick
            bp = library.find(blueprint.type_id)
            for key, value in blueprint.attributes.items():
                bp.set_attribute(key, value)
            sensor = self.world.spawn_actor(bp, blueprint.transform(), attach_to=self._ego)
            self.session.registry.add(sensor.id, "sensor", sensor)
            self._agent_sensor_ids.append(sensor.id)
            sensor.listen(self._collector.register(spec.id, spec.type))
        for _ in range(SENSOR_WARMUP_TICKS):
            self.world.tick(self.timeout_s)
        self._collector.drain()
        self._collisions.drain()
        self._read_ego(self.world.get_snapshot())
        self._sensors = specs
        return specs

    def _sensor_data(self, world_frame: int) -> SensorData:
        data: SensorData = {}
        collected = self._collector.collect(world_frame) if self._collector.sensor_ids else {}
        for spec in self._sensors:
            if spec.type == SPEEDOMETER:
                data[spec.id] = (self._frame, {"speed": self._ego_speed})
            elif spec.type == OPENDRIVE_MAP:
                data[spec.id] = (self._frame, {"opendrive": self._map_opendrive()})
            else:
                data[spec.id] = (self._frame, collected[spec.id])
        return data

    # ------------------------------------------------------------------ tick
    def _read_ego(self, snapshot: Any) -> None:
        state = snapshot.find(self._ego.id)
        transform = state.get_transform()
        self._ego_location = transform.location
        self._ego_xy = (float(transform.location.x), float(transform.location.y))
        self._ego_yaw = math.radians(transform.rotation.yaw)
        self._ego_speed = forward_speed(state.get_velocity(), transform.rotation)

    def tick(self, control: Any, render: bool = True) -> SensorData:
        # `render` is ignored: the server renders the cameras whether or not anyone reads
        # them, and their data must be drained by frame every tick anyway.
        if self._ego is None or self._spec is None or self._actors is None:
            raise RuntimeError("tick() before reset()")
        ctrl = VehicleControl.sanitized(control)
        progress = self.criteria.progress_m
        weather = weather_at_progress(self._spec, progress, self._route.length_m)
        if weather != self.weather:
            self.world.set_weather(to_carla_weather(weather))
            self.weather = weather
        self._actors.step(progress, self._ego_speed, self.world.get_snapshot())
        self._ego.apply_control(to_carla_control(ctrl))
        world_frame = self.world.tick(self.timeout_s)
        self._frame += 1
        self._time_s = self._frame * FIXED_DELTA_SECONDS
        self._read_ego(self.world.get_snapshot())
        data = self._last_data = self._sensor_data(world_frame)
        lane = lane_query_at(self.map, self._ego_location)
        collisions = [collision_from(other, self._ego_xy) for other in self._collisions.drain()]
        self.lane_invasions = [m for crossed in self._invasions.drain() for m in crossed]
        red = [
            light
            for light in self._lights_within(RED_LIGHT_SEARCH_M)
            if light.state == TrafficLightState.Red
        ]
        self._events = self.criteria.update(
            self._frame,
            self._time_s,
            np.array(self._ego_xy),
            self._ego_yaw,
            abs(self._ego_speed),
            lane,
            collisions,
            red,
        )
        return data

    # ------------------------------------------------------------ protocol
    def sensor_data(self) -> SensorData:
        if self._last_data is None:
            raise RuntimeError("sensor_data() before the first tick()")
        return self._last_data

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
        return global_plan_with_z(self._route, self._z)

    def lane_layout(self) -> LaneLayout:
        """Lanes beside every route point, from the map's lanes (0 inside junctions)."""
        if self._layout is not None:
            return self._layout
        n = len(self._route_waypoints)
        width = np.array([float(wp.lane_width) for wp in self._route_waypoints])
        left = np.zeros(n, np.int64)
        right = np.zeros(n, np.int64)
        opposite = np.zeros(n, bool)
        for j, wp in enumerate(self._route_waypoints):
            if wp.is_junction:
                continue
            left[j], right[j], opposite[j] = side_lanes(
                int(wp.lane_id), driving_neighbours(wp, "left"), driving_neighbours(wp, "right")
            )
        self._layout = LaneLayout(width, left, right, opposite)
        return self._layout

    def speed_limit_at(self, route_s_m: float) -> float:
        """[m/s] the spec's limit at a route distance (speed zones included)."""
        return self._spec.speed_limit_at(route_s_m) if self._spec else 0.0

    def ground_truth(self) -> GroundTruth:
        if self._ego is None or self._spec is None or self._actors is None:
            raise RuntimeError("ground_truth() before reset()")
        snapshot = self.world.get_snapshot()
        actors = []
        for actor_id, info in self._actors.dynamic.items():
            if not snapshot.has_actor(actor_id):
                continue
            state = snapshot.find(actor_id)
            transform = state.get_transform()
            actors.append(
                ActorState(
                    actor_id,
                    info.type_id,
                    float(transform.location.x),
                    float(transform.location.y),
                    math.radians(transform.rotation.yaw),
                    forward_speed(state.get_velocity(), transform.rotation),
                    info.size,
                    info.role,
                )
            )
        props = []
        for actor_id, (type_id, size) in self._actors.props.items():
            if not snapshot.has_actor(actor_id):
                continue
            transform = snapshot.find(actor_id).get_transform()
            props.append(
                ActorState(
                    actor_id,
                    type_id,
                    float(transform.location.x),
                    float(transform.location.y),
                    math.radians(transform.rotation.yaw),
                    0.0,
                    size,
                    "scenario",
                )
            )
        status = self.criteria.status
        return GroundTruth(
            frame=self._frame,
            time_s=self._time_s,
            ego=ActorState(
                int(self._ego.id),
                EGO_BLUEPRINT,
                self._ego_xy[0],
                self._ego_xy[1],
                self._ego_yaw,
                self._ego_speed,
                self._ego_size,
                EGO_ROLE_NAME,
            ),
            actors=tuple(actors),
            props=tuple(props),
            traffic_lights=tuple(self._lights_within(GT_LIGHT_RANGE_M)),
            weather=self.weather,
            friction=self.weather.friction,
            route_progress_m=status.progress_m,
            route_completion=status.completion,
            active_events=tuple(self._actors.active_events),
            speed_limit_mps=self._spec.speed_limit_at(status.progress_m),
        )

    @property
    def events(self) -> list[InfractionEvent]:
        return list(self._events)

    @property
    def route_status(self) -> RouteStatus:
        return self.criteria.status

    @property
    def sensors(self) -> list[SensorSpec]:
        return list(self._sensors)

    # --------------------------------------------------------------- cleanup
    def _release(self) -> None:
        """Destroy every actor of ours and restore the world settings (idempotent)."""
        try:
            self._finalizer()  # runs session.release() once
        finally:
            self._forget_route()

    def close(self) -> None:
        """Destroy every actor this simulator spawned and restore the world settings it
        found. Safe to call twice; `reset` may follow (it takes the world again)."""
        self._release()
        self._sensors = []

    def __enter__(self) -> CarlaSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
