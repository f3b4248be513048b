"""The YAML scenario language: typed schema (pydantic v2, unknown keys rejected).

One file describes one edge-case scenario: map, route, weather (with keyframes along the
route), background traffic, typed `events` placed by route distance, and the evaluation
criteria. Any numeric or enum field may instead hold a distribution:
`{uniform: [a, b]}`, `{normal: {mean, std, min, max}}` or `{choice: [...]}`;
`scenarios.sampler` turns a file into concrete scenarios, deterministically by `seed`.

Event types are a registry (`EVENT_TYPES`): adding one is a class with a `type` literal
and a `compile` method in scenarios/events.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sim.weather import FIELD_RANGES, PRESET_NAMES


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------- distributions
Finite = Annotated[float, Field(allow_inf_nan=False)]


class Uniform(Strict):
    uniform: tuple[Finite, Finite]

    @field_validator("uniform")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"uniform bounds must be [low, high] with low <= high, got {list(v)}")
        return v


class NormalParams(Strict):
    mean: Finite
    std: Finite = Field(ge=0.0)
    min: Finite | None = None
    max: Finite | None = None


class Normal(Strict):
    normal: NormalParams


class Choice(Strict):
    choice: list[Any] = Field(min_length=1)


Distribution = Uniform | Normal | Choice
T = TypeVar("T")
# A field that is a value or a distribution of values.
Num = Finite | Distribution  # NaN and infinities are refused
NonNeg = Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | Distribution  # drawn values too
Int = int | Choice | Uniform
Side = Literal["left", "right"] | Choice


# ------------------------------------------------------------------------ map
class TownParams(Strict):
    """Procedural town of the embedded simulator (see sim.lite.town.TownSpec)."""

    road_type: Literal["urban", "highway"] | Choice = "urban"
    blocks_x: Int = 3
    blocks_y: Int = 3
    block_m: Num = 110.0
    lanes_per_direction: Int = 2
    lane_width_m: Num = 3.5
    curvature: Num = 0.3
    signalized_fraction: Num = 0.7
    t_junction_fraction: Num = 0.25


class CarlaMap(Strict):
    """Where the scenario runs on a real CARLA server (used by the XML export)."""

    town: str = "Town12"
    waypoints: list[tuple[float, float, float]] = Field(
        default_factory=list, description="[m] x, y, z world"
    )


class MapSpec(Strict):
    town: TownParams = Field(default_factory=TownParams)
    carla: CarlaMap | None = None


# ---------------------------------------------------------------------- route
class RouteDef(Strict):
    """Exactly one of: `manoeuvres` (turns at successive junctions), `start`+`end`,
    `waypoints`; or none for a seeded route of `length_m`."""

    manoeuvres: list[Literal["straight", "left", "right"] | Choice] = Field(default_factory=list)
    length_m: Num = 400.0
    start: tuple[float, float] | None = None
    end: tuple[float, float] | None = None
    waypoints: list[tuple[float, float]] = Field(default_factory=list)
    start_lane: Int | None = Field(
        default=None, description="lane index, 0 = next to the centre line"
    )

    @model_validator(mode="after")
    def _one_way(self) -> RouteDef:
        ways = [
            bool(self.manoeuvres),
            self.start is not None or self.end is not None,
            bool(self.waypoints),
        ]
        if sum(ways) > 1:
            raise ValueError("give only one of manoeuvres, start/end, waypoints")
        if (self.start is None) != (self.end is None):
            raise ValueError("start and end go together")
        return self


# -------------------------------------------------------------------- weather
class WeatherFields(Strict):
    """A CARLA preset and/or CARLA WeatherParameters fields (fields override the preset)."""

    preset: str | Choice | None = None
    cloudiness: Num | None = None
    precipitation: Num | None = None
    precipitation_deposits: Num | None = None
    wind_intensity: Num | None = None
    sun_azimuth_angle: Num | None = None
    sun_altitude_angle: Num | None = None
    fog_density: Num | None = None
    fog_distance: Num | None = None
    fog_falloff: Num | None = None
    wetness: Num | None = None
    scattering_intensity: Num | None = None
    mie_scattering_scale: Num | None = None
    rayleigh_scattering_scale: Num | None = None
    dust_storm: Num | None = None

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: Any) -> Any:
        names = v.choice if isinstance(v, Choice) else [v] if v is not None else []
        for name in names:
            if name not in PRESET_NAMES:
                raise ValueError(
                    f"unknown weather preset {name!r}; valid presets: {', '.join(PRESET_NAMES)}"
                )
        return v

    @field_validator(*FIELD_RANGES, mode="after")
    @classmethod
    def _in_range(cls, value: Any, info: Any) -> Any:
        low, high = FIELD_RANGES[info.field_name]
        if isinstance(value, int | float) and not low <= value <= high:
            raise ValueError(f"{info.field_name} = {value} is out of range [{low:g}, {high:g}]")
        return value

    def values(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude_none=True).items()}


class WeatherKeyframeDef(WeatherFields):
    route_percentage: Num = Field(description="[%] where along the route this weather holds")


class WeatherDef(WeatherFields):
    keyframes: list[WeatherKeyframeDef] = Field(default_factory=list)


# -------------------------------------------------------------------- traffic
class TrafficDef(Strict):
    vehicles: Int = 20
    pedestrians: Int = 10
    speed_limit_kmh: Num = 50.0


# --------------------------------------------------------------------- events
class EventBase(Strict):
    at_m: Num = Field(description="[m] route distance of the event")
    name: str | None = None


class ConstructionZone(EventBase):
    """Cones taper the lane closed, a warning sign before, barriers and debris inside.
    `two_way`: the road has one lane each way, so passing means the opposite lane."""

    type: Literal["construction_zone"]
    side: Side = "right"
    length_m: Num = 30.0
    taper_m: Num = 12.0
    two_way: bool | Choice = False
    speed_cap_kmh: Num = 30.0


class Accident(EventBase):
    """Crashed vehicles blocking the ego lane, a warning sign behind them."""

    type: Literal["accident"]
    side: Side = "right"
    vehicles: Int = 2
    two_way: bool | Choice = False


class ParkedObstacle(EventBase):
    """A vehicle parked partly in the ego lane."""

    type: Literal["parked_obstacle"]
    side: Side = "right"
    intrusion_m: Num = 1.2
    two_way: bool | Choice = False


class PedestrianCrossing(EventBase):
    type: Literal["pedestrian_crossing"]
    side: Side = "right"
    mode: Literal["crosswalk", "jaywalk"] | Choice = "jaywalk"
    occluded: bool | Choice = False
    speed_mps: NonNeg = 1.4
    trigger_distance_m: NonNeg = 25.0


class CutIn(EventBase):
    """A vehicle in the lane on `side` waits (or paces the ego 8 m ahead) at `at_m`, then
    merges into the ego's lane when the ego is `trigger_distance_m` short of `at_m`."""

    type: Literal["cut_in"]
    side: Side = "left"
    speed_mps: NonNeg = 9.0
    trigger_distance_m: NonNeg = 25.0


