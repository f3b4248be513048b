"""Matplotlib figures of the evaluation report, written as PNG files (Agg, no pyplot state).

World plots use CARLA's frame (x east, y south) drawn north up: the y axis is inverted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from sim.ground_truth import INFRACTION_KEYS
from sim.report.results import RouteResult

DPI = 100
STATUS_COLORS = {"Perfect": "#2e7d32", "Completed": "#1565c0", "Failed": "#c62828"}
OTHER_STATUS_COLOR = "#757575"
# Human-readable infraction names, by Leaderboard key (the Leaderboard's labels).
INFRACTION_NAMES: dict[str, str] = {
    "collisions_pedestrian": "Collisions with pedestrians",
    "collisions_vehicle": "Collisions with vehicles",
    "collisions_layout": "Collisions with layout",
    "red_light": "Red lights infractions",
    "stop_infraction": "Stop sign infractions",
    "outside_route_lanes": "Off-road infractions",
    "route_dev": "Route deviations",
    "route_timeout": "Route timeouts",
    "vehicle_blocked": "Agent blocked",
    "yield_emergency_vehicle_infractions": "Yield emergency vehicles infractions",
    "scenario_timeouts": "Scenario timeouts",
    "min_speed_infractions": "Min speed infractions",
}
# Marker and colour per infraction kind on the trajectory plots.
INFRACTION_STYLE: dict[str, tuple[str, str]] = {
    "collisions_vehicle": ("X", "#d50000"),
    "collisions_pedestrian": ("X", "#aa00ff"),
    "collisions_layout": ("X", "#8d6e63"),
    "red_light": ("o", "#ff6d00"),
    "stop_infraction": ("h", "#ffab00"),
    "outside_route_lanes": ("*", "#827717"),
    "min_speed_infractions": ("^", "#00b8d4"),
    "yield_emergency_vehicle_infractions": ("P", "#304ffe"),
    "scenario_timeouts": ("v", "#6a1b9a"),
    "route_dev": ("D", "#212121"),
    "vehicle_blocked": ("s", "#616161"),
    "route_timeout": ("p", "#4e342e"),
}
_DEFAULT_STYLE = ("o", "#000000")


def status_color(status: str) -> str:
    return STATUS_COLORS.get(status.split(" ")[0], OTHER_STATUS_COLOR)


def mpl_text(text: str) -> str:
    """Text shown literally by matplotlib: `$` would start mathtext (and can raise)."""
    return text.replace("$", r"\$")


def _save(fig: Figure, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    return out


def plot_scores_by_tag(by_tag: Mapping[str, Mapping[str, float]], out: Path) -> Path | None:
    """Driving score and route completion [0-100] per scenario tag, horizontal bars."""
    tags = sorted(by_tag)
    if not tags:
        return None
    ds = [float(by_tag[t].get("driving_score", 0.0) or 0.0) for t in tags]
    rc = [float(by_tag[t].get("route_completion", 0.0) or 0.0) for t in tags]
    n = [int(by_tag[t].get("routes", 0) or 0) for t in tags]
    fig = Figure(figsize=(6.4, 1.3 + 0.42 * len(tags)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(tags))
    ax.barh(y - 0.2, ds, 0.4, color="#1565c0", label="Driving score")
    ax.barh(y + 0.2, rc, 0.4, color="#90caf9", label="Route completion")
    for yi, (d, k) in enumerate(zip(ds, n, strict=True)):
        ax.text(min(d, 100.0) + 1.0, yi - 0.2, f"{d:.1f}  (n={k})", va="center", fontsize=8)
    ax.set_yticks(y, [mpl_text(t) for t in tags], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 118)
    ax.set_xlabel("score [0-100]")
    ax.set_title("Driving score by tag", fontsize=11)
    fig.legend(fontsize=8, loc="outside lower center", ncols=2, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out)


def plot_route_scores(routes: Sequence[RouteResult], out: Path) -> Path | None:
    """Driving score per route (bar coloured by status) with route completion as a tick."""
    if not routes:
        return None
    fig = Figure(figsize=(6.4, 1.3 + 0.3 * len(routes)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(routes))
    ax.barh(
        y,
        [r.score_composed for r in routes],
        0.7,
        color=[status_color(r.status) for r in routes],
    )
    ax.scatter([r.score_route for r in routes], y, marker="|", s=160, color="#212121", zorder=3)
    ax.set_yticks(y, [mpl_text(r.route_id) for r in routes], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("driving score [0-100]  (| = route completion)")
    ax.set_title("Driving score per route", fontsize=11)
    handles = [Line2D([], [], color=c, lw=6, label=s) for s, c in STATUS_COLORS.items()] + [
        Line2D([], [], color="#212121", marker="|", ls="", ms=10, label="Route completion")
    ]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncols=4, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out)


def plot_infractions_by_kind(counts: Mapping[str, int], out: Path) -> Path:
    """Number of infractions of every Leaderboard kind over all routes (zeros included)."""
    kinds = list(INFRACTION_KEYS) + sorted(k for k in counts if k not in INFRACTION_KEYS)
    values = [int(counts.get(k, 0)) for k in kinds]
    fig = Figure(figsize=(6.4, 0.9 + 0.3 * len(kinds)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(kinds))
    ax.barh(y, values, 0.7, color=[INFRACTION_STYLE.get(k, _DEFAULT_STYLE)[1] for k in kinds])
    for yi, v in enumerate(values):
        if v:
            ax.text(v, yi, f" {v}", va="center", fontsize=8)
    ax.set_yticks(y, [mpl_text(INFRACTION_NAMES.get(k, k)) for k in kinds], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(max(values) * 1.15, 1.0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("count (all routes)")
    ax.set_title("Infractions by kind", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out)


def plot_route_trajectory(route: RouteResult, out: Path) -> Path | None:
    """Top-down: route polyline, driven trajectory coloured by speed, infractions by kind.
    None when details.json has no geometry for the route."""
    d = route.details
    if d is None or (len(d.route_xy) < 2 and len(d.trajectory) < 2):
        return None
    fig = Figure(figsize=(4.6, 4.0), layout="constrained")
    ax = fig.add_subplot()
    pts = [d.route_xy] if len(d.route_xy) else []
    if len(d.route_xy) >= 2:
        ax.plot(*d.route_xy.T, color="#b0bec5", lw=7, solid_capstyle="round", zorder=1)
        ax.plot(*d.route_xy.T, color="#78909c", lw=1, ls="--", zorder=2)
    if len(d.trajectory) >= 2:
        xy = d.trajectory[:, 1:3]
        pts.append(xy)
        speed_kmh = d.trajectory[:, 4] * 3.6
        segs = np.stack([xy[:-1], xy[1:]], axis=1)
        lc = LineCollection(list(segs), cmap="viridis", linewidths=2.2, zorder=3)
        lc.set_array(0.5 * (speed_kmh[:-1] + speed_kmh[1:]))
        lc.set_clim(0.0, max(float(speed_kmh.max()), 10.0))
        ax.add_collection(lc)
        cbar = fig.colorbar(lc, ax=ax, shrink=0.8, pad=0.01)
        cbar.set_label("speed [km/h]", fontsize=8)
        cbar.ax.tick_params(labelsize=7)
        ax.plot(*xy[0], marker="o", color="white", mec="black", ms=7, zorder=4, ls="")
        ax.plot(*xy[-1], marker="s", color="black", ms=6, zorder=4, ls="")
    handles = [
        Line2D([], [], color="#b0bec5", lw=5, label="route"),
        Line2D([], [], marker="o", color="white", mec="black", ls="", label="start"),
        Line2D([], [], marker="s", color="black", ls="", label="end"),
    ]
    seen: set[str] = set()
    for ev in d.infractions:
        if ev.x is None or ev.y is None:
            continue
        marker, colour = INFRACTION_STYLE.get(ev.kind, _DEFAULT_STYLE)
        ax.plot(ev.x, ev.y, marker=marker, color=colour, mec="white", ms=11, ls="", zorder=5)
        pts.append(np.array([[ev.x, ev.y]]))
        if ev.kind not in seen:
            seen.add(ev.kind)
            name = mpl_text(INFRACTION_NAMES.get(ev.kind, ev.kind))
            handles.append(
                Line2D([], [], marker=marker, color=colour, mec="white", ms=9, ls="", label=name)
            )
    allpts = np.concatenate(pts)
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    centre = 0.5 * (lo + hi)
    half = max(float((hi - lo).max()) * 0.54, 10.0)  # square view, 8 % margin
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] + half, centre[1] - half)  # y south: north up
    ax.set_aspect("equal", adjustable="box")
    ax.tick_params(labelsize=7)
    ax.set_xlabel("x (east) [m]", fontsize=8)
    ax.set_ylabel("y (south) [m]", fontsize=8)
    ax.set_title(
        mpl_text(f"{route.route_id}  DS {route.score_composed:.1f}"),
        fontsize=9,
        color=status_color(route.status),
    )
    ax.legend(handles=handles, fontsize=6.5, loc="best", framealpha=0.85)
    ax.grid(alpha=0.25)
    return _save(fig, out)
