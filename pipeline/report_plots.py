"""The run report's plots: PNGs saved atomically into one folder and linked relatively (`Plots`), line plots of
[[step, value], ...] histories, and the PPO per-update panels. matplotlib with the Agg backend, imported only
when something is drawn."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable


def finite_number(value) -> float | None:
    """A finite float, or None for anything else (missing, bool, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integer_steps(ax) -> None:
    """Whole-number ticks on the step axis (a one-step run would otherwise show 9.6 .. 10.4), and a light grid."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def history_points(history) -> list[tuple[float, float]]:
    """[(step, value)] from [[step, value], ...], dropping malformed or non-finite entries."""
    points = []
    for entry in history if isinstance(history, list) else []:
        if isinstance(entry, (list, tuple)) and len(entry) == 2:
            step, value = finite_number(entry[0]), finite_number(entry[1])
            if step is not None and value is not None:
                points.append((step, value))
    return points


class Plots:
    """The report's PNGs in one folder: each saved atomically, remembered, linked relative to the run folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.written: set[str] = set()

    def save(self, name: str, draw: Callable[[Path], None]) -> str:
        """`draw(tmp_path)` writes the PNG; it is moved to `<folder>/<name>.png`. Returns the relative link."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.png"
        tmp = path.with_name(f".{name}.tmp-{os.getpid()}.png")
        try:
            draw(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self.written.add(path.name)
        return f"{self.folder.name}/{path.name}"

    def figure(self, name: str, fig) -> str:
        plt = pyplot()
        try:
            return self.save(name, lambda tmp: fig.savefig(tmp, dpi=110))
        finally:
            plt.close(fig)

    def curves(self, name: str, title: str, ylabel: str, series: dict[str, list],
               xlabel: str = "optimizer step") -> str | None:
        """Line plot of named [[step, value], ...] series (a one-point series is a marker); None when all are empty."""
        series = {label: history_points(history) for label, history in series.items()}
        if not any(series.values()):
            return None
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for label, points in series.items():
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="o" if len(points) <= 12 else None, label=label)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        _integer_steps(ax)
        ax.legend()
        fig.tight_layout()
        return self.figure(name, fig)

    def remove_stale(self) -> None:
        """Delete PNGs of an earlier report that this report did not draw."""
        for path in self.folder.glob("*.png") if self.folder.is_dir() else ():
            if path.name not in self.written:
                path.unlink(missing_ok=True)


def ppo_figure(history: list[dict], panels: tuple):
    plt = pyplot()
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, (key, title, ylabel) in zip(axes.flat, panels):
        for series_key, label in ((key, key.replace("_", " ")), ("shaped_score", "shaped score")):
            if series_key == "shaped_score" and key != "score":
                continue
            points = history_points([[h.get("step", i + 1), h.get(series_key)] for i, h in enumerate(history)])
            if points:
                ax.plot(*zip(*points), marker="o" if len(points) <= 12 else None, label=label)
        ax.set(title=title, xlabel="PPO update", ylabel=ylabel)
        _integer_steps(ax)
        if key == "score":
            ax.legend()
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("ppo: training per update")
    fig.tight_layout()
    return fig
