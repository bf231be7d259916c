"""A served model's traffic as a person reads it first: requests per hour, errors, latency
percentiles, and how often its answers match the labels that came later."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class TrafficSummary:
    requests: int
    server_errors: int
    """5xx answers: the service failed."""
    client_errors: int
    """4xx answers: the caller sent something the contract refuses (or no key)."""
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def server_error_rate(self) -> float:
        return self.server_errors / self.requests if self.requests else 0.0

    @property
    def client_error_rate(self) -> float:
        return self.client_errors / self.requests if self.requests else 0.0


def traffic_summary(outcomes: pl.DataFrame) -> TrafficSummary:
    """`outcomes`: the request log's rows (status, latency_ms) of one model's endpoint."""
    if outcomes.is_empty():
        return TrafficSummary(0, 0, 0, None, None, None)
    latency = outcomes["latency_ms"].cast(pl.Float64)
    return TrafficSummary(
        outcomes.height,
        int((outcomes["status"] >= 500).sum()),
        int(((outcomes["status"] >= 400) & (outcomes["status"] < 500)).sum()),
        float(latency.quantile(0.5, "linear")),
        float(latency.quantile(0.95, "linear")),
        float(latency.quantile(0.99, "linear")),
    )


def hourly_traffic(outcomes: pl.DataFrame) -> pl.DataFrame:
    """Per hour served: requests, 5xx, 4xx and latency p95 / p99 (ms), oldest first."""
    schema = {
        "hour": pl.Datetime("us", "UTC"),
        "requests": pl.UInt32,
        "errors": pl.UInt32,
        "client_errors": pl.UInt32,
        "p95_ms": pl.Float64,
        "p99_ms": pl.Float64,
    }
    if outcomes.is_empty():
        return pl.DataFrame(schema=schema)
    return (
        outcomes.with_columns(pl.col("served_at").dt.truncate("1h").alias("hour"))
        .group_by("hour")
        .agg(
            pl.len().alias("requests"),
            (pl.col("status") >= 500).sum().alias("errors"),
            ((pl.col("status") >= 400) & (pl.col("status") < 500)).sum().alias("client_errors"),
            pl.col("latency_ms").quantile(0.95, "linear").alias("p95_ms"),
            pl.col("latency_ms").quantile(0.99, "linear").alias("p99_ms"),
        )
        .sort("hour")
        .cast(schema)
    )


@dataclass(frozen=True)
class LiveQuality:
    labeled: int
    """Served answers whose input has a label now."""
    accuracy: float | None


def live_accuracy(served: pl.DataFrame, labels: pl.DataFrame, key: str) -> LiveQuality:
    """How often served answers (`key`, `predicted`) match the labels (`key`, `label`) given
    since: the model's quality on real traffic, where people labeled it."""
    if served.is_empty() or labels.is_empty():
        return LiveQuality(0, None)
    joined = served.select(key, "predicted").join(
        labels.select(key, "label").unique(key), on=key, how="inner"
    )
    if joined.is_empty():
        return LiveQuality(0, None)
    return LiveQuality(joined.height, float((joined["predicted"] == joined["label"]).mean()))