class LeadVehicleHardBrake(EventBase):
    """A lead vehicle drives `trigger_distance_m` ahead of the ego (pacing it, up to
    `speed_mps`) and brakes at `decel_mps2` when the ego reaches `at_m`; it stands 2 s,
    then drives on (the Leaderboard's HardBreakRoute)."""

    type: Literal["lead_vehicle_hard_brake"]
    speed_mps: NonNeg = 10.0
    decel_mps2: NonNeg = 7.0
    trigger_distance_m: NonNeg = 25.0


class RedLightRunner(EventBase):
    """A vehicle on a crossing approach of the first signalized junction the route enters
    after `at_m` drives through its red light, started so that it reaches the junction's
    middle together with the ego (from the ego's current speed)."""

    type: Literal["red_light_runner"]
    speed_mps: NonNeg = 10.0


class StalledVehicle(EventBase):
    type: Literal["stalled_vehicle"]


Event = Annotated[
    ConstructionZone
    | Accident
    | ParkedObstacle
    | PedestrianCrossing
    | CutIn
    | LeadVehicleHardBrake
    | RedLightRunner
    | StalledVehicle,
    Field(discriminator="type"),
]
EVENT_TYPES: dict[str, type[EventBase]] = {
    cls.model_fields["type"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in (
        ConstructionZone,
        Accident,
        ParkedObstacle,
        PedestrianCrossing,
        CutIn,
        LeadVehicleHardBrake,
        RedLightRunner,
        StalledVehicle,
    )
}


# ------------------------------------------------------------------- criteria
class Criteria(Strict):
    timeout_s: Num | None = Field(default=None, description="None: the Leaderboard's route timeout")
    min_route_completion: Num = Field(default=100.0, description="[%] for success")
    max_infractions: Int = Field(default=0, description="infraction events allowed for success")


# ------------------------------------------------------------------- scenario
class Scenario(Strict):
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.#-]+$",
        description="letters, digits, _ . - (# marks a sampled variation)",
    )
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    extends: str | None = None
    seed: int = Field(default=0, ge=0)
    variations: int = Field(default=1, ge=1, le=1000)
    map: MapSpec = Field(default_factory=MapSpec)
    route: RouteDef = Field(default_factory=RouteDef)
    weather: WeatherDef = Field(default_factory=lambda: WeatherDef(preset="ClearNoon"))
    traffic: TrafficDef = Field(default_factory=TrafficDef)
    events: list[Event] = Field(default_factory=list)
    criteria: Criteria = Field(default_factory=Criteria)


class SuiteEntry(Strict):
    file: str
    repetitions: int = Field(default=1, ge=1, le=100)
    variations: int | None = Field(
        default=None, ge=1, le=1000, description="run only the first N variations of the file"
    )


class Suite(Strict):
    """A suite file: scenarios (paths relative to the suite file) with repetitions."""

    suite: str
    description: str = ""
    scenarios: list[SuiteEntry] = Field(min_length=1)
