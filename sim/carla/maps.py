"""CARLA maps: which town a WorldSpec runs on, the map's geo reference, and map queries
turned into the backend-neutral types the route criteria and the rule set use.

Town mapping (`carla_town_for`). A WorldSpec describes a procedural town (`TownSpec`);
on a CARLA server the closest stock map is used instead:

| TownSpec                           | CARLA map | why                                      |
|------------------------------------|-----------|------------------------------------------|
| road_type "highway"                | Town04    | the multi-lane highway loop              |
| road_type "urban", >= 2 lanes/dir. | Town05    | square grid, multi-lane roads, signals   |
| road_type "urban", 1 lane/dir.     | Town10HD  | dense downtown, mostly one lane each way |

`CarlaSimulator(town=...)` overrides the mapping with any map the server has.

Conventions followed: the geo reference is read from the OpenDRIVE header like the
Leaderboard's `route_manipulation._get_latlon_ref` (default lat 42.0, lon 2.0); "outside
the driving lanes" is scenario_runner's `OutsideRouteLanesTest._is_outside_driving_lanes`
(farther than half a lane + 1.3 m from the nearest driving or parking lane centre).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from sim.criteria import LaneQuery
from sim.geometry import GeoReference
from sim.lite.town import TownSpec

HIGHWAY_TOWN = "Town04"
URBAN_MULTILANE_TOWN = "Town05"
URBAN_SINGLE_LANE_TOWN = "Town10HD"
DEFAULT_GEO_REFERENCE = GeoReference(lat_ref=42.0, lon_ref=2.0)  # the Leaderboard's default
ALLOWED_OUT_DISTANCE_M = 1.3  # [m] beyond half a lane width (scenario_runner's value)


def carla_town_for(town: TownSpec) -> str:
    """The stock CARLA map standing in for a procedural town (table in the module doc)."""
    if town.road_type == "highway":
        return HIGHWAY_TOWN
    return URBAN_MULTILANE_TOWN if town.lanes_per_direction >= 2 else URBAN_SINGLE_LANE_TOWN


def map_base_name(map_name: str) -> str:
    """`/Game/Carla/Maps/Town10HD_Opt` -> `Town10HD` (the `_Opt` layered variant is the
    same road network)."""
    base = map_name.replace("\\", "/").rsplit("/", 1)[-1]
    return base[: -len("_Opt")] if base.endswith("_Opt") else base


def same_town(map_name: str, town: str) -> bool:
    """Whether the loaded map (`carla.Map.name`) already is `town`."""
    return map_base_name(map_name) == map_base_name(town)


def geo_reference_from_opendrive(xodr: str) -> GeoReference:
    """The map's `+lat_0` / `+lon_0` from the OpenDRIVE header's `geoReference`."""
    lat, lon = DEFAULT_GEO_REFERENCE.lat_ref, DEFAULT_GEO_REFERENCE.lon_ref
    try:
        root = ET.fromstring(xodr)
    except ET.ParseError:
        return DEFAULT_GEO_REFERENCE
    for node in root.iter("geoReference"):
        text = node.text or ""
        lat_match = re.search(r"\+lat_0=([-+0-9.eE]+)", text)
        lon_match = re.search(r"\+lon_0=([-+0-9.eE]+)", text)
        if lat_match:
            lat = float(lat_match.group(1))
        if lon_match:
            lon = float(lon_match.group(1))
    return GeoReference(lat_ref=lat, lon_ref=lon)


def lane_query(
    driving_distance_m: float,
    driving_width_m: float,
    parking_distance_m: float | None,
    parking_width_m: float | None,
    in_junction: bool,
    lane_yaw_deg: float,
) -> LaneQuery:
    """Where the ego is, from its distances to the nearest driving and parking lane
    centres (`Map.get_waypoint(..., project_to_road=True, lane_type=...)`).

    The nearer of the two lanes decides; the ego is on a lane while within half its width
    plus ALLOWED_OUT_DISTANCE_M. The lane heading is the driving lane's (CARLA degrees ->
    radians), for the criteria's wrong-direction check.
    """
    distance, width = driving_distance_m, driving_width_m
    if parking_distance_m is not None and parking_width_m is not None:
        if driving_distance_m >= parking_distance_m:
            distance, width = parking_distance_m, parking_width_m
    return LaneQuery(
        on_driving_lane=bool(distance <= width / 2.0 + ALLOWED_OUT_DISTANCE_M),
        in_junction=bool(in_junction),
        lane_heading=math.radians(lane_yaw_deg),
    )


def lane_query_at(world_map: Any, location: Any) -> LaneQuery:
    """`lane_query` for a `carla.Location` on a `carla.Map`."""
    from sim.carla_compat import require_carla

    carla = require_carla()
    driving = world_map.get_waypoint(
        location, project_to_road=True, lane_type=carla.LaneType.Driving
    )
    parking = world_map.get_waypoint(
        location, project_to_road=True, lane_type=carla.LaneType.Parking
    )
    return lane_query(
        location.distance(driving.transform.location),
        driving.lane_width,
        None if parking is None else location.distance(parking.transform.location),
        None if parking is None else parking.lane_width,
        driving.is_junction,
        driving.transform.rotation.yaw,
    )


def side_lanes(
    own_lane_id: int, left_ids: list[int], right_ids: list[int]
) -> tuple[int, int, bool]:
    """(same-direction lanes to the left, ... to the right, oncoming lane directly left of
    the leftmost same-direction lane) from OpenDRIVE lane ids.

    `left_ids` / `right_ids` are the driving-lane ids met walking `get_left_lane()` /
    `get_right_lane()` outward from the lane `own_lane_id` (stop at the first non-driving
    lane). OpenDRIVE lane ids carry the direction in their sign; crossing the centre line
    flips it.
    """
    left_same = 0
    left_opposite = False
    for lane_id in left_ids:
        if lane_id * own_lane_id > 0:
            left_same += 1
        else:
            left_opposite = True
            break
    right_same = 0
    for lane_id in right_ids:
        if lane_id * own_lane_id > 0:
            right_same += 1
        else:
            break
    return left_same, right_same, left_opposite


def driving_neighbours(waypoint: Any, side: str, max_lanes: int = 8) -> list[int]:
    """Lane ids of the driving lanes beside `waypoint` on `side` ('left' / 'right'),
    outward, stopping at the first lane that is not a driving lane."""
    from sim.carla_compat import require_carla

    carla = require_carla()
    ids: list[int] = []
    wp = waypoint
    for _ in range(max_lanes):
        wp = wp.get_left_lane() if side == "left" else wp.get_right_lane()
        if wp is None or wp.lane_type != carla.LaneType.Driving:
            break
        ids.append(int(wp.lane_id))
        if wp.lane_id * waypoint.lane_id < 0:
            break  # crossed the centre line: the oncoming side is all we need to know
    return ids


def stop_line(
    stop_points: list[tuple[float, float, float, float]],
) -> tuple[tuple[tuple[float, float], tuple[float, float]], float]:
    """One stop-line segment across every lane a traffic light controls, and the driving
    heading [rad] of those lanes.

    `stop_points`: (x [m], y [m], yaw [deg], lane width [m]) of each
    `carla.TrafficLight.get_stop_waypoints()` waypoint (lane centre at the stop line).
    The segment spans the outer lane edges, measured along the right vector of the first
    lane (CARLA's frame: right of heading (cos yaw, sin yaw) is (-sin yaw, cos yaw)).
    """
    if not stop_points:
        raise ValueError("stop_line needs at least one stop waypoint")
    yaw0 = math.radians(stop_points[0][2])
    right = np.array([-math.sin(yaw0), math.cos(yaw0)])
    base = np.array(stop_points[0][:2])
    offsets = []
    for x, y, _, width in stop_points:
        along = float((np.array([x, y]) - base) @ right)
        offsets += [along - width / 2.0, along + width / 2.0]
    a, b = base + min(offsets) * right, base + max(offsets) * right
    return ((float(a[0]), float(a[1])), (float(b[0]), float(b[1]))), yaw0


def crosswalk_centres(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Centres of the crosswalk polygons of `carla.Map.get_crosswalks()`: a flat list of
    vertices in which each polygon ends by repeating its first vertex."""
    centres: list[tuple[float, float]] = []
    start = 0
    for i in range(1, len(points)):
        if i > start and math.dist(points[i], points[start]) < 1e-3:
            poly = np.array(points[start:i], float)
            centres.append((float(poly[:, 0].mean()), float(poly[:, 1].mean())))
            start = i + 1
    return centres
