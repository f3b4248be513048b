"""The driving dataset's vocabulary and frame layout, shared by collection, training,
open-loop evaluation and the model's heads.

A shard (`shard-NNNNN.npz`, `numpy.savez_compressed`, no pickled objects) holds N frames
sampled at `SAMPLE_HZ` from whole episodes; `FIELDS` lists every array with its shape
and dtype ("N" = frames, "C" = cameras). Frames of one episode are consecutive and in time
order, so the frame `HISTORY_STRIDE` rows earlier with the same `episode` is the history
frame 0.5 s back.
"""

from __future__ import annotations

import numpy as np

SAMPLE_HZ = 2.0  # [Hz] frames stored per second of driving (every 10th 20 Hz tick)
HORIZON_POSES = 8  # future poses in a trajectory label
POSE_DT_S = 0.5  # [s] between poses: 8 x 0.5 s = 4 s
MAX_OBSTACLES = 32  # obstacle rows per frame (nearest first, padded, see `obstacle_mask`)
TEXT_LEN = 256  # characters of reasoning text kept (fixed-width unicode, no pickle)
NAME_LEN = 64  # characters of scenario names kept

# Edge-case flags, automatic labels from ground truth. Order is the head's output order.
FLAGS: tuple[str, ...] = (
    "construction",  # cones / barriers / warning signs on or beside the route ahead
    "lane_closed",  # the route lane is blocked ahead by something that must be passed
    "pedestrian_crossing",  # a pedestrian on or walking toward the path ahead
    "cut_in",  # a vehicle merging into the ego lane close ahead
    "lead_braking",  # the lead vehicle in the ego lane decelerates hard
    "red_light",  # a red (or yellow) light governs the route ahead
    "obstacle",  # accident / stalled or parked vehicle / debris blocking the route ahead
    "rain",
    "fog",
    "night",
    "glare",  # low sun in front of the camera
)

# The intended manoeuvre (the expert's plan), one per frame. Order is the head's order.
INTENTS: tuple[str, ...] = (
    "keep_lane",
    "slow_down",
    "stop",
    "change_left",
    "change_right",
    "pass_opposite",  # pass using the oncoming lane
    "yield",  # slow or stop for a crossing pedestrian / vehicle with right of way
)

# Obstacle row columns, ego frame at the frame's time (x forward, y left, yaw left-positive).
OBSTACLE_COLUMNS: tuple[str, ...] = (
    "x",  # [m] centre
    "y",  # [m]
    "yaw",  # [rad]
    "vx",  # [m/s] velocity, ego frame
    "vy",  # [m/s]
    "length",  # [m]
    "width",  # [m]
    "kind",  # 0 vehicle, 1 pedestrian, 2 static (agent.rules.view.KINDS order)
)

# Lane structure beside the route, at these distances along it from the ego's projection
# [m]: what the safety guard's fallback needs to plan a pass itself (measured with the
# agent's `safety.perception` ablations: with exact object boxes the guarded learned
# planner gains only together with the lanes beside the route). Columns, per station, as
# the rule set's view has them (`agent.rules.view.ObstacleView`): a same-direction lane to
# the left, one to the right, an oncoming lane directly to the left.
LANE_STATIONS_M: tuple[float, ...] = (0.0, 20.0, 40.0)
LANE_COLUMNS: tuple[str, ...] = ("left_same", "right_same", "left_opposite")

# Traffic light governing the route ahead (within LIGHT_RANGE_M), for the perception head.
LIGHT_STATES: tuple[str, ...] = ("none", "red", "yellow", "green")
LIGHT_RANGE_M = 50.0  # [m]

# name -> (shape with N/C placeholders, dtype)
FIELDS: dict[str, tuple[tuple[str | int, ...], str]] = {
    "image": (("N", "C", "H", "W", 3), "uint8"),  # camera frames, BGR (sensor order, alpha dropped)
    "speed_mps": (("N",), "float32"),
    "command": (("N",), "int64"),  # RoadOption value, VOID (-1) -> 0 (sim.env.command_index)
    "target_point": (("N", 2), "float32"),  # [m] ego frame, from the global plan (GNSS/IMU)
    "trajectory": (("N", HORIZON_POSES, 2), "float32"),  # [m] ego frame, the expert's future
    "flags": (("N", len(FLAGS)), "bool"),
    # [m] along the route to the hazard that raised each flag; NaN where off (labels.py)
    "flag_distance_m": (("N", len(FLAGS)), "float32"),
    "intent": (("N",), "int64"),  # index into INTENTS
    "text": (("N",), f"<U{TEXT_LEN}"),  # reasoning text
    "obstacles": (("N", MAX_OBSTACLES, len(OBSTACLE_COLUMNS)), "float32"),
    "obstacle_mask": (("N", MAX_OBSTACLES), "bool"),
    "light_state": (("N",), "int64"),  # index into LIGHT_STATES
    "lanes": (("N", len(LANE_STATIONS_M), len(LANE_COLUMNS)), "bool"),  # see LANE_COLUMNS
    "target_speed_mps": (("N",), "float32"),  # the expert's planned speed
    "episode": (("N",), "int64"),  # global episode index of the collection run
    "frame": (("N",), "int64"),  # simulator frame
    "time_s": (("N",), "float32"),  # [s] game time
    "scenario": (("N",), f"<U{NAME_LEN}"),  # concrete variation name, e.g. cut_in_rain#3
}

# Fields added after datasets were already collected: a shard without them still loads, and
# whatever reads them treats them as absent (load_shards keeps one only if every shard has it).
ADDED_FIELDS: frozenset[str] = frozenset({"flag_distance_m", "lanes"})

HISTORY_STRIDE = 1  # rows back (in one episode) for the previous history frame: 0.5 s


def check_shard(arrays: dict[str, np.ndarray], where: str = "shard") -> int:
    """Validate a shard's arrays against FIELDS; return N. Raises ValueError naming the field."""
    missing = sorted(set(FIELDS) - set(arrays) - ADDED_FIELDS)
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    n = len(arrays["speed_mps"])
    for name, (shape, dtype) in FIELDS.items():
        if name not in arrays:
            continue  # an ADDED_FIELDS field of an older shard
        arr = arrays[name]
        if arr.ndim != len(shape):
            raise ValueError(
                f"{where}: field {name!r} must have {len(shape)} dims, got {arr.shape}"
            )
        if arr.shape[0] != n:
            raise ValueError(f"{where}: field {name!r} has {arr.shape[0]} rows, expected {n}")
        for axis, want in enumerate(shape):
            if isinstance(want, int) and arr.shape[axis] != want:
                raise ValueError(
                    f"{where}: field {name!r} axis {axis} must be {want}, got {arr.shape}"
                )
        if np.dtype(dtype).kind == "U":
            if arr.dtype.kind != "U":
                raise ValueError(f"{where}: field {name!r} must be unicode text, got {arr.dtype}")
        elif arr.dtype != np.dtype(dtype):
            raise ValueError(f"{where}: field {name!r} must be {dtype}, got {arr.dtype}")
    return n
