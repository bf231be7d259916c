"""What a person sees on an asset in the Dagster UI: counts, the schema, a preview, a picture."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl
from dagster import MetadataValue, TableColumn, TableSchema

from ml.lifecycle.promotion import GateOutcome
from ml.lifecycle.registry import ModelVersion, Registry
from ml.security.redaction import redact_all

PREVIEW_ROWS = 10


def column_schema(frame: pl.DataFrame) -> TableSchema:
    return TableSchema(
        columns=[TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
    )


def markdown_table(frame: pl.DataFrame, digits: int = 3) -> MetadataValue:
    """Every row of `frame` as a markdown table, floats rounded to `digits`."""
    rounded = frame.with_columns(pl.col(pl.Float32, pl.Float64).round(digits))
    lines = ["| " + " | ".join(rounded.columns) + " |", "|" + "---|" * rounded.width]
    lines += [
        "| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rounded.rows()
    ]
    return MetadataValue.md("\n".join(lines))


CUSTOMER_TEXT_COLUMNS = ("text",)
"""Columns that hold what a customer wrote: redacted in every preview."""


def preview(frame: pl.DataFrame, rows: int = PREVIEW_ROWS) -> MetadataValue:
    """The first rows as a markdown table, customers' texts redacted, long cells shortened."""
    if frame.is_empty():
        return MetadataValue.md("_no rows_")
    head = frame.head(rows)
    texts = [c for c in CUSTOMER_TEXT_COLUMNS if c in head.columns]
    head = head.with_columns(
        pl.Series(c, redact_all(head[c].cast(pl.Utf8).to_list()), dtype=pl.Utf8) for c in texts
    )
    return markdown_table(
        head.with_columns(
            pl.col(c).cast(pl.Utf8).str.slice(0, 80).str.replace_all(r"\|", "\\|")
            for c in head.columns
        )
    )


def counts_table(counts: Mapping[str, object], key: str, value: str = "rows") -> MetadataValue:
    lines = [f"| {key} | {value} |", "|---|---|"]
    lines += [
        f"| {name} | {count:,} |" if isinstance(count, int) else f"| {name} | {count} |"
        for name, count in counts.items()
    ]
    return MetadataValue.md("\n".join(lines) if counts else "_none_")


def picture(figure: plt.Figure, caption: str) -> MetadataValue:
    """A matplotlib figure embedded as an image in markdown (the UI shows it inline)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return MetadataValue.md(f"**{caption}**\n\n![{caption}](data:image/png;base64,{encoded})")


def promotion_metadata(
    outcomes: Sequence[GateOutcome],
    champion: ModelVersion | None,
    history: Sequence[str],
    score_label: str,
) -> dict[str, object]:
    """What a promotion gate shows: the champion, each decision with its reason, the history."""
    lines = [f"| version | kind | {score_label} | decision | reason |", "|---|---|---|---|---|"]
    lines += [
        f"| {o.version} | {o.kind} | {o.score:.4f} | {o.decision.alias} | {o.decision.reason} |"
        for o in outcomes
    ]
    return {
        "champion_version": champion.version if champion else "none",
        "champion_kind": champion.tags.get("kind", "") if champion else "",
        "decisions": MetadataValue.md("\n".join(lines) if outcomes else "_no new version_"),
        "champion_history": ", ".join(history),
    }


def alias_history(registry: Registry, model_name: str) -> MetadataValue:
    """The append-only audit record as a table: MLflow keeps no alias history of its own."""
    rows = [
        {
            "#": entry.id,
            "when": entry.when,
            "who": entry.who,
            "action": entry.action,
            "version": entry.version,
            "moves": ", ".join(
                f"{alias}: {before or '-'} → {to or '-'}"
                for alias, (before, to) in entry.moves.items()
            ),
            "why": entry.why[:160],
            "outcome": entry.outcome or "pending",
        }
        for entry in registry.audit(model_name)
    ]
    return markdown_table(pl.DataFrame(rows)) if rows else MetadataValue.md("_no alias moves_")
