"""Everything spawned on the server, and how it is taken down again.

CARLA keeps actors alive after a client disconnects, and a world left in synchronous
mode freezes until someone ticks it. So every actor this backend spawns is recorded in
an `ActorRegistry` the moment its id is known, and `WorldSession.release()` (called on
`close()`, on any error while building a route, and on KeyboardInterrupt) destroys them
all in one `client.apply_batch_sync([carla.command.DestroyActor(id), ...])` and restores
the world settings found at connection time - the same end state as the Leaderboard's
`LeaderboardEvaluator._cleanup` (asynchronous mode, Traffic Manager out of synchronous
mode, no actors of ours left).

Destruction order (`DESTROY_ORDER`): sensors first (stopped before destroyed, so no
callback fires on a dead actor; the Leaderboard's `AgentWrapper.cleanup` does the same),
then walker AI controllers (stopped, as CARLA's `generate_traffic.py` does), then
walkers, vehicles, props, and the ego last, once nothing is attached to it any more.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from sim.carla_compat import require_carla

log = logging.getLogger(__name__)

ActorKind = Literal["sensor", "controller", "walker", "vehicle", "prop", "ego"]
DESTROY_ORDER: tuple[ActorKind, ...] = ("sensor", "controller", "walker", "vehicle", "prop", "ego")
_STOPPABLE: tuple[ActorKind, ...] = ("sensor", "controller")


@dataclass
class ActorRegistry:
    """Ids of the actors this backend spawned, by kind; handles for the stoppable ones."""

    ids: dict[ActorKind, list[int]] = field(default_factory=lambda: {k: [] for k in DESTROY_ORDER})
    handles: dict[int, Any] = field(default_factory=dict)  # sensors and controllers

    def add(self, actor_id: int, kind: ActorKind, handle: Any = None) -> None:
        if kind not in DESTROY_ORDER:
            raise ValueError(f"unknown actor kind {kind!r}; valid: {', '.join(DESTROY_ORDER)}")
        self.ids[kind].append(int(actor_id))
        if handle is not None and kind in _STOPPABLE:
            self.handles[int(actor_id)] = handle

    def add_many(self, actor_ids: Iterable[int], kind: ActorKind) -> None:
        for actor_id in actor_ids:
            self.add(actor_id, kind)

    def __len__(self) -> int:
        return sum(len(v) for v in self.ids.values())

    def destroy_order(self) -> list[int]:
        """Every registered id, in DESTROY_ORDER (spawn order within a kind)."""
        return [i for kind in DESTROY_ORDER for i in self.ids[kind]]

    def forget(self, actor_ids: Iterable[int]) -> None:
        gone = {int(i) for i in actor_ids}
        for kind in DESTROY_ORDER:
            self.ids[kind] = [i for i in self.ids[kind] if i not in gone]
        for i in gone:
            self.handles.pop(i, None)

    def destroy(self, client: Any, actor_ids: Iterable[int]) -> list[str]:
        """Stop the sensors and controllers among `actor_ids`, destroy them all in one
        synchronous batch (in destroy order), and forget them, whatever the server says.
        Returns the errors it reported (already logged)."""
        wanted = {int(i) for i in actor_ids}
        order = [i for i in self.destroy_order() if i in wanted]
        if not order:
            return []
        carla = require_carla()
        errors: list[str] = []
        for actor_id in order:
            handle = self.handles.get(actor_id)
            if handle is None:
                continue
            try:
                handle.stop()
            except Exception as exc:  # already dead: destroying still removes it
                errors.append(f"stopping actor {actor_id}: {exc}")
        commands = [carla.command.DestroyActor(i) for i in order]
        try:
            responses = client.apply_batch_sync(commands) or []
            for actor_id, response in zip(order, responses, strict=False):
                if getattr(response, "error", ""):
                    errors.append(f"destroying actor {actor_id}: {response.error}")
        except Exception as exc:
            errors.append(f"destroy batch failed: {exc!r}")
        finally:
            self.forget(order)
        for error in errors:
            log.warning("cleanup: %s", error)
        return errors

    def destroy_all(self, client: Any) -> list[str]:
        """`destroy` every registered actor."""
        return self.destroy(client, self.destroy_order())


class WorldSession:
    """One client's hold on a CARLA world: the settings found before we changed them, the
    actors we spawned, and the Traffic Manager we switched to synchronous mode."""

    def __init__(self, client: Any, tm_port: int) -> None:
        self.client = client
        self.tm_port = tm_port
        self.registry = ActorRegistry()
        self.world: Any = None
        self._original_settings: Any = None  # carla.WorldSettings before our first change
        self._tm_synchronous = False

    def adopt_world(self, world: Any) -> None:
        """Work on `world` (after `load_world` or at the start); remember its settings the
        first time, so `restore_settings` brings back what the user had."""
        self.world = world
        if self._original_settings is None:
            self._original_settings = world.get_settings()

    def apply_synchronous(self, fixed_delta_seconds: float) -> None:
        """The Leaderboard's `_load_and_wait_for_world`: synchronous mode, fixed step, and
        the Traffic Manager in synchronous mode too (it must tick with the world)."""
        if self.world is None:
            raise RuntimeError("apply_synchronous() before adopt_world()")
        settings = self.world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = fixed_delta_seconds
        self.world.apply_settings(settings)
        self.traffic_manager().set_synchronous_mode(True)
        self._tm_synchronous = True

    def traffic_manager(self) -> Any:
        return self.client.get_trafficmanager(self.tm_port)

    def destroy_actors(self) -> list[str]:
        return self.registry.destroy_all(self.client)

    def restore_settings(self) -> None:
        """Put back the world settings found at connection (and the TM's mode)."""
        if self._tm_synchronous:
            try:
                self.traffic_manager().set_synchronous_mode(False)
            except Exception as exc:
                log.warning("cleanup: traffic manager back to asynchronous mode: %r", exc)
            self._tm_synchronous = False
        if self.world is not None and self._original_settings is not None:
            try:
                self.world.apply_settings(self._original_settings)
            except Exception as exc:
                log.warning("cleanup: restoring the world settings failed: %r", exc)

    def release(self) -> None:
        """Destroy every actor of ours, then restore the world settings. Safe to repeat."""
        try:
            self.destroy_actors()
            if self.world is not None and self._tm_synchronous:
                # Let the server finish the destruction before leaving synchronous mode
                # (the Leaderboard's AgentWrapper.cleanup ticks once for the same reason).
                try:
                    self.world.tick()
                except Exception as exc:
                    log.warning("cleanup: tick after destroying actors failed: %r", exc)
        finally:
            self.restore_settings()
