"""The data contracts of both domains: pandera schemas on polars frames, plus what pandera does
not say (the record key, tolerated null rates, the column freshness is measured on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandera.polars as pa
import polars as pl

MAX_TEXT_CHARS = 2000
SOURCE_NAME_PATTERN = r"^[a-z0-9_]+$"


@dataclass(frozen=True)
class Contract:
    """A pandera schema with the extra facts validation needs."""

    schema: pa.DataFrameSchema
    key: tuple[str, ...]
    """Two valid rows with the same key are the same record: the later one is a duplicate."""
    timestamp_column: str
    """The column freshness is measured on."""
    max_null_rate: Mapping[str, float] = field(default_factory=dict)
    """Per column, the share of empty values a drop may have before the drop itself is suspect."""

    @property
    def name(self) -> str:
        return self.schema.name or "contract"

    @property
    def columns(self) -> list[str]:
        return list(self.schema.columns)

    def dtype(self, column: str) -> pl.DataType:
        return self.schema.columns[column].dtype.type


def request_contract(intents: Sequence[str]) -> Contract:
    """Requests: one text per row; `intent` empty until someone labels it, else in the taxonomy."""
    return Contract(
        schema=pa.DataFrameSchema(
            {
                "request_id": pa.Column(pl.Utf8, pa.Check.str_length(1, 128)),
                "text": pa.Column(
                    pl.Utf8,
                    [
                        pa.Check.str_length(1, MAX_TEXT_CHARS),
                        pa.Check.str_contains(r"\S", error="text is blank"),
                    ],
                ),
                "intent": pa.Column(pl.Utf8, pa.Check.isin(list(intents)), nullable=True),
                "source": pa.Column(pl.Utf8, pa.Check.str_matches(SOURCE_NAME_PATTERN)),
                "received_at": pa.Column(pl.Datetime("us", "UTC")),
            },
            name="requests",
        ),
        key=("request_id",),
        timestamp_column="received_at",
        max_null_rate={"request_id": 0.0, "text": 0.05, "source": 0.0, "received_at": 0.05},
    )


DEMAND_FREQUENCIES = ("D", "W")

DEMAND_CONTRACT = Contract(
    schema=pa.DataFrameSchema(
        {
            "store": pa.Column(pl.Utf8, pa.Check.str_length(1, 64)),
            "item": pa.Column(pl.Utf8, pa.Check.str_length(1, 64)),
            "period_start": pa.Column(pl.Date),
            "freq": pa.Column(pl.Utf8, pa.Check.isin(list(DEMAND_FREQUENCIES))),
            "units": pa.Column(pl.Float64, [pa.Check.ge(0), pa.Check.le(1e9)]),
            "price": pa.Column(pl.Float64, pa.Check.gt(0), nullable=True),
            # Share of the period on promotion: 0/1 for a day, a fraction for a week's aggregate.
            "deal": pa.Column(pl.Float64, pa.Check.in_range(0, 1)),
            "feature": pa.Column(pl.Float64, pa.Check.in_range(0, 1)),
        },
        name="demand",
    ),
    key=("store", "item", "period_start"),
    timestamp_column="period_start",
    max_null_rate={"store": 0.0, "item": 0.0, "period_start": 0.0, "units": 0.1, "price": 0.5},
)
