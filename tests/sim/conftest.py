"""Shared fixtures for the simulator tests: small towns and worlds, built once per module."""

from __future__ import annotations

import pytest

from sim.lite.town import TownSpec
from sim.lite.world import LiteSimulator
from sim.spec import RouteSpec, WorldSpec

SMALL_TOWN = TownSpec(blocks_x=2, blocks_y=2)


def small_world(**over) -> WorldSpec:
    params: dict = dict(
        town=SMALL_TOWN, route=RouteSpec(length_m=150.0), num_vehicles=0, num_pedestrians=0
    )
    params.update(over)
    return WorldSpec(**params)


@pytest.fixture(scope="module")
def lite_small_sim() -> LiteSimulator:
    sim = LiteSimulator()
    sim.reset(small_world(), seed=0)
    return sim
