"""A model card: what a reviewer reads before trusting a version (data, scores against the
baseline, limits), written beside every registered model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelCard:
    """What a reviewer reads before trusting a version (`report/model_card.md`)."""

    title: str
    summary: str
    data: Mapping[str, object]
    metrics: Mapping[str, float]
    baseline_metrics: Mapping[str, float] | None
    limits: Sequence[str]
    sections: Mapping[str, str] = field(default_factory=dict)
    """Further sections, title → markdown (e.g. per-class scores, the closest classes)."""

    def render(self) -> str:
        lines = [f"# {self.title}", "", self.summary, "", "## Data", ""]
        lines += [f"- **{key}**: {value}" for key, value in self.data.items()]
        lines += ["", "## Scores on the frozen test version", ""]
        if self.baseline_metrics:
            lines += ["| metric | this model | baseline |", "|---|---|---|"]
            lines += [
                f"| {key} | {value:.4f} | "
                + (f"{self.baseline_metrics[key]:.4f}" if key in self.baseline_metrics else "–")
                + " |"
                for key, value in self.metrics.items()
            ]
        else:
            lines += ["| metric | this model |", "|---|---|"]
            lines += [f"| {key} | {value:.4f} |" for key, value in self.metrics.items()]
        for title, body in self.sections.items():
            lines += ["", f"## {title}", "", body]
        lines += ["", "## Limits", ""]
        lines += [f"- {limit}" for limit in self.limits]
        return "\n".join(lines) + "\n"
