"""A model card: what a reviewer reads before trusting a version (data, scores against the
baseline, limits), written beside every registered model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def render_model_card(
    title: str,
    summary: str,
    data: Mapping[str, object],
    metrics: Mapping[str, float],
    baseline_metrics: Mapping[str, float] | None,
    limits: Sequence[str],
) -> str:
    lines = [f"# {title}", "", summary, "", "## Data", ""]
    lines += [f"- **{key}**: {value}" for key, value in data.items()]
    lines += ["", "## Scores on the frozen test version", ""]
    if baseline_metrics:
        lines += ["| metric | this model | baseline |", "|---|---|---|"]
        lines += [
            f"| {key} | {value:.4f} | "
            + (f"{baseline_metrics[key]:.4f}" if key in baseline_metrics else "–")
            + " |"
            for key, value in metrics.items()
        ]
    else:
        lines += ["| metric | this model |", "|---|---|"]
        lines += [f"| {key} | {value:.4f} |" for key, value in metrics.items()]
    lines += ["", "## Limits", ""]
    lines += [f"- {limit}" for limit in limits]
    return "\n".join(lines) + "\n"
