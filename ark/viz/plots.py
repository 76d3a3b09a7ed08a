"""PNG plots for benchmark scripts and training runs (matplotlib, headless ``Agg`` backend).

    from ark.viz.plots import training_curves, rate_accuracy, benchmark_bars, trajectories

    training_curves({"train loss": losses, "val loss": val}, "curves.png", xlabel="epoch")
    rate_accuracy({"ark": (rates, accs), "jpeg": (rates2, accs2)}, "rd.png", xlabel="kbit/s", ylabel="success")
    benchmark_bars(rows, "ate_rmse", "slam.png", label="method", ylabel="ATE RMSE (m)")
    trajectories({"truth": gt, "slam": est}, "traj.png", occupancy=prob, extent=(x0, x1, y0, y1))

matplotlib is an optional dependency (the ``viz`` extra); without it these functions raise
:class:`PlotUnavailable` with the install hint, so a benchmark can print its table and skip
the picture. Each function writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ark.errors import ArkError


class PlotUnavailable(ArkError):
    """matplotlib is not installed."""


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)  # never open a window, even when a display exists
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable("PNG plots need matplotlib: pip install 'ark-robotics[viz]' (or matplotlib)") from None
    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def training_curves(curves: Mapping[str, Sequence[float] | tuple[Sequence[float], Sequence[float]]], path: str | Path, *,
                    xlabel: str = "step", ylabel: str = "loss", title: str = "", log_y: bool = False) -> Path:
    """One line per curve; a curve is a sequence of values (x = 0, 1, ...) or an ``(x, y)`` pair."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, curve in curves.items():
        if isinstance(curve, tuple) and len(curve) == 2:
            x, y = np.asarray(curve[0], dtype=float), np.asarray(curve[1], dtype=float)
        else:
            y = np.asarray(curve, dtype=float)
            x = np.arange(len(y))
        ax.plot(x, y, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def rate_accuracy(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, *,
                  xlabel: str = "rate", ylabel: str = "accuracy", title: str = "", log_x: bool = False) -> Path:
    """Rate–accuracy (rate–distortion) curves: per series, points ``(rates, accuracies)`` joined in rate order."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, (rates, accs) in series.items():
        r, a = np.asarray(rates, dtype=float), np.asarray(accs, dtype=float)
        order = np.argsort(r)
        ax.plot(r[order], a[order], marker="o", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if log_x:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def benchmark_bars(rows: Sequence[Mapping[str, Any]], metric: str, path: str | Path, *, label: str = "name",
                   group: str | None = None, ylabel: str | None = None, title: str = "", log_y: bool = False) -> Path:
    """Bars of ``row[metric]`` per ``row[label]``, side by side per ``row[group]`` when given (the rows a
    benchmark prints as its table)."""
    plt = _pyplot()
    groups = list(dict.fromkeys(str(r[group]) for r in rows)) if group else [""]
    labels = list(dict.fromkeys(str(r[label]) for r in rows))
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(groups) + 2.5), 4.0))
    x = np.arange(len(groups))
    for i, name in enumerate(labels):
        vals = []
        for g in groups:
            match = [r for r in rows if str(r[label]) == name and (not group or str(r[group]) == g)]
            vals.append(float(match[0][metric]) if match else np.nan)
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(x, groups if group else [""])
    ax.set(ylabel=ylabel or metric, title=title)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return _save(fig, path)


def trajectories(paths: Mapping[str, np.ndarray], path: str | Path, *, occupancy: np.ndarray | None = None,
                 extent: tuple[float, float, float, float] | None = None, title: str = "") -> Path:
    """Planar trajectories ``(N, >=2)`` over an optional occupancy map (probabilities, row = y) spanning
    ``extent = (xmin, xmax, ymin, ymax)`` metres."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    if occupancy is not None:
        ax.imshow(1.0 - np.asarray(occupancy, dtype=float), cmap="gray", origin="lower", extent=extent, vmin=0, vmax=1)
    for i, (name, xy) in enumerate(paths.items()):
        xy = np.asarray(xy, dtype=float)
        # The first path (usually the truth) dashed on top, so a good estimate does not hide it.
        style = dict(color="k", ls="--", lw=1.0, zorder=5) if i == 0 else dict(lw=1.4)
        ax.plot(xy[:, 0], xy[:, 1], label=name, **style)
    ax.set(xlabel="x (m)", ylabel="y (m)", title=title)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)
