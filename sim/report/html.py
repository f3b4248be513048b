"""The evaluation report: one self-contained `index.html` (inline CSS) with PNG plots beside it.

`write_report(results_path, out_dir)` reads the Leaderboard results JSON and, when present,
its `<stem>.details.json` sidecar (see `sim.report.results`), and writes
`out_dir/index.html` + `out_dir/img/*.png`. Videos stay where the evaluation wrote them and
are linked relative to `out_dir`; the page embeds the browser-playable WebM when the recorder
wrote one, else links the mp4. Every piece of text from the files is HTML-escaped.
"""

from __future__ import annotations

import datetime as _dt
import html
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sim.report.plots import (
    INFRACTION_NAMES,
    plot_infractions_by_kind,
    plot_route_scores,
    plot_route_trajectory,
    plot_scores_by_tag,
)
from sim.report.recorder import companion_files
from sim.report.results import EvaluationResults, RouteResult, load_results

MISSING = "\u2014"  # em dash for values the files do not have
IMG_DIR = "img"

_CSS = """
:root { --ok:#2e7d32; --done:#1565c0; --fail:#c62828; --muted:#6b7280; --line:#e5e7eb; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:#111827;
       background:#f6f7f9; margin:0; }
main { max-width: 1480px; margin: 0 auto; padding: 20px 28px 60px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 30px 0 10px; }
h3 { font-size: 15px; margin: 0 0 8px; }
.muted { color: var(--muted); } code { font-size: 12px; }
.meta { display:flex; flex-wrap:wrap; gap: 6px 22px; margin: 8px 0 4px; }
.meta div b { color: var(--muted); font-weight: 500; margin-right: 4px; }
.notice { background:#fff8e1; border:1px solid #ffe082; padding:8px 12px; border-radius:6px;
          margin: 10px 0; }
.cards { display:grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap:12px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing:.04em; }
.card .v { font-size: 26px; font-weight: 650; } .card .s { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; background:#fff; border:1px solid var(--line); width:100%; }
th, td { padding: 6px 9px; border-bottom: 1px solid var(--line); text-align:left;
         vertical-align: top; }
th { background:#f3f4f6; font-weight:600; font-size:12px; white-space:nowrap; }
td.n, th.n { text-align:right; font-variant-numeric: tabular-nums; white-space:nowrap; }
tr:nth-child(even) td { background:#fafafa; }
.two { display:grid; grid-template-columns: 1fr 1fr; gap: 16px; align-items:start; }
.pill { display:inline-block; padding:1px 8px; border-radius:10px; color:#fff; font-size:12px;
        font-weight:600; white-space:nowrap; }
.st-perfect { background: var(--ok); } .st-completed { background: var(--done); }
.st-failed { background: var(--fail); } .st-other { background: #757575; }
.tag { display:inline-block; background:#eef2ff; color:#3730a3; border-radius:4px;
       padding:0 6px; margin:1px 2px 1px 0; font-size:12px; }
details summary { cursor:pointer; } details ul { margin:4px 0 6px 18px; padding:0; }
details li { font-size:12px; color:#374151; }
.figs img { max-width:100%; background:#fff; border:1px solid var(--line); border-radius:6px; }
.route { background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px;
         margin: 14px 0; }
.route .grid { display:grid; grid-template-columns: 460px 1fr; gap: 16px; }
.route img.traj { width: 460px; border:1px solid var(--line); border-radius:6px; }
.route video, .route img.poster { width:100%; max-width:768px; border-radius:6px;
                                  background:#000; }
.kv { display:grid; grid-template-columns: max-content 1fr; gap: 2px 12px; font-size: 13px; }
.kv b { color: var(--muted); font-weight: 500; }
.scroll { overflow-x: auto; }
td.inf { min-width: 210px; } td.scen { min-width: 110px; }
td.tags { max-width: 190px; } td.st .pill { white-space: normal; }
@media (max-width: 1000px) { .two, .route .grid { grid-template-columns: 1fr; } }
"""


def _e(value: Any) -> str:
    """HTML-escaped text (quotes too: safe in attributes)."""
    return html.escape(str(value), quote=True)


def _breakable(text: str) -> str:
    """Escaped identifier with line-break opportunities after `_` and before `#`."""
    return _e(text).replace("_", "_<wbr>").replace("#", "<wbr>#")


