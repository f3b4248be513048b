"""Background and scripted vehicles: IDM car-following along lane paths, vectorised.

Every NPC drives along its own path: the concatenation of lanes it will take, resampled at
exactly `PATH_SPACING_M` so arc length is an index. Each tick, for all NPCs at once:

1. Look-ahead window: `WINDOW` path points ahead of each NPC.
2. Obstacles: any other vehicle, the ego, pedestrians and props whose centre lies within
   a corridor (own half width + obstacle radius) of a window point; the first such point
   gives the gap. Candidate pairs are pre-filtered by distance, so cost stays small.
3. Stop points: the stop line of a red/yellow light ahead (unless the NPC runs reds), and
   the entry of an unsignalized junction that another vehicle has reserved.
4. IDM acceleration toward a desired speed capped by the lane limit and path curvature.

A path is extended with random successors as the NPC advances; an NPC at a dead end is
respawned elsewhere, out of the ego's sight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.lite import polyline as pl
from sim.lite.town import Town

PATH_SPACING_M = 1.0  # [m] path resampling; arc length == index * spacing
PATH_CAPACITY = 600  # points stored per NPC path
WINDOW = 24  # look-ahead samples
WINDOW_STRIDE = 2  # [points] between samples: 48 m of look-ahead
DECISION_HZ = 5.0  # NPC perception/decision rate (0.2 s reaction); motion integrates every tick
ONCOMING_STANDOFF_M = 15.0  # [m] extra gap left to the ego coming head-on in the lane
HEAD_ON_COS = -0.95  # [-] "head-on": headings within ~18 deg of opposite
HARD_BRAKE_HOLD_S = 2.0  # [s] standstill after a scripted hard brake
IDM_MAX_ACCEL_MPS2 = 2.0  # [m/s^2] a
IDM_COMFORT_DECEL_MPS2 = 3.0  # [m/s^2] b
IDM_TIME_HEADWAY_S = 1.4  # [s] T
IDM_MIN_GAP_M = 2.5  # [m] s0
MAX_DECEL_MPS2 = 9.0  # [m/s^2] emergency braking limit
MAX_LATERAL_ACCEL_MPS2 = 2.5  # [m/s^2] cornering comfort, caps speed on curves
NPC_LENGTH_M = 4.6  # [m]
NPC_WIDTH_M = 1.9  # [m]
NPC_HEIGHT_M = 1.5  # [m]

NPC_COLOURS_BGR = np.array(
    [
        [40, 40, 180],
        [180, 60, 40],
        [200, 200, 205],
        [30, 30, 30],
        [60, 140, 60],
        [40, 160, 220],
        [150, 150, 150],
        [90, 60, 30],
        [220, 220, 225],
        [30, 90, 160],
    ],
    dtype=np.uint8,
)

BEHAVIOUR_NORMAL = 0
BEHAVIOUR_STOPPED = 1
BEHAVIOUR_HARD_BRAKE = 2
BEHAVIOUR_CUT_IN = 3
BEHAVIOUR_WAITING = 4  # stands still until its trigger fires, then drives normally


@dataclass
class Obstacles:
    """Things NPCs must not drive into, as circles: centre (M, 2) [m], radius (M,) [m],
    and an owner id (M,) so an NPC ignores itself (NPC i has owner i; others -1)."""

    xy: np.ndarray
    radius: np.ndarray
    owner: np.ndarray
    speed: np.ndarray
    half_length: np.ndarray  # (M,) [m] extent along the NPC's path, for the gap  # (M,) [m/s], used as the IDM leader speed
    # (M,) [rad] heading of oriented obstacles (vehicles), NaN for round ones. A vehicle
    # standing across an NPC's path blocks it with its half length, not its half width.
    yaw: np.ndarray | None = None


class Traffic:
    """All NPC vehicles of a world. Arrays are indexed by NPC number."""

    def __init__(self, town: Town, rng: np.random.Generator) -> None:
        self.town = town
        self.rng = rng
        self.n = 0
        self.paths = np.zeros((0, PATH_CAPACITY, 2))
        self.path_lane = np.zeros((0, PATH_CAPACITY), np.int32)
        self.path_len = np.zeros(0, np.int32)
        self.path_open = np.zeros(0, bool)  # False once the path reached a dead end
        self.s = np.zeros(0)  # [m] position along own path
        self.v = np.zeros(0)  # [m/s]
        self.v_desired = np.zeros(0)  # [m/s]
        self.acc = np.zeros(0)  # [m/s^2] held between decisions
        self.colour = np.zeros((0, 3), np.uint8)
        self.ignore_lights = np.zeros(0, bool)
        self.behaviour = np.zeros(0, np.int32)
        self.brake_decel = np.zeros(0)
        self.trigger_s = np.full(0, np.inf)  # ego route progress that fires the behaviour
        self.triggered = np.zeros(0, bool)
        self.held_s = np.zeros(0)  # [s] a hard-braking NPC has stood still after its stop
        self.ids = np.zeros(0, np.int64)
        self.respawnable = np.zeros(0, bool)
        self._lane_light = np.array([lane.light_id for lane in town.lanes], np.int32)
        self._lane_node = np.array(
            [lane.node_id if lane.is_junction else -1 for lane in town.lanes], np.int32
        )
        self._unsignalized_node = np.array(
            [
                lane.node_id if lane.is_junction and not town.nodes[lane.node_id].signalized else -1
                for lane in town.lanes
            ],
            np.int32,
        )
        self._lane_limit = np.array([lane.speed_limit_mps for lane in town.lanes])
        self._pos_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.reservation: dict[int, int] = {}  # unsignalized junction -> NPC index holding it
        self.path_cap = np.zeros((0, PATH_CAPACITY))  # [m/s] curvature speed cap per point

    # ---------------------------------------------------------------- spawning
    def add(
        self,
        lane_path: list[int],
        start_s: float,
        speed: float,
        v_desired: float,
        actor_id: int,
        ignore_lights: bool = False,
        behaviour: int = BEHAVIOUR_NORMAL,
        trigger_s: float = math.inf,
        brake_decel: float = 7.0,
        respawnable: bool = True,
        colour: np.ndarray | None = None,
        pre_points: np.ndarray | None = None,
    ) -> int:
        """Add an NPC on `lane_path` at `start_s` metres along its first lane.
        `pre_points` (K, 2) optionally prefixes the path (e.g. a cut-in merge curve)."""
        pts, lanes = self._path_points(lane_path)
        s0 = pl.cumulative_length(pts)
        i0 = int(np.clip(np.searchsorted(s0, start_s), 0, len(pts) - 2))
        pts, lanes = pts[i0:], lanes[i0:]
        if pre_points is not None:
            pts = np.concatenate([pre_points, pts])
            lanes = np.concatenate([np.full(len(pre_points), lanes[0]), lanes])
            pts = pl.resample(pts, PATH_SPACING_M)
            lanes = lanes[np.clip(np.arange(len(pts)), 0, len(lanes) - 1)]
        k = self.n
        self.n += 1
        self.paths = np.concatenate([self.paths, np.zeros((1, PATH_CAPACITY, 2))])
        self.path_lane = np.concatenate([self.path_lane, np.full((1, PATH_CAPACITY), -1, np.int32)])
        self.path_cap = np.concatenate([self.path_cap, np.zeros((1, PATH_CAPACITY))])
        self.path_len = np.append(self.path_len, 0).astype(np.int32)
        self.path_open = np.append(self.path_open, True)
        self.s = np.append(self.s, 0.0)
        self.v = np.append(self.v, speed)
        self.v_desired = np.append(self.v_desired, v_desired)
        self.acc = np.append(self.acc, 0.0)
        c = (
            colour
            if colour is not None
            else NPC_COLOURS_BGR[self.rng.integers(len(NPC_COLOURS_BGR))]
        )
        self.colour = np.concatenate([self.colour, np.asarray(c, np.uint8)[None]])
        self.ignore_lights = np.append(self.ignore_lights, ignore_lights)
        self.behaviour = np.append(self.behaviour, behaviour).astype(np.int32)
        self.brake_decel = np.append(self.brake_decel, brake_decel)
        self.trigger_s = np.append(self.trigger_s, trigger_s)
        self.triggered = np.append(self.triggered, False)
        self.held_s = np.append(self.held_s, 0.0)
        self.ids = np.append(self.ids, actor_id).astype(np.int64)
        self.respawnable = np.append(self.respawnable, respawnable)
        self._set_path(k, pts, lanes)
        return k

    def add_repath(
        self, k: int, lane_path: list[int], start_s: float, pre_points: np.ndarray
    ) -> None:
        """Give NPC k a new path: `pre_points` (e.g. a merge curve), then `lane_path` from
        `start_s` metres along its first lane."""
        pts, lanes = self._path_points(lane_path)
        s0 = pl.cumulative_length(pts)
        i0 = int(np.clip(np.searchsorted(s0, start_s), 0, len(pts) - 2))
        pts = np.concatenate([pre_points, pts[i0 + 1 :]])
        lanes = np.concatenate([np.full(len(pre_points), lanes[i0]), lanes[i0 + 1 :]])
        self._set_path(k, pts, lanes)
        self.place(k, 0.0)

    def place(self, k: int, s_m: float, speed: float | None = None) -> None:
        """Move NPC k to `s_m` metres along its current path."""
        self.s[k] = s_m / PATH_SPACING_M
        if speed is not None:
            self.v[k] = speed
        self._pos_cache = None

    def _path_points(self, lane_path: list[int]) -> tuple[np.ndarray, np.ndarray]:
        pts: list[np.ndarray] = []
        lanes: list[np.ndarray] = []
        for lane_id in lane_path:
            p = self.town.lanes[lane_id].points
            if pts:
                p = p[1:]
            pts.append(p)
            lanes.append(np.full(len(p), lane_id, np.int32))
        return np.concatenate(pts), np.concatenate(lanes)

    def _set_path(self, k: int, pts: np.ndarray, lanes: np.ndarray) -> None:
        """Store a path for NPC k, resampled at PATH_SPACING_M; extend it if short."""
        s = pl.cumulative_length(pts)
        n = min(int(s[-1] / PATH_SPACING_M) + 1, PATH_CAPACITY)
        target = np.arange(n) * PATH_SPACING_M
        self.paths[k, :n, 0] = np.interp(target, s, pts[:, 0])
        self.paths[k, :n, 1] = np.interp(target, s, pts[:, 1])
        idx = np.clip(np.searchsorted(s, target, side="right") - 1, 0, len(lanes) - 1)
        self.path_lane[k, :n] = lanes[idx]
        self.path_len[k] = n
        self.path_open[k] = True
        self.s[k] = 0.0  # a new path starts where the NPC stands
        self._pos_cache = None
        self._update_caps(k)
        self._extend(k)

    def _update_caps(self, k: int, start: int = 0) -> None:
        """Curvature speed caps for path points from `start` on (earlier ones are kept)."""
        n = self.path_len[k]
        lo = max(start - 6, 0)  # overlap so the smoothing and gradients see neighbours
        if n - lo < 3:
            self.path_cap[k, lo:n] = 30.0
            return
        kappa = pl.curvature(self.paths[k, lo:n])
        if n - lo >= 5:
            kappa = np.convolve(kappa, np.ones(5) / 5.0, mode="same")
        caps = np.sqrt(MAX_LATERAL_ACCEL_MPS2 / np.maximum(kappa, 1e-4))
        keep = min(start, n) - lo  # points before `start` keep their caps
        self.path_cap[k, lo + keep : n] = caps[keep:]

    def _extend(self, k: int) -> None:
        """Append random successor lanes until the path holds enough points ahead."""
        town = self.town
        changed = False
        first_new = int(self.path_len[k])
        while self.path_open[k] and self.path_len[k] - self.s[k] < WINDOW * WINDOW_STRIDE * 2 + 10:
            last_lane = town.lanes[int(self.path_lane[k, self.path_len[k] - 1])]
            if not last_lane.successors:
                self.path_open[k] = False
                break
            nxt = town.lanes[
                last_lane.successors[int(self.rng.integers(len(last_lane.successors)))]
            ]
            lane_seq = [nxt.id] + (
                [nxt.successors[0]] if nxt.node_id >= 0 and nxt.successors else []
            )
            pts, lanes = self._path_points(lane_seq)
            start = self.paths[k, self.path_len[k] - 1]
            pts = np.concatenate([start[None], pts])
            s = pl.cumulative_length(pts)
            n_new = int(s[-1] / PATH_SPACING_M)
            room = PATH_CAPACITY - self.path_len[k]
            if n_new > room:
                first_new -= self._shift(k)
                room = PATH_CAPACITY - self.path_len[k]
                if n_new > room:
                    break
            target = np.arange(1, n_new + 1) * PATH_SPACING_M
            a = self.path_len[k]
            self.paths[k, a : a + n_new, 0] = np.interp(target, s, pts[:, 0])
            self.paths[k, a : a + n_new, 1] = np.interp(target, s, pts[:, 1])
            lanes = np.concatenate([[lanes[0]], lanes])
            idx = np.clip(np.searchsorted(s, target, side="right") - 1, 0, len(lanes) - 1)
            self.path_lane[k, a : a + n_new] = lanes[idx]
            self.path_len[k] = a + n_new
            changed = True
        if changed:
            self._update_caps(k, first_new)

    def _shift(self, k: int) -> int:
        """Drop the path points the NPC has passed (keeps 5 behind)."""
        drop = max(int(self.s[k]) - 5, 0)
        if drop <= 0:
            return 0
        n = self.path_len[k]
        self.paths[k, : n - drop] = self.paths[k, drop:n].copy()
        self.path_lane[k, : n - drop] = self.path_lane[k, drop:n].copy()
        self.path_cap[k, : n - drop] = self.path_cap[k, drop:n].copy()
        self.path_len[k] = n - drop
        self.s[k] -= drop
        self._pos_cache = None

        # ------------------------------------------------------------------ state
        return drop

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) positions [m] and (N,) yaw [rad] from the paths (cached until s moves)."""
        if self._pos_cache is not None and self._pos_cache[0] is self.s:
            return self._pos_cache[1], self._pos_cache[2]
        pos, yaw = self._positions()
        self._pos_cache = (self.s, pos, yaw)
        return pos, yaw

    def _positions(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n == 0:
            return np.zeros((0, 2)), np.zeros(0)
        ar = np.arange(self.n)
        i0 = np.minimum(self.s.astype(np.int64), self.path_len - 2)
        frac = (self.s - i0)[:, None]
        a = self.paths[ar, i0]
        b = self.paths[ar, i0 + 1]
        d = b - a
        return a + frac * d, np.arctan2(d[:, 1], d[:, 0])

    def current_lanes(self) -> np.ndarray:
        i0 = np.minimum(self.s.astype(np.int64), self.path_len - 1)
        return self.path_lane[np.arange(self.n), i0]

    # ------------------------------------------------------------------- step
    def decide(
        self,
        obstacles: Obstacles,
        light_red: np.ndarray,
        ego_route_s: float,
        ego_junction: int,
        light_yellow: np.ndarray | None = None,
    ) -> None:
        """Perceive and choose each NPC's acceleration (IDM), held until the next decision.

        `light_red[light_id]` is True for red or yellow lights, `light_yellow[light_id]` for
        yellow ones (only a yellow light may be run when too close to stop; None: any light
        may); `ego_junction` is the
        unsignalized junction node the ego is inside (-1 if none). The world calls this at
        `DECISION_HZ`, i.e. NPCs react within 0.2 s (human drivers take ~1 s), and
        `integrate` every tick."""
        if self.n == 0:
            return
        # Path book-keeping: keep enough path ahead of every NPC (rare, per NPC).
        for k in np.nonzero(self.path_len - self.s < WINDOW * WINDOW_STRIDE * 2 + 10)[0]:
            if self.path_open[k]:
                self._extend(int(k))
        ar = np.arange(self.n)
        pos, own_yaw = self.positions()
        base = self.s.astype(np.int64)
        win_idx = base[:, None] + np.arange(1, WINDOW + 1) * WINDOW_STRIDE
        valid = win_idx < self.path_len[:, None]
        win_idx = np.minimum(win_idx, self.path_len[:, None] - 1)
        window = self.paths[ar[:, None], win_idx]  # (N, W, 2)
        dist_ahead = (win_idx - self.s[:, None]) * PATH_SPACING_M  # [m] along path

        gap = np.full(self.n, np.inf)
        lead_v = np.zeros(self.n)
        # Obstacles in the corridor. Candidate pairs first (centre within reach), then
        # squared distances from the candidates to the NPC's window samples.
        if len(obstacles.xy):
            dx = obstacles.xy[None, :, 0] - pos[:, 0, None]
            dy = obstacles.xy[None, :, 1] - pos[:, 1, None]
            reach = WINDOW * WINDOW_STRIDE * PATH_SPACING_M + 5.0
            heading_x, heading_y = np.cos(own_yaw)[:, None], np.sin(own_yaw)[:, None]
            cand = (
                (dx * dx + dy * dy < reach * reach)
                & (dx * heading_x + dy * heading_y > -3.0)  # not behind (paths turn < 90 deg soon)
                & (obstacles.owner[None] != ar[:, None])
            )
            near_i, near_j = np.nonzero(cand)
            if len(near_i):
                diff = window[near_i] - obstacles.xy[near_j][:, None, :]
                d2 = np.einsum("kwc,kwc->kw", diff, diff)
                radius = obstacles.radius[near_j]
                if obstacles.yaw is not None:
                    rel = obstacles.yaw[near_j] - own_yaw[near_i]
                    across = (
                        np.abs(np.cos(rel)) * radius
                        + np.abs(np.sin(rel)) * obstacles.half_length[near_j]
                    )
                    radius = np.where(np.isfinite(rel), np.maximum(radius, across), radius)
                corridor = NPC_WIDTH_M / 2 + radius + 0.3
                hit = (d2 < (corridor * corridor)[:, None]) & valid[near_i]
                has = hit.any(axis=1)
                if has.any():
                    near_i, near_j, hit = near_i[has], near_j[has], hit[has]
                    first = np.argmax(hit, axis=1)
                    g = dist_ahead[near_i, first] - NPC_LENGTH_M / 2 - obstacles.half_length[near_j]
                    if obstacles.yaw is not None:
                        # The ego coming head-on in this lane (passing something in its own
                        # lane) gets room to finish its pass and pull back in. Obstacle 0
                        # is the ego (see LiteSimulator._obstacles).
                        rel = obstacles.yaw[near_j] - own_yaw[near_i]
                        head_on = (near_j == 0) & (
                            np.nan_to_num(np.cos(rel), nan=1.0) < HEAD_ON_COS
                        )
                        g = np.where(head_on, g - ONCOMING_STANDOFF_M, g)
                    g = np.maximum(g, 0.0)
                    # Per NPC, the nearest obstacle in its corridor is its IDM leader.
                    order = np.lexsort((g, near_i))
                    first_pair = order[
                        np.concatenate([[True], near_i[order][1:] != near_i[order][:-1]])
                    ]
                    lead = near_i[first_pair]
                    gap[lead] = g[first_pair]
                    lead_v[lead] = obstacles.speed[near_j[first_pair]]
        # Red or yellow lights: stop at the stop line = where the path leaves a lit lane.
        win_lane = self.path_lane[ar[:, None], win_idx]
        lane_light = self._lane_light[win_lane]
        # The last window point on a lit lane marks its end; the stop line lies
        # STOP_LINE_BACKOFF_M before it.
        entering = (lane_light >= 0) & (
            win_lane != np.concatenate([win_lane[:, 1:], win_lane[:, -1:]], axis=1)
        )
        if entering.any():
            red = np.zeros_like(entering)
            red[entering] = light_red[lane_light[entering]]
            red &= ~self.ignore_lights[:, None]
            if red.any():
                first = np.argmax(red, axis=1)
                has = red.any(axis=1)
                stop_gap = dist_ahead[ar, first] - 4.0 - NPC_LENGTH_M / 2
                # Do not stop for a light already too close to stop for (running yellow).
                can_stop = stop_gap > self.v**2 / (2 * MAX_DECEL_MPS2) - 1.0
                if light_yellow is not None:  # a red light is never run
                    can_stop |= ~light_yellow[lane_light[ar, first]]
                gap = np.where(has & can_stop, np.minimum(gap, np.maximum(stop_gap, 0.0)), gap)
        # Unsignalized junctions: one vehicle at a time (a reservation per junction).
        cur_lane = self.path_lane[ar, np.minimum(base, self.path_len - 1)]
        cur_node = self._lane_node[cur_lane]
        if self.reservation:
            win_node_holders = None
            for node, owner in list(self.reservation.items()):
                if cur_node[owner] != node:
                    if win_node_holders is None:
                        win_node_holders = self._lane_node[win_lane]
                    if not (win_node_holders[owner] == node).any():
                        del self.reservation[node]
        win_node = self._unsignalized_node[win_lane]
        entry = (win_node >= 0) & (win_node != cur_node[:, None])
        approaching = np.nonzero(entry.any(axis=1))[0]
        if len(approaching):
            j_entry = np.argmax(entry[approaching], axis=1)
            nodes = win_node[approaching, j_entry]
            dists = dist_ahead[approaching, j_entry]
            for i, node, dist in zip(
                approaching.tolist(), nodes.tolist(), dists.tolist(), strict=True
            ):
                i = int(i)
                holder = self.reservation.get(node)
                busy = (holder is not None and holder != i) or ego_junction == node
                if not busy and dist < 12.0:
                    self.reservation[node] = i
                elif busy:
                    gap[i] = min(gap[i], max(dist - NPC_LENGTH_M / 2 - 1.0, 0.0))

        # Scripted behaviours.
        fire = (~self.triggered) & (ego_route_s >= self.trigger_s)
        self.triggered |= fire
        cap_idx = np.minimum(
            base + np.maximum((self.v * 2.0).astype(np.int64), 1), self.path_len - 1
        )
        v0 = np.minimum(self.v_desired, self.path_cap[ar, cap_idx])
        v0 = np.minimum(v0, self._lane_limit[cur_lane] * 1.1)
        v0 = np.maximum(v0, 0.5)
        dv = self.v - lead_v
        s_star = IDM_MIN_GAP_M + np.maximum(
            self.v * IDM_TIME_HEADWAY_S
            + self.v * dv / (2 * math.sqrt(IDM_MAX_ACCEL_MPS2 * IDM_COMFORT_DECEL_MPS2)),
            0.0,
        )
        interaction = (s_star / np.maximum(gap, 0.1)) ** 2  # no leader: gap = inf -> 0
        acc = IDM_MAX_ACCEL_MPS2 * (1.0 - (self.v / v0) ** 4 - interaction)
        acc = np.maximum(acc, -MAX_DECEL_MPS2)
        stopped = (self.behaviour == BEHAVIOUR_STOPPED) | (
            (self.behaviour == BEHAVIOUR_WAITING) & ~self.triggered
        )
        # A hard brake is an emergency stop, held HARD_BRAKE_HOLD_S, then the NPC drives on
        # (like the Leaderboard's HardBreakRoute lead vehicle).
        braking = (self.behaviour == BEHAVIOUR_HARD_BRAKE) & self.triggered
        self.held_s = np.where(
            braking & (self.v < 0.05), self.held_s + 1.0 / DECISION_HZ, self.held_s
        )
        braking &= self.held_s < HARD_BRAKE_HOLD_S
        acc = np.where(braking, -self.brake_decel, acc)
        self.acc = np.where(stopped, -MAX_DECEL_MPS2, acc)

    def integrate(self, dt: float) -> None:
        """Move every NPC along its path with its held acceleration."""
        if self.n == 0:
            return
        v_new = np.maximum(self.v + self.acc * dt, 0.0)
        s_new = self.s + 0.5 * (self.v + v_new) * dt / PATH_SPACING_M
        last = self.path_len - 2.0  # a dead-ended path holds the NPC at its end
        self.v = np.where(s_new >= last, 0.0, v_new)
        self.s = np.minimum(s_new, last)

    def dead_ended(self) -> np.ndarray:
        return (~self.path_open) & (self.s >= self.path_len - 2.5) & self.respawnable
