"""Route planning on the lane graph: manoeuvres, start/end routes, density, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from sim.control import RoadOption
from sim.lite.routing import RoutePlanner, RoutePlanningError
from sim.lite.town import Town, TownSpec
from sim.lite.world import GEO_REFERENCE, build_town
from sim.route import Route
from sim.spec import RouteSpec, WorldSpecError

TOWN = TownSpec(blocks_x=2, blocks_y=2)


@pytest.fixture(scope="module")
def town() -> Town:
    return build_town(TOWN, 0)


@pytest.fixture(scope="module")
def planner(town: Town) -> RoutePlanner:
    return RoutePlanner(town, GEO_REFERENCE)


def _plan(planner: RoutePlanner, spec: RouteSpec, seed: int = 0) -> Route:
    return planner.plan(spec, np.random.default_rng([seed, 2]))


def _runs(options: np.ndarray) -> list[int]:
    """The sequence of turn options (one entry per junction crossing)."""
    out: list[int] = []
    for o in options:
        o = int(o)
        if o in (RoadOption.LEFT, RoadOption.RIGHT, RoadOption.STRAIGHT) and (
            not out or out[-1] != o
        ):
            out.append(o)
        elif o == RoadOption.LANEFOLLOW and out and out[-1] != -99:
            out.append(-99)
    return [o for o in out if o != -99]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_manoeuvres_left_then_right(planner: RoutePlanner, seed: int) -> None:
    route = _plan(planner, RouteSpec(manoeuvres=("left", "right"), length_m=100.0), seed)
    opts = set(route.options.tolist())
    assert int(RoadOption.LEFT) in opts and int(RoadOption.RIGHT) in opts
    turns = _runs(route.options)
    assert turns[:2] == [int(RoadOption.LEFT), int(RoadOption.RIGHT)]


def test_left_turn_route_heading_decreases(planner: RoutePlanner) -> None:
    route = _plan(planner, RouteSpec(manoeuvres=("left",), length_m=60.0), 3)
    idx = np.nonzero(route.options == int(RoadOption.LEFT))[0]
    yaw = np.unwrap(route.yaw)
    assert yaw[idx[-1]] - yaw[idx[0]] < -1.0


def test_start_end_route_reaches_end(planner: RoutePlanner, town: Town) -> None:
    lanes = [lane for lane in town.lanes if lane.road_id >= 0 and lane.length > 40]
    a, b = lanes[0], lanes[-1]
    start, end = a.point_at(5.0), b.point_at(b.length / 2)
    route = _plan(planner, RouteSpec(start=tuple(start), end=tuple(end)))
    assert np.linalg.norm(route.points[0] - start) < 1.0
    assert np.linalg.norm(route.points[-1] - end) < 2.0
    assert route.length_m > float(np.linalg.norm(end - start)) - 1.0


def test_waypoints_route_passes_through(planner: RoutePlanner, town: Town) -> None:
    lanes = [lane for lane in town.lanes if lane.road_id >= 0 and lane.length > 40]
    wps = [
        tuple(lanes[0].point_at(3.0)),
        tuple(lanes[5].point_at(20.0)),
        tuple(lanes[9].point_at(30.0)),
    ]
    route = _plan(planner, RouteSpec(waypoints=tuple(wps)))
    for wp in wps:
        assert np.linalg.norm(route.points - np.asarray(wp), axis=1).min() < 2.0


@pytest.mark.parametrize(
    "spec", [RouteSpec(length_m=300.0), RouteSpec(manoeuvres=("right", "left"))]
)
def test_dense_spacing_about_1m(planner: RoutePlanner, spec: RouteSpec) -> None:
    route = _plan(planner, spec, 4)
    seg = np.linalg.norm(np.diff(route.points, axis=0), axis=1)
    assert seg.min() > 0.05
    assert seg.max() < 1.6
    assert float(np.median(seg)) == pytest.approx(1.0, abs=0.1)
    assert route.length_m >= 0.0 and np.all(np.diff(route.s) > 0)


def test_seeded_route_length_and_shapes(planner: RoutePlanner) -> None:
    route = _plan(planner, RouteSpec(length_m=300.0), 7)
    assert route.length_m >= 300.0 * 0.8
    n = len(route.points)
    assert route.yaw.shape == route.options.shape == route.lane_ids.shape == (n,)
    assert set(route.options.tolist()) <= {int(o) for o in RoadOption}
    # Route heading follows the points.
    d = route.points[2] - route.points[0]
    assert np.cos(np.arctan2(d[1], d[0]) - route.yaw[1]) > 0.99


def test_routes_are_deterministic(planner: RoutePlanner) -> None:
    spec = RouteSpec(length_m=250.0)
    a, b = _plan(planner, spec, 11), _plan(planner, spec, 11)
    assert np.array_equal(a.points, b.points) and np.array_equal(a.options, b.options)
    others = [_plan(planner, spec, s) for s in (12, 13, 14)]
    assert any(
        len(o.points) != len(a.points) or not np.array_equal(o.points, a.points) for o in others
    )


def test_lane_change_route_marks_change_points() -> None:
    """A right turn from the inner lane needs a lane change first: CHANGELANERIGHT points."""
    town = build_town(TOWN, 0)
    planner = RoutePlanner(town, GEO_REFERENCE)
    found = False
    for seed in range(10):
        route = planner.plan(
            RouteSpec(manoeuvres=("right",), length_m=60.0, start_lane_index=0),
            np.random.default_rng(seed),
        )
        if int(RoadOption.CHANGELANERIGHT) in route.options:
            found = True
            i = int(np.nonzero(route.options == int(RoadOption.CHANGELANERIGHT))[0][0])
            assert route.lane_ids[i + 3] == -1  # blending between lanes
            break
    assert found


def test_impossible_route_raises() -> None:
    highway = build_town(TownSpec.for_highway(blocks_y=2), 0)  # no junctions to turn at
    planner = RoutePlanner(highway, GEO_REFERENCE)
    with pytest.raises(RoutePlanningError, match="left"):
        _plan(planner, RouteSpec(length_m=100.0, manoeuvres=("left",)))
    with pytest.raises(WorldSpecError):
        RouteSpec(manoeuvres=("u-turn",))  # type: ignore[arg-type]
