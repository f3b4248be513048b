"""Procedural towns: junction degrees, lights, lane connectivity, turn options, labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.control import RoadOption
from sim.lite.town import Town, TownSpec, TownSpecError
from sim.lite.world import build_town

URBAN = TownSpec(blocks_x=2, blocks_y=2, t_junction_fraction=0.25, signalized_fraction=0.7)
URBAN_FULL_GRID = TownSpec(blocks_x=2, blocks_y=2, t_junction_fraction=0.0)


@pytest.fixture(scope="module")
def town() -> Town:
    # 3x3 blocks so the grid keeps both T (degree 3) and X (degree 4) junctions.
    return build_town(TownSpec(blocks_x=3, blocks_y=3), 0)


@pytest.fixture(scope="module")
def highway() -> Town:
    return build_town(TownSpec.for_highway(blocks_y=2), 0)


def test_urban_has_t_and_x_junctions(town: Town) -> None:
    degrees = {n.degree for n in town.nodes if n.is_junction}
    assert degrees == {3, 4}
    # Corners of the grid are bends (degree 2), never dead ends.
    assert min(n.degree for n in town.nodes) == 2


def test_full_grid_centre_is_degree_4() -> None:
    t = build_town(URBAN_FULL_GRID, 1)
    centre = min(t.nodes, key=lambda n: float(np.linalg.norm(n.position - [110.0, 110.0])))
    assert centre.degree == 4


def test_lights_only_at_signalized_junctions(town: Town) -> None:
    assert town.lights, "seed 0 should have signalized junctions"
    by_node = {n.id: n for n in town.nodes}
    lit_nodes = {lt.node_id for lt in town.lights}
    for nid in lit_nodes:
        assert by_node[nid].signalized and by_node[nid].is_junction
    for node in town.nodes:
        if node.signalized:
            # One light per approach.
            assert sum(lt.node_id == node.id for lt in town.lights) == node.degree
        else:
            assert node.id not in lit_nodes
    # Every lane a light controls ends at that light's junction and points to it.
    for light in town.lights:
        assert light.cycle_count == by_node[light.node_id].degree
        for lane_id in light.lane_ids:
            lane = town.lanes[lane_id]
            assert lane.light_id == light.id
            assert lane.road_id == light.road_id
            assert math.cos(lane.heading[-1] - light.heading) > 0.99


def test_no_lights_without_signalized_fraction() -> None:
    t = Town(TownSpec(blocks_x=1, blocks_y=2, signalized_fraction=0.0), 3)
    assert t.lights == []
    assert not any(n.signalized for n in t.nodes)


def test_every_lane_connected(town: Town) -> None:
    for lane in town.lanes:
        assert lane.successors, f"lane {lane.id} has no successor"
        assert lane.predecessors, f"lane {lane.id} has no predecessor"
        for succ in lane.successors:
            assert lane.id in town.lanes[succ].predecessors
            # Continuity: the successor starts where this lane ends.
            assert np.linalg.norm(town.lanes[succ].points[0] - lane.points[-1]) < 0.6


def test_lanes_per_direction_and_neighbours(town: Town) -> None:
    for road in town.roads:
        assert len(road.lanes_ab) == len(road.lanes_ba) == 2
        inner, outer = (town.lanes[i] for i in road.lanes_ab)
        assert inner.left_id == -1 and inner.right_id == outer.id and outer.left_id == inner.id
        # Right-hand traffic: the outer lane lies to the right of the inner one.
        h = inner.heading[len(inner.points) // 2]
        right = np.array([-math.sin(h), math.cos(h)])
        mid_in = inner.points[len(inner.points) // 2]
        mid_out = outer.point_at(inner.s[len(inner.points) // 2])
        assert float((mid_out - mid_in) @ right) == pytest.approx(town.spec.lane_width_m, abs=0.3)
        # Lanes ~1 m apart along the lane.
        assert np.diff(inner.s).max() < 1.05


def test_turn_connectors_carry_carla_road_options(town: Town) -> None:
    seen = set()
    for lane in town.lanes:
        if not lane.is_junction:
            continue
        dyaw = float(np.unwrap(lane.heading)[-1] - np.unwrap(lane.heading)[0])
        seen.add(lane.turn)
        if lane.turn == RoadOption.LEFT:
            # CARLA's yaw grows clockwise, so a left turn decreases the heading.
            assert dyaw == pytest.approx(-math.pi / 2, abs=0.6)
            assert town.lanes[lane.predecessors[0]].index == 0  # from the innermost lane
        elif lane.turn == RoadOption.RIGHT:
            assert dyaw == pytest.approx(math.pi / 2, abs=0.6)
            assert town.lanes[lane.predecessors[0]].index == town.spec.lanes_per_direction - 1
        else:
            assert lane.turn == RoadOption.STRAIGHT
            assert abs(dyaw) < math.radians(35)
    assert {RoadOption.LEFT, RoadOption.RIGHT, RoadOption.STRAIGHT} <= seen
    # Bends are lane-follow connectors, not junctions.
    bends = [lane for lane in town.lanes if lane.node_id >= 0 and not lane.is_junction]
    assert bends and all(b.turn == RoadOption.LANEFOLLOW for b in bends)


def test_left_turn_geometry_goes_left(town: Town) -> None:
    """A LEFT connector ends on the driver's left (ego-frame y > 0)."""
    from sim.geometry import world_to_ego

    for lane in town.lanes:
        if lane.turn in (RoadOption.LEFT, RoadOption.RIGHT) and lane.is_junction:
            end = world_to_ego(lane.points[-1:], lane.points[0], float(lane.heading[0]))[0]
            if lane.turn == RoadOption.LEFT:
                assert end[1] > 3.0
            else:
                assert end[1] < -3.0


