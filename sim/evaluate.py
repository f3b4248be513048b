"""Headless Leaderboard-style evaluation: agent x suite x backend -> the Leaderboard's results
JSON, plus a `<out stem>.details.json` sidecar with what a report needs and the
Leaderboard has no field for.

Routes: every scenario of the suite is sampled into its variations (`name#i`); variation i
of the whole suite is route i, run `entry repetitions x repetitions` times as
`RouteScenario_{i}_rep{r}`, each with a world seed derived from (seed, i, r) alone, so
results do not depend on worker count or order.

Per route the Leaderboard's lifecycle: world reset; `DataProvider` registered (privileged
agents reach ground truth through it); new agent `Agent(host, port, debug)`;
`set_global_plan(gps, world)` before `setup(agent_config)`; `sensors()` validated against
the Leaderboard's rules; one world tick with a neutral control gives the first
`input_data`; then `run_step(input_data, timestamp)` -> control -> `tick` until the route
criteria end the route; `destroy()` always. Failures follow the Leaderboard:
- invalid sensors: "Failed - Agent's sensors were invalid", entry 'Rejected', evaluation
  stops (the suite is the same for every route);
- `__init__`/`set_global_plan`/`setup`/`sensors()` raise: "Failed - Agent couldn't be set
  up", the evaluation goes on;
- `run_step` raises, or returns something that is not a control (the Leaderboard crashes
  in `control.manual_gear_shift = ...` / `apply_control`): "Failed - Agent crashed" with
  the route completion and events so far, the evaluation goes on;
- a control with a NaN/inf field is not an error: `VehicleControl.sanitized` turns it into
  the safe stop (throttle 0, steer 0, brake 1); out-of-range values are clamped;
- world reset or tick raises: "Failed - Simulation crashed", entry 'Crashed', stop.
Ctrl-C stops between ticks; the files hold every finished route and stay valid.

Files are rewritten atomically (temp file in the same folder + os.replace) after every
route, in route order (with Ray workers too). `resume=True` keeps the finished routes of
an existing file and runs the rest. Wall-clock fields (`meta.duration_system` of the
records and the global record, `duration_system` of the details routes) necessarily differ
between runs; everything else is identical between an uninterrupted run, a killed and
resumed one, and any number of workers (`strip_wall_clock` removes them for comparisons).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.compile import compile_scenario
from scenarios.loader import Problem, ScenarioError, load_suite
from scenarios.sampler import sample
from scenarios.schema import Scenario
from sim import scoring
from sim.agent_loading import REPO_ROOT, load_agent_class, track_name, uses_leaderboard_base
from sim.control import RoadOption, VehicleControl
from sim.data_provider import DataProvider
from sim.ground_truth import GroundTruth, InfractionEvent
from sim.min_speed import MinSpeedTest
from sim.sensors import SensorSpecError
from sim.spec import WorldSpec

log = logging.getLogger(__name__)

DETAILS_VERSION = 1
BACKENDS: tuple[str, ...] = ("lite", "carla")
DEFAULT_HOST = "localhost"
DEFAULT_PORT = 2000  # the Leaderboard's default CARLA port
DEFAULT_TIMEOUT_S = 10.0  # [s] CARLA client timeout (the Leaderboard's `client_timeout`)
TRAJECTORY_EVERY_TICKS = 5  # 4 Hz trajectory in the details file
COMFORT_EVERY_TICKS = 2  # 10 Hz samples for Bench2Drive's comfort metric
ROUTE_XY_SPACING_M = 2.0  # [m] spacing of the route polyline in the details file
RECORDER_FPS = 10.0  # [Hz]
RECORDER_MODULE = "sim.report.recorder"


class EvaluationError(RuntimeError):
    """The evaluation cannot start or resume; the message says why."""


# ------------------------------------------------------------------ routes
@dataclass(frozen=True)
class RoutePlan:
    """One route run of the evaluation (picklable: it travels to Ray workers)."""

    index: int  # position in the results
    route: int  # i of RouteScenario_{i}_rep{r}: the i-th concrete route of the suite
    repetition: int
    route_id: str
    seed: int  # world seed
    spec: WorldSpec
    scenario_name: str  # concrete variation name, e.g. cut_in_fog#2
    file: str  # scenario YAML
    tags: tuple[str, ...]
    weather_id: str
    town_name: str
    save_name: str

    def __post_init__(self) -> None:
        if self.index < 0 or self.route < 0 or self.repetition < 0:
            raise ValueError(
                f"RoutePlan index/route/repetition must be >= 0, got "
                f"{self.index}/{self.route}/{self.repetition}"
            )
        if self.route_id != scoring.route_id(self.route, self.repetition):
            raise ValueError(
                f"RoutePlan.route_id {self.route_id!r} does not match route/repetition"
            )
        if not isinstance(self.spec, WorldSpec):
            raise ValueError(f"RoutePlan.spec must be a WorldSpec, got {type(self.spec).__name__}")


def route_seed(seed: int, route: int, repetition: int) -> int:
    """World seed of one route run, from (seed, route, repetition) only."""
    return int(np.random.SeedSequence([seed, route, repetition]).generate_state(1)[0])


def weather_id(scenario: Scenario) -> str:
    """The weather preset, with the fields it overrides and its keyframe count."""
    values = scenario.weather.values()
    keyframes = values.pop("keyframes", [])
    name = str(values.pop("preset", None) or "Custom")
    if values:
        name += "(" + ",".join(f"{k}={float(v):g}" for k, v in sorted(values.items())) + ")"
    if keyframes:
        name += f"+{len(keyframes)}keyframes"
    return name


def town_name(spec: WorldSpec) -> str:
    t = spec.town
    return (
        f"lite-{t.road_type}-{t.blocks_x}x{t.blocks_y}-{t.block_m:g}m-"
        f"{t.lanes_per_direction}lanes-{t.speed_limit_kmh:g}kmh"
    )


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


def plan_routes(suite: str | Path, repetitions: int = 1, seed: int = 0) -> list[RoutePlan]:
    """Every route run of a suite, in results order. Raises ScenarioError with the
    problems of every file (loading, sampling, compiling) before anything runs."""
    if repetitions < 1:
        raise EvaluationError(f"repetitions must be >= 1, got {repetitions}")
    if seed < 0:
        raise EvaluationError(f"seed must be >= 0, got {seed}")
    items = load_suite(suite)
    plans: list[RoutePlan] = []
    problems: list[Problem] = []
    route = 0
    for item in items:
        try:
            variations = sample(item.scenario, file=item.path)
        except ScenarioError as exc:
            problems += exc.problems
            continue
        for concrete in variations:
            try:
                spec = compile_scenario(concrete, str(item.path))
            except ScenarioError as exc:
                problems += exc.problems
                route += 1
                continue
            preset = concrete.weather.preset
            for rep in range(item.repetitions * repetitions):
                rid = scoring.route_id(route, rep)
                town = town_name(spec)
                plans.append(
                    RoutePlan(
                        index=len(plans),
                        route=route,
                        repetition=rep,
                        route_id=rid,
                        seed=route_seed(seed, route, rep),
                        spec=spec,
                        scenario_name=concrete.name,
                        file=str(item.path),
                        tags=tuple(concrete.tags),
                        weather_id=weather_id(concrete),
                        town_name=town,
                        save_name=_safe(f"{rid}_{town}_{concrete.name}_{preset or 'Custom'}"),
                    )
                )
            route += 1
    if problems:
        raise ScenarioError(problems)
    return plans


# ------------------------------------------------------------------ one route
def as_control(raw: object) -> VehicleControl:
    """The agent's control as ours: `VehicleControl`, `carla.VehicleControl` or anything with
    numeric throttle/steer/brake. NaN/inf -> safe stop; anything else raises TypeError."""
    if isinstance(raw, VehicleControl):
        return raw
    if all(hasattr(raw, name) for name in ("throttle", "steer", "brake")):
        return VehicleControl.sanitized(raw)
    raise TypeError(
        f"run_step returned {type(raw).__name__}, expected a VehicleControl "
        "(sim.control.VehicleControl or carla.VehicleControl)"
    )


def agent_global_plan(agent: object, sim: Any) -> tuple[list, list]:
    """The plan to hand to `set_global_plan`: the simulator's (already downsampled) plan,
    or, for an agent built on CARLA's own AutonomousAgent (which downsamples what it gets),
    the dense route in carla types."""
    if not uses_leaderboard_base(agent):
        return sim.global_plan()
    from sim.carla_compat import to_carla_road_option, to_carla_transform

    route = sim.route
    gps, world = [], []
    for i in range(len(route.points)):
        lat, lon, z = route.geo.to_gps(route.points[i, 0], route.points[i, 1], 0.0)
        option = to_carla_road_option(RoadOption(int(route.options[i])))
        gps.append(({"lat": lat, "lon": lon, "z": z}, option))
        world.append((to_carla_transform(route.transform(i)), option))
    return gps, world


def make_simulator(
    backend: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Any:
    """A simulator for `backend`. `carla` connects to the server at `host:port` now
    (`timeout_s` per attempt) and raises EvaluationError naming it if none answers."""
    if backend == "lite":
        from sim.lite.world import LiteSimulator

        return LiteSimulator()
    if backend == "carla":
        try:
            from sim.carla.connection import CarlaConnectionError
            from sim.carla.world import CarlaSimulator

            return CarlaSimulator(host, port, timeout_s)
        except (ImportError, CarlaConnectionError) as exc:
            raise EvaluationError(str(exc)) from exc
    raise EvaluationError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")


def recorder_class() -> Any:
    """`RouteRecorder` from sim/report/recorder.py, imported only when recording."""
    try:
        module = importlib.import_module(RECORDER_MODULE)
    except ImportError as exc:
        raise EvaluationError(
            f"--record needs {RECORDER_MODULE} (RouteRecorder), which cannot be imported: {exc}"
        ) from exc
    cls = getattr(module, "RouteRecorder", None)
    if cls is None:
        raise EvaluationError(f"{RECORDER_MODULE} defines no RouteRecorder")
    return cls


def _pose_row(gt: GroundTruth) -> list[float]:
    e = gt.ego
    return [round(gt.time_s, 3), round(e.x, 3), round(e.y, 3), round(e.yaw, 4), round(e.speed, 3)]


def _route_xy(route: Any) -> list[list[float]]:
    step = max(
        int(round(ROUTE_XY_SPACING_M / max(route.length_m / (len(route.points) - 1), 1e-6))), 1
    )
    idx = list(range(0, len(route.points), step))
    if idx[-1] != len(route.points) - 1:
        idx.append(len(route.points) - 1)
    return [[round(float(route.points[i, 0]), 2), round(float(route.points[i, 1]), 2)] for i in idx]


@dataclass
class _RouteRun:
    """What one route run collects (internal, mutable)."""

    entry_status: str = "Started"
    failure: str = ""  # a FAILURE_MESSAGES text, "" while fine
    error: str | None = None  # what went wrong, for the details file
    stop: bool = False  # the evaluation stops after this route (Leaderboard crash rules)
    events: list[InfractionEvent] = field(default_factory=list)
    trajectory: list[list[float]] = field(default_factory=list)  # 4 Hz
    comfort_rows: list[list[float]] = field(default_factory=list)  # 10 Hz
    route_length_m: float = 0.0
    route_xy: list[list[float]] = field(default_factory=list)
    sensors: list[str] | None = None
    checkpoint_values: list[float] = field(default_factory=list)
    interventions: dict[str, int] = field(default_factory=dict)
    video: str | None = None
    completion: float = 0.0  # [%]
    game_s: float = 0.0  # [s]
    agent: Any = None
    recorder: Any = None

    def fail(self, reason: str, error: str, stop: bool = False, trace: bool = True) -> None:
        self.entry_status, self.failure = scoring.FAILURE_MESSAGES[reason]
        self.error = error
        self.stop = stop
        log.error("%s%s", error, f"\n{traceback.format_exc()}" if trace else "")


class _RouteStopped(Exception):
    """Internal: the route ended before driving (reset, setup or sensor failure)."""


class RouteRunner:
    """Owns one simulator and the agent class; runs whole routes. Used in-process and as
    a Ray actor (`ray.remote(RouteRunner)`), so everything it returns is plain data."""

    def __init__(
        self,
        agent: str,
        agent_config: str,
        backend: str = "lite",
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        record_dir: str | None = None,
        min_speed_policy: str = scoring.DEFAULT_MIN_SPEED_POLICY,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.agent_class = load_agent_class(agent)
        self.agent_config = agent_config
        self.sim = make_simulator(backend, host, port, timeout_s)
        self.host = host
        self.port = port
        self.record_dir = Path(record_dir) if record_dir else None
        self.recorder_cls = recorder_class() if record_dir else None
        self.min_speed_policy = min_speed_policy

    def close(self) -> None:
        """Release the simulator (a CARLA server gets its actors and settings back)."""
        self.sim.close()

    def run(self, plan: RoutePlan) -> dict[str, Any]:
        """Run one route: {index, record, details, sensors, entry_status, stop}."""
        wall0 = time.perf_counter()
        run = _RouteRun()
        try:
            self._start(plan, run)
            self._drive(plan, run)
        except _RouteStopped:
            pass
        finally:
            self._cleanup(plan, run)
        return self._outcome(plan, run, time.perf_counter() - wall0)

    def _start(self, plan: RoutePlan, run: _RouteRun) -> None:
        """World, DataProvider, agent (global plan before setup), validated sensors."""
        sim = self.sim
        try:
            sim.reset(plan.spec, plan.seed)
        except Exception as exc:
            run.fail("Simulation", f"{plan.route_id}: world reset failed: {exc!r}", stop=True)
            raise _RouteStopped from None
        run.route_length_m = sim.route.length_m
        run.route_xy = _route_xy(sim.route)
        DataProvider.set_simulator(sim)
        try:
            run.agent = self.agent_class(self.host, self.port, False)
            run.agent.set_global_plan(*agent_global_plan(run.agent, sim))
            run.agent.setup(self.agent_config)
            raw_sensors = run.agent.sensors()
            sim.setup_sensors(raw_sensors, track_name(run.agent))
            run.sensors = [scoring.SENSOR_ICONS[s["type"]] for s in raw_sensors]
        except SensorSpecError as exc:
            run.fail("Sensors", f"{plan.route_id}: invalid sensors: {exc}", stop=True, trace=False)
            raise _RouteStopped from None
        except Exception as exc:
            run.fail("Agent_init", f"{plan.route_id}: agent setup failed: {exc!r}")
            raise _RouteStopped from None
        if self.recorder_cls is not None and self.record_dir is not None:
            path = self.record_dir / f"{plan.save_name}.mp4"
            run.recorder = self.recorder_cls(path, fps=RECORDER_FPS)

    def _drive(self, plan: RoutePlan, run: _RouteRun) -> None:
        """Tick until the route criteria end the route, the agent crashes or the world does."""
        sim, agent = self.sim, run.agent
        min_speed = MinSpeedTest(sim.route)
        gt = sim.ground_truth()
        run.trajectory.append(_pose_row(gt))
        run.comfort_rows.append(_pose_row(gt))
        control = VehicleControl()  # the Leaderboard's first tick: no agent input yet
        while True:
            try:
                input_data = sim.tick(control)
            except Exception as exc:
                run.fail("Simulation", f"{plan.route_id}: simulation tick failed: {exc!r}", True)
                break
            tick_events = sim.events
            gt = sim.ground_truth()
            tick_events += min_speed.update(gt)
            run.events += tick_events
            if sim.frame % TRAJECTORY_EVERY_TICKS == 0:
                run.trajectory.append(_pose_row(gt))
            if sim.frame % COMFORT_EVERY_TICKS == 0:
                run.comfort_rows.append(_pose_row(gt))
            if run.recorder is not None:
                run.recorder = self._record(run.recorder, agent, control, tick_events, plan, gt)
            if sim.route_status.ended:
                break
            try:
                control = as_control(agent.run_step(input_data, sim.time_s))
            except Exception as exc:
                run.fail("Agent_runtime", f"{plan.route_id}: agent crashed: {exc!r}")
                break
        # The criteria that report when the route stops (Leaderboard: at terminate()).
        criteria = getattr(sim, "criteria", None)
        outside = criteria.outside_lanes_event(sim.frame, sim.time_s) if criteria else None
        if outside is not None:
            run.events.append(outside)
        run.events += min_speed.terminate(sim.ground_truth())
        run.checkpoint_values = list(min_speed.checkpoint_values)
        run.completion = float(sim.route_status.completion)
        run.game_s = float(sim.time_s)

    def _cleanup(self, plan: RoutePlan, run: _RouteRun) -> None:
        if run.agent is not None:
            run.interventions = _interventions(run.agent)
            try:
                run.agent.destroy()
            except Exception:
                log.error("%s: agent.destroy() failed\n%s", plan.route_id, traceback.format_exc())
        DataProvider.set_simulator(None)
        if run.recorder is not None:
            try:
                path = run.recorder.close()
                run.video = str(path) if path is not None else None
            except Exception:
                log.error(
                    "%s: closing the recorder failed\n%s", plan.route_id, traceback.format_exc()
                )

    def _outcome(self, plan: RoutePlan, run: _RouteRun, wall_s: float) -> dict[str, Any]:
        meta = scoring.RouteMeta(
            index=plan.index,
            route_id=plan.route_id,
            scenario_name=plan.scenario_name,
            weather_id=plan.weather_id,
            save_name=plan.save_name,
            town_name=plan.town_name,
            route_length_m=run.route_length_m,
        )
        record = scoring.route_record(
            meta,
            run.events,
            run.completion,
            run.failure,
            duration_game_s=run.game_s,
            duration_system_s=wall_s,
            min_speed_policy=self.min_speed_policy,
        )
        efficiency = scoring.route_efficiency(run.checkpoint_values)
        details = {
            "index": plan.index,
            "route_id": plan.route_id,
            "scenario": plan.scenario_name,
            "file": plan.file,
            "tags": list(plan.tags),
            "repetition": plan.repetition,
            "seed": plan.seed,
            "status": record["status"],
            "scores": dict(record["scores"]),
            "route_xy": run.route_xy,
            "trajectory": run.trajectory,
            "infractions": [
                {
                    "kind": e.kind,
                    "message": e.message,
                    "x": None if e.location is None else e.location[0],
                    "y": None if e.location is None else e.location[1],
                    "t": round(e.time_s, 3),
                }
                for e in run.events
            ],
            "bench2drive": {
                "success": scoring.route_success(record),
                "efficiency": None
                if efficiency is None
                else round(efficiency, scoring.ROUND_DIGITS),
                "comfort": scoring.comfort_metrics(
                    np.array(run.comfort_rows, float).reshape(-1, 5)
                ),
            },
            "interventions": run.interventions,
            "video": run.video,
            "duration_game": record["meta"]["duration_game"],
            "duration_system": record["meta"]["duration_system"],
            "error": run.error,
        }
        return {
            "index": plan.index,
            "record": record,
            "details": details,
            "sensors": run.sensors,
            "entry_status": run.entry_status,
            "stop": run.stop,
        }

    def _record(
        self,
        recorder: Any,
        agent: Any,
        control: VehicleControl,
        events: list[InfractionEvent],
        plan: RoutePlan,
        gt: GroundTruth,
    ) -> Any:
        """Hand one tick to the recorder; a failing recorder is closed and dropped."""
        planned = getattr(agent, "planned_trajectory", None)
        planned_xy = None if planned is None else np.asarray(planned, dtype=float)
        caption = f"{plan.route_id}  {plan.scenario_name}  t={gt.time_s:.1f} s"
        reasoning = getattr(agent, "reasoning_text", "")  # a VLM agent's latest words
        if reasoning:
            caption += f"  |  {reasoning}"
        try:
            recorder.add(self.sim, control, planned_xy, events, caption)
        except Exception:
            log.error(
                "%s: recording failed, video stopped\n%s", plan.route_id, traceback.format_exc()
            )
            with suppress(Exception):
                recorder.close()
            return None
        return recorder


def _interventions(agent: object) -> dict[str, int]:
    raw = getattr(agent, "interventions", None)
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, int] = {}
    for key, value in raw.items():
        with suppress(TypeError, ValueError):
            out[str(key)] = int(value)
    return dict(sorted(out.items()))


# ------------------------------------------------------------------ files
def details_path(out: Path) -> Path:
    """The sidecar next to the results file: `<out stem>.details.json`."""
    return out.with_name(f"{out.stem}.details.json")


def write_json_atomic(path: Path, data: Any, **dump_kwargs: Any) -> None:
    """Write JSON to a temp file in the same folder, then os.replace it over `path`: a
    reader (or a crash) sees the old file or the new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would survive os.replace
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, **dump_kwargs)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def strip_wall_clock(data: Any) -> Any:
    """A copy of a results or details dict with the wall-clock fields set to 0
    (`duration_system` wherever it appears): what must match between equivalent runs."""
    if isinstance(data, dict):
        return {k: (0 if k == "duration_system" else strip_wall_clock(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [strip_wall_clock(v) for v in data]
    return data


class ResultsState:
    """The finished routes and the two files they are written to."""

    def __init__(self, out: Path, header: dict[str, Any], plans: Sequence[RoutePlan]) -> None:
        self.out = out
        self.details_file = details_path(out)
        self.header = header
        self.plans = plans
        self.total = len(plans)
        self.records: list[dict[str, Any]] = []
        self.routes: list[dict[str, Any]] = []
        self.sensors: list[str] = []
        self.entry_status = "Started"
        self.stopped = False

    @property
    def done(self) -> int:
        return len(self.records)

    def resume(self) -> None:
        """Keep the finished routes of existing files (the shorter of the two wins)."""
        if not self.out.is_file():
            log.info("%s does not exist: starting from the first route", self.out)
            return
        try:
            data = json.loads(self.out.read_text(encoding="utf-8"))
            records = list(data["_checkpoint"]["records"])
            sensors = list(data.get("sensors", []))
            entry = str(data.get("entry_status", "Started"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EvaluationError(f"cannot resume from {self.out}: {exc}") from exc
        routes: list[dict[str, Any]] = []
        if self.details_file.is_file():
            try:
                details = json.loads(self.details_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise EvaluationError(f"cannot resume from {self.details_file}: {exc}") from exc
            for key, value in self.header.items():
                if details.get(key) != value:
                    raise EvaluationError(
                        f"cannot resume: {self.details_file} has {key}={details.get(key)!r}, "
                        f"this run has {key}={value!r}"
                    )
            routes = list(details.get("routes", []))
        else:
            log.warning("%s is missing: re-running every route", self.details_file)
        n = min(len(records), len(routes))
        for i in range(n):
            plan_id = self.plans[i].route_id if i < self.total else None
            if records[i].get("route_id") != plan_id or routes[i].get("route_id") != plan_id:
                raise EvaluationError(
                    f"cannot resume from {self.out}: its route {i} is "
                    f"{records[i].get('route_id')!r}, this suite's is {plan_id!r} "
                    "(another suite, repetitions or seed?)"
                )
        self.records, self.routes = records[:n], routes[:n]
        self.sensors = sensors
        self.entry_status = entry if entry in ("Started", "Rejected", "Crashed") else "Started"

    def add(self, outcome: Mapping[str, Any]) -> bool:
        """Append one finished route and rewrite the files; True if the evaluation stops."""
        if outcome["index"] != self.done:
            raise EvaluationError(f"route {outcome['index']} arrived before route {self.done}")
        self.records.append(outcome["record"])
        self.routes.append(outcome["details"])
        if not self.sensors and outcome["sensors"]:
            self.sensors = list(outcome["sensors"])
        self.entry_status = outcome["entry_status"]
        self.stopped = bool(outcome["stop"])
        self.write()
        return self.stopped

    def results(self) -> dict[str, Any]:
        if self.done == self.total and not self.stopped:
            return scoring.final_results(
                self.records, self.total, self.sensors, sensors_initialized=bool(self.sensors)
            )
        return scoring.results_json(
            self.records, (self.done, self.total), self.sensors, self.entry_status
        )

    def details(self) -> dict[str, Any]:
        summary = scoring.summary(self.routes)
        summary["progress"] = [self.done, self.total]
        return {**self.header, "summary": summary, "routes": self.routes}

    def write(self) -> dict[str, Any]:
        """Details first, then the results file (resume trusts the shorter of the two)."""
        write_json_atomic(self.details_file, self.details())
        results = self.results()
        write_json_atomic(self.out, results, indent=4, sort_keys=True)
        return results


# ------------------------------------------------------------------ progress
class _Progress:
    """Route i/N, current route, running Driving Score, sim speed (game s / wall s)."""

    def __init__(self, enabled: bool, total: int, done: int) -> None:
        self.enabled = enabled
        self.total, self.done = total, done
        self.game_s = 0.0
        self.start = time.perf_counter()
        self._progress: Any = None
        self._task: Any = None
        self._stats = ""

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("[bold]eval"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
            )
            self._progress.start()
            self._task = self._progress.add_task("starting", total=self.total, completed=self.done)
        return self

    def running(self, plan: RoutePlan) -> None:
        self._show(f"{plan.route_id} ({plan.scenario_name})")

    def update(self, state: ResultsState) -> None:
        if self._progress is None:
            return
        last = state.records[-1]
        self.game_s += float(last["meta"]["duration_game"])
        wall = max(time.perf_counter() - self.start, 1e-6)
        ds = sum(r["scores"]["score_composed"] for r in state.records) / state.done
        self._stats = f"DS {ds:.1f} | x{self.game_s / wall:.1f} real time"
        self._show(f"{last['route_id']} {last['status']}", completed=state.done)

    def _show(self, current: str, completed: int | None = None) -> None:
        if self._progress is not None:
            text = f"{current} | {self._stats}" if self._stats else current
            self._progress.update(self._task, description=text, completed=completed)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


# ------------------------------------------------------------------ driver
def _absolute_if_path(value: str) -> str:
    return str(Path(value).resolve()) if value and Path(value).exists() else value


def evaluate(
    agent: str,
    agent_config: str | Path,
    suite: str | Path,
    backend: str = "lite",
    out: str | Path = "results.json",
    repetitions: int = 1,
    resume: bool = False,
    workers: int = 1,
    ray_address: str | None = None,
    record: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    min_speed_policy: str = scoring.DEFAULT_MIN_SPEED_POLICY,
) -> dict[str, Any]:
    """Evaluate `agent` (a file defining get_entry_point(), or 'expert') on `suite` and
    return the Leaderboard results dict (also written to `out`, details beside it).

    `workers` > 1 or a `ray_address` runs routes on Ray actors (local cluster bound to
    127.0.0.1 unless an address is given). `record` writes one video per route there.
    `host`, `port` and `timeout_s` address the CARLA server of the `carla` backend.
    """
    if backend not in BACKENDS:
        raise EvaluationError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    if workers < 1:
        raise EvaluationError(f"workers must be >= 1, got {workers}")
    if min_speed_policy not in scoring.MIN_SPEED_POLICIES:
        raise EvaluationError(
            f"min_speed_policy {min_speed_policy!r} is not one of {scoring.MIN_SPEED_POLICIES}"
        )
    if backend == "carla" and (workers > 1 or ray_address is not None):
        raise EvaluationError(
            "the carla backend runs routes one at a time on one server (--host/--port); "
            "--workers > 1 / --ray-address are for the lite backend"
        )
    # Fails early for backends that are not available (no CARLA server answering).
    make_simulator(backend, host, port, timeout_s).close()
    plans = plan_routes(suite, repetitions, seed)
    if not plans:
        raise EvaluationError(f"suite {suite} has no scenarios to run")
    agent_ref = agent if agent == "expert" else str(Path(agent).expanduser().resolve())
    load_agent_class(agent_ref)  # fail before any file is written
    record_dir = None
    if record is not None:
        recorder_class()
        record_dir = str(Path(record).resolve())
        Path(record_dir).mkdir(parents=True, exist_ok=True)
    out = Path(out)
    header = {
        "version": DETAILS_VERSION,
        "agent": agent,
        "suite": str(suite),
        "backend": backend,
        "seed": seed,
    }
    state = ResultsState(out, header, plans)
    if resume:
        state.resume()
    state.write()
    runner_args = (
        agent_ref,
        _absolute_if_path(str(agent_config)),
        backend,
        host,
        port,
        record_dir,
        min_speed_policy,
        timeout_s,
    )
    remaining = plans[state.done :]
    with _Progress(progress, state.total, state.done) as bar:
        if workers == 1 and ray_address is None:
            runner = RouteRunner(*runner_args)
            try:
                for plan in remaining:
                    bar.running(plan)
                    stop = state.add(runner.run(plan))
                    bar.update(state)
                    if stop:
                        break
            finally:  # Ctrl-C included: a CARLA server must get its world back
                runner.close()
        elif remaining:
            _run_on_ray(remaining, runner_args, workers, ray_address, state, bar)
    return state.write()


def _run_on_ray(
    plans: Sequence[RoutePlan],
    runner_args: tuple,
    workers: int,
    ray_address: str | None,
    state: ResultsState,
    bar: _Progress,
) -> None:
    """Whole routes on `workers` Ray actors; results are added in route order."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as exc:
        raise EvaluationError(
            "--workers > 1 / --ray-address need Ray: pip install -e '.[distributed]'"
        ) from exc
    started = False
    if not ray.is_initialized():
        if ray_address:
            ray.init(
                address=ray_address,
                runtime_env={
                    "working_dir": str(REPO_ROOT),
                    "excludes": [".venv", ".git", "outputs", "*.mp4"],
                },
                log_to_driver=False,
            )
        else:
            pythonpath = os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            )
            ray.init(
                num_cpus=workers,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
            )
        started = True
    actors: list[Any] = []
    try:
        worker_cls = ray.remote(num_cpus=1)(RouteRunner)
        actors = [worker_cls.remote(*runner_args) for _ in range(min(workers, len(plans)))]
        pool = ActorPool(actors)
        waiting: dict[int, dict[str, Any]] = {}
        for outcome in pool.map_unordered(lambda actor, plan: actor.run.remote(plan), list(plans)):  # type: ignore[arg-type]
            waiting[outcome["index"]] = outcome
            while state.done in waiting:
                stop = state.add(waiting.pop(state.done))
                bar.update(state)
                if stop:
                    return
    finally:
        with suppress(Exception):
            ray.get([actor.close.remote() for actor in actors], timeout=60)
        for actor in actors:
            with suppress(Exception):
                ray.kill(actor)
        if started:
            ray.shutdown()
