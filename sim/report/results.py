"""Read an evaluation's files into typed, checked records for the report.

- `results.json`: the CARLA Leaderboard 2.0 results JSON (`--checkpoint`, statistics_manager
  format). Required: `_checkpoint.records`, each record with `route_id`, `status` and numeric
  `scores.{score_composed, score_route, score_penalty}`; everything else is optional so that
  partial files (written after every route) and older Leaderboard versions load too.
- `<results stem>.details.json` next to it (version 1, written by `sim/evaluate.py`):
  per-route polylines, trajectories, located infractions, Bench2Drive metrics, videos.
  Optional: when it is missing or malformed the report is built from results.json alone and
  `EvaluationResults.details_problem` says why.

Bad results.json raises `ResultsFormatError` naming the file and the field
(`_checkpoint.records[2].scores.score_route`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

DETAILS_VERSION = 1
SCORE_KEYS = ("score_composed", "score_route", "score_penalty")


class ResultsFormatError(ValueError):
    """The file is not a readable Leaderboard results JSON; the message names file and field."""


def details_path_for(results_path: Path) -> Path:
    """`<dir>/<stem>.details.json` for `<dir>/<stem>.json`."""
    return results_path.with_name(f"{results_path.stem}.details.json")


@dataclass(frozen=True)
class LocatedInfraction:
    """One infraction from details.json: `kind` (Leaderboard key), world x, y [m], game t [s]."""

    kind: str
    message: str
    x: float | None
    y: float | None
    t: float | None


@dataclass(frozen=True)
class RouteDetails:
    """The details.json view of one route. `route_xy` (N, 2) and `trajectory` (M, 5) columns
    t [s], x [m], y [m], yaw [rad], speed [m/s]: CARLA world frame (x east, y south)."""

    scenario: str
    file: str
    tags: tuple[str, ...]
    repetition: int | None
    seed: int | None
    route_xy: np.ndarray
    trajectory: np.ndarray
    infractions: tuple[LocatedInfraction, ...]
    bench2drive: Mapping[str, Any]
    interventions: Mapping[str, int]
    video: Path | None  # absolute
    error: str = ""  # the harness's error text for the route (agent crash...), if any

    def __post_init__(self) -> None:
        if self.route_xy.ndim != 2 or self.route_xy.shape[1] != 2:
            raise ValueError(f"route_xy must be (N, 2), got {self.route_xy.shape}")
        if self.trajectory.ndim != 2 or self.trajectory.shape[1] != 5:
            raise ValueError(f"trajectory must be (M, 5), got {self.trajectory.shape}")


@dataclass(frozen=True)
class RouteResult:
    """One Leaderboard route record (scores: DS and RC in [0, 100], IP in [0, 1])."""

    index: int
    route_id: str
    status: str
    score_composed: float
    score_route: float
    score_penalty: float
    scenario_name: str = ""
    town_name: str = ""
    weather_id: str = ""
    route_length_m: float = 0.0
    duration_game_s: float = 0.0
    duration_system_s: float = 0.0
    infractions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    details: RouteDetails | None = None

    @property
    def num_infractions(self) -> int:
        return sum(len(v) for v in self.infractions.values())

    @property
    def failed(self) -> bool:
        return self.status.startswith("Failed")


@dataclass(frozen=True)
class EvaluationResults:
    """Everything the report shows. `summary` holds the details.json summary (or {})."""

    path: Path
    entry_status: str
    eligible: bool | None
    sensors: tuple[str, ...]
    values: tuple[str, ...]
    labels: tuple[str, ...]
    progress: tuple[int, int] | None
    routes: tuple[RouteResult, ...]
    scores_mean: Mapping[str, float]
    scores_std_dev: Mapping[str, float]
    infractions_per_km: Mapping[str, float]
    total_length_m: float
    duration_game_s: float
    duration_system_s: float
    exceptions: tuple[tuple[str, str, str], ...]  # (route_id, index, status)
    global_from_file: bool  # False: means/std dev computed here (no global_record yet)
    agent: str = ""
    suite: str = ""
    backend: str = ""
    seed: int | None = None
    summary: Mapping[str, Any] = field(default_factory=dict)
    details_path: Path | None = None
    details_problem: str | None = None

    @property
    def km_driven(self) -> float:
        """[km] route length times route completion, summed (the Leaderboard's per-km base)."""
        return sum(r.route_length_m * r.score_route / 100.0 for r in self.routes) / 1000.0


# --------------------------------------------------------------------------- checking
class _Doc:
    """Typed access to a parsed JSON document; errors name the file and the field path."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def fail(self, where: str, what: str) -> ResultsFormatError:
        return ResultsFormatError(f"{self.file}: {where}: {what}")

    def obj(self, value: Any, where: str) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {type(value).__name__}")
        return value

    def lst(self, value: Any, where: str) -> list:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {type(value).__name__}")
        return value

    def num(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise self.fail(where, f"expected a finite number, got {value!r}")
        return float(value)

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"expected a string, got {value!r}")
        return value

    def opt_num(self, d: dict, key: str, where: str, default: float = 0.0) -> float:
        return default if d.get(key) is None else self.num(d[key], f"{where}.{key}")

    def opt_text(self, d: dict, key: str, where: str) -> str:
        return "" if d.get(key) is None else str(d[key])


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsFormatError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ResultsFormatError(f"{path}: is a directory, not a results JSON file") from None
    except UnicodeDecodeError as exc:
        raise ResultsFormatError(f"{path}: not UTF-8 text ({exc.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsFormatError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None


def _route(doc: _Doc, raw: Any, i: int) -> RouteResult:
    where = f"_checkpoint.records[{i}]"
    rec = doc.obj(raw, where)
    for key in ("route_id", "status", "scores"):
        if key not in rec:
            raise doc.fail(where, f"missing {key!r} (a Leaderboard route record has it)")
    scores = doc.obj(rec["scores"], f"{where}.scores")
    for key in SCORE_KEYS:
        if key not in scores:
            raise doc.fail(f"{where}.scores", f"missing {key!r}")
    meta = doc.obj(rec.get("meta") or {}, f"{where}.meta")
    infractions: dict[str, tuple[str, ...]] = {}
    for key, msgs in doc.obj(rec.get("infractions") or {}, f"{where}.infractions").items():
        lst = doc.lst(msgs, f"{where}.infractions.{key}")
        infractions[str(key)] = tuple(str(m) for m in lst)
    index = rec.get("index", i)
    return RouteResult(
        index=int(doc.num(index, f"{where}.index")),
        route_id=str(rec["route_id"]),
        status=doc.text(rec["status"], f"{where}.status"),
        score_composed=doc.num(scores["score_composed"], f"{where}.scores.score_composed"),
        score_route=doc.num(scores["score_route"], f"{where}.scores.score_route"),
        score_penalty=doc.num(scores["score_penalty"], f"{where}.scores.score_penalty"),
        scenario_name=doc.opt_text(rec, "scenario_name", where),
        town_name=doc.opt_text(rec, "town_name", where),
        weather_id=doc.opt_text(rec, "weather_id", where),
        route_length_m=doc.opt_num(meta, "route_length", f"{where}.meta"),
        duration_game_s=doc.opt_num(meta, "duration_game", f"{where}.meta"),
        duration_system_s=doc.opt_num(meta, "duration_system", f"{where}.meta"),
        infractions=infractions,
    )


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def _details_route(doc: _Doc, raw: Any, i: int, base: Path) -> tuple[str, RouteDetails]:
    where = f"routes[{i}]"
    r = doc.obj(raw, where)
    if "route_id" not in r:
        raise doc.fail(where, "missing 'route_id'")

    def array(key: str, cols: int) -> np.ndarray:
        rows = doc.lst(r.get(key) or [], f"{where}.{key}")
        try:
            arr = np.asarray(rows, np.float64).reshape(-1, cols)
        except (TypeError, ValueError):
            raise doc.fail(f"{where}.{key}", f"expected rows of {cols} numbers") from None
        return arr[np.isfinite(arr).all(axis=1)]

    located = []
    for j, ev in enumerate(doc.lst(r.get("infractions") or [], f"{where}.infractions")):
        e = doc.obj(ev, f"{where}.infractions[{j}]")
        w = f"{where}.infractions[{j}]"
        kind = str(e.get("kind", ""))
        # Details files written before route-wide events got no place carry (0, 0) for the
        # outside-route-lanes event; it happens nowhere in particular.
        placed = kind != "outside_route_lanes"
        located.append(
            LocatedInfraction(
                kind=kind,
                message=str(e.get("message", "")),
                x=None if e.get("x") is None or not placed else doc.num(e["x"], f"{w}.x"),
                y=None if e.get("y") is None or not placed else doc.num(e["y"], f"{w}.y"),
                t=None if e.get("t") is None else doc.num(e["t"], f"{w}.t"),
            )
        )
    interventions = {
        str(k): int(doc.num(v, f"{where}.interventions.{k}"))
        for k, v in doc.obj(r.get("interventions") or {}, f"{where}.interventions").items()
    }
    video = r.get("video")
    video_path = None
    if video:
        video_path = Path(doc.text(video, f"{where}.video"))
        if not video_path.is_absolute():
            # Relative to the results folder; a path relative to the evaluation's working
            # directory is accepted when only it exists.
            beside = base / video_path
            video_path = beside if beside.exists() or not video_path.exists() else video_path
    tags = doc.lst(r.get("tags") or [], f"{where}.tags")
    rep, seed = r.get("repetition"), r.get("seed")
    return str(r["route_id"]), RouteDetails(
        scenario=str(r.get("scenario") or ""),
        file=str(r.get("file") or ""),
        tags=tuple(str(t) for t in tags),
        repetition=None if rep is None else int(doc.num(rep, f"{where}.repetition")),
        seed=None if seed is None else int(doc.num(seed, f"{where}.seed")),
        route_xy=array("route_xy", 2),
        trajectory=array("trajectory", 5),
        infractions=tuple(located),
        bench2drive=doc.obj(r.get("bench2drive") or {}, f"{where}.bench2drive"),
        interventions=interventions,
        video=video_path.resolve() if video_path else None,
        error=str(r.get("error") or ""),
    )


def _load_details(path: Path) -> tuple[dict, dict[str, RouteDetails]]:
    doc = _Doc(path)
    top = doc.obj(_read_json(path), "top level")
    if top.get("version") != DETAILS_VERSION:
        raise doc.fail("version", f"expected {DETAILS_VERSION}, got {top.get('version')!r}")
    routes = {}
    for i, raw in enumerate(doc.lst(top.get("routes") or [], "routes")):
        route_id, details = _details_route(doc, raw, i, path.parent)
        routes[route_id] = details
    summary = doc.obj(top.get("summary") or {}, "summary")
    doc.obj(summary.get("by_tag") or {}, "summary.by_tag")
    return top, routes


def load_results(results_path: Path) -> EvaluationResults:
    """Read results.json (+ details.json when present and valid); see the module docstring."""
    path = Path(results_path)
    doc = _Doc(path)
    top = _read_json(path)
    if not isinstance(top, dict) or "_checkpoint" not in top:
        raise doc.fail(
            "top level", "missing '_checkpoint': not a Leaderboard results JSON (--checkpoint)"
        )
    ckpt = doc.obj(top["_checkpoint"], "_checkpoint")
    if "records" not in ckpt:
        raise doc.fail("_checkpoint", "missing 'records'")
    raw_records = doc.lst(ckpt["records"], "_checkpoint.records")
    routes = [_route(doc, r, i) for i, r in enumerate(raw_records)]

    details_path = details_path_for(path)
    details_top: dict = {}
    by_id: dict[str, RouteDetails] = {}
    problem = None
    if details_path.is_file():
        try:
            details_top, by_id = _load_details(details_path)
        except (ResultsFormatError, ValueError) as exc:
            problem = f"ignored: {exc}"
    else:
        problem = f"not found ({details_path.name}): Leaderboard results only"
    routes = [replace(r, details=by_id.get(r.route_id)) for r in routes]

    glob = doc.obj(ckpt.get("global_record") or {}, "_checkpoint.global_record")
    global_from_file = bool(glob.get("scores_mean"))
    means: dict[str, float] = {}
    stds: dict[str, float] = {}
    if global_from_file:
        gm = doc.obj(glob["scores_mean"], "_checkpoint.global_record.scores_mean")
        gs = doc.obj(glob.get("scores_std_dev") or {}, "_checkpoint.global_record.scores_std_dev")
        for key in SCORE_KEYS:
            means[key] = doc.opt_num(gm, key, "_checkpoint.global_record.scores_mean")
            stds[key] = doc.opt_num(gs, key, "_checkpoint.global_record.scores_std_dev")
    else:
        for key in SCORE_KEYS:
            means[key], stds[key] = _mean_std([getattr(r, key) for r in routes])
    meta_or = "_checkpoint.global_record.meta"
    gmeta = doc.obj(glob.get("meta") or {}, meta_or)
    per_km = {
        str(k): doc.num(v, f"_checkpoint.global_record.infractions.{k}")
        for k, v in doc.obj(
            glob.get("infractions") or {}, "_checkpoint.global_record.infractions"
        ).items()
    }
    exceptions: list[tuple[str, str, str]] = []
    for i, e in enumerate(doc.lst(gmeta.get("exceptions") or [], f"{meta_or}.exceptions")):
        parts = [str(x) for x in doc.lst(e, f"{meta_or}.exceptions[{i}]")] + ["", "", ""]
        exceptions.append((parts[0], parts[1], parts[2]))
    progress_raw = ckpt.get("progress") or []
    progress = None
    if isinstance(progress_raw, list) and len(progress_raw) == 2:
        progress = (
            int(doc.num(progress_raw[0], "_checkpoint.progress[0]")),
            int(doc.num(progress_raw[1], "_checkpoint.progress[1]")),
        )
    seed = details_top.get("seed")
    return EvaluationResults(
        path=path,
        entry_status=str(top.get("entry_status", "")),
        eligible=top.get("eligible") if isinstance(top.get("eligible"), bool) else None,
        sensors=tuple(str(s) for s in top.get("sensors") or []),
        values=tuple(str(v) for v in top.get("values") or []),
        labels=tuple(str(v) for v in top.get("labels") or []),
        progress=progress,
        routes=tuple(routes),
        scores_mean=means,
        scores_std_dev=stds,
        infractions_per_km=per_km,
        total_length_m=doc.opt_num(
            gmeta, "total_length", meta_or, sum(r.route_length_m for r in routes)
        ),
        duration_game_s=doc.opt_num(
            gmeta, "duration_game", meta_or, sum(r.duration_game_s for r in routes)
        ),
        duration_system_s=doc.opt_num(
            gmeta, "duration_system", meta_or, sum(r.duration_system_s for r in routes)
        ),
        exceptions=tuple(exceptions),
        global_from_file=global_from_file,
        agent=str(details_top.get("agent") or ""),
        suite=str(details_top.get("suite") or ""),
        backend=str(details_top.get("backend") or ""),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        summary=details_top.get("summary") or {},
        details_path=details_path if details_top else None,
        details_problem=problem,
    )
