"""Path post-processing: random shortcutting, waypoint pruning and densification of joint paths.

``shortcut`` repeatedly picks two points on the path (anywhere along it, not only at waypoints)
and replaces the stretch between them by a straight edge when ``scene.motion_valid`` accepts it;
the path only ever gets shorter and stays valid; a final ``prune`` pass drops the waypoints that
a straight valid edge can skip. Seeded, so the same input gives the same output.
"""

from __future__ import annotations

import numpy as np


def path_length(path) -> float:
    """Euclidean length (rad for joint paths) of a polyline ``(N, n)``."""
    p = np.asarray(path, dtype=np.float64)
    return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()) if len(p) > 1 else 0.0


def _point_at(path: np.ndarray, cum: np.ndarray, s: float) -> tuple[np.ndarray, int]:
    i = int(np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(path) - 2))
    seg = cum[i + 1] - cum[i]
    t = (s - cum[i]) / seg if seg > 0 else 0.0
    return path[i] + t * (path[i + 1] - path[i]), i


def prune(path, scene) -> np.ndarray:
    """Drop waypoints greedily: from each kept waypoint, jump to the farthest later one it connects to."""
    p = np.asarray(path, dtype=np.float64)
    out, i = [p[0]], 0
    while i < len(p) - 1:
        j = len(p) - 1
        while j > i + 1 and not scene.motion_valid(p[i], p[j]):
            j -= 1
        out.append(p[j])
        i = j
    return np.array(out)


def shortcut(path, scene, iterations: int = 100, seed: int = 0) -> np.ndarray:
    """A shorter valid path with the same end points; see the module docstring."""
    p = np.asarray(path, dtype=np.float64).copy()
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        if len(p) < 3:
            break
        cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
        s1, s2 = np.sort(rng.uniform(0.0, cum[-1], 2))
        a, i = _point_at(p, cum, s1)
        b, j = _point_at(p, cum, s2)
        if j <= i:
            continue  # both on one segment: already straight
        if np.linalg.norm(b - a) >= (s2 - s1) - 1e-9:
            continue
        if not (scene.is_valid(a) and scene.is_valid(b) and scene.motion_valid(a, b)):
            continue
        p = np.vstack([p[: i + 1], a[None], b[None], p[j + 1:]])
        # Drop repeated points produced when a or b fall on a waypoint.
        keep = np.concatenate([[True], np.linalg.norm(np.diff(p, axis=0), axis=1) > 1e-9])
        p = p[keep]
    return prune(p, scene)


def densify(path, max_step: float) -> np.ndarray:
    """Insert points so no two consecutive ones are more than ``max_step`` apart (Euclidean)."""
    p = np.asarray(path, dtype=np.float64)
    out = [p[0]]
    for a, b in zip(p[:-1], p[1:]):
        k = max(1, int(np.ceil(np.linalg.norm(b - a) / max_step)))
        out += [a + (b - a) * (t / k) for t in range(1, k + 1)]
    return np.array(out)
