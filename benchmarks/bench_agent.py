"""Control-step latency of the learned agent (not a test): `make bench` or
`python benchmarks/bench_agent.py [--json] [--checkpoint DIR] [--seconds S]`.

Drives the Leaderboard agent (agent/leaderboard_agent.py: model + safety guard + PID) on
one library route of the embedded simulator with the default sensor suite (one 256x128
camera, GNSS, IMU, speedometer) and one torch thread for the control step, and times
`run_step` only (not the simulator):
- `distilled`: the VLM off, its distilled head on the visual features;
- `async`: the VLM reasoning at 2 Hz of game time in its own process (the default
  `vlm_worker: process`, agent/reasoner/process.py) while the control step runs;
- `async, VLM thread`: the same with the VLM in a background thread of this process
  (`vlm_worker: thread`), whose `generate` loop competes for the GIL;
- `distilled, no guard`: the guard's own cost is the difference to `distilled`.
Targets (issue 5): p50 <= 15 ms, p99 <= 40 ms. Also reported: the VLM's own reasoning
rate on this CPU (reasonings completed per second of wall time, and per-call latency).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agent.leaderboard_agent import VLMDriveAgent
from scenarios.compile import compile_scenario
from scenarios.loader import load_scenario
from scenarios.sampler import sample
from sim.control import VehicleControl
from sim.data_provider import DataProvider
from sim.evaluate import agent_global_plan
from sim.lite.world import LiteSimulator

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios/library/eval/construction_left_fog.yaml"


def run(
    checkpoint: Path, mode: str, seconds: float, guard: bool = True, worker: str = "process"
) -> dict:
    sim = LiteSimulator()
    spec = compile_scenario(sample(load_scenario(SCENARIO), n=1)[0], str(SCENARIO))
    sim.reset(spec, 0)
    DataProvider.set_simulator(sim)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        config = {"checkpoint": str(checkpoint), "vlm_mode": mode, "threads": 1}
        config["vlm_worker"] = worker
        yaml.safe_dump({**config, "safety": {"enabled": guard}}, f)
    agent = VLMDriveAgent("localhost", 2000, False)
    agent.set_global_plan(*agent_global_plan(agent, sim))
    agent.setup(f.name)
    sim.setup_sensors(agent.sensors())
    control = VehicleControl()
    times = []
    wall0 = time.perf_counter()
    for _ in range(int(seconds * 20)):
        data = sim.tick(control)
        if sim.route_status.ended:
            break
        t = time.perf_counter()
        control = agent.run_step(data, sim.time_s)
        times.append(time.perf_counter() - t)
    wall = time.perf_counter() - wall0
    status = agent.driver.runtime.status() if agent.driver.runtime is not None else None
    agent.destroy()
    DataProvider.set_simulator(None)
    os.unlink(f.name)
    ms = np.asarray(times[20:]) * 1000  # skip warm-up
    row = {
        "mode": mode
        + ("" if guard else ", no guard")
        + (", VLM thread" if mode == "async" and worker == "thread" else ""),
        "ticks": len(times),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }
    if status is not None:
        completed = status.completed
        row["vlm_reasonings"] = completed
        row["vlm_reasonings_per_s"] = round(completed / wall, 2)
    return row


def vlm_latency(checkpoint: Path, n: int = 30) -> dict[str, float]:
    """Wall time of one `reason()` call on an idle machine: what `vlm_latency_s` of an
    evaluation config should cover (docs/leaderboard_agent.md)."""
    from agent.reasoner.vlm import VLMReasoner

    vlm = VLMReasoner.from_pretrained(checkpoint / "vlm").eval()
    image = np.random.default_rng(0).integers(0, 255, (128, 256, 3), dtype=np.uint8)
    vlm.reason(image, 0)
    times = []
    for i in range(n):
        t = time.perf_counter()
        vlm.reason(image, i)
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1000
    return {
        "reason_ms_p50": round(float(np.percentile(ms, 50)), 1),
        "reason_ms_p90": round(float(np.percentile(ms, 90)), 1),
        "reason_ms_max": round(float(ms.max()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints/vlmdrive-tiny")
    parser.add_argument("--seconds", type=float, default=30.0, help="game seconds per mode")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    rows = [run(args.checkpoint, mode, args.seconds) for mode in ("distilled", "async")]
    rows.append(run(args.checkpoint, "async", args.seconds, worker="thread"))
    rows.append(run(args.checkpoint, "distilled", args.seconds, guard=False))
    report: dict[str, Any] = {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "checkpoint": str(args.checkpoint),
        "runs": rows,
        "vlm": vlm_latency(args.checkpoint),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"agent control step (model + guard + PID), 1 torch thread, {os.cpu_count()} cpus (target p50<=15, p99<=40 ms)"
    )
    for r in rows:
        extra = (
            f", VLM {r['vlm_reasonings_per_s']} reasonings/s" if "vlm_reasonings_per_s" in r else ""
        )
        print(
            f"  {r['mode']:>20}: p50 {r['p50_ms']} ms, p90 {r['p90_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms{extra}"
        )
    vlm = report["vlm"]
    print(
        f"  VLM reason() on one frame: p50 {vlm['reason_ms_p50']} ms, p90 {vlm['reason_ms_p90']} ms, max {vlm['reason_ms_max']} ms"
    )


if __name__ == "__main__":
    main()
