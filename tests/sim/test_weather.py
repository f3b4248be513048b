"""Weather presets, validation, derived physics (friction, visibility) and interpolation."""

from __future__ import annotations

import math

import pytest

from sim.weather import DRY_FRICTION, FIELD_RANGES, PRESET_NAMES, Weather, WeatherError

CARLA_PRESETS = (
    "ClearNoon",
    "CloudyNoon",
    "WetNoon",
    "WetCloudyNoon",
    "SoftRainNoon",
    "MidRainyNoon",
    "HardRainNoon",
    "ClearSunset",
    "CloudySunset",
    "WetSunset",
    "WetCloudySunset",
    "SoftRainSunset",
    "MidRainSunset",
    "HardRainSunset",
    "ClearNight",
    "CloudyNight",
    "WetNight",
    "WetCloudyNight",
    "SoftRainNight",
    "MidRainyNight",
    "HardRainNight",
    "DustStorm",
)


@pytest.mark.parametrize("name", CARLA_PRESETS)
def test_every_carla_preset_loads(name: str) -> None:
    w = Weather.preset(name)
    assert isinstance(w, Weather)
    for f, (low, high) in FIELD_RANGES.items():
        assert low <= getattr(w, f) <= high


def test_preset_names_are_exactly_carlas() -> None:
    assert set(PRESET_NAMES) == set(CARLA_PRESETS)


def test_presets_equal_carla_weather_parameters_field_by_field() -> None:
    carla = pytest.importorskip("carla")
    carla_names = {
        n
        for n in dir(carla.WeatherParameters)
        if n[0].isupper()
        and isinstance(getattr(carla.WeatherParameters, n), carla.WeatherParameters)
    }
    carla_names.discard("Default")
    assert carla_names == set(PRESET_NAMES)
    mismatches = []
    for name in PRESET_NAMES:
        ref = getattr(carla.WeatherParameters, name)
        ours = Weather.preset(name)
        for f in FIELD_RANGES:
            if getattr(ours, f) != pytest.approx(getattr(ref, f), abs=1e-4):
                mismatches.append((name, f, getattr(ours, f), getattr(ref, f)))
    assert mismatches == []


def test_unknown_preset_lists_valid_names() -> None:
    with pytest.raises(WeatherError) as exc:
        Weather.preset("SunnyMorning")
    msg = str(exc.value)
    assert "SunnyMorning" in msg
    for name in PRESET_NAMES:
        assert name in msg


@pytest.mark.parametrize(
    "field,value",
    [
        ("fog_density", 150.0),
        ("precipitation", -1.0),
        ("cloudiness", math.nan),
        ("wetness", math.inf),
        ("sun_altitude_angle", 91.0),
    ],
)
def test_out_of_range_field_names_the_field(field: str, value: float) -> None:
    with pytest.raises(WeatherError, match=field):
        Weather(**{field: value})


def test_non_numeric_field_names_the_field() -> None:
    with pytest.raises(WeatherError, match="fog_density"):
        Weather(fog_density="thick")  # type: ignore[arg-type]


def test_range_boundaries_are_inclusive() -> None:
    w = Weather(fog_density=100.0, precipitation=0.0, sun_altitude_angle=-90.0)
    assert w.fog_density == 100.0


def test_from_dict_preset_plus_override() -> None:
    w = Weather.from_dict({"preset": "HardRainNoon", "fog_density": 40})
    ref = Weather.preset("HardRainNoon")
    assert w.fog_density == 40.0
    assert w.precipitation == ref.precipitation == 100.0
    assert w.cloudiness == ref.cloudiness
    # No preset: defaults (ClearNoon-like) plus the override.
    w2 = Weather.from_dict({"wetness": 30})
    assert w2.wetness == 30.0
    assert w2.cloudiness == Weather().cloudiness


def test_from_dict_override_is_validated() -> None:
    with pytest.raises(WeatherError, match="fog_density"):
        Weather.from_dict({"preset": "ClearNoon", "fog_density": 150})


def test_from_dict_unknown_field() -> None:
    with pytest.raises(WeatherError, match="fogginess") as exc:
        Weather.from_dict({"preset": "ClearNoon", "fogginess": 3})
    assert "fog_density" in str(exc.value)  # lists the valid fields


def test_from_dict_unknown_preset() -> None:
    with pytest.raises(WeatherError, match="Nope"):
        Weather.from_dict({"preset": "Nope"})


def test_to_dict_round_trip() -> None:
    w = Weather.preset("WetCloudySunset")
    assert Weather(**w.to_dict()) == w


def test_friction_ordering() -> None:
    dry = Weather.preset("ClearNoon").friction
    wet = Weather.preset("WetNoon").friction
    heavy = Weather.preset("HardRainNoon").friction
    assert dry == pytest.approx(DRY_FRICTION)
    assert dry > wet > heavy > 0.0
    assert heavy == pytest.approx(0.45, abs=0.05)


def test_visibility_shrinks_with_fog() -> None:
    vis = [Weather(fog_density=d, fog_distance=0.0).visibility_m for d in (0, 10, 30, 60, 100)]
    assert all(a > b for a, b in zip(vis, vis[1:], strict=False))
    assert vis[-1] == pytest.approx(30.0, rel=0.05)  # documented: density 100 ~ 30 m
    assert vis[0] > 1000.0


def test_fog_distance_adds_to_visibility() -> None:
    near = Weather(fog_density=50, fog_distance=0.0).visibility_m
    far = Weather(fog_density=50, fog_distance=20.0).visibility_m
    assert far == pytest.approx(near + 20.0)


def test_lerp_endpoints_and_midpoint() -> None:
    a, b = Weather.preset("ClearNoon"), Weather.preset("HardRainNight")
    assert a.lerp(b, 0.0) == a
    assert a.lerp(b, 1.0) == b
    # Clamped outside [0, 1].
    assert a.lerp(b, -3.0) == a
    assert a.lerp(b, 7.0) == b
    mid = a.lerp(b, 0.5)
    assert mid.precipitation == pytest.approx((a.precipitation + b.precipitation) / 2)
    assert mid.sun_altitude_angle == pytest.approx(
        (a.sun_altitude_angle + b.sun_altitude_angle) / 2
    )


def test_night_and_daylight() -> None:
    assert Weather.preset("ClearNight").is_night
    assert not Weather.preset("ClearNoon").is_night
    assert Weather.preset("ClearNoon").daylight > Weather.preset("ClearNight").daylight
