"""Fuzz the scenario pipeline with mutated YAML: only ScenarioError may come out.

A valid scenario text is mutated line-wise (delete, duplicate, swap, re-indent, truncate,
insert a random `key: value`, replace a scalar with random text / number / null / list) and
loaded from a temporary file. The result is a Scenario or a ScenarioError whose problems all
have a file, line >= 1, column >= 1 and a message; a loaded scenario then samples, compiles
and exports, or raises ScenarioError (ExportError is one) -- never any other exception.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scenarios.compile import compile_scenario
from scenarios.export import export_leaderboard_xml
from scenarios.loader import ScenarioError, load_scenario
from scenarios.sampler import sample
from scenarios.schema import Scenario

BASE = """\
name: fuzz_base
description: a scenario to mutate
tags: [fuzz, construction]
seed: 5
variations: 2
map:
  town:
    road_type: urban
    lanes_per_direction: {choice: [2, 3]}
    block_m: {uniform: [90, 120]}
    curvature: 0.2
  carla:
    town: Town12
    waypoints: [[0, 0, 0], [200, 0, 1], [200, 300, 2]]
route:
  length_m: 420
weather:
  preset: {choice: [HardRainNight, ClearNoon]}
  fog_density: {uniform: [10, 60]}
  wetness: {normal: {mean: 40, std: 10, min: 0, max: 100}}
  keyframes:
    - route_percentage: 30
      fog_density: 80
    - route_percentage: {uniform: [60, 90]}
      preset: CloudySunset
traffic:
  vehicles: {uniform: [4, 12]}
  pedestrians: 3
  speed_limit_kmh: 50
events:
  - type: construction_zone
    at_m: {uniform: [100, 140]}
    side: {choice: [left, right]}
    length_m: {choice: [30, 45]}
    speed_cap_kmh: 30
  - type: pedestrian_crossing
    at_m: 220
    mode: jaywalk
    occluded: true
  - type: lead_vehicle_hard_brake
    at_m: {normal: {mean: 300, std: 20, min: 260, max: 340}}
    decel_mps2: 6
  - type: red_light_runner
    at_m: 360
criteria:
  min_route_completion: 95
  max_infractions: 1
"""

LINES = BASE.splitlines()
SCALAR = re.compile(r"^(\s*(?:- )?[A-Za-z_]+:\s*)(\S.*)$")

random_value = st.one_of(
    st.text(max_size=12),
    st.integers(-(10**6), 10**6).map(str),
    st.integers(-3, 3).map(str),
    st.floats(-1e3, 1e3).map(lambda v: f"{v:.3g}"),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["null", "~", "[]", "{}", "[1, 2]", "[a, {b: c}]", "true", ".nan", "-.inf"]),
    st.sampled_from(["{uniform: [5, 1]}", "{choice: []}", "{normal: {mean: 1, std: -1}}"]),
    st.sampled_from(["1e400", "'", '"', "*x", "&a b", "!!python/object:os.system", "|"]),
)
keys = st.one_of(
    st.sampled_from(
        ["type", "at_m", "preset", "extends", "keyframes", "events", "name", "side", "seed"]
    ),
    st.text(alphabet="abcdefghij_", min_size=1, max_size=8),
)


@st.composite
def mutations(draw) -> str:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(
            st.sampled_from(
                ["delete", "duplicate", "indent", "insert", "swap", "truncate"] + ["scalar"] * 4
            )
        )
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "scalar":
            match = SCALAR.match(lines[i])
            value = draw(random_value)
            lines[i] = match.group(1) + value if match else lines[i] + " " + value
        elif kind == "indent":
            stripped = lines[i].lstrip(" ")
            lines[i] = " " * draw(st.integers(0, 8)) + stripped
        elif kind == "insert":
            indent = " " * draw(st.sampled_from([0, 2, 4, 6]))
            lines.insert(i, f"{indent}{draw(keys)}: {draw(random_value)}")
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            text = "\n".join(lines)
            return text[: draw(st.integers(0, len(text)))]
    return "\n".join(lines) + "\n"


def check_error(exc: ScenarioError) -> None:
    assert exc.problems
    for p in exc.problems:
        assert p.file and p.line >= 1 and p.column >= 1 and p.message, p


def run_pipeline(text: str) -> Scenario | ScenarioError:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            check_error(exc)
            return exc
        assert isinstance(scenario, Scenario)
        try:
            concrete = sample(scenario, min(scenario.variations, 2), file=path)
            for one in concrete:
                compile_scenario(one, str(path))
            export_leaderboard_xml(concrete, None, None)
        except ScenarioError as exc:
            check_error(exc)
            return exc
        return scenario


def test_base_text_is_valid_and_runs() -> None:
    result = run_pipeline(BASE)
    assert isinstance(result, Scenario)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same 150 inputs on every run: no flaky failures
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutations())
def test_mutated_yaml_gives_a_scenario_or_a_scenario_error(text: str) -> None:
    run_pipeline(text)


# ------------------------------------------- regressions for bugs the fuzzer found
def test_negative_seed_is_a_scenario_error() -> None:
    result = run_pipeline(BASE.replace("seed: 5", "seed: -1"))
    assert isinstance(result, ScenarioError)
    assert any(p.field == "seed" for p in result.problems)


@pytest.mark.parametrize("length", ["-5", "10", ".inf", ".nan"])
def test_bad_route_length_is_a_scenario_error(length: str) -> None:
    result = run_pipeline(BASE.replace("length_m: 420", f"length_m: {length}"))
    assert isinstance(result, ScenarioError)


def test_non_utf8_file_is_a_scenario_error() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "latin1.yaml"
        path.write_bytes("name: caf\xe9\n".encode("latin-1"))
        with pytest.raises(ScenarioError, match="not UTF-8"):
            load_scenario(path)


def test_duplicate_key_is_a_scenario_error() -> None:
    result = run_pipeline(BASE.replace("seed: 5", "seed: 5\nseed: 6"))
    assert isinstance(result, ScenarioError)
    assert any(p.message == "duplicate key" and p.field == "seed" for p in result.problems)


def test_nan_number_is_a_scenario_error() -> None:
    result = run_pipeline(BASE.replace("length_m: 420", "length_m: .nan"))
    assert isinstance(result, ScenarioError)
