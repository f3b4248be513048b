"""Small polyline helpers used by the town builder and the traffic model (CARLA frame)."""

from __future__ import annotations

import numpy as np


def cumulative_length(points: np.ndarray) -> np.ndarray:
    """(N, 2) points -> (N,) arc length from the first point [m]."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(seg)])


def resample(points: np.ndarray, spacing_m: float = 1.0) -> np.ndarray:
    """Resample a polyline at a uniform arc-length spacing (keeps both end points)."""
    s = cumulative_length(points)
    total = s[-1]
    n = max(int(np.ceil(total / spacing_m)), 1)
    target = np.linspace(0.0, total, n + 1)
    return np.stack([np.interp(target, s, points[:, 0]), np.interp(target, s, points[:, 1])], -1)


def headings(points: np.ndarray) -> np.ndarray:
    """(N,) heading [rad] of each point, from the neighbouring segment(s)."""
    d = np.gradient(points, axis=0)
    return np.arctan2(d[:, 1], d[:, 0])


def offset(points: np.ndarray, right_m: float) -> np.ndarray:
    """Offset a polyline to its right (CARLA frame: right of (cos h, sin h) is (-sin h, cos h))."""
    h = headings(points)
    return points + right_m * np.stack([-np.sin(h), np.cos(h)], -1)


def bezier(
    p0: np.ndarray, h0: float, p3: np.ndarray, h3: float, spacing_m: float = 1.0
) -> np.ndarray:
    """Cubic Bezier from p0 leaving at heading h0 to p3 arriving at heading h3."""
    chord = float(np.linalg.norm(p3 - p0))
    d = 0.42 * chord
    p1 = p0 + d * np.array([np.cos(h0), np.sin(h0)])
    p2 = p3 - d * np.array([np.cos(h3), np.sin(h3)])
    t = np.linspace(0.0, 1.0, max(int(chord / spacing_m) * 3, 8))[:, None]
    curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
    return resample(curve, spacing_m)


def curvature(points: np.ndarray) -> np.ndarray:
    """(N,) unsigned curvature [1/m] from heading change per metre."""
    h = np.unwrap(headings(points))
    s = cumulative_length(points)
    ds = np.maximum(np.gradient(s), 1e-6)
    return np.abs(np.gradient(h) / ds)


def project(points: np.ndarray, s: np.ndarray, xy: np.ndarray) -> tuple[float, float, int]:
    """Closest point of a polyline to xy: (arc length s [m], distance [m], segment index)."""
    a, b = points[:-1], points[1:]
    ab = b - a
    denom = np.maximum((ab**2).sum(1), 1e-12)
    t = np.clip(((xy - a) * ab).sum(1) / denom, 0.0, 1.0)
    proj = a + t[:, None] * ab
    dist = np.linalg.norm(proj - xy, axis=1)
    i = int(np.argmin(dist))
    return float(s[i] + t[i] * np.sqrt(denom[i])), float(dist[i]), i
