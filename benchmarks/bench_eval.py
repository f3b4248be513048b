"""Expert evaluation speed (not a test): `make bench` or `python benchmarks/bench_eval.py [--json]`.

`vlmdrive eval --agent expert` on a suite (default: the held-out eval suite) with 1 and with
2 Ray workers, no recording. Reported: simulated seconds per wall second ("x real time")
over the whole run including Ray start-up, and the per-route figure inside the workers
(game time / the route's own wall time), plus the Driving Score to show the runs agree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from sim.evaluate import details_path, evaluate

ROOT = Path(__file__).resolve().parent.parent


def run(suite: Path, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        start = time.perf_counter()
        results = evaluate("expert", "", suite, out=out, workers=workers, progress=False)
        wall = time.perf_counter() - start
        details = json.loads(details_path(out).read_text())
    game = sum(r["duration_game"] for r in details["routes"])
    route_wall = sum(r["duration_system"] for r in details["routes"])
    return {
        "workers": workers,
        "routes": len(details["routes"]),
        "game_s": round(game, 1),
        "wall_s": round(wall, 1),
        "x_real_time": round(game / wall, 1),
        "x_real_time_per_route": round(game / route_wall, 1),
        "driving_score": float(results["values"][0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", type=Path, default=ROOT / "scenarios/library/eval/suite.yaml")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    rows = [run(args.suite, w) for w in (1, 2)]
    report = {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "suite": str(args.suite),
        "runs": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"expert evaluation on {args.suite.name} ({rows[0]['routes']} routes), {os.cpu_count()} cpus"
    )
    for r in rows:
        print(
            f"  workers={r['workers']}: {r['game_s']:.0f} s of game time in {r['wall_s']:.1f} s wall"
            f" -> {r['x_real_time']:.1f}x real time overall"
            f" ({r['x_real_time_per_route']:.1f}x inside a route), DS {r['driving_score']:.2f}"
        )
    speedup = rows[1]["x_real_time"] / rows[0]["x_real_time"]
    print(f"  2 workers / 1 worker: {speedup:.2f}x")


if __name__ == "__main__":
    main()
