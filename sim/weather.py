"""Weather with CARLA `WeatherParameters` field names, ranges and presets.

The preset table is CARLA 0.9.16's (read from the `carla` wheel; `tests/sim/test_weather.py`
checks it against `carla.WeatherParameters` when the package is importable). `Default`
(all -1, "keep the map's weather") is not a preset here: a world always has a weather.

Besides the raw fields, this module derives the two physical quantities that the rest of
the project uses, so there is one definition of each:
- `friction`: tyre-road friction coefficient (dry > wet > heavy rain);
- `visibility_m`: meteorological visibility from fog (and dust storm).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

GRAVITY_MPS2 = 9.81  # [m/s^2]
DRY_FRICTION = 0.9  # tyre-asphalt peak friction coefficient, dry [-]

# Valid range of each field (inclusive). sun_azimuth_angle accepts CARLA's -1 ("unset").
FIELD_RANGES: dict[str, tuple[float, float]] = {
    "cloudiness": (0.0, 100.0),
    "precipitation": (0.0, 100.0),
    "precipitation_deposits": (0.0, 100.0),
    "wind_intensity": (0.0, 100.0),
    "sun_azimuth_angle": (-360.0, 360.0),  # [deg]
    "sun_altitude_angle": (-90.0, 90.0),  # [deg]
    "fog_density": (0.0, 100.0),
    "fog_distance": (0.0, 10_000.0),  # [m] where fog starts
    "fog_falloff": (0.0, 1_000.0),
    "wetness": (0.0, 100.0),
    "scattering_intensity": (0.0, 100.0),
    "mie_scattering_scale": (0.0, 100.0),
    "rayleigh_scattering_scale": (0.0, 100.0),
    "dust_storm": (0.0, 100.0),
}

# The fields a preset sets (and that change how a scene looks); the rest keep defaults.
PRESET_FIELDS = (
    "cloudiness",
    "precipitation",
    "precipitation_deposits",
    "wind_intensity",
    "sun_azimuth_angle",
    "sun_altitude_angle",
    "fog_density",
    "fog_distance",
    "fog_falloff",
    "wetness",
    "dust_storm",
)
# CARLA 0.9.16 presets, fields in PRESET_FIELDS order. Scattering fields are CARLA's
# defaults (1.0, 0.03, 0.0331) in every preset.
_PRESET_VALUES: dict[str, tuple[float, ...]] = {
    "ClearNoon": (5.0, 0.0, 0.0, 10.0, -1.0, 45.0, 2.0, 0.75, 0.1, 0.0, 0.0),
    "CloudyNoon": (60.0, 0.0, 0.0, 10.0, -1.0, 45.0, 3.0, 0.75, 0.1, 0.0, 0.0),
    "WetNoon": (5.0, 0.0, 50.0, 10.0, -1.0, 45.0, 3.0, 0.75, 0.1, 0.0, 0.0),
    "WetCloudyNoon": (60.0, 0.0, 50.0, 10.0, -1.0, 45.0, 3.0, 0.75, 0.1, 0.0, 0.0),
    "SoftRainNoon": (20.0, 30.0, 50.0, 30.0, -1.0, 45.0, 3.0, 0.75, 0.1, 0.0, 0.0),
    "MidRainyNoon": (60.0, 60.0, 60.0, 60.0, -1.0, 45.0, 3.0, 0.75, 0.1, 0.0, 0.0),
    "HardRainNoon": (100.0, 100.0, 90.0, 100.0, -1.0, 45.0, 7.0, 0.75, 0.1, 0.0, 0.0),
    "ClearSunset": (5.0, 0.0, 0.0, 10.0, -1.0, 15.0, 2.0, 0.75, 0.1, 0.0, 0.0),
    "CloudySunset": (60.0, 0.0, 0.0, 10.0, -1.0, 15.0, 3.0, 0.75, 0.1, 0.0, 0.0),
    "WetSunset": (5.0, 0.0, 50.0, 10.0, -1.0, 15.0, 2.0, 0.75, 0.1, 0.0, 0.0),
    "WetCloudySunset": (60.0, 0.0, 50.0, 10.0, -1.0, 15.0, 2.0, 0.75, 0.1, 0.0, 0.0),
    "SoftRainSunset": (20.0, 30.0, 50.0, 30.0, -1.0, 15.0, 2.0, 0.75, 0.1, 0.0, 0.0),
    "MidRainSunset": (60.0, 60.0, 60.0, 60.0, -1.0, 15.0, 3.0, 0.75, 0.1, 0.0, 0.0),
    "HardRainSunset": (100.0, 100.0, 90.0, 100.0, -1.0, 15.0, 7.0, 0.75, 0.1, 0.0, 0.0),
    "ClearNight": (5.0, 0.0, 0.0, 10.0, -1.0, -90.0, 60.0, 75.0, 1.0, 0.0, 0.0),
    "CloudyNight": (60.0, 0.0, 0.0, 10.0, -1.0, -90.0, 60.0, 0.75, 0.1, 0.0, 0.0),
    "WetNight": (5.0, 0.0, 50.0, 10.0, -1.0, -90.0, 60.0, 75.0, 1.0, 60.0, 0.0),
    "WetCloudyNight": (60.0, 0.0, 50.0, 10.0, -1.0, -90.0, 60.0, 0.75, 0.1, 60.0, 0.0),
    "SoftRainNight": (60.0, 30.0, 50.0, 30.0, -1.0, -90.0, 60.0, 0.75, 0.1, 60.0, 0.0),
    "MidRainyNight": (80.0, 60.0, 60.0, 60.0, -1.0, -90.0, 60.0, 0.75, 0.1, 80.0, 0.0),
    "HardRainNight": (100.0, 100.0, 90.0, 100.0, -1.0, -90.0, 100.0, 0.75, 0.1, 100.0, 0.0),
    "DustStorm": (100.0, 0.0, 0.0, 100.0, -1.0, 45.0, 2.0, 0.75, 0.1, 0.0, 100.0),
}


class WeatherError(ValueError):
    """A weather preset or field is unknown or out of range."""


@dataclass(frozen=True)
class Weather:
    """CARLA `WeatherParameters`; every field validated against its range on construction."""

    cloudiness: float = 5.0
    precipitation: float = 0.0
    precipitation_deposits: float = 0.0
    wind_intensity: float = 10.0
    sun_azimuth_angle: float = -1.0
    sun_altitude_angle: float = 45.0
    fog_density: float = 2.0
    fog_distance: float = 0.75
    fog_falloff: float = 0.1
    wetness: float = 0.0
    scattering_intensity: float = 1.0
    mie_scattering_scale: float = 0.03
    rayleigh_scattering_scale: float = 0.0331
    dust_storm: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise WeatherError(f"weather.{f.name} must be a number, got {value!r}") from None
            low, high = FIELD_RANGES[f.name]
            if not math.isfinite(value) or not low <= value <= high:
                raise WeatherError(
                    f"weather.{f.name} = {value} is out of range [{low:g}, {high:g}]"
                )
            object.__setattr__(self, f.name, value)

    # --- construction -------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> Weather:
        """A CARLA preset by name (`ClearNoon` ... `HardRainNight`, `DustStorm`)."""
        values = _PRESET_VALUES.get(name)
        if values is None:
            raise WeatherError(
                f"unknown weather preset {name!r}; valid presets: {', '.join(PRESET_NAMES)}"
            )
        return cls(**dict(zip(PRESET_FIELDS, values, strict=True)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Weather:
        """`{"preset": name, <field>: value, ...}`: the preset, then field overrides."""
        data = dict(data)
        preset = data.pop("preset", None)
        unknown = sorted(set(data) - set(FIELD_RANGES))
        if unknown:
            raise WeatherError(
                f"unknown weather field(s) {unknown}; valid fields: {', '.join(FIELD_RANGES)}"
            )
        base = cls.preset(preset) if preset is not None else cls()
        return replace(base, **data)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def lerp(self, other: Weather, t: float) -> Weather:
        """Linear interpolation, as the Leaderboard does between route weather keyframes."""
        t = min(max(float(t), 0.0), 1.0)
        a, b = self.to_dict(), other.to_dict()
        return Weather(**{k: a[k] + (b[k] - a[k]) * t for k in a})

    # --- derived physics ----------------------------------------------------------
    @property
    def road_wetness(self) -> float:
        """How wet the road surface is, 0..1 (rain, standing water or wetness)."""
        return max(self.precipitation, self.precipitation_deposits, self.wetness) / 100.0

    @property
    def friction(self) -> float:
        """Tyre-road friction coefficient [-]: 0.9 dry, ~0.6 wet, ~0.45 in heavy rain."""
        return DRY_FRICTION * (1.0 - 0.35 * self.road_wetness - 0.15 * self.precipitation / 100.0)

    @property
    def fog_extinction_per_m(self) -> float:
        """Beer-Lambert extinction coefficient [1/m]; density 100 gives ~30 m visibility."""
        fog = 0.1 * (self.fog_density / 100.0) ** 1.5
        dust = 0.06 * (self.dust_storm / 100.0) ** 1.5
        rain = 0.004 * self.precipitation / 100.0
        return fog + dust + rain + 1e-5

    @property
    def visibility_m(self) -> float:
        """Distance at which contrast drops to 5 % (Koschmieder), counting `fog_distance`."""
        return self.fog_distance + 3.0 / self.fog_extinction_per_m

    @property
    def is_night(self) -> bool:
        return self.sun_altitude_angle < 0.0

    @property
    def daylight(self) -> float:
        """Ambient light level 0..1 from the sun's altitude and the clouds."""
        sun = min(max((self.sun_altitude_angle + 6.0) / 36.0, 0.0), 1.0)
        return 0.06 + 0.94 * sun * (1.0 - 0.45 * self.cloudiness / 100.0)


PRESET_NAMES: tuple[str, ...] = tuple(_PRESET_VALUES)
