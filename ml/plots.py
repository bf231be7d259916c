"""Pictures a reviewer looks at instead of reading tables (matplotlib figures, no UI code)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


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