def test_highway(highway: Town) -> None:
    assert highway.lights == []
    assert not any(n.is_junction for n in highway.nodes)
    assert not any(n.signalized for n in highway.nodes)
    for road in highway.roads:
        assert len(road.lanes_ab) == 3 and len(road.lanes_ba) == 3
    assert highway.lanes[0].speed_limit_mps == pytest.approx(100 / 3.6)
    assert highway.crosswalks == []


def test_label_at(town: Town) -> None:
    for lane in town.lanes:
        if lane.road_id < 0:
            continue
        mid = lane.points[len(lane.points) // 2]
        assert town.label_at(mid) == lane.id
    for node in town.nodes:
        if node.is_junction:
            assert town.label_at(node.position) == -2
    x0, y0, x1, y1 = town.bounds
    assert town.label_at(np.array([x0 + 1.0, y0 + 1.0])) == -1  # grass margin
    block = town.spec.block_m
    assert town.label_at(np.array([block / 2, block / 2])) == -1  # inside a block
    assert town.label_at(np.array([x1 + 500.0, y1 + 500.0])) == -1  # off the raster


def test_nearest_lane(town: Town) -> None:
    lane = next(lane for lane in town.lanes if lane.road_id >= 0 and lane.length > 40)
    p = lane.point_at(20.0)
    lane_id, s = town.nearest_lane(p, float(lane.heading_at(20.0)))
    assert lane_id == lane.id and s == pytest.approx(20.0, abs=1.0)
    # The opposite heading selects a lane of the other direction.
    other, _ = town.nearest_lane(p, float(lane.heading_at(20.0)) + math.pi)
    assert town.lanes[other].direction == -lane.direction


def test_town_is_deterministic() -> None:
    a, b = Town(URBAN, 5), Town(URBAN, 5)
    assert len(a.lanes) == len(b.lanes)
    assert all(np.array_equal(x.points, y.points) for x, y in zip(a.lanes, b.lanes, strict=True))
    assert np.array_equal(a.raster.bgr, b.raster.bgr)
    assert [n.signalized for n in a.nodes] == [n.signalized for n in b.nodes]


@pytest.mark.parametrize(
    "field,value",
    [
        ("blocks_x", 0),
        ("blocks_y", 9),
        ("block_m", 10.0),
        ("lanes_per_direction", 4),
        ("lane_width_m", 1.0),
        ("curvature", 1.5),
        ("signalized_fraction", -0.1),
        ("t_junction_fraction", 0.9),
        ("sidewalk_m", 7.0),
        ("speed_limit_kmh", 300.0),
        ("road_type", "rural"),
    ],
)
def test_invalid_town_spec_names_field(field: str, value: object) -> None:
    with pytest.raises(TownSpecError, match=f"town.{field}"):
        TownSpec(**{field: value})
