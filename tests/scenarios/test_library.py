"""The shipped edge-case scenario library (scenarios/library/{train,eval}).

Every scenario file must validate, sample deterministically, compile, run in the embedded
simulator with its events really present, and the train and eval suites must not share any
(event type, weather condition) combination, so evaluation measures generalisation.

Scripted pedestrians are checked with their real trigger: variation 0 is driven by the
privileged RouteFollower for 300 ticks (longer, up to MAX_TICKS, only if the ego has not yet
reached a pedestrian's trigger), and the walker must stand still before the ego's route
progress reaches its trigger and move after it.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest

from scenarios.compile import compile_scenario
from scenarios.loader import load_scenario, load_suite
from scenarios.sampler import is_concrete, sample
from scenarios.schema import Scenario
from sim.lite.autopilot import RouteFollower
from sim.lite.world import PROP_TYPES, LiteSimulator
from sim.spec import WorldSpec
from sim.weather import Weather

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "scenarios" / "library"
SCHEMA_COMMENT = "# yaml-language-server: $schema=../../scenario.schema.json"
FILES = sorted(p for p in LIBRARY.glob("**/*.yaml") if not p.name.startswith(("_", "suite")))
# The train/eval suites own their folders; the demo suite is a cut of the eval suite.
SUITES = sorted(p for p in LIBRARY.glob("*/suite.yaml") if p.parent.name != "demo")
TICKS = 300
MAX_TICKS = 700  # only while a scripted pedestrian's trigger is still ahead of the ego
AFTER_TRIGGER_TICKS = 10  # ticks a walker gets to move once triggered
PLACE_TOL_M = 0.5
MIN_TAIL_M = 60.0  # [m] route left after the last event


def _id(p: Path) -> str:
    return str(p.relative_to(LIBRARY))


# --------------------------------------------------------------------- helpers
def weather_condition(w: Weather) -> str:
    """One label per weather, by priority: night, fog, rain, glare (low sun), clear."""
    if w.is_night:
        return "night"
    if w.fog_density >= 40.0:
        return "fog"
    if w.precipitation >= 30.0:
        return "rain"
    if 0.0 < w.sun_altitude_angle < 20.0:
        return "glare"
    return "clear"


def spec_conditions(spec: WorldSpec) -> set[str]:
    """Conditions the route drives through: the start weather and every keyframe."""
    return {weather_condition(spec.weather)} | {
        weather_condition(k.weather) for k in spec.weather_keyframes
    }


@functools.cache
def _load(path: Path) -> tuple[Scenario, tuple[Scenario, ...], tuple[WorldSpec, ...]]:
    scenario = load_scenario(path)
    samples = tuple(sample(scenario, file=path))
    specs = tuple(compile_scenario(s, str(path)) for s in samples)
    return scenario, samples, specs


def combinations(path: Path) -> set[tuple[str, str]]:
    """(event type, weather condition) pairs over every variation of a scenario file."""
    _, samples, specs = _load(path)
    out = set()
    for s, spec in zip(samples, specs, strict=True):
        for ev in s.events:
            out |= {(ev.type, cond) for cond in spec_conditions(spec)}
    return out


def _last_event_s(spec: WorldSpec) -> float:
    ends = [p.route_s_m for p in spec.props] + [p.route_s_m for p in spec.pedestrians]
    ends += [v.route_s_m for v in spec.vehicles] + [z.end_m for z in spec.speed_zones]
    return max(ends, default=0.0)


def _scenario_actors(sim: LiteSimulator, prefix: str) -> list:
    return [
        a
        for a in sim.ground_truth().actors
        if a.role == "scenario" and a.type_id.startswith(prefix)
    ]


# ----------------------------------------------------------------------- files
def test_library_is_large_enough() -> None:
    assert len(FILES) >= 24
    assert {p.parent.name for p in FILES} == {"train", "eval"}


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_file_validates(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == SCHEMA_COMMENT
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.description.strip()
    assert scenario.tags
    assert scenario.events
    assert 2 <= scenario.variations <= 5
    assert not is_concrete(scenario), "a library scenario should vary something"
    r = scenario.route
    if not r.start and not r.waypoints:  # seeded routes: the declared length
        assert 250.0 <= float(r.length_m) <= 500.0  # type: ignore[arg-type]


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_sampling_is_deterministic(path: Path) -> None:
    scenario = load_scenario(path)
    a = sample(scenario, file=path)
    b = sample(load_scenario(path), file=path)
    assert len(a) == scenario.variations
    assert [s.model_dump() for s in a] == [s.model_dump() for s in b]
    assert all(is_concrete(s) for s in a)
    assert len({s.name for s in a}) == len(a)


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_compiles_and_runs_with_events_in_place(path: Path) -> None:
    _, samples, specs = _load(path)
    sim = LiteSimulator()
    for spec in specs:  # every variation: modest traffic, events well inside the route
        assert spec.num_vehicles <= 15 and spec.num_pedestrians <= 10
        assert spec.props or spec.pedestrians or spec.vehicles
        sim.reset(spec, 0)
        assert 250.0 <= sim.route.length_m <= 560.0
        assert sim.route.length_m - _last_event_s(spec) >= MIN_TAIL_M, (
            f"{spec.name}: last event at {_last_event_s(spec):.0f} m on a "
            f"{sim.route.length_m:.0f} m route"
        )

    spec = specs[0]
    sim.reset(spec, 0)
    # Props: all present, in spec order, at their route-relative place.
    gt = sim.ground_truth()
    assert len(gt.props) == len(spec.props)
    for prop, actor in zip(spec.props, gt.props, strict=True):
        assert actor.type_id == PROP_TYPES[prop.kind][0]
        want, _ = sim._route_pose(prop.route_s_m, prop.lateral_m)
        assert math.dist((actor.x, actor.y), want) < PLACE_TOL_M, prop
    # Scripted vehicles: present with role "scenario"; stalled ones on the route.
    vehicles = _scenario_actors(sim, "vehicle.")
    assert len(vehicles) == len(spec.vehicles)
    for vspec, actor in zip(spec.vehicles, vehicles, strict=True):
        if vspec.behaviour == "stopped":
            want, _ = sim._route_pose(vspec.route_s_m, 0.0)
            assert math.dist((actor.x, actor.y), want) < 2.0
    # Scripted pedestrians: present, waiting at the kerb where the spec puts them.
    walkers = _scenario_actors(sim, "walker.")
    assert len(walkers) == len(spec.pedestrians)
    start_xy = [np.array([a.x, a.y]) for a in walkers]
    for pspec, xy in zip(spec.pedestrians, start_xy, strict=True):
        if not pspec.snap_to_crosswalk:
            sign = -1.0 if pspec.side == "right" else 1.0
            want, _ = sim._route_pose(pspec.route_s_m, sign * pspec.start_lateral_m)
            assert float(np.linalg.norm(xy - want)) < PLACE_TOL_M

    triggers = [p.trigger_s_m or 0.0 for p in spec.pedestrians]
    fired_at: list[int | None] = [None] * len(triggers)
    driver = RouteFollower(sim)
    tick = 0
    while tick < TICKS or (
        tick < MAX_TICKS and any(f is None or tick - f < AFTER_TRIGGER_TICKS for f in fired_at)
    ):
        progress = sim.criteria.progress_m  # what the walkers' trigger sees this tick
        sim.tick(driver())
        tick += 1
        if not triggers:
            continue
        xy, _ = sim.pedestrians.positions()
        for k, trig in enumerate(triggers):
            if progress < trig:
                assert np.allclose(xy[k], start_xy[k]), "walker moved before its trigger"
            elif fired_at[k] is None:
                fired_at[k] = tick
    gt = sim.ground_truth()
    assert len(gt.props) == len(spec.props)
    assert len(_scenario_actors(sim, "vehicle.")) == len(spec.vehicles)
    walkers = _scenario_actors(sim, "walker.")
    for k, (trig, fired) in enumerate(zip(triggers, fired_at, strict=True)):
        assert fired is not None, (
            f"ego progress {sim.criteria.progress_m:.0f} m never reached the walker's "
            f"trigger at {trig:.0f} m in {tick} ticks"
        )
        moved = math.dist((walkers[k].x, walkers[k].y), start_xy[k])
        assert moved > 0.1, "scripted walker did not move after its trigger"


# ---------------------------------------------------------------------- suites
@pytest.mark.parametrize("suite", SUITES, ids=_id)
def test_suite_loads_and_lists_its_folder(suite: Path) -> None:
    items = load_suite(suite)
    listed = sorted(item.path.name for item in items)
    folder = sorted(p.name for p in FILES if p.parent == suite.parent)
    assert listed == folder, "a suite lists exactly the scenario files beside it, once each"
    assert all(item.repetitions in (1, 2) for item in items)
    assert all(item.path.parent == suite.parent.resolve() for item in items)


def test_suites_cover_enough_and_do_not_overlap() -> None:
    assert {s.parent.name for s in SUITES} == {"train", "eval"}
    suites = {s.parent.name: load_suite(s) for s in SUITES}
    assert sum(len(items) for items in suites.values()) >= 24
    pairs = {
        name: set().union(*(combinations(item.path) for item in items))
        for name, items in suites.items()
    }
    shared = pairs["train"] & pairs["eval"]
    assert not shared, f"(event type, weather) combinations in both suites: {sorted(shared)}"
    # Every event type and every weather condition is exercised somewhere.
    all_pairs = pairs["train"] | pairs["eval"]
    assert {cond for _, cond in all_pairs} == {"night", "fog", "rain", "glare", "clear"}
    assert {ev for ev, _ in all_pairs} == {
        "construction_zone",
        "accident",
        "parked_obstacle",
        "pedestrian_crossing",
        "cut_in",
        "lead_vehicle_hard_brake",
        "red_light_runner",
        "stalled_vehicle",
    }


@pytest.mark.parametrize(
    ("preset", "condition"),
    [
        ("HardRainNight", "night"),
        ("ClearNight", "night"),
        ("HardRainNoon", "rain"),
        ("SoftRainNoon", "rain"),
        ("ClearSunset", "glare"),
        ("HardRainSunset", "rain"),
        ("ClearNoon", "clear"),
        ("WetNoon", "clear"),
    ],
)
def test_weather_condition_classifier(preset: str, condition: str) -> None:
    assert weather_condition(Weather.preset(preset)) == condition
    foggy = Weather.from_dict({"preset": "CloudyNoon", "fog_density": 60.0})
    assert weather_condition(foggy) == "fog"
