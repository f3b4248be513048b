"""Evaluation report: HTML from Leaderboard results (+ details sidecar), the CLI, route videos."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sim import scoring
from sim.ground_truth import INFRACTION_KEYS, InfractionEvent
from sim.lite.autopilot import RouteFollower
from sim.lite.town import TownSpec
from sim.lite.world import LiteSimulator
from sim.report.html import write_report
from sim.report.recorder import (
    BANNER_BGR,
    STRIP_BGR,
    STRIP_HEIGHT_PX,
    RouteRecorder,
)
from sim.report.results import ResultsFormatError, details_path_for, load_results
from sim.spec import RouteSpec, WorldSpec
from vlmdrive.cli_report import register

EVIL = '<script>alert("pwned")</script> & "quotes"'
LABELS = list(scoring.LABELS)


def _record(i: int, status: str, scores: tuple[float, float, float], infractions=None) -> dict:
    inf = {k: [] for k in INFRACTION_KEYS}
    inf.update(infractions or {})
    return {
        "index": i,
        "route_id": f"RouteScenario_{i}_rep0",
        "scenario_name": EVIL if i == 2 else f"scenario_{i}#0",
        "weather_id": "ClearNoon",
        "save_name": f"RouteScenario_{i}_rep0",
        "town_name": "lite",
        "status": status,
        "num_infractions": sum(len(v) for v in inf.values()),
        "infractions": inf,
        "scores": dict(
            zip(("score_composed", "score_route", "score_penalty"), scores, strict=True)
        ),
        "meta": {"route_length": 200.0 + i, "duration_game": 30.0, "duration_system": 3.0},
    }


def _details_route(i: int, record: dict, video: str | None) -> dict:
    t = np.arange(0.0, 20.0, 0.25)
    traj = np.stack([t, 100.0 + 5.0 * t, 50.0 + 0.0 * t, 0.0 * t, 5.0 + 0.0 * t], 1)
    return {
        "index": i,
        "route_id": record["route_id"],
        "scenario": record["scenario_name"],
        "file": f"scenarios/s{i}.yaml",
        "tags": ["cut_in", EVIL] if i == 2 else ["cut_in", "rain"],
        "repetition": 0,
        "seed": 7 + i,
        "status": record["status"],
        "scores": record["scores"],
        "route_xy": [[100.0 + 2.0 * k, 50.0] for k in range(60)],
        "trajectory": traj.round(3).tolist(),
        "infractions": [
            {"kind": k, "message": m, "x": 150.0, "y": 50.0, "t": 10.0}
            for k, msgs in record["infractions"].items()
            for m in msgs
        ],
        "bench2drive": {
            "success": record["status"] == "Perfect",
            "efficiency": 80.0,
            "comfort": {"score": 75.0, "segments": 4, "comfortable": 3, "exceeded": {"jerk": 1}},
        },
        "error": f"agent crashed: {EVIL}" if i == 2 else None,
        "interventions": {"ttc_fallback": 4} if i == 1 else {},
        "video": video,
        "duration_game": 30.0,
        "duration_system": 3.0,
    }


@pytest.fixture()
def results_pair(tmp_path: Path) -> Path:
    """A synthetic results.json + results.details.json with three routes and one video."""
    records = [
        _record(0, "Perfect", (100.0, 100.0, 1.0)),
        _record(
            1,
            "Completed",
            (60.0, 100.0, 0.6),
            {"collisions_vehicle": ["Agent collided against object with type=vehicle.a and id=9"]},
        ),
        _record(
            2,
            "Failed - Agent deviated from the route",
            (12.345, 20.0, 0.61725),
            {"route_dev": [f"Agent deviated from the route {EVIL}"]},
        ),
    ]
    results = {
        "_checkpoint": {
            "global_record": {
                "index": -1,
                "route_id": -1,
                "status": "Failed",
                "infractions": {k: 0.0 for k in INFRACTION_KEYS},
                "scores_mean": {
                    "score_composed": 57.448333,
                    "score_route": 73.333333,
                    "score_penalty": 0.739083,
                },
                "scores_std_dev": {
                    "score_composed": 43.9,
                    "score_route": 46.188,
                    "score_penalty": 0.2,
                },
                "meta": {
                    "total_length": 603.0,
                    "duration_game": 90.0,
                    "duration_system": 9.0,
                    "exceptions": [
                        ["RouteScenario_2_rep0", 2, "Failed - Agent deviated from the route"]
                    ],
                },
            },
            "progress": [3, 3],
            "records": records,
        },
        "entry_status": "Finished",
        "eligible": True,
        "sensors": ["sensor.camera.rgb", "sensor.speedometer"],
        "values": ["57.448333", "73.333333", "0.739083"] + ["0.0"] * 12,
        "labels": LABELS,
    }
    videos = tmp_path / "videos"
    videos.mkdir()
    for suffix in (".mp4", ".webm", ".jpg"):
        (videos / f"RouteScenario_1_rep0{suffix}").write_bytes(b"not really a video")
    details = {
        "version": 1,
        "agent": "expert",
        "suite": "suite.yaml",
        "backend": "lite",
        "seed": 0,
        "summary": {
            "driving_score": 57.448333,
            "route_completion": 73.333333,
            "infraction_penalty": 0.739083,
            "success_rate": 33.3,
            "efficiency": 80.0,
            "comfortness": 91.0,
            "by_tag": {
                "cut_in": {
                    "routes": 3,
                    "driving_score": 57.4,
                    "route_completion": 73.3,
                    "success_rate": 33.3,
                },
                EVIL: {
                    "routes": 1,
                    "driving_score": 12.3,
                    "route_completion": 20.0,
                    "success_rate": 0,
                },
            },
        },
        "routes": [
            _details_route(i, r, "videos/RouteScenario_1_rep0.mp4" if i == 1 else None)
            for i, r in enumerate(records)
        ],
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results), encoding="utf-8")
    details_path_for(path).write_text(json.dumps(details), encoding="utf-8")
    return path


def _linked_files(page: str, out_dir: Path, tag: str, attr: str = "src") -> list[Path]:
    links = re.findall(rf"<{tag}\b[^>]*\b{attr}=\"([^\"]+)\"", page)
    return [(out_dir / unquote(link)).resolve() for link in links]


def test_report_shows_routes_statuses_scores_and_existing_images(
    results_pair: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    index = write_report(results_pair, out)
    assert index == (out / "index.html").resolve()
    page = index.read_text(encoding="utf-8")
    for i in range(3):
        assert f"RouteScenario_{i}_rep0" in page
    for status in ("Perfect", "Completed", "Failed - Agent deviated from the route"):
        assert status in page
    for ds in ("100.00", "60.00", "12.35", "57.45"):  # per route and the mean
        assert ds in page
    assert "expert" in page and "Finished" in page
    assert "Avg. driving score" in page and "Min speed infractions" in page
    assert "ttc_fallback × 4" in page
    assert "3/4 segments ok" in page and "jerk × 1" in page
    assert "Collisions with vehicles</b> × 1" in page
    images = _linked_files(page, out, "img")
    # route scores, by tag, infractions, three trajectories
    assert len(images) >= 6
    assert all(p.is_file() and p.stat().st_size > 0 for p in images)
    videos = _linked_files(page, out, "video")
    assert [p.name for p in videos] == ["RouteScenario_1_rep0.webm"]
    assert all(p.is_file() for p in videos)


def test_report_escapes_text_from_the_files(results_pair: Path, tmp_path: Path) -> None:
    page = write_report(results_pair, tmp_path / "report").read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "agent crashed: &lt;script&gt;" in page
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page


def test_report_without_details_uses_leaderboard_results_only(
    results_pair: Path, tmp_path: Path
) -> None:
    details_path_for(results_pair).unlink()
    out = tmp_path / "lb_only"
    page = write_report(results_pair, out).read_text(encoding="utf-8")
    for i in range(3):
        assert f"RouteScenario_{i}_rep0" in page
    assert "Leaderboard results only" in page
    assert "57.45" in page and "Failed - Agent deviated from the route" in page
    # success rate falls back to the records: only the Perfect route counts
    assert "33.3 %" in page
    assert not list((out / "img").glob("traj_*.png"))
    assert all(p.is_file() for p in _linked_files(page, out, "img"))


def test_report_ignores_a_malformed_details_file(results_pair: Path, tmp_path: Path) -> None:
    details_path_for(results_pair).write_text(json.dumps({"version": 99}), encoding="utf-8")
    page = write_report(results_pair, tmp_path / "r").read_text(encoding="utf-8")
    assert "ignored" in page and "version" in page
    assert "RouteScenario_2_rep0" in page


def test_route_wide_events_have_no_place_on_the_map(results_pair: Path) -> None:
    """The outside-route-lanes event sums the whole route; a (0, 0) placeholder in older
    details files must not be plotted (it stretched the map to the world origin)."""
    path = details_path_for(results_pair)
    details = json.loads(path.read_text())
    details["routes"][1]["infractions"].append(
        {"kind": "outside_route_lanes", "message": "outside 5 m", "x": 0.0, "y": 0.0, "t": 20.0}
    )
    path.write_text(json.dumps(details))
    located = {e.kind: e for e in load_results(results_pair).routes[1].details.infractions}
    assert located["outside_route_lanes"].x is None and located["outside_route_lanes"].y is None
    assert (located["collisions_vehicle"].x, located["collisions_vehicle"].y) == (150.0, 50.0)


def test_partial_results_without_global_record(results_pair: Path) -> None:
    data = json.loads(results_pair.read_text())
    data["_checkpoint"]["global_record"] = {}
    data["_checkpoint"]["progress"] = [2, 5]
    data["_checkpoint"]["records"] = data["_checkpoint"]["records"][:2]
    results_pair.write_text(json.dumps(data))
    res = load_results(results_pair)
    assert not res.global_from_file
    assert res.scores_mean["score_composed"] == pytest.approx(80.0)
    assert res.scores_std_dev["score_composed"] == pytest.approx(np.std([100.0, 60.0], ddof=1))
    assert res.progress == (2, 5)
    page = write_report(results_pair, results_pair.parent / "partial").read_text()
    assert "Partial evaluation: 2 of 5 routes finished." in page


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["_checkpoint"]["records"][1]["scores"].pop("score_route"), "score_route"),
        (
            lambda d: d["_checkpoint"]["records"][0]["scores"].update(score_composed="high"),
            "_checkpoint.records[0].scores.score_composed",
        ),
        (lambda d: d.pop("_checkpoint"), "_checkpoint"),
    ],
)
def test_load_results_errors_name_file_and_field(results_pair: Path, mutate, field: str) -> None:
    data = json.loads(results_pair.read_text())
    mutate(data)
    results_pair.write_text(json.dumps(data))
    with pytest.raises(ResultsFormatError) as err:
        load_results(results_pair)
    assert str(results_pair) in str(err.value) and field in str(err.value)


# ------------------------------------------------------------------------------- CLI
@pytest.fixture()
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command, so that `report` stays a subcommand
        pass

    return app


def test_cli_writes_the_report(cli: typer.Typer, results_pair: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli_out"
    result = CliRunner().invoke(cli, ["report", str(results_pair), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out / "index.html") in result.stdout.replace("\n", "")
    assert (out / "index.html").is_file()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ('{"foo": 1}', "_checkpoint"),
        ('{"_checkpoint": {"records": [{"route_id": "r"}]}}', "missing 'status'"),
    ],
)
def test_cli_rejects_bad_results(
    cli: typer.Typer, tmp_path: Path, content: str | None, expected: str
) -> None:
    bad = tmp_path / "bad_results.json"
    if content is not None:
        bad.write_text(content)
    result = CliRunner().invoke(cli, ["report", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "bad_results.json" in message and expected in message
    assert not (tmp_path / "o" / "index.html").exists()


# ----------------------------------------------------------------------------- videos
@pytest.fixture(scope="module")
def world() -> WorldSpec:
    return WorldSpec(
        town=TownSpec(blocks_x=2, blocks_y=2),
        route=RouteSpec(length_m=150.0),
        num_vehicles=2,
        num_pedestrians=0,
    )


def _frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def _strip_mean(frame: np.ndarray) -> np.ndarray:
    return frame[2 : STRIP_HEIGHT_PX - 2, 300:700].reshape(-1, 3).mean(axis=0)


def test_recorder_writes_subsampled_video_with_infraction_banner(
    world: WorldSpec, tmp_path: Path
) -> None:
    sim = LiteSimulator()
    sim.reset(world, seed=0)
    driver = RouteFollower(sim)
    rec = RouteRecorder(tmp_path / "route.mp4", fps=10.0)
    n_ticks, event_tick = 100, 30  # 5 s; banner from 1.55 s to 3.55 s of game time
    plan = np.stack([np.arange(1, 9) * 2.0, np.zeros(8)], axis=1)
    for tick in range(n_ticks):
        control = driver()
        sim.tick(control)
        events = list(sim.events)
        if tick == event_tick:
            events.append(
                InfractionEvent(
                    kind="collisions_vehicle",
                    message="Agent collided against object with type=vehicle.test and id=1",
                    frame=sim.frame,
                    time_s=sim.time_s,
                    location=(sim.ego.x, sim.ego.y, 0.0),
                )
            )
        rec.add(sim, control, plan, events, f"test t={sim.time_s:.2f}")
    path = rec.close()
    assert path == tmp_path / "route.mp4" and path.stat().st_size > 0
    assert rec.browser_video_path == tmp_path / "route.webm"
    assert rec.browser_video_path.stat().st_size > 0
    assert rec.poster_path is not None and rec.poster_path.is_file()
    frames = _frames(path)
    assert len(frames) == n_ticks // 2  # 20 Hz ticks at 10 fps
    assert len(_frames(rec.browser_video_path)) == n_ticks // 2
    red, grey = np.array(BANNER_BGR, float), np.array(STRIP_BGR, float)
    first_red = event_tick // 2  # frame of tick 30
    for k in (0, first_red - 1, 40, 49):
        assert np.abs(_strip_mean(frames[k]) - grey).max() < 40, k
    for k in (first_red, first_red + 10, first_red + 18):
        assert np.abs(_strip_mean(frames[k]) - red).max() < 40, k


def test_recorder_time_lapses_long_routes(world: WorldSpec, tmp_path: Path) -> None:
    sim = LiteSimulator()
    sim.reset(world, seed=1)
    driver = RouteFollower(sim)
    rec = RouteRecorder(tmp_path / "long.mp4", fps=10.0, max_video_s=2.0, browser_video=False)
    n_ticks = 100
    for _ in range(n_ticks):
        control = driver()
        sim.tick(control)
        rec.add(sim, control, None, [], "long")
    assert rec.stride_ticks > 2
    expected = len(range(0, n_ticks, rec.stride_ticks))
    assert expected <= rec.max_frames
    path = rec.close()
    assert path is not None and len(_frames(path)) == expected
    assert rec.browser_video_path is None


def test_recorder_checks_its_inputs(world: WorldSpec, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fps"):
        RouteRecorder(tmp_path / "x.mp4", fps=0.0)
    assert RouteRecorder(tmp_path / "route_1.5m").out_path.name == "route_1.5m.mp4"
    rec = RouteRecorder(tmp_path / "none.mp4")
    assert rec.close() is None and not (tmp_path / "none.mp4").exists()
    sim = LiteSimulator()
    sim.reset(world, seed=0)
    sim.tick(RouteFollower(sim)())
    rec = RouteRecorder(tmp_path / "bad.mp4")
    with pytest.raises(ValueError, match="planned_xy_ego"):
        rec.add(sim, None, np.zeros((3, 8, 2)), [], "")


def test_recorded_video_is_linked_from_the_report(
    results_pair: Path, world: WorldSpec, tmp_path: Path
) -> None:
    """The recorder's output next to the results is what the report embeds."""
    sim = LiteSimulator()
    sim.reset(world, seed=0)
    driver = RouteFollower(sim)
    rec = RouteRecorder(results_pair.parent / "videos" / "RouteScenario_0_rep0.mp4", fps=5.0)
    for _ in range(20):
        control = driver()
        sim.tick(control)
        rec.add(sim, control, None, [], "r0")
    video = rec.close()
    assert video is not None
    details = json.loads(details_path_for(results_pair).read_text())
    details["routes"][0]["video"] = str(video)  # absolute paths work too
    details_path_for(results_pair).write_text(json.dumps(copy.deepcopy(details)))
    out = tmp_path / "with_video"
    page = write_report(results_pair, out).read_text()
    names = [p.name for p in _linked_files(page, out, "video")]
    assert "RouteScenario_0_rep0.webm" in names
    posters = _linked_files(page, out, "video", attr="poster")
    assert all(p.is_file() for p in posters) and posters
