"""`vlmdrive collect`: drive the expert over a scenario suite and store the driving dataset.

Episode `e` runs suite item `e % len(items)` on variation `e // len(items)` of that
scenario (a fresh draw from the YAML distributions each time round the suite), on the
embedded simulator with world seed `sim.evaluate.route_seed(seed, e, 0)`: the data depend
only on (suite, episodes, seed, perturb), not on the number of workers.

Every tick (20 Hz) the expert (`agent.expert.ExpertDriver`, ground truth) plans and drives;
every `SAMPLE_EVERY_TICKS`-th tick (`schema.SAMPLE_HZ`) a frame is stored:
- inputs exactly as the model agent gets them at inference: the camera images (BGR), the
  speedometer, and the command + target point of `agent.navigation.RoutePlanner` fed the
  Leaderboard global plan, GNSS and compass (no ground truth);
- labels: the expert plan's trajectory (the expert's intended future from the current
  state, 8 x 0.5 s, ego frame; it is what the tracker follows, so it is the action the
  expert takes here, and it stays well defined when the executed future is disturbed by a
  perturbation or ends with the route), its target speed, and `agent.data.labels`.

`perturb` > 0 adds DAgger-style recovery data: with that probability per second a
steering perturbation starts (a random offset of +-PERTURB_STEER added to the expert's
steer for PERTURB_DURATION_S); frames during and after it are stored with the expert's
plan from the disturbed state as the label, so the data show how to recover.

`dagger` (an agent config, e.g. configs/agent_no_guard.yaml) adds on-policy data (DAgger,
Ross et al. 2011): the model agent (`agent/leaderboard_agent.py` with that config) runs
every tick on the same sensor data, and for each DAGGER_SEGMENT_S segment the driver is
drawn: the model with probability `dagger_beta`, else the expert. The labels stay the
expert's plan from wherever the model took the car, so the data show the states the model
itself reaches (a pass that overshoots onto the verge, a late turn) and how the expert
gets back from them: the compounding-error states pure imitation never sees.

An expert that gets stuck (a perturbation pushed it into a cone taper, a turn it never
finds a gap for) would otherwise stand until the Leaderboard's 180 s "blocked" timeout and
fill a third of the dataset with frames of a car that never moves again, teaching the model
to stay stopped (the inertia problem, Codevilla et al. ICCV'19). So an episode ends once the
ego has stood still for STUCK_END_S (longer than any red-light wait) and only the first
STUCK_KEEP_S of that final standstill are kept.

Output: `out/shard-NNNNN.npz` (`numpy.savez_compressed`, whole episodes, about
`FRAMES_PER_SHARD` frames each, validated with `schema.check_shard`, written atomically),
`out/index.json` and `out/README.md` (the dataset card).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from agent.data.labels import LabelMemory, label_frame
from agent.data.schema import (
    FIELDS,
    FLAGS,
    HORIZON_POSES,
    INTENTS,
    LANE_COLUMNS,
    LIGHT_STATES,
    NAME_LEN,
    SAMPLE_HZ,
    TEXT_LEN,
    check_shard,
)
from agent.expert import ExpertDriver
from agent.navigation import RoutePlanner
from agent.rules import view_from_ground_truth
from sim.control import VehicleControl
from sim.data_provider import DataProvider
from sim.protocol import FIXED_DELTA_SECONDS
from sim.sensors import CAMERA, GNSS, IMU, SPEEDOMETER, default_sensor_suite

SAMPLE_EVERY_TICKS = int(round(1.0 / (SAMPLE_HZ * FIXED_DELTA_SECONDS)))  # 10 ticks = 0.5 s
FRAMES_PER_SHARD = 256  # a shard is closed once it holds at least this many frames
PERTURB_DURATION_S = (0.5, 1.5)  # [s] length of a steering perturbation
PERTURB_STEER = (0.15, 0.3)  # [-] magnitude of the steer offset (random sign)
WEATHER_CONDITIONS = ("rain", "fog", "night", "glare")  # the card's weather breakdown
STUCK_SPEED_MPS = 0.1  # [m/s] below this the ego stands still (the blocked criterion's bound)
STUCK_END_S = 60.0  # [s] standstill that ends an episode (a full 4-way light cycle is ~60 s)
STUCK_KEEP_S = 10.0  # [s] of the final standstill kept in the data
DAGGER_SEGMENT_S = 4.0  # [s] the driver (model or expert) is drawn anew this often


class CollectError(ValueError):
    """Bad `collect` input; the message names the argument."""


@dataclass(frozen=True)
class EpisodeResult:
    """One finished episode: its frames (FIELDS arrays) and how the drive went."""

    episode: int
    scenario: str  # concrete variation name, e.g. "cut_in_rain#3"
    file: str
    world_seed: int
    arrays: dict[str, np.ndarray]
    completion: float  # [%] route completion
    failure: str | None  # why the route ended early, None if completed
    infractions: int  # infraction events
    perturbed_frames: int  # stored frames taken during a steering perturbation
    policy_frames: int  # stored frames taken while the model agent drove (DAgger)
    game_s: float  # [s]
    wall_s: float  # [s]

    @property
    def frames(self) -> int:
        return len(self.arrays["speed_mps"])


@dataclass(frozen=True)
class CollectSummary:
    out: Path
    episodes: int
    frames: int
    shards: tuple[str, ...]  # file names in `out`
    size_bytes: int  # on disk, shards only
    wall_s: float  # [s]
    counts: dict[str, Any] = field(default_factory=dict)  # what the card reports


@lru_cache(maxsize=4)
def _suite_items(suite: str) -> tuple:
    from scenarios.loader import load_suite

    return tuple(load_suite(suite))


def _episode_spec(suite: str, episode: int):
    """(item, concrete scenario, WorldSpec) of an episode."""
    from scenarios.compile import compile_scenario
    from scenarios.sampler import sample

    items = _suite_items(suite)
    item = items[episode % len(items)]
    variation = episode // len(items)
    concrete = sample(item.scenario, n=variation + 1, file=item.path)[variation]
    return item, concrete, compile_scenario(concrete, str(item.path))


def _dagger_agent(config: str, sim: Any, sensors: list[dict[str, Any]]) -> Any:
    """The model agent for DAgger segments, set up as the Leaderboard would (global plan
    before setup). Its sensors must be the ones the data store (the default suite)."""
    from sim.agent_loading import REPO_ROOT, load_agent_class
    from sim.evaluate import agent_global_plan

    entry = load_agent_class(str(REPO_ROOT / "agent" / "leaderboard_agent.py"))
    agent = entry("localhost", 2000, False)
    agent.set_global_plan(*agent_global_plan(agent, sim))
    agent.setup(config)
    ids = sorted(s["id"] for s in agent.sensors())
    if ids != sorted(s["id"] for s in sensors):
        raise CollectError(
            f"`dagger`: the agent's sensors {ids} differ from the dataset's default suite"
        )
    return agent


def run_episode(
    suite: str | Path,
    episode: int,
    seed: int = 0,
    perturb: float = 0.0,
    dagger: str | None = None,
    dagger_beta: float = 0.5,
) -> EpisodeResult:
    """Drive episode `episode` of the collection run and return its frames."""
    from sim.evaluate import route_seed
    from sim.lite.world import LiteSimulator

    wall0 = time.perf_counter()
    item, concrete, spec = _episode_spec(str(suite), episode)
    world_seed = route_seed(seed, episode, 0)
    rng = np.random.default_rng([seed, episode, 7])
    sim = LiteSimulator()
    sim.reset(spec, world_seed)
    sensors = default_sensor_suite()
    sim.setup_sensors(sensors)
    cameras = [s["id"] for s in sensors if s["type"] == CAMERA]
    gnss_id = next(s["id"] for s in sensors if s["type"] == GNSS)
    imu_id = next(s["id"] for s in sensors if s["type"] == IMU)
    speed_id = next(s["id"] for s in sensors if s["type"] == SPEEDOMETER)
    DataProvider.set_simulator(sim)
    expert = ExpertDriver()
    navigation = RoutePlanner()
    navigation.set_route(sim.global_plan()[0])
    agent = _dagger_agent(dagger, sim, sensors) if dagger else None
    segment_ticks = int(round(DAGGER_SEGMENT_S / FIXED_DELTA_SECONDS))
    model_drives, agent_ticks = False, 0
    policy: list[bool] = []  # per stored frame: the model agent was driving
    rows: dict[str, list] = {name: [] for name in FIELDS}
    memory: LabelMemory | None = None
    control = VehicleControl()
    perturb_ticks, perturb_steer, infractions = 0, 0.0, 0
    perturbed: list[bool] = []  # per stored frame: taken during a steering perturbation
    still_since: float | None = None  # [s] game time the current standstill began
    failure: str | None = None
    try:
        while True:
            # The expert drives from ground truth and the GNSS/IMU/speed sensors; the camera
            # is needed only on stored frames, or every tick when the model agent runs.
            stored = (sim.frame + 1) % SAMPLE_EVERY_TICKS == 0
            data = sim.tick(control, render=agent is not None or stored)
            infractions += len(sim.events)
            if sim.route_status.ended:
                failure = sim.route_status.failure
                break
            if float(data[speed_id][1]["speed"]) >= STUCK_SPEED_MPS:
                still_since = None
            elif still_since is None:
                still_since = sim.time_s
            elif sim.time_s - still_since > STUCK_END_S:
                failure = f"expert stuck: stood still for {STUCK_END_S:.0f} s"
                break
            nav = navigation.update(data[gnss_id][1], float(data[imu_id][1][6]))
            control = expert.step(sim)
            plan = expert.last_plan
            assert plan is not None  # set by step()
            if agent is not None:
                if agent_ticks % segment_ticks == 0:  # a segment starts (the first at tick 0)
                    model_drives = bool(rng.random() < dagger_beta)
                agent_ticks += 1
                # The agent runs every tick (its frame history and reasoning stay current).
                agent_control = agent.run_step(data, sim.time_s)
                if model_drives:
                    control = VehicleControl(
                        throttle=float(agent_control.throttle),
                        steer=float(agent_control.steer),
                        brake=float(agent_control.brake),
                    )
            if sim.frame % SAMPLE_EVERY_TICKS == 0:
                gt = sim.ground_truth()
                view = view_from_ground_truth(gt, sim.route, sim.lane_layout(), sim.speed_limit_at)
                labels = label_frame(view, plan, gt, memory)
                memory = LabelMemory.of(gt, memory)
                rows["image"].append(np.stack([data[c][1][:, :, :3] for c in cameras]))
                rows["speed_mps"].append(float(data[speed_id][1]["speed"]))
                rows["command"].append(nav.command)
                rows["target_point"].append(nav.target_point)
                rows["trajectory"].append(plan.trajectory[:HORIZON_POSES])
                rows["flags"].append(labels.flags)
                rows["flag_distance_m"].append(labels.flag_distance_m)
                rows["intent"].append(labels.intent)
                rows["text"].append(labels.text[:TEXT_LEN])
                rows["obstacles"].append(labels.obstacles)
                rows["obstacle_mask"].append(labels.obstacle_mask)
                rows["light_state"].append(labels.light_state)
                rows["lanes"].append(labels.lanes)
                rows["target_speed_mps"].append(plan.target_speed_mps)
                rows["episode"].append(episode)
                rows["frame"].append(sim.frame)
                rows["time_s"].append(sim.time_s)
                rows["scenario"].append(concrete.name[:NAME_LEN])
                perturbed.append(perturb_ticks > 0)
                policy.append(model_drives)
            if perturb > 0.0:
                if perturb_ticks == 0 and rng.random() < perturb * FIXED_DELTA_SECONDS:
                    perturb_ticks = int(
                        round(rng.uniform(*PERTURB_DURATION_S) / FIXED_DELTA_SECONDS)
                    )
                    perturb_steer = float(rng.choice([-1.0, 1.0]) * rng.uniform(*PERTURB_STEER))
                if perturb_ticks > 0:
                    perturb_ticks -= 1
                    control = VehicleControl(
                        throttle=control.throttle,
                        steer=control.steer + perturb_steer,
                        brake=control.brake,
                    )
    finally:
        if agent is not None:
            agent.destroy()
        DataProvider.set_simulator(None)
        sim.close()
    arrays = _stack(rows)
    if still_since is not None and failure is not None:
        arrays, perturbed, policy = drop_standstill_tail(
            arrays, perturbed, policy, still_since_s=still_since
        )
    status = sim.route_status
    return EpisodeResult(
        episode=episode,
        scenario=concrete.name,
        file=str(item.path),
        world_seed=world_seed,
        arrays=arrays,
        completion=float(status.completion),
        failure=failure,
        infractions=infractions,
        perturbed_frames=sum(perturbed),
        policy_frames=sum(policy),
        game_s=float(sim.time_s),
        wall_s=time.perf_counter() - wall0,
    )


def drop_standstill_tail(
    arrays: dict[str, np.ndarray], *per_frame: list[bool], still_since_s: float
) -> tuple[Any, ...]:
    """Keep the frames up to STUCK_KEEP_S after the final standstill began (game time):
    (the FIELDS arrays, then each per-frame flag list of `per_frame`, all trimmed alike)."""
    keep = arrays["time_s"] <= still_since_s + STUCK_KEEP_S
    return (
        {name: a[keep] for name, a in arrays.items()},
        *([f for f, k in zip(flags, keep, strict=True) if k] for flags in per_frame),
    )


def _stack(rows: dict[str, list]) -> dict[str, np.ndarray]:
    """Per-frame lists -> FIELDS arrays (also for zero frames)."""
    out: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in FIELDS.items():
        values = rows[name]
        if values:
            out[name] = np.asarray(np.stack(values) if np.ndim(values[0]) else values, dtype=dtype)
        else:
            fixed = [d if isinstance(d, int) else 0 for d in shape]
            out[name] = np.zeros(fixed, dtype=dtype)
    return out


def _run_job(job: tuple[str, int, int, float, str | None, float]) -> EpisodeResult:
    return run_episode(*job)


def _check_args(
    suite: str | Path,
    episodes: int,
    out: str | Path,
    seed: int,
    workers: int,
    perturb: float,
    dagger: str | None = None,
    dagger_beta: float = 0.5,
) -> Path:
    if not Path(suite).exists():
        raise CollectError(f"`suite`: no such suite file or scenario folder: {suite}")
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise CollectError(f"`episodes` must be an integer >= 1, got {episodes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CollectError(f"`seed` must be an integer >= 0, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise CollectError(f"`workers` must be an integer >= 1, got {workers!r}")
    if not (isinstance(perturb, int | float) and math.isfinite(perturb) and 0.0 <= perturb <= 10.0):
        raise CollectError(f"`perturb` must be a rate in [0, 10] per second, got {perturb!r}")
    if dagger is not None and not Path(dagger).is_file():
        raise CollectError(f"`dagger`: no such agent config file: {dagger}")
    if not (isinstance(dagger_beta, int | float) and 0.0 <= dagger_beta <= 1.0):
        raise CollectError(f"`dagger_beta` must be a probability in [0, 1], got {dagger_beta!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CollectError(f"`out` must be a folder, got the file {out}")
    if out.is_dir() and ((out / "index.json").exists() or any(out.glob("shard-*.npz"))):
        raise CollectError(f"`out` already holds a dataset: {out}; choose an empty or new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise CollectError(f"`out` is not writable: {out} ({exc.strerror or exc})") from None
    return out


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_shard(path: Path, results: list[EpisodeResult]) -> int:
    arrays = {name: np.concatenate([r.arrays[name] for r in results]) for name in FIELDS}
    n = check_shard(arrays, where=path.name)
    # allow_pickle=False: every field is a plain array (text is fixed-width unicode).
    _write_atomic(path, lambda f: np.savez_compressed(f, allow_pickle=False, **arrays))  # type: ignore[arg-type]
    return n


class _Counts:
    """Running counts for the card."""

    def __init__(self) -> None:
        self.frames = 0
        self.flags: Counter[str] = Counter()
        self.intents: Counter[str] = Counter()
        self.weather: Counter[str] = Counter()
        self.lights: Counter[str] = Counter()
        self.lanes: Counter[str] = Counter()  # frames with each lane beside the ego
        self.scenario_frames: Counter[str] = Counter()
        self.scenario_episodes: Counter[str] = Counter()
        self.perturbed_frames = 0
        self.policy_frames = 0
        self.completed = 0

    def add(self, r: EpisodeResult) -> None:
        a = r.arrays
        self.frames += r.frames
        self.perturbed_frames += r.perturbed_frames
        self.policy_frames += r.policy_frames
        self.completed += r.failure is None and r.completion >= 100.0
        flags = a["flags"]
        for k, name in enumerate(FLAGS):
            self.flags[name] += int(flags[:, k].sum())
        for i in a["intent"].tolist():
            self.intents[INTENTS[i]] += 1
        for i in a["light_state"].tolist():
            self.lights[LIGHT_STATES[i]] += 1
        if "lanes" in a:
            for k, name in enumerate(LANE_COLUMNS):
                self.lanes[name] += int(a["lanes"][:, 0, k].sum())  # station 0: beside the ego
        cond = np.stack([flags[:, FLAGS.index(c)] for c in WEATHER_CONDITIONS], axis=1)
        for k, c in enumerate(WEATHER_CONDITIONS):
            self.weather[c] += int(cond[:, k].sum())
        self.weather["clear"] += int((~cond.any(axis=1)).sum())
        base = r.scenario.split("#")[0]
        self.scenario_frames[base] += r.frames
        self.scenario_episodes[base] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "perturbed_frames": self.perturbed_frames,
            "policy_frames": self.policy_frames,
            "completed_episodes": self.completed,
            "flags": {name: self.flags[name] for name in FLAGS},
            "intents": {name: self.intents[name] for name in INTENTS},
            "weather": {c: self.weather[c] for c in (*WEATHER_CONDITIONS, "clear")},
            "light_states": {name: self.lights[name] for name in LIGHT_STATES},
            "lanes_beside_ego": {name: self.lanes[name] for name in LANE_COLUMNS},
            "scenarios": {
                name: {
                    "episodes": self.scenario_episodes[name],
                    "frames": self.scenario_frames[name],
                }
                for name in sorted(self.scenario_frames)
            },
        }


def collect(
    suite: str | Path,
    episodes: int,
    out: str | Path,
    seed: int = 0,
    workers: int = 1,
    perturb: float = 0.0,
    progress: bool = True,
    dagger: str | Path | None = None,
    dagger_beta: float = 0.5,
) -> CollectSummary:
    """Collect `episodes` expert episodes of `suite` into `out` (see the module docstring)."""
    wall0 = time.perf_counter()
    dagger = None if dagger is None else str(dagger)
    out = _check_args(suite, episodes, out, seed, workers, perturb, dagger, dagger_beta)
    items = _suite_items(str(suite))
    if not items:
        raise CollectError(f"`suite`: {suite} holds no scenario")
    jobs = [
        (str(suite), e, seed, float(perturb), dagger, float(dagger_beta)) for e in range(episodes)
    ]
    shards: list[dict[str, Any]] = []
    episode_rows: list[dict[str, Any]] = []
    counts = _Counts()
    pending: list[EpisodeResult] = []

    def flush() -> None:
        if not pending:
            return
        name = f"shard-{len(shards):05d}.npz"
        n = _write_shard(out / name, pending)
        shards.append({"file": name, "frames": n, "episodes": [r.episode for r in pending]})
        pending.clear()

    def take(r: EpisodeResult) -> None:
        counts.add(r)
        episode_rows.append(
            {
                "episode": r.episode,
                "scenario": r.scenario,
                "file": r.file,
                "world_seed": r.world_seed,
                "frames": r.frames,
                "completion": round(r.completion, 2),
                "failure": r.failure,
                "infractions": r.infractions,
                "perturbed_frames": r.perturbed_frames,
                "policy_frames": r.policy_frames,
                "game_s": round(r.game_s, 2),
            }
        )
        if progress:
            print(
                f"episode {r.episode + 1}/{episodes} {r.scenario}: {r.frames} frames, "
                f"RC {r.completion:.0f} %, {r.wall_s:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        pending.append(r)
        if sum(p.frames for p in pending) >= FRAMES_PER_SHARD:
            flush()

    if workers == 1:
        for job in jobs:
            take(_run_job(job))
    else:
        # Spawned processes (no forked simulator state); results come back in episode order,
        # so shards are the same as with one worker.
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(workers, episodes)) as pool:
            for r in pool.imap(_run_job, jobs):
                take(r)
    flush()
    size = sum((out / s["file"]).stat().st_size for s in shards)
    wall_s = time.perf_counter() - wall0
    args = {
        "suite": str(suite),
        "episodes": episodes,
        "out": str(out),
        "seed": seed,
        "workers": workers,
        "perturb": perturb,
        "dagger": dagger,
        "dagger_beta": dagger_beta,
    }
    index = {
        "format": "vlmdrive-driving-dataset/1",
        "suite": str(suite),
        "seed": seed,
        "suite_items": len(items),
        "episodes": episodes,
        "frames": counts.frames,
        "shards": shards,
        "episode_table": episode_rows,
        "args": args,
        "sample_hz": SAMPLE_HZ,
        "flags": list(FLAGS),
        "intents": list(INTENTS),
        "light_states": list(LIGHT_STATES),
        "counts": counts.as_dict(),
        "size_bytes": size,
    }
    text = json.dumps(index, indent=2) + "\n"
    _write_atomic(out / "index.json", lambda f: f.write(text.encode()))
    card = dataset_card(index)
    _write_atomic(out / "README.md", lambda f: f.write(card.encode()))
    return CollectSummary(
        out=out,
        episodes=episodes,
        frames=counts.frames,
        shards=tuple(s["file"] for s in shards),
        size_bytes=size,
        wall_s=wall_s,
        counts=counts.as_dict(),
    )


def collect_command(args: dict[str, Any]) -> str:
    """The `vlmdrive collect` command line that reproduces a run."""
    cmd = f"vlmdrive collect --suite {args['suite']} --episodes {args['episodes']} --out {args['out']}"
    cmd += f" --seed {args['seed']} --workers {args['workers']}"
    if args["perturb"]:
        cmd += f" --perturb {args['perturb']}"
    if args.get("dagger"):
        cmd += f" --dagger {args['dagger']} --dagger-beta {args['dagger_beta']}"
    return cmd


def _table(title: str, counts: dict[str, int], total: int) -> list[str]:
    lines = [f"| {title} | frames | % |", "|---|---:|---:|"]
    for name, n in counts.items():
        lines.append(f"| {name} | {n} | {100.0 * n / max(total, 1):.1f} |")
    return lines + [""]


def dataset_card(index: dict[str, Any]) -> str:
    """README.md of a collected dataset, from its index."""
    c = index["counts"]
    total = c["frames"]
    mb = index["size_bytes"] / 1e6
    lines = [
        "# vlmdrive driving dataset",
        "",
        "Expert demonstrations from the embedded simulator (`sim/lite`): the privileged",
        "rule-based expert (`agent/expert.py`) drives every episode; frames are stored at",
        f"{index['sample_hz']:g} Hz with the front camera (BGR), speed, the route command and target point",
        "from GNSS/compass (`agent/navigation.py`, as at inference), the expert plan's 4 s",
        "trajectory (its intended future from the current state, ego frame), its target speed,",
        "and automatic labels from ground truth (`agent/data/labels.py`): edge-case flags,",
        "intent, a reasoning text, the governing light and the nearest obstacles.",
        "Fields and shapes: `agent/data/schema.py` (`FIELDS`); read with",
        "`agent.data.dataset.load_shards`.",
        "",
        "## How it was made",
        "",
        "```",
        collect_command(index["args"]),
        "```",
        "",
        f"Episode e drives suite item e % {index['suite_items']} (in suite order) on variation",
        f"e // {index['suite_items']} of that scenario, world seed",
        "`sim.evaluate.route_seed(seed, e, 0)`; the data are the same for any `--workers`.",
        "",
        "## Counts",
        "",
        f"- episodes: {index['episodes']} ({c['completed_episodes']} completed the route)",
        f"- frames: {total} in {len(index['shards'])} shard(s)",
        f"- frames during a steering perturbation: {c['perturbed_frames']}",
        f"- frames while the model agent drove (DAgger): {c.get('policy_frames', 0)}",
        f"- size on disk: {mb:.1f} MB",
        "",
        *_table("flag", c["flags"], total),
        *_table("intent", c["intents"], total),
        *_table("weather (a frame may count in several)", c["weather"], total),
        *_table("light state", c["light_states"], total),
        *_table(
            "lane beside the ego (a frame may count in several)",
            c.get("lanes_beside_ego", {}),
            total,
        ),
        "| scenario | episodes | frames |",
        "|---|---:|---:|",
        *[f"| {name} | {v['episodes']} | {v['frames']} |" for name, v in c["scenarios"].items()],
        "",
    ]
    return "\n".join(lines)
