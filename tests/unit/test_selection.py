"""Choosing what to annotate: fair across sources, no text twice, nothing sent twice."""

import polars as pl
import pytest

from ml.annotation.selection import pick_candidates, proportional_allocation


def pool(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(rid, f"text {key}", key, source) for rid, key, source in rows],
        schema=["request_id", "text", "text_key", "source"],
        orient="row",
    )


NOTHING_OUT = pl.DataFrame(schema={"request_id": pl.Utf8, "text_key": pl.Utf8})


def test_sources_get_their_share_of_the_batch() -> None:
    # 8 + 1.5 + 0.5: the one seat left goes to the larger remainder, ties by name.
    assert proportional_allocation({"a": 80, "b": 15, "c": 5}, 10) == {"a": 8, "b": 1, "c": 1}
    assert sum(proportional_allocation({"a": 7, "b": 7, "c": 7}, 10).values()) == 10
    assert proportional_allocation({"a": 2, "b": 1}, 10) == {"a": 2, "b": 1}
    rows = [(f"a{i}", f"ka{i}", "app") for i in range(60)] + [
        (f"b{i}", f"kb{i}", "email") for i in range(40)
    ]
    chosen = pick_candidates(pool(rows), NOTHING_OUT, n=10, seed=1)
    assert chosen.height == 10
    assert chosen.group_by("source").len().sort("source").rows() == [("app", 6), ("email", 4)]
    assert chosen["strategy"].unique().to_list() == ["stratified random (cold start)"]


def test_the_pick_is_seeded_and_one_request_per_text() -> None:
    rows = [(f"r{i}", f"k{i % 5}", "app") for i in range(50)]
    first = pick_candidates(pool(rows), NOTHING_OUT, n=10, seed=3)
    assert first.height == 5 and first["text_key"].n_unique() == 5
    assert first.equals(pick_candidates(pool(rows), NOTHING_OUT, n=10, seed=3))
    assert not first.equals(pick_candidates(pool(rows), NOTHING_OUT, n=10, seed=4))


def test_nothing_already_out_for_annotation_is_sent_again() -> None:
    rows = [(f"r{i}", f"k{i}", "app") for i in range(6)]
    out = pl.DataFrame({"request_id": ["r0", "r1"], "text_key": ["k0", "k5"]})
    chosen = pick_candidates(pool(rows), out, n=10, seed=1)
    assert sorted(chosen["request_id"]) == ["r2", "r3", "r4"]


def test_with_model_margins_the_least_certain_go_first() -> None:
    rows = pool([(f"r{i}", f"k{i}", "app") for i in range(5)]).with_columns(
        pl.Series("margin", [0.9, 0.1, 0.5, None, 0.05])
    )
    chosen = pick_candidates(rows, NOTHING_OUT, n=3, seed=1)
    assert chosen["request_id"].to_list() == ["r4", "r1", "r2"]
    assert chosen["strategy"].unique().to_list() == ["smallest margin"]


def test_a_bad_pool_or_batch_size_is_named() -> None:
    with pytest.raises(ValueError, match=r"lacks columns \['text_key'\]"):
        pick_candidates(
            pl.DataFrame({"request_id": [], "text": [], "source": []}), NOTHING_OUT, 5, 1
        )
    with pytest.raises(ValueError, match="at least one item"):
        pick_candidates(pool([]), NOTHING_OUT, 0, 1)


def test_drifted_traffic_goes_first_then_the_rest_as_usual() -> None:
    rows = [(f"a{i}", f"ka{i}", "app") for i in range(30)] + [
        (f"s{i}", f"ks{i}", "serving") for i in range(4)
    ]
    rows.append(("s-dup", "ka0", "serving"))  # a served text already in the pool: once only
    chosen = pick_candidates(pool(rows), NOTHING_OUT, n=10, seed=1, prefer_sources=["serving"])
    assert chosen.height == 10 and chosen["text_key"].n_unique() == 10
    assert chosen["source"].to_list()[:5] == ["serving"] * 5
    assert set(chosen["source"][5:]) == {"app"}
    assert chosen["strategy"][0].startswith("preferred source")
    few = pick_candidates(pool(rows), NOTHING_OUT, n=3, seed=1, prefer_sources=["serving"])
    assert set(few["source"]) == {"serving"}


def test_balanced_by_the_guess_a_confident_model_still_sends_both_classes() -> None:
    rows = [(f"r{i}", f"k{i}", "line1") for i in range(40)]
    scored = pool(rows).with_columns(
        pl.Series("margin", [0.01 * i for i in range(40)]),
        # The 30 smallest margins are all one guess: a plain pick would send one class only.
        pl.Series("guess", ["functional"] * 30 + ["defective"] * 10),
    )
    plain = pick_candidates(scored, NOTHING_OUT, n=10, seed=1)
    assert set(plain["guess"]) == {"functional"}
    balanced = pick_candidates(scored, NOTHING_OUT, n=10, seed=1, balance_by="guess")
    assert balanced.group_by("guess").len().sort("guess").rows() == [
        ("defective", 5),
        ("functional", 5),
    ]
    assert set(balanced.filter(pl.col("guess") == "functional")["request_id"]) == {
        f"r{i}" for i in range(5)
    }, "within a guess, the smallest margins"
    assert balanced["strategy"].unique().to_list() == ["smallest margin per guess"]
    few = pick_candidates(scored.head(32), NOTHING_OUT, n=10, seed=1, balance_by="guess")
    assert few.group_by("guess").len().sort("guess").rows() == [
        ("defective", 2),
        ("functional", 8),
    ], "seats a small stratum cannot fill go to the others"