def _num(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None or isinstance(value, bool):
        return MISSING
    try:
        return f"{float(value):.{digits}f}{suffix}"
    except (TypeError, ValueError):
        return _e(value)


def _status_class(status: str) -> str:
    head = status.split(" ")[0].lower()
    return f"st-{head}" if head in ("perfect", "completed", "failed") else "st-other"


def _pill(status: str) -> str:
    return f'<span class="pill {_status_class(status)}">{_e(status or "?")}</span>'


def _href(target: Path, out_dir: Path) -> str:
    rel = os.path.relpath(target, out_dir)
    return _e(quote(Path(rel).as_posix()))


def _infraction_name(kind: str) -> str:
    return INFRACTION_NAMES.get(kind, kind)


def _infraction_counts(routes: Iterable[RouteResult]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for r in routes:
        for kind, msgs in r.infractions.items():
            counts[kind] += len(msgs)
    return counts


def _lb_success(route: RouteResult) -> bool:
    """Bench2Drive success from the Leaderboard record alone: completed, and no infraction
    other than min speed."""
    done = route.status in ("Perfect", "Completed")
    return done and all(
        not msgs for kind, msgs in route.infractions.items() if kind != "min_speed_infractions"
    )


def _route_success(route: RouteResult) -> bool:
    b2d = route.details.bench2drive if route.details else {}
    if isinstance(b2d.get("success"), bool):
        return bool(b2d["success"])
    return _lb_success(route)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


# ---------------------------------------------------------------------------- sections
def _header(res: EvaluationResults) -> str:
    items = [
        ("Agent", res.agent or MISSING),
        ("Suite", res.suite or MISSING),
        ("Backend", res.backend or MISSING),
        ("Seed", MISSING if res.seed is None else res.seed),
    ]
    meta = "".join(f"<div><b>{_e(k)}</b>{_e(v)}</div>" for k, v in items)
    eligible = MISSING if res.eligible is None else ("yes" if res.eligible else "no")
    entry_cls = "st-completed" if res.entry_status == "Finished" else "st-failed"
    progress = (
        f"{res.progress[0]} / {res.progress[1]} routes" if res.progress else f"{len(res.routes)}"
    )
    meta += (
        f'<div><b>Entry status</b><span class="pill {entry_cls}">{_e(res.entry_status or "?")}'
        f"</span></div><div><b>Eligible</b>{_e(eligible)}</div>"
        f"<div><b>Progress</b>{_e(progress)}</div>"
    )
    files = f"<div><b>Results</b><code>{_e(res.path)}</code></div>"
    if res.details_path is not None:
        files += f"<div><b>Details</b><code>{_e(res.details_path)}</code></div>"
    if res.sensors:
        files += f"<div><b>Sensors</b>{_e(', '.join(res.sensors))}</div>"
    notices = []
    if res.progress and res.progress[0] < res.progress[1]:
        notices.append(
            f"Partial evaluation: {res.progress[0]} of {res.progress[1]} routes finished."
        )
    if res.details_problem:
        notices.append(f"details.json {res.details_problem}")
    if not res.global_from_file and res.routes:
        notices.append(
            "results.json has no global record yet: means and standard deviations are "
            "computed here from the route records."
        )
    notice_html = "".join(f'<div class="notice">{_e(n)}</div>' for n in notices)
    return (
        "<header><h1>Evaluation report</h1>"
        f'<div class="meta">{meta}</div><div class="meta muted">{files}</div>'
        f"{notice_html}</header>"
    )


def _summary_values(res: EvaluationResults) -> dict[str, tuple[str, str]]:
    """Metric name -> (value, std dev or note)."""
    m, s = res.scores_mean, res.scores_std_dev
    summary = res.summary
    routes = res.routes
    if summary.get("success_rate") is not None:
        success = (_num(summary["success_rate"], 1, " %"), "Bench2Drive")
    elif routes:
        pct = 100.0 * sum(_route_success(r) for r in routes) / len(routes)
        success = (_num(pct, 1, " %"), "from the route records")
    else:
        success = (MISSING, "")
    return {
        "Driving score": (_num(m.get("score_composed"), 2), f"± {_num(s.get('score_composed'))}"),
        "Route completion": (
            _num(m.get("score_route"), 2, " %"),
            f"± {_num(s.get('score_route'))}",
        ),
        "Infraction penalty": (
            _num(m.get("score_penalty"), 3),
            f"± {_num(s.get('score_penalty'), 3)}",
        ),
        "Success rate": success,
        "Efficiency": (_num(summary.get("efficiency"), 1, " %"), "Bench2Drive"),
        "Comfortness": (_num(summary.get("comfortness"), 1, " %"), "Bench2Drive"),
    }


def _summary(res: EvaluationResults) -> str:
    values = _summary_values(res)
    cards = "".join(
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div>'
        f'<div class="s">{_e(note)}</div></div>'
        for k, (v, note) in values.items()
    )
    n_failed = sum(r.failed for r in res.routes)
    ratio = (
        f"{res.duration_game_s / res.duration_system_s:.1f}x real time"
        if res.duration_system_s > 0
        else MISSING
    )
    rows = [(k, v, note) for k, (v, note) in values.items()] + [
        ("Routes", f"{len(res.routes)}", f"{n_failed} failed"),
        ("Total route length", f"{res.total_length_m / 1000.0:.3f} km", ""),
        ("Distance driven (length × RC)", f"{res.km_driven:.3f} km", "base of the per-km rates"),
        ("Game time", f"{res.duration_game_s:.1f} s", _hms(res.duration_game_s)),
        ("System time", f"{res.duration_system_s:.1f} s", ratio),
    ]
    table = "".join(
        f'<tr><td>{_e(k)}</td><td class="n">{_e(v)}</td><td class="muted">{_e(n)}</td></tr>'
        for k, v, n in rows
    )
    n_lb = max(len(res.labels), len(res.values))
    lb_rows = "".join(
        f"<tr><td>{_e(res.labels[i] if i < len(res.labels) else MISSING)}</td>"
        f'<td class="n">{_e(res.values[i] if i < len(res.values) else MISSING)}</td></tr>'
        for i in range(n_lb)
    )
    lb = (
        "<table><tr><th>Leaderboard label</th><th class=n>value</th></tr>" + lb_rows + "</table>"
        if n_lb
        else '<p class="muted">No Leaderboard values/labels in the results file.</p>'
    )
    return (
        f'<h2>Summary</h2><div class="cards">{cards}</div>'
        '<div class="two" style="margin-top:14px">'
        "<div><table><tr><th>Metric</th><th class=n>value</th><th>std dev / note</th></tr>"
        f"{table}</table></div><div>{lb}</div></div>"
    )


def _by_tag(res: EvaluationResults) -> str:
    by_tag = res.summary.get("by_tag") or {}
    if not isinstance(by_tag, Mapping) or not by_tag:
        return ""
    rows = []
    for tag in sorted(by_tag):
        t = by_tag[tag] if isinstance(by_tag[tag], Mapping) else {}
        rows.append(
            f'<tr><td><span class="tag">{_e(tag)}</span></td>'
            f'<td class="n">{_e(t.get("routes", MISSING))}</td>'
            f'<td class="n">{_num(t.get("driving_score"))}</td>'
            f'<td class="n">{_num(t.get("route_completion"), 1, " %")}</td>'
            f'<td class="n">{_num(t.get("success_rate"), 1, " %")}</td></tr>'
        )
    return (
        "<h3>By tag</h3><table><tr><th>Tag</th><th class=n>Routes</th><th class=n>DS</th>"
        f"<th class=n>RC</th><th class=n>Success</th></tr>{''.join(rows)}</table>"
    )


def _figures(images: Mapping[str, Path], out_dir: Path, res: EvaluationResults) -> str:
    figs = []
    for key, alt in (
        ("route_scores", "Driving score per route"),
        ("by_tag", "Driving score by tag"),
        ("infractions", "Infractions by kind"),
    ):
        if key in images:
            figs.append(f'<div><img src="{_href(images[key], out_dir)}" alt="{_e(alt)}"></div>')
    tag_table = _by_tag(res)
    if tag_table:
        figs.append(f"<div>{tag_table}</div>")
    return f'<h2>Plots</h2><div class="two figs">{"".join(figs)}</div>' if figs else ""


def _infraction_details(route: RouteResult) -> str:
    parts = []
    for kind, msgs in route.infractions.items():
        if not msgs:
            continue
        items = "".join(f"<li>{_e(m)}</li>" for m in msgs)
        parts.append(
            f"<details><summary><b>{_e(_infraction_name(kind))}</b> × {len(msgs)}</summary>"
            f"<ul>{items}</ul></details>"
        )
    return "".join(parts) or '<span class="muted">none</span>'


def _interventions(route: RouteResult) -> str:
    iv = route.details.interventions if route.details else {}
    active = {k: v for k, v in iv.items() if v}
    if not active:
        return '<span class="muted">none</span>' if route.details else MISSING
    return "<br>".join(f"{_e(k)} × {int(v)}" for k, v in sorted(active.items()))


def _video_links(route: RouteResult, out_dir: Path) -> tuple[str, str]:
    """(short link for the table, player for the route card)."""
    video = route.details.video if route.details else None
    if video is None:
        return MISSING, ""
    webm, poster = companion_files(video)
    if not video.is_file() and webm is None:
        return (
            f'<span class="muted" title="{_e(video)}">missing</span>',
            f'<p class="muted">Video not found: <code>{_e(video)}</code></p>',
        )
    links = []
    if webm is not None:
        links.append(f'<a href="{_href(webm, out_dir)}">webm</a>')
    if video.is_file():
        links.append(f'<a href="{_href(video, out_dir)}">mp4</a>')
    poster_attr = f' poster="{_href(poster, out_dir)}"' if poster else ""
    if webm is not None:
        player = (
            f'<video controls preload="none"{poster_attr} src="{_href(webm, out_dir)}"></video>'
        )
    elif poster is not None:
        player = f'<img class="poster" src="{_href(poster, out_dir)}" alt="video poster">'
    else:
        player = ""
    return " · ".join(links), f"{player}<div>video: {' · '.join(links)}</div>"


def _routes_table(res: EvaluationResults, out_dir: Path) -> str:
    head = (
        "<tr><th>#</th><th>Route</th><th>Scenario</th><th>Tags</th><th>Status</th>"
        "<th class=n>DS</th><th class=n>RC</th><th class=n>IP</th><th class=n>Length<br>time</th>"
        "<th>Infractions</th><th>Interventions</th><th>Video</th></tr>"
    )
    rows = []
    for pos, r in enumerate(res.routes):
        d = r.details
        scenario = (d.scenario if d and d.scenario else "") or r.scenario_name
        tags = "".join(f'<span class="tag">{_e(t)}</span>' for t in (d.tags if d else ()))
        link, _ = _video_links(r, out_dir)
        rows.append(
            f"<tr><td class=n>{r.index}</td>"
            f'<td><a href="#route-{pos}">{_breakable(r.route_id)}</a></td>'
            f'<td class="scen">{_breakable(scenario or MISSING)}</td>'
            f'<td class="tags">{tags or MISSING}</td><td class="st">{_pill(r.status)}</td>'
            f'<td class="n">{_num(r.score_composed)}</td>'
            f'<td class="n">{_num(r.score_route, 1)}</td>'
            f'<td class="n">{_num(r.score_penalty, 3)}</td>'
            f'<td class="n">{_num(r.route_length_m, 0, " m")}<br>'
            f"{_num(r.duration_game_s, 1, ' s')}</td>"
            f'<td class="inf">{_infraction_details(r)}</td><td>{_interventions(r)}</td>'
            f"<td>{link}</td></tr>"
        )
    return f'<h2>Routes</h2><div class="scroll"><table>{head}{"".join(rows)}</table></div>'


def _comfort(comfort: Any) -> str:
    """Bench2Drive comfort block: score [%], comfortable segments, exceeded channels."""
    if not isinstance(comfort, Mapping) or not comfort:
        return MISSING
    parts = []
    if "score" in comfort:
        parts.append(_num(comfort["score"], 1, " %"))
    if comfort.get("segments"):
        parts.append(f"{_e(comfort.get('comfortable', '?'))}/{_e(comfort['segments'])} segments ok")
    exceeded = comfort.get("exceeded")
    if isinstance(exceeded, Mapping):
        bad = [f"{_e(k)} × {_e(v)}" for k, v in exceeded.items() if v]
        if bad:
            parts.append("exceeded: " + ", ".join(bad))
    known = {"score", "segments", "comfortable", "exceeded"}
    parts += [f"{_e(k)}: {_e(v)}" for k, v in comfort.items() if k not in known]
    return " · ".join(parts) or MISSING


def _kv(pairs: Iterable[tuple[str, str]]) -> str:
    return (
        '<div class="kv">' + "".join(f"<b>{_e(k)}</b><span>{v}</span>" for k, v in pairs) + "</div>"
    )


def _route_card(pos: int, r: RouteResult, traj: Path | None, out_dir: Path) -> str:
    d = r.details
    _, player = _video_links(r, out_dir)
    pairs = [
        ("Status", _pill(r.status)),
        (
            "Scores",
            f"DS {_num(r.score_composed)} · RC {_num(r.score_route, 1)} % · "
            f"IP {_num(r.score_penalty, 3)}",
        ),
        ("Scenario", _e((d.scenario if d and d.scenario else r.scenario_name) or MISSING)),
        ("Town / weather", f"{_e(r.town_name or MISSING)} / {_e(r.weather_id or MISSING)}"),
        (
            "Length / time",
            f"{_num(r.route_length_m, 0, ' m')} · {_num(r.duration_game_s, 1, ' s')} game · "
            f"{_num(r.duration_system_s, 1, ' s')} system",
        ),
    ]
    if d is not None:
        pairs += [
            ("File", f"<code>{_e(d.file or MISSING)}</code>"),
            (
                "Repetition / seed",
                f"{_e(MISSING if d.repetition is None else d.repetition)} / "
                f"{_e(MISSING if d.seed is None else d.seed)}",
            ),
        ]
        b2d = d.bench2drive
        if b2d:
            pairs += [
                (
                    "Bench2Drive",
                    f"success {_e('yes' if b2d.get('success') else 'no')} · efficiency "
                    f"{_num(b2d.get('efficiency'), 1, ' %')}",
                ),
                ("Comfort", _comfort(b2d.get("comfort"))),
            ]
        if d.error:
            pairs.append(("Error", f'<span class="bad">{_e(d.error)}</span>'))
        pairs.append(("Interventions", _interventions(r)))
    pairs.append(("Infractions", _infraction_details(r)))
    head = f'<section class="route" id="route-{pos}"><h3>{_e(r.route_id)} {_pill(r.status)}</h3>'
    if traj is None and not player:
        note = '<p class="muted">No trajectory or video for this route.</p>'
        return f"{head}{_kv(pairs)}{note}</section>"
    left = (
        f'<img class="traj" src="{_href(traj, out_dir)}" alt="trajectory of {_e(r.route_id)}">'
        if traj is not None
        else '<p class="muted">No trajectory in details.json.</p>'
    )
    return (
        f'{head}<div class="grid"><div>{left}</div><div>{player}{_kv(pairs)}</div></div></section>'
    )


def _exceptions(res: EvaluationResults) -> str:
    if not res.exceptions:
        return ""
    rows = "".join(
        f"<tr><td>{_e(rid)}</td><td class=n>{_e(idx)}</td><td>{_pill(st)}</td></tr>"
        for rid, idx, st in res.exceptions
    )
    return (
        "<h2>Failed routes (Leaderboard exceptions)</h2><table><tr><th>Route</th>"
        f"<th class=n>Index</th><th>Status</th></tr>{rows}</table>"
    )


# ---------------------------------------------------------------------------- entry point
def write_report(results_path: Path, out_dir: Path) -> Path:
    """Write `out_dir/index.html` (+ `out_dir/img/*.png`) for a results JSON; returns the
    html path. Raises `ResultsFormatError` (naming file and field) for a bad results file."""
    res = load_results(Path(results_path))
    out_dir = Path(out_dir).resolve()
    img_dir = out_dir / IMG_DIR
    img_dir.mkdir(parents=True, exist_ok=True)
    for stale in img_dir.glob("traj_*.png"):
        stale.unlink()
    images: dict[str, Path] = {}
    path = plot_route_scores(res.routes, img_dir / "route_scores.png")
    if path is not None:
        images["route_scores"] = path
    by_tag = res.summary.get("by_tag")
    if isinstance(by_tag, Mapping) and by_tag:
        path = plot_scores_by_tag(
            {str(k): v for k, v in by_tag.items() if isinstance(v, Mapping)},
            img_dir / "by_tag.png",
        )
        if path is not None:
            images["by_tag"] = path
    images["infractions"] = plot_infractions_by_kind(
        _infraction_counts(res.routes), img_dir / "infractions.png"
    )
    cards = []
    for pos, route in enumerate(res.routes):
        traj = plot_route_trajectory(route, img_dir / f"traj_{pos:04d}.png")
        cards.append(_route_card(pos, route, traj, out_dir))
    generated = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    body = (
        _header(res)
        + _summary(res)
        + _figures(images, out_dir, res)
        + _routes_table(res, out_dir)
        + _exceptions(res)
        + ("<h2>Route details</h2>" + "".join(cards) if cards else "")
        + f'<p class="muted" style="margin-top:30px">Generated by vlmdrive on {_e(generated)}.</p>'
    )
    title = f"Evaluation report: {res.agent or res.path.name}"
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )
    index = out_dir / "index.html"
    tmp = index.with_name(".index.html.part")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, index)
    return index
