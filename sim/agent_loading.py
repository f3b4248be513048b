"""The Leaderboard agent contract, and loading an agent class the way the Leaderboard does.

`AutonomousAgent` and `Track` are CARLA's own (`leaderboard.autoagents.autonomous_agent`)
when a Leaderboard checkout is importable, and API-identical definitions of ours otherwise,
so one agent file runs under `vlmdrive eval` and under `leaderboard_evaluator.py`. The
PyPI package called `leaderboard` is unrelated; any `leaderboard` module without that
submodule (or whose import fails) falls back to our definitions.

`load_agent_class(agent)` follows `leaderboard_evaluator.py`: the module is imported by the
file's stem with the file's folder put first on `sys.path`, and its `get_entry_point()`
names the agent class. `expert` is a shorthand for this repository's `agent/expert.py`.
"""

from __future__ import annotations

import importlib
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from sim.control import VehicleControl

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERT_FILE = REPO_ROOT / "agent" / "expert.py"
EXPERT_MODULE = "agent.expert"


class AgentLoadError(ValueError):
    """The agent file or its entry point is missing or wrong; the message names which."""


class LiteTrack(Enum):
    """The Leaderboard's `Track`: SENSORS, or MAP (which adds `sensor.opendrive_map`)."""

    SENSORS = "SENSORS"
    MAP = "MAP"


class LiteAutonomousAgent:
    """The Leaderboard's `AutonomousAgent` base class, without CARLA.

    Lifecycle per route (driven by the harness): `__init__(host, port, debug)` ->
    `set_global_plan(gps, world)` -> `setup(path_to_conf_file)` -> `sensors()` validated ->
    `run_step(input_data, timestamp)` every 0.05 s of game time -> `destroy()`.
    """

    def __init__(self, carla_host: str, carla_port: int, debug: bool = False) -> None:
        self.track: Any = LiteTrack.SENSORS
        # Current global plans to reach the destination (set by set_global_plan).
        self._global_plan: list[tuple[dict, Any]] | None = None
        self._global_plan_world_coord: list[tuple[Any, Any]] | None = None
        self.wallclock_t0: Any = None

    def setup(self, path_to_conf_file: str) -> None:
        """Initialise the agent from its configuration file."""

    def sensors(self) -> list[dict]:
        """The sensor suite, as a list of Leaderboard sensor dicts."""
        return []

    def run_step(self, input_data: dict, timestamp: float) -> Any:
        """One step of driving: `input_data` is `{id: (frame, data)}`, `timestamp` game time [s]."""
        return VehicleControl()

    def destroy(self) -> None:
        """Release whatever the agent holds at the end of a route."""

    @staticmethod
    def get_ros_version() -> int:
        return -1

    def set_global_plan(
        self,
        global_plan_gps: list[tuple[dict, Any]],
        global_plan_world_coord: list[tuple[Any, Any]],
    ) -> None:
        """Store the route. The Leaderboard downsamples its dense route here
        (`downsample_route(route, 200)`); our simulators hand over the plan already
        downsampled the same way (`Simulator.global_plan()`), so it is stored as given."""
        self._global_plan_world_coord = [(t, option) for t, option in global_plan_world_coord]
        self._global_plan = [(gps, option) for gps, option in global_plan_gps]


def import_leaderboard_base() -> tuple[type, type] | None:
    """(AutonomousAgent, Track) from a CARLA Leaderboard checkout on the path, or None."""
    try:
        module = importlib.import_module("leaderboard.autoagents.autonomous_agent")
    except (
        Exception
    ):  # not installed, an unrelated `leaderboard`, or its deps (carla, srunner) missing
        return None
    agent_cls = getattr(module, "AutonomousAgent", None)
    track_cls = getattr(module, "Track", None)
    if not isinstance(agent_cls, type) or not isinstance(track_cls, type):
        return None
    return agent_cls, track_cls


_LEADERBOARD = import_leaderboard_base()
LEADERBOARD_AVAILABLE = _LEADERBOARD is not None
# Agents subclass these; they are CARLA's classes when its Leaderboard is importable.
AutonomousAgent: Any = _LEADERBOARD[0] if _LEADERBOARD else LiteAutonomousAgent
Track: Any = _LEADERBOARD[1] if _LEADERBOARD else LiteTrack


def uses_leaderboard_base(agent: object) -> bool:
    """True when `agent` derives from CARLA's own AutonomousAgent (which downsamples the
    plan it is given, so it must get the dense route)."""
    return _LEADERBOARD is not None and isinstance(agent, _LEADERBOARD[0])


def track_name(agent: object) -> str:
    """'SENSORS' or 'MAP' from `agent.track` (an Enum like the Leaderboard's, or a string)."""
    track = getattr(agent, "track", None)
    if track is None:
        return "SENSORS"
    return str(track.value if isinstance(track, Enum) else track)


def _import_file(path: Path) -> Any:
    """Import an agent file like leaderboard_evaluator.py: module name = file stem, the file's
    folder first on sys.path. A cached module of that name from another file is replaced."""
    module_name = os.path.basename(path).split(".")[0]
    folder = str(path.parent)
    if not sys.path or sys.path[0] != folder:
        sys.path.insert(0, folder)
    cached = sys.modules.get(module_name)
    if cached is not None:
        cached_file = getattr(cached, "__file__", None)
        if cached_file is None or Path(cached_file).resolve() != path:
            del sys.modules[module_name]
    return importlib.import_module(module_name)


def load_agent_class(agent: str) -> type:
    """The agent class named by `get_entry_point()` in the file `agent` (or `expert`)."""
    if agent == "expert":
        if not EXPERT_FILE.is_file():
            raise AgentLoadError(
                f"agent 'expert' resolves to {EXPERT_FILE}, which does not exist in this checkout"
            )
        where = str(EXPERT_FILE)
        try:
            module = importlib.import_module(EXPERT_MODULE)
        except Exception as exc:
            raise AgentLoadError(f"importing {where} failed: {type(exc).__name__}: {exc}") from exc
    else:
        path = Path(agent).expanduser().resolve()
        where = str(path)
        if not path.is_file():
            raise AgentLoadError(
                f"agent file {agent!r} does not exist; pass a Python file that defines "
                "get_entry_point(), or 'expert'"
            )
        if path.suffix != ".py":
            raise AgentLoadError(f"agent file {where} is not a Python (.py) file")
        try:
            module = _import_file(path)
        except Exception as exc:
            raise AgentLoadError(f"importing {where} failed: {type(exc).__name__}: {exc}") from exc
    entry = getattr(module, "get_entry_point", None)
    if not callable(entry):
        raise AgentLoadError(
            f"{where} defines no get_entry_point(); the Leaderboard needs it to return "
            "the agent class name"
        )
    try:
        name = entry()
    except Exception as exc:
        raise AgentLoadError(
            f"{where}: get_entry_point() raised {type(exc).__name__}: {exc}"
        ) from exc
    if isinstance(name, type):
        cls: Any = name
    elif isinstance(name, str):
        if not hasattr(module, name):
            raise AgentLoadError(f"{where}: get_entry_point() returned {name!r}, not defined there")
        cls = getattr(module, name)
    else:
        raise AgentLoadError(
            f"{where}: get_entry_point() must return the agent class name, got {name!r}"
        )
    if not isinstance(cls, type):
        raise AgentLoadError(f"{where}: entry point {name!r} is not a class (got {cls!r})")
    return cls
