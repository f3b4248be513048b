"""Trajectory anchors: k-means over the expert's trajectories (DiffusionDrive: 20 anchors).

Plain Lloyd's k-means with k-means++ seeding on flattened (T*2) trajectories, in numpy and
deterministic for a seed — a dozen lines, so scikit-learn is not worth a dependency here.
"""

from __future__ import annotations

import numpy as np


def kmeans_anchors(
    trajectories: np.ndarray, k: int = 20, iterations: int = 50, seed: int = 0
) -> np.ndarray:
    """(N, T, 2) ego-frame trajectories [m] -> (k, T, 2) cluster centres, sorted by their
    final x (stop ... fast) so the anchor order is stable and readable."""
    if trajectories.ndim != 3 or trajectories.shape[-1] != 2:
        raise ValueError(f"trajectories must be (N, T, 2), got {trajectories.shape}")
    if not np.isfinite(trajectories).all():
        raise ValueError("trajectories contain NaN or inf")
    n, t, _ = trajectories.shape
    if n < k:
        raise ValueError(f"need at least k={k} trajectories for k-means, got {n}")
    x = trajectories.reshape(n, t * 2).astype(np.float64)
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(n)]]
    for _ in range(1, k):  # k-means++: next centre with probability ~ squared distance
        d2 = np.min([((x - c) ** 2).sum(1) for c in centres], axis=0)
        centres.append(x[rng.choice(n, p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(n)])
    c = np.stack(centres)
    for _ in range(iterations):
        assign = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        moved = np.stack(
            [x[assign == j].mean(0) if (assign == j).any() else c[j] for j in range(k)]
        )
        if np.allclose(moved, c):
            break
        c = moved
    anchors = c.reshape(k, t, 2)
    return anchors[np.argsort(anchors[:, -1, 0], kind="stable")].astype(np.float32)
