"""Scripted actors that scenarios compile to: cut-in, hard brake, crossing pedestrian, props."""

from __future__ import annotations

import numpy as np
import pytest

from sim.control import VehicleControl
from sim.geometry import world_to_ego
from sim.lite.town import TownSpec
from sim.lite.world import LiteSimulator
from sim.spec import PedestrianSpec, PropSpec, RouteSpec, VehicleSpec, WorldSpec, WorldSpecError

SEED = 4
STRAIGHT_TOWN = TownSpec(curvature=0.0)


def _sim(**kwargs) -> LiteSimulator:
    spec = WorldSpec(
        town=STRAIGHT_TOWN,
        route=RouteSpec(length_m=300, start_lane_index=0),
        num_vehicles=0,
        num_pedestrians=0,
        **kwargs,
    )
    sim = LiteSimulator()
    sim.reset(spec, SEED)
    return sim


def _ego_frame(sim: LiteSimulator, xy: np.ndarray) -> np.ndarray:
    return world_to_ego(xy[None], np.array([sim.ego.x, sim.ego.y]), sim.ego.yaw)[0]


def test_cut_in_merges_into_the_route_lane_when_triggered() -> None:
    # The ego holds still; the trigger fires at once (trigger_s_m = 0).
    sim = _sim(
        vehicles=(
            VehicleSpec(
                route_s_m=30, behaviour="cut_in", lane_offset=-1, speed_mps=6, trigger_s_m=0
            ),
        )
    )
    start = _ego_frame(sim, sim.traffic.positions()[0][0])
    assert start[1] == pytest.approx(-3.5, abs=0.3)  # one lane to the right
    for _ in range(200):
        sim.tick(VehicleControl(brake=1.0))
    # Merged: on the route line (lateral ~0), still ahead of the ego, event reported.
    merged = _ego_frame(sim, sim.traffic.positions()[0][0])
    assert abs(merged[1]) < 0.5
    assert merged[0] > start[0]
    assert any(name.startswith("cut_in") for name in sim.ground_truth().active_events)


def test_hard_brake_stops_holds_then_drives_on() -> None:
    sim = _sim(
        vehicles=(
            VehicleSpec(
                route_s_m=40,
                behaviour="hard_brake",
                speed_mps=8,
                brake_decel_mps2=7.0,
                trigger_s_m=0,
            ),
        )
    )
    speeds = []
    for _ in range(200):
        sim.tick(VehicleControl(brake=1.0))
        speeds.append(float(sim.traffic.v[0]))
    speeds = np.array(speeds)
    stopped = np.nonzero(speeds < 0.05)[0]
    assert len(stopped) > 0, "the lead vehicle never stopped"
    # Decelerated at about the scripted rate (8 m/s in ~8/7 s, allowing the 0.2 s reaction).
    assert stopped[0] * 0.05 == pytest.approx(8.0 / 7.0, abs=0.35)
    assert speeds[-1] > 1.0, "the lead vehicle did not drive on after its stop"


def test_pedestrian_waits_for_its_trigger_then_crosses() -> None:
    sim = _sim(pedestrians=(PedestrianSpec(route_s_m=60, side="right", walk_m=12, trigger_s_m=20),))
    start = _ego_frame(sim, sim.pedestrians.positions()[0][0])
    assert start[1] == pytest.approx(-6.0, abs=0.3)
    for _ in range(40):  # ego braked: progress stays 0 < trigger
        sim.tick(VehicleControl(brake=1.0))
    assert np.allclose(_ego_frame(sim, sim.pedestrians.positions()[0][0]), start, atol=1e-6)
    sim.criteria.completion_idx = int(np.searchsorted(sim.route.s, 25.0))  # ego "reached" 25 m
    for _ in range(200):
        sim.tick(VehicleControl(brake=1.0))
    end = _ego_frame(sim, sim.pedestrians.positions()[0][0])
    assert end[1] == pytest.approx(6.0, abs=0.5)  # crossed to the left side


def test_props_are_placed_relative_to_the_route_and_collide_as_layout() -> None:
    sim = _sim(props=(PropSpec(kind="cone", route_s_m=25, lateral_m=0.0),))
    cone = _ego_frame(sim, sim.prop_xy[0])
    assert cone == pytest.approx([25.0, 0.0], abs=0.3)
    kinds = []
    for _ in range(200):
        sim.tick(VehicleControl(throttle=0.6))
        kinds += [e.kind for e in sim.events]
    assert kinds == ["collisions_layout"]


def test_prop_beyond_the_route_is_a_clear_error() -> None:
    with pytest.raises(WorldSpecError, match="route_s_m = 5000"):
        _sim(props=(PropSpec(kind="cone", route_s_m=5000),))
