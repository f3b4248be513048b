"""Broken scenario files: every problem names its file, line, field path and what is valid."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from scenarios.loader import Problem, ScenarioError, load_scenario, load_suite
from scenarios.schema import EVENT_TYPES
from sim.weather import PRESET_NAMES


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path, loader=load_scenario) -> list[Problem]:
    with pytest.raises(ScenarioError) as info:
        loader(path)
    problems = info.value.problems
    assert problems, "a ScenarioError must carry at least one problem"
    for p in problems:
        assert p.line >= 1 and p.column >= 1 and p.message
        assert str(p).startswith(f"{p.file}:{p.line}:{p.column}: ")
    assert str(info.value) == "\n".join(str(p) for p in problems)
    return problems


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, problems
    return problems[0]


def test_unknown_event_type_lists_valid_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """\
        name: a
        events:
          - type: construction_zone
            at_m: 10
          - type: flying_saucer
            at_m: 20
        """,
    )
    p = only(problems_of(path))
    assert (p.file, p.line, p.field) == (str(path), 5, "events[1]")
    assert "flying_saucer" in p.message
    for name in EVENT_TYPES:
        assert repr(name) in p.message


def test_unknown_preset_lists_presets(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "name: a\nweather:\n  preset: SunnyMars\n")
    p = only(problems_of(path))
    assert (p.file, p.line, p.column, p.field) == (str(path), 3, 3, "weather.preset")
    assert "'SunnyMars'" in p.message
    assert ", ".join(PRESET_NAMES) in p.message


def test_unknown_preset_inside_a_choice(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "name: a\nweather:\n  preset: {choice: [ClearNoon, Foggy]}\n")
    p = only(problems_of(path))
    assert p.line == 3 and p.field.startswith("weather.preset")
    assert "'Foggy'" in p.message and "HardRainNight" in p.message


def test_unknown_field_names_the_extra_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """\
        name: a
        traffic:
          vehicles: 3
          bicycles: 4
        """,
    )
    p = only(problems_of(path))
    assert (p.line, p.column, p.field) == (4, 3, "traffic.bicycles")
    assert "unknown field" in p.message


def test_unknown_top_level_field(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "name: a\n\nwether:\n  preset: ClearNoon\n")
    p = only(problems_of(path))
    assert (p.line, p.field) == (3, "wether")


def test_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "name: a\ntraffic:\n  vehicles: lots\n")
    p = only(problems_of(path))
    assert (p.line, p.field) == (3, "traffic.vehicles")
    assert "'lots'" in p.message and "uniform" in p.message


def test_wrong_type_in_event(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """\
        name: a
        events:
          - type: pedestrian_crossing
            at_m: 40
            mode: sprint
        """,
    )
    p = only(problems_of(path))
    assert (p.line, p.field) == (5, "events[0].mode")
    assert "'crosswalk'" in p.message and "'jaywalk'" in p.message


def test_out_of_range_weather_value_points_at_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """\
        name: a
        weather:
          preset: ClearNoon
          cloudiness: 150
        """,
    )
    p = only(problems_of(path))
    assert p.file == str(path)
    assert (p.line, p.field) == (4, "weather.cloudiness")
    assert "cloudiness = 150" in p.message and "[0, 100]" in p.message


def test_bad_distribution_uniform_low_above_high(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """\
        name: a
        events:
          - type: construction_zone
            at_m: {uniform: [200, 100]}
        """,
    )
    p = only(problems_of(path))
    assert (p.line, p.field) == (4, "events[0].at_m.uniform")
    assert "low <= high" in p.message and "[200.0, 100.0]" in p.message


def test_bad_distribution_negative_std(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """\
        name: a
        traffic:
          speed_limit_kmh:
            normal: {mean: 50, std: -3}
        """,
    )
    p = only(problems_of(path))
    assert p.line in (3, 4) and p.field.startswith("traffic.speed_limit_kmh")


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """\
        name: a
        traffic:
          vehicles: 3
           pedestrians: 4
        """,
    )
    p = only(problems_of(path))
    assert (p.file, p.line, p.field) == (str(path), 4, "")
    assert p.message.startswith("invalid YAML")


def test_unclosed_flow_sequence(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "name: a\ntags: [a, b\nseed: 3\n")
    p = only(problems_of(path))
    assert p.line >= 2 and "invalid YAML" in p.message


def test_missing_required_event_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """\
        name: a
        events:
          - type: construction_zone
            at_m: 3
          - type: accident
            side: left
        """,
    )
    p = only(problems_of(path))
    assert (p.line, p.field) == (5, "events[1].at_m")
    assert p.message == "required field is missing"


def test_missing_name(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "seed: 3\n")
    p = only(problems_of(path))
    assert p.field == "name" and "missing" in p.message


def test_several_problems_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """\
        name: a
        traffic:
          vehicles: lots
          bicycles: 2
        events:
          - type: nope
            at_m: 3
          - type: accident
            side: up
        """,
    )
    problems = problems_of(path)
    where = {(p.line, p.field) for p in problems}
    assert {(3, "traffic.vehicles"), (4, "traffic.bicycles"), (6, "events[0]")} <= where
    assert (8, "events[1].at_m") in where
    assert (9, "events[1].side") in where
    assert len(problems) >= 3
    assert [p.line for p in problems] == sorted(p.line for p in problems)


def test_empty_file_and_non_mapping(tmp_path: Path) -> None:
    assert "empty" in only(problems_of(write(tmp_path, "e.yaml", "# nothing\n"))).message
    p = only(problems_of(write(tmp_path, "l.yaml", "- a\n- b\n")))
    assert "mapping" in p.message


# ------------------------------------------------------------------ extends
def test_extends_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "x.yaml", "name: base\n")
    child = write(tmp_path, "sub/child.yaml", "name: child\nseed: 1\nextends: ../x.yaml\n")
    p = only(problems_of(child))
    assert (p.file, p.line, p.field) == (str(child), 3, "extends")
    assert "leaves the scenario's folder" in p.message


def test_extends_absolute_path_is_refused(tmp_path: Path) -> None:
    base = write(tmp_path, "x.yaml", "name: base\n")
    child = write(tmp_path, "sub/child.yaml", f"extends: {base}\nname: child\n")
    p = only(problems_of(child))
    assert p.field == "extends" and "leaves" in p.message


def test_extends_cycle_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "extends: b.yaml\nname: a\n")
    write(tmp_path, "b.yaml", "name: b\nextends: c.yaml\n")
    write(tmp_path, "c.yaml", "name: c\nextends: a.yaml\n")
    p = only(problems_of(tmp_path / "a.yaml"))
    assert p.field == "extends" and "circular" in p.message
    assert p.line in (1, 2)
    self_loop = write(tmp_path, "self.yaml", "name: s\nextends: self.yaml\n")
    p = only(problems_of(self_loop))
    assert (p.line, p.field) == (2, "extends") and "circular" in p.message


def test_extends_missing_base(tmp_path: Path) -> None:
    child = write(tmp_path, "child.yaml", "name: c\nextends: nowhere.yaml\n")
    p = only(problems_of(child))
    assert (p.line, p.field) == (2, "extends") and "no such file" in p.message


def test_extends_inherits_and_overrides_nested_fields(tmp_path: Path) -> None:
    write(
        tmp_path,
        "_base.yaml",
        """\
        name: base
        seed: 7
        traffic: {vehicles: 5, pedestrians: 7, speed_limit_kmh: 40}
        weather: {preset: HardRainNight, cloudiness: 20}
        events:
          - {type: accident, at_m: 50}
        """,
    )
    child = write(
        tmp_path,
        "child.yaml",
        """\
        extends: _base.yaml
        name: child
        traffic:
          vehicles: 9
        weather:
          fog_density: 30
        """,
    )
    s = load_scenario(child)
    assert s.name == "child" and s.seed == 7 and s.extends is None
    assert (s.traffic.vehicles, s.traffic.pedestrians, s.traffic.speed_limit_kmh) == (9, 7, 40)
    assert (s.weather.preset, s.weather.cloudiness, s.weather.fog_density) == (
        "HardRainNight",
        20,
        30,
    )
    assert [e.type for e in s.events] == ["accident"]


def test_problem_inherited_from_the_base_names_the_base_file(tmp_path: Path) -> None:
    base = write(tmp_path, "_base.yaml", "name: base\ntraffic:\n  vehicles: lots\n")
    child = write(tmp_path, "child.yaml", "extends: _base.yaml\nname: child\n")
    p = only(problems_of(child))
    assert (p.file, p.line, p.field) == (str(base), 3, "traffic.vehicles")


# ------------------------------------------------------------------ suites
def test_suite_with_a_missing_file(tmp_path: Path) -> None:
    write(tmp_path, "ok.yaml", "name: ok\n")
    suite = write(
        tmp_path,
        "suite.yaml",
        """\
        suite: s
        scenarios:
          - file: ok.yaml
          - file: ghost.yaml
            repetitions: 2
        """,
    )
    p = only(problems_of(suite, load_suite))
    assert (p.file, p.line, p.field) == (str(suite), 4, "scenarios[1].file")
    assert "'ghost.yaml'" in p.message


def test_suite_collects_problems_from_every_file(tmp_path: Path) -> None:
    bad1 = write(tmp_path, "bad1.yaml", "name: b1\nseed: x\n")
    bad2 = write(tmp_path, "bad2.yaml", "name: b2\nweather: {preset: Nope}\n")
    suite = write(
        tmp_path,
        "suite.yaml",
        "suite: s\nscenarios:\n  - file: bad1.yaml\n  - file: bad2.yaml\n  - file: gone.yaml\n",
    )
    problems = problems_of(suite, load_suite)
    assert {p.file for p in problems} == {str(suite), str(bad1), str(bad2)}
    assert (str(bad1), 2, "seed") in {(p.file, p.line, p.field) for p in problems}


def test_suite_schema_problem(tmp_path: Path) -> None:
    suite = write(tmp_path, "suite.yaml", "suite: s\nscenarios: []\n")
    p = only(problems_of(suite, load_suite))
    assert (p.line, p.field) == (2, "scenarios")


def test_missing_file_or_folder(tmp_path: Path) -> None:
    assert "no such file" in only(problems_of(tmp_path / "nope.yaml", load_suite)).message
    p = only(problems_of(tmp_path / "nope.yaml"))
    assert "cannot read" in p.message
