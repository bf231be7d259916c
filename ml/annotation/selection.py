"""Which unlabeled requests go to annotation next.

Cold start (no model yet): a random sample stratified by source, each source in proportion to
its unlabeled pool. Once a model scores the pool (a `margin` column: top-1 minus top-2
probability), the smallest margins go first. Either way: one request per normalized text, and
never a text that is already out for annotation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import polars as pl


def _shuffle_key(seed: int, request_id: str) -> str:
    return hashlib.sha256(f"{seed}:{request_id}".encode()).hexdigest()


def prediction_margins(probabilities: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row: small means the model hesitates."""
    if probabilities.shape[1] < 2:
        raise ValueError("margins need probabilities over at least two classes")
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


def proportional_allocation(available: dict[str, int], n: int) -> dict[str, int]:
    """Split `n` across strata in proportion to what each has (largest remainder), never more
    than a stratum holds."""
    total = sum(available.values())
    if total <= n:
        return dict(available)
    exact = {name: n * count / total for name, count in available.items()}
    allocation = {name: int(share) for name, share in exact.items()}
    leftover = n - sum(allocation.values())
    by_remainder = sorted(
        exact, key=lambda name: (exact[name] - allocation[name], name), reverse=True
    )
    for name in by_remainder[:leftover]:
        allocation[name] += 1
    return allocation


def even_allocation(available: dict[str, int], n: int) -> dict[str, int]:
    """Split `n` as evenly as the strata allow (seats a small stratum cannot fill go to the
    others), in name order."""
    allocation = dict.fromkeys(available, 0)
    while n > 0 and any(allocation[name] < available[name] for name in available):
        for name in sorted(available):
            if n > 0 and allocation[name] < available[name]:
                allocation[name] += 1
                n -= 1
    return allocation


def pick_candidates(
    pool: pl.DataFrame,
    out_for_annotation: pl.DataFrame,
    n: int,
    seed: int,
    prefer_sources: Sequence[str] = (),
    item: str = "request_id",
    key: str = "text_key",
    balance_by: str | None = None,
) -> pl.DataFrame:
    """The next `n` items to annotate (the pool's columns, `margin` aside), with the strategy
    that chose each. Items of `prefer_sources` (drifted serving traffic) go first, then the
    rest as usual. `item` is the id column, `key` the one whose duplicates go out once (the
    normalized text; an image's content id is its own key). `balance_by` (the model's guess):
    the smallest margins of each of its values in even shares, so that a confident model does
    not send a batch of one class (where Cohen's kappa says little)."""
    missing = [c for c in (item, key, "source") if c not in pool.columns]
    if missing:
        raise ValueError(f"the candidate pool lacks columns {missing}")
    if n < 1:
        raise ValueError(f"a batch needs at least one item, got batch size {n}")
    if prefer_sources:
        preferred = pl.col("source").is_in(list(prefer_sources))
        first = pick_candidates(
            pool.filter(preferred), out_for_annotation, n, seed, (), item, key, balance_by
        )
        first = first.with_columns(("preferred source, " + pl.col("strategy")).alias("strategy"))
        if first.height == n:
            return first
        taken = pl.concat([out_for_annotation.select(item, key), first.select(item, key)]).unique()
        rest = pick_candidates(
            pool.filter(~preferred), taken, n - first.height, seed, (), item, key, balance_by
        )
        return pl.concat([first, rest])
    fresh = pool.filter(
        ~pl.col(item).is_in(out_for_annotation[item].implode())
        & ~pl.col(key).is_in(out_for_annotation[key].implode())
    )
    ordered = fresh.with_columns(
        pl.col(item)
        .map_elements(lambda rid: _shuffle_key(seed, rid), return_dtype=pl.Utf8)
        .alias("_order")
    ).sort("_order")
    one_per_text = ordered.unique(key, keep="first", maintain_order=True)
    if "margin" in one_per_text.columns and one_per_text["margin"].is_not_null().any():
        by_margin = one_per_text.sort("margin", nulls_last=True)
        if balance_by is None:
            chosen, strategy = by_margin.head(n), "smallest margin"
        else:
            counts = by_margin.group_by(balance_by).len()
            shares = even_allocation(dict(zip(counts[balance_by], counts["len"], strict=True)), n)
            chosen = pl.concat(
                [
                    by_margin.filter(pl.col(balance_by) == value).head(k)
                    for value, k in shares.items()
                ]
            ).sort("margin", nulls_last=True)
            strategy = f"smallest margin per {balance_by}"
    else:
        counts = one_per_text.group_by("source").len()
        allocation = proportional_allocation(
            dict(zip(counts["source"], counts["len"], strict=True)), n
        )
        chosen = pl.concat(
            [
                one_per_text.filter(pl.col("source") == source).head(k)
                for source, k in sorted(allocation.items())
                if k
            ]
            or [one_per_text.head(0)]
        ).sort("_order")
        strategy = "stratified random (cold start)"
    columns = [c for c in pool.columns if c != "margin"]
    return chosen.select(columns).with_columns(pl.lit(strategy).alias("strategy"))
