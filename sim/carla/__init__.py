"""The `Simulator` protocol on a real CARLA server, through the `carla` client package.

`CarlaSimulator` (world.py) is the backend; the other modules hold its parts, most of
them pure functions testable without a server: connection.py (connect with timeouts and
retries), maps.py (town choice, geo reference, lane queries, stop lines), routes.py (route
planning and placement along it, the Leaderboard's global plan), props.py (scenario
objects -> blueprints and poses), sensors.py (Leaderboard sensor attributes and data
formats), scenario.py (traffic, pedestrians, scripted actors), actors.py (the registry
of spawned actors and the cleanup that restores the server).

Nothing here imports `carla` at module import time; `sim.carla_compat.require_carla()`
is called where a carla type is needed, so the package imports without the client.
"""

from typing import Any

__all__ = ["CarlaSimulator"]


def __getattr__(name: str) -> Any:
    if name == "CarlaSimulator":
        from sim.carla.world import CarlaSimulator

        return CarlaSimulator
    raise AttributeError(f"module 'sim.carla' has no attribute {name!r}")
