"""Embedded simulator throughput (not a test): `make bench` or `python benchmarks/bench_sim.py [--json]`.

One process, one thread, default town, 20 NPC vehicles, 10 pedestrians, 20 Hz:
  1. physics only (no sensors)                    target >= 5,000 simulated frames/s
  2. one 256x128 camera under HardRainNight       target >= 1,000 frames/s
  3. peer: highway-env `intersection-v0` with GrayscaleObservation 128x64; its simulated
     frames/s = env steps/s * simulation_frequency / policy_frequency. Target ratio >= 2x.
The ego is driven by a cheap pure-pursuit lane keeper so the figures measure the
simulator, not a driver.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

import cv2
import numpy as np

from sim.control import VehicleControl
from sim.lite.dynamics import MAX_STEER_ANGLE_RAD, MKZ_WHEELBASE_M
from sim.lite.world import LiteSimulator
from sim.sensors import default_front_camera
from sim.spec import RouteSpec, WorldSpec
from sim.weather import Weather


def lane_keeper(sim: LiteSimulator, speed_mps: float = 8.0) -> VehicleControl:
    """Pure pursuit 6 m ahead on the route, P-control on speed; ~10 us per call."""
    ego = sim.ego
    route = sim.route
    i = min(int(np.searchsorted(route.s, sim.criteria.progress_m + 6.0)), len(route.s) - 1)
    dx, dy = route.points[i, 0] - ego.x, route.points[i, 1] - ego.y
    c, s = math.cos(ego.yaw), math.sin(ego.yaw)
    left = dx * s - dy * c  # [m] target's offset to the ego's left
    wheel = math.atan(MKZ_WHEELBASE_M * 2.0 * left / max(dx * dx + dy * dy, 1e-6))
    steer = -wheel / MAX_STEER_ANGLE_RAD
    error = speed_mps - ego.speed
    if error > 0:
        return VehicleControl(throttle=min(0.3 * error, 0.75), steer=steer)
    return VehicleControl(brake=min(-0.3 * error, 1.0), steer=steer)


def run_lite(camera: bool, ticks: int, seed: int = 0) -> float:
    spec = WorldSpec(
        route=RouteSpec(length_m=2000.0),
        num_vehicles=20,
        num_pedestrians=10,
        weather=Weather.preset("HardRainNight"),
    )
    sim = LiteSimulator()
    sim.reset(spec, seed)
    if camera:
        sim.setup_sensors([default_front_camera(256, 128)])
    for _ in range(50):  # warm-up: caches, first-frame weather maps
        sim.tick(lane_keeper(sim))
    start = time.perf_counter()
    for _ in range(ticks):
        sim.tick(lane_keeper(sim))
    return ticks / (time.perf_counter() - start)


def run_highway_env(steps: int) -> dict[str, float]:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import gymnasium as gym
    import highway_env  # noqa: F401  (registers the envs)

    env = gym.make(
        "intersection-v0",
        config={
            "observation": {
                "type": "GrayscaleObservation",
                "observation_shape": (128, 64),
                "stack_size": 1,
                "weights": [0.2989, 0.5870, 0.1140],
            },
        },
    )
    # highway-env's AbstractEnv has .config; gymnasium's Env type does not
    cfg = env.unwrapped.config  # type: ignore[attr-defined]
    env.reset(seed=0)
    n = 0
    start = time.perf_counter()
    while n < steps:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        n += 1
        if terminated or truncated:
            env.reset()
    steps_per_s = n / (time.perf_counter() - start)
    env.close()
    ratio = cfg["simulation_frequency"] / cfg["policy_frequency"]
    return {
        "env_steps_per_s": steps_per_s,
        "frames_per_s": steps_per_s * ratio,
        "simulation_frequency": cfg["simulation_frequency"],
        "policy_frequency": cfg["policy_frequency"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--ticks", type=int, default=4000)
    parser.add_argument("--peer-steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3, help="report the median of N runs")
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one thread, as the targets are stated

    # The median of a few repeats: this host's timing noise is +-10 %.
    physics = statistics.median(
        run_lite(camera=False, ticks=args.ticks) for _ in range(args.repeats)
    )
    camera = statistics.median(
        run_lite(camera=True, ticks=args.ticks // 2) for _ in range(args.repeats)
    )
    peer = run_highway_env(args.peer_steps)
    figures = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "physics_frames_per_s": round(physics, 1),
        "camera_256x128_hardrainnight_frames_per_s": round(camera, 1),
        "highway_env_intersection_frames_per_s": round(peer["frames_per_s"], 1),
        "highway_env_env_steps_per_s": round(peer["env_steps_per_s"], 1),
        "camera_vs_highway_env_ratio": round(camera / peer["frames_per_s"], 2),
        "targets": {"physics": 5000, "camera": 1000, "ratio": 2.0},
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"physics only          {physics:9.0f} frames/s  (target >= 5000)")
    print(f"camera 256x128 rain   {camera:9.0f} frames/s  (target >= 1000)")
    print(
        f"highway-env peer      {peer['frames_per_s']:9.0f} frames/s  "
        f"({peer['env_steps_per_s']:.0f} env steps/s x {peer['simulation_frequency']}/{peer['policy_frequency']})"
    )
    print(
        f"ratio camera / peer   {figures['camera_vs_highway_env_ratio']:9.2f}x       (target >= 2x)"
    )


if __name__ == "__main__":
    main()
