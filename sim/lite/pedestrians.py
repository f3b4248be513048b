"""Pedestrians: sidewalk walkers who cross at crosswalks when no car is close, and
scripted crossers for scenarios (start walking when the ego reaches a trigger).

Each pedestrian walks along its own polyline `path` at `speed`; positions are computed for
all of them at once. When a walker reaches the end of its leg it picks the next one:
back along the sidewalk, or across the road on the crosswalk at that end (waiting at the
kerb until no vehicle within `CROSS_CLEARANCE_M` is moving toward it).
"""

from __future__ import annotations

import math

import numpy as np

from sim.lite import polyline as pl
from sim.lite.town import Town

PEDESTRIAN_SIZE_M = (0.5, 0.5, 1.8)  # [m] length, width, height
CROSS_CLEARANCE_M = 18.0  # [m] no moving vehicle this close to a crosswalk before crossing
LEG_CAPACITY = 400  # points per leg (1 m spacing)
PEDESTRIAN_COLOURS_BGR = np.array(
    [[60, 60, 160], [140, 90, 40], [40, 120, 40], [30, 30, 30], [90, 150, 200], [170, 40, 120]],
    dtype=np.uint8,
)


class Pedestrians:
    def __init__(self, town: Town, rng: np.random.Generator) -> None:
        self.town = town
        self.rng = rng
        self.n = 0
        self.legs = np.zeros((0, LEG_CAPACITY, 2))
        self.leg_len = np.zeros(0, np.int32)
        self.s = np.zeros(0)  # [m] along the current leg
        self.speed = np.zeros(0)  # [m/s] walking speed
        self.walking = np.zeros(0, bool)  # False while waiting or untriggered
        self.scripted = np.zeros(0, bool)
        self.trigger_s = np.zeros(0)
        self.colour = np.zeros((0, 3), np.uint8)
        self.ids = np.zeros(0, np.int64)
        # Background walkers: which road side they walk on and where they cross.
        self._side: list[tuple[int, int]] = []  # (road id, +1 right / -1 left of centre)
        self._crossing = np.zeros(0, bool)
        self._sidewalks = self._build_sidewalks()
        self._pos_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _build_sidewalks(self) -> dict[tuple[int, int], np.ndarray]:
        spec = self.town.spec
        walks: dict[tuple[int, int], np.ndarray] = {}
        if spec.sidewalk_m <= 0:
            return walks
        for road in self.town.roads:
            off = road.half_width + spec.sidewalk_m / 2.0
            for side in (1, -1):
                walks[(road.id, side)] = pl.offset(road.centre, side * off)
        return walks

    def _add(
        self,
        leg: np.ndarray,
        speed: float,
        actor_id: int,
        walking: bool,
        scripted: bool,
        trigger_s: float,
        side: tuple[int, int],
    ) -> int:
        k = self.n
        self.n += 1
        self.legs = np.concatenate([self.legs, np.zeros((1, LEG_CAPACITY, 2))])
        self.leg_len = np.append(self.leg_len, 0).astype(np.int32)
        self.s = np.append(self.s, 0.0)
        self.speed = np.append(self.speed, speed)
        self.walking = np.append(self.walking, walking)
        self.scripted = np.append(self.scripted, scripted)
        self.trigger_s = np.append(self.trigger_s, trigger_s)
        colour = PEDESTRIAN_COLOURS_BGR[self.rng.integers(len(PEDESTRIAN_COLOURS_BGR))]
        self.colour = np.concatenate([self.colour, colour[None]])
        self.ids = np.append(self.ids, actor_id).astype(np.int64)
        self._side.append(side)
        self._crossing = np.append(self._crossing, False)
        self._set_leg(k, leg)
        return k

    def _set_leg(self, k: int, leg: np.ndarray) -> None:
        leg = pl.resample(leg, 1.0)[:LEG_CAPACITY]
        self.legs[k, : len(leg)] = leg
        self.leg_len[k] = len(leg)
        self.s[k] = 0.0
        self._pos_cache = None

    def spawn_background(self, count: int, actor_ids: list[int], avoid_xy: np.ndarray) -> None:
        keys = sorted(self._sidewalks)
        if not keys:
            return
        for actor_id in actor_ids[:count]:
            for _ in range(20):
                key = keys[int(self.rng.integers(len(keys)))]
                walk = self._sidewalks[key]
                if self.rng.random() < 0.5:
                    walk = walk[::-1]
                start = int(self.rng.integers(0, max(len(walk) - 2, 1)))
                if np.linalg.norm(walk[start] - avoid_xy) > 15.0:
                    break
            self._add(
                walk[start:] if len(walk) - start >= 2 else walk,
                float(self.rng.uniform(1.0, 1.6)),
                actor_id,
                True,
                False,
                0.0,
                key,
            )

    def spawn_scripted(
        self, start: np.ndarray, end: np.ndarray, speed: float, trigger_s: float, actor_id: int
    ) -> int:
        return self._add(
            np.stack([start, end]), speed, actor_id, trigger_s <= 0.0, True, trigger_s, (-1, 0)
        )

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) positions [m] and (N,) yaw [rad] (cached until they move)."""
        if self._pos_cache is not None and self._pos_cache[0] is self.s:
            return self._pos_cache[1], self._pos_cache[2]
        pos, yaw = self._positions()
        self._pos_cache = (self.s, pos, yaw)
        return pos, yaw

    def _positions(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n == 0:
            return np.zeros((0, 2)), np.zeros(0)
        ar = np.arange(self.n)
        # s >= 0 always and s <= leg_len - 1 (step() clamps it), so no lower clip is needed.
        i0 = np.minimum(self.s.astype(np.int64), self.leg_len - 2)
        frac = np.minimum(self.s - i0, 1.0)[:, None]
        a, b = self.legs[ar, i0], self.legs[ar, i0 + 1]
        d = b - a
        return a + frac * d, np.arctan2(d[:, 1], d[:, 0])

    def velocities(self) -> np.ndarray:
        """(N,) [m/s] current walking speed (0 while waiting)."""
        return np.where(self.walking, self.speed, 0.0)

    def step(
        self,
        dt: float,
        ego_route_s: float,
        npc_xy: np.ndarray,
        npc_v: np.ndarray,
        ego_xy: np.ndarray,
        ego_speed: float,
    ) -> None:
        """Advance walkers by dt. Vehicles (NPCs and the ego) are only consulted by a
        walker deciding whether to cross."""
        if self.n == 0:
            return
        fire = (
            self.scripted
            & ~self.walking
            & (ego_route_s >= self.trigger_s)
            & (self.s < self.leg_len - 1.01)
        )
        self.walking |= fire
        self.s = np.where(self.walking, self.s + self.speed * dt, self.s)
        done = self.s >= self.leg_len - 1.0
        if not done.any():
            return
        self._pos_cache = None
        vehicle_xy = np.concatenate([npc_xy, ego_xy[None]])
        vehicle_v = np.concatenate([npc_v, [ego_speed]])
        for k in np.nonzero(done)[0]:
            self.s[k] = self.leg_len[k] - 1.0
            if self.scripted[k]:
                self.walking[k] = False  # a scripted crosser stays where it arrived
                continue
            self._next_leg(int(k), vehicle_xy, vehicle_v)

    def _next_leg(self, k: int, vehicle_xy: np.ndarray, vehicle_v: np.ndarray) -> None:
        here = self.legs[k, self.leg_len[k] - 1]
        road_id, side = self._side[k]
        if self._crossing[k]:
            # Arrived across: walk back along the other side's sidewalk.
            self._crossing[k] = False
            self._side[k] = (road_id, -side)
            self._walk_from(k, here)
            return
        crosswalk = self._nearest_crosswalk(here, road_id)
        if crosswalk is not None and self.rng.random() < 0.5:
            a, b = crosswalk.start, crosswalk.end
            if np.linalg.norm(a - here) > np.linalg.norm(b - here):
                a, b = b, a
            centre = 0.5 * (a + b)
            if len(vehicle_xy):
                close = (np.linalg.norm(vehicle_xy - centre, axis=1) < CROSS_CLEARANCE_M) & (
                    vehicle_v > 0.5
                )
                if close.any():
                    self.walking[k] = False  # wait at the kerb; retried next tick
                    return
            self.walking[k] = True
            self._crossing[k] = True
            self._set_leg(k, np.stack([here, a, b]))
            return
        self.walking[k] = True
        self._walk_from(k, here)

    def _walk_from(self, k: int, here: np.ndarray) -> None:
        walk = self._sidewalks[self._side[k]]
        ends = [walk, walk[::-1]]
        # Start from the end nearest to where we stand, walk to the other end.
        best = min(ends, key=lambda w: float(np.linalg.norm(w[0] - here)))
        self._set_leg(k, np.concatenate([here[None], best]))

    def _nearest_crosswalk(self, here: np.ndarray, road_id: int):
        """The crosswalk across this walker's own road near where it stands, if any."""
        best, best_d = None, 8.0
        for cw in self.town.crosswalks:
            if cw.road_id != road_id:
                continue
            d = float(min(np.linalg.norm(cw.start - here), np.linalg.norm(cw.end - here)))
            if d < best_d:
                best, best_d = cw, d
        return best

    def waiting_retry(self) -> np.ndarray:
        """Background walkers waiting at a kerb (they re-check every tick)."""
        return (~self.walking) & (~self.scripted)

    @staticmethod
    def radius() -> float:
        return math.hypot(PEDESTRIAN_SIZE_M[0], PEDESTRIAN_SIZE_M[1]) / 2.0
