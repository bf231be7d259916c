"""Every picture a reviewer looks at instead of reading a table (matplotlib figures, no UI code):
assets embed them as metadata, the registry keeps them in a version's report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

if TYPE_CHECKING:
    from ml.monitoring.drift import DriftReport

BLUE = "#4f7cac"


def confusion_figure(
    confusion: np.ndarray, labels: Sequence[str], title: str, rows: str, columns: str
) -> plt.Figure:
    """A confusion matrix on a log colour scale (a few large cells would hide the rest)."""
    size = max(4.0, 0.18 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(np.log1p(confusion), cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    axis.set_yticks(range(len(labels)), labels, fontsize=6)
    axis.set_xlabel(columns)
    axis.set_ylabel(rows)
    axis.set_title(title)
    return figure


def histogram_figure(values: np.ndarray, title: str, xlabel: str) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(6, 2.5))
    axis.hist(values, bins=40, color=BLUE)
    axis.set_xlabel(xlabel)
    axis.set_title(title)
    return figure


def bar_figure(counts: Mapping[str, int], title: str, limit: int = 30) -> plt.Figure:
    """Horizontal bars of the `limit` largest counts, largest on top."""
    items = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)[:limit]
    figure, axis = plt.subplots(figsize=(8, max(2.0, 0.22 * len(items) + 1)))
    axis.barh([k for k, _ in reversed(items)], [v for _, v in reversed(items)], color=BLUE)
    axis.set_title(title)
    axis.tick_params(axis="y", labelsize=7)
    return figure


def series_figure(periods: Sequence[date], values: Sequence[float], title: str) -> plt.Figure:
    figure, axis = plt.subplots(figsize=(8, 2.8))
    axis.plot(list(periods), list(values), color=BLUE)
    axis.set_title(title)
    figure.autofmt_xdate()
    return figure


def threshold_figure(
    labels: Sequence[str], values: Sequence[float], threshold: float, ylabel: str
) -> plt.Figure:
    """One point per label in order (batches as collected), against a dashed threshold."""
    figure, axis = plt.subplots(figsize=(7, 2.8))
    axis.plot(range(len(values)), list(values), marker="o")
    axis.axhline(threshold, color="#c0392b", linestyle="--", label=f"threshold {threshold}")
    axis.set_xticks(range(len(labels)), list(labels), rotation=45, fontsize=6)
    axis.set_ylabel(ylabel)
    axis.legend(fontsize=7)
    return figure


@dataclass(frozen=True)
class ForecastLine:
    label: str
    periods: Sequence[date]
    p50: Sequence[float]
    band: tuple[Sequence[float], Sequence[float]] | None = None
    """P10 and P90, shaded."""


@dataclass(frozen=True)
class ForecastPlot:
    """One series: its recent actuals and the forecasts drawn over them."""

    title: str
    periods: Sequence[date]
    actuals: Sequence[float]
    lines: Sequence[ForecastLine] = field(default_factory=tuple)


def forecast_figure(plots: Sequence[ForecastPlot]) -> plt.Figure:
    colors = ("#1f77b4", "#d62728", "#2ca02c")
    figure, axes = plt.subplots(len(plots), 1, figsize=(9, 2.4 * len(plots)), squeeze=False)
    for axis, plot in zip(axes[:, 0], plots, strict=True):
        axis.plot(plot.periods, plot.actuals, color="black", lw=1, label="actual")
        for line, color in zip(plot.lines, colors, strict=False):
            axis.plot(line.periods, line.p50, color=color, lw=1, label=line.label)
            if line.band is not None:
                axis.fill_between(line.periods, *line.band, alpha=0.2)
        axis.set_title(plot.title, fontsize=9)
        axis.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    return figure


def drift_figure(report: DriftReport, title: str = "Request drift") -> plt.Figure:
    """One bar per column: its score relative to its threshold (the dashed line at 1), drifted
    columns in orange; each bar is labeled with the score itself."""
    shown = 4.0
    severities = [min(column.severity, shown) for column in report.columns]
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(report.columns) + 1.4))
    positions = range(len(report.columns))
    axis.barh(
        positions,
        severities,
        color=["tab:orange" if column.drifted else "tab:blue" for column in report.columns],
    )
    axis.axvline(1.0, color="black", linestyle="--", linewidth=1)
    for position, column, severity in zip(positions, report.columns, severities, strict=True):
        label = (
            f"p={column.p_value:.2g}" if column.p_value is not None else f"d={column.statistic:.2f}"
        )
        axis.text(severity, position, f" {label}", va="center", fontsize=8)
    axis.set_yticks(list(positions), [f"{c.column} ({c.algorithm})" for c in report.columns])
    axis.invert_yaxis()
    axis.set_xlim(0, shown * 1.25)
    axis.set_xlabel("score relative to threshold (1 = threshold; p-values on a log scale)")
    verdict = ", ".join(report.drifted_columns) if report.drifted else "no column"
    axis.set_title(f"{title}: {verdict} drifted")
    return figure


def variant_figure(metrics: pl.DataFrame) -> plt.Figure:
    """Latency p50/p95/p99 of champion and challenger side by side, errors and requests in the
    labels: what a release step decided on."""
    figure, axis = plt.subplots(figsize=(7, 2.8))
    rows = metrics.to_dicts()
    width = 0.38
    for offset, row, colour in zip((-width / 2, width / 2), rows, (BLUE, "#e67e22"), strict=False):
        values = [row.get(k) or 0.0 for k in ("p50_ms", "p95_ms", "p99_ms")]
        label = (
            f"{row['variant']} v{row.get('model_version') or '?'}: {row.get('requests') or 0} "
            f"requests, {100 * (row.get('error_rate') or 0):.1f}% 5xx"
        )
        axis.bar([i + offset for i in range(3)], values, width, label=label, color=colour)
    axis.set_xticks(range(3), ["p50", "p95", "p99"])
    axis.set_ylabel("latency (ms)")
    axis.legend(fontsize=7)
    return figure


def image_grid_figure(
    images: Sequence[np.ndarray], captions: Sequence[str], title: str, columns: int = 8
) -> plt.Figure:
    """Grayscale images side by side with a caption each (a contact sheet of a drop)."""
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.6 * rows + 0.4))
    for i, axis in enumerate(np.atleast_1d(axes).ravel()):
        axis.axis("off")
        if i < len(images):
            axis.imshow(images[i], cmap="gray", vmin=0, vmax=255)
            axis.set_title(captions[i], fontsize=6)
    figure.suptitle(title, fontsize=9)
    return figure


def cost_effect_figure(
    curve: Sequence[tuple[str, float, float]], metric: str, champion: str | None
) -> plt.Figure:
    """Each version's test metric against the money spent up to it (training and annotation):
    where further spending stopped buying quality. The champion is ringed."""
    figure, axis = plt.subplots(figsize=(7, 3))
    spent = [cost for _, cost, _ in curve]
    scores = [score for _, _, score in curve]
    axis.plot(spent, scores, marker="o", color=BLUE)
    for version, cost, score in curve:
        axis.annotate(f"v{version}", (cost, score), textcoords="offset points", xytext=(4, 4))
        if version == champion:
            axis.scatter([cost], [score], s=180, facecolors="none", edgecolors="#e67e22", lw=2)
    axis.set_xlabel("cumulative cost (training + annotation)")
    axis.set_ylabel(metric)
    axis.set_title("Cost-effect curve (ringed: champion)")
    return figure


def traffic_figure(hourly: pl.DataFrame, title: str) -> plt.Figure:
    """Requests per hour (bars, errors in red) and p95 latency (line): a service's last day."""
    figure, requests_axis = plt.subplots(figsize=(8, 2.8))
    hours = list(hourly["hour"])
    requests_axis.bar(hours, list(hourly["requests"]), width=0.03, color=BLUE, label="requests")
    requests_axis.bar(hours, list(hourly["errors"]), width=0.03, color="#c0392b", label="5xx")
    requests_axis.set_ylabel("requests per hour")
    latency_axis = requests_axis.twinx()
    latency_axis.plot(hours, list(hourly["p95_ms"]), color="#e67e22", marker=".", label="p95")
    latency_axis.set_ylabel("p95 latency (ms)")
    requests_axis.set_title(title)
    requests_axis.legend(loc="upper left", fontsize=7)
    figure.autofmt_xdate()
    return figure
