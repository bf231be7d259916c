"""The seeded demo data: reproducible, shaped like the contracts, and realistically imperfect."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ml.requests.taxonomy import Taxonomy, load_taxonomy, synthetic_taxonomy, taxonomy_from_names
from ml.synthetic.demand import generate_demand
from ml.synthetic.requests import EXTRA_WORDS, TEMPLATES, generate_requests

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 3, 31, 23, 59, tzinfo=UTC)
DEMAND_START = date(2022, 1, 1)
DEMAND_END = date(2024, 12, 31)


@pytest.fixture(scope="module")
def requests() -> pl.DataFrame:
    return generate_requests(5000, seed=7, start=START, end=END)


@pytest.fixture(scope="module")
def demand() -> pl.DataFrame:
    return generate_demand(start=DEMAND_START, end=DEMAND_END, seed=7)


def _series_means(demand: pl.DataFrame, by: str) -> pl.DataFrame:
    """Mean units per (store, item) with `by` = 1 and = 0 side by side."""
    return (
        demand.group_by("store", "item", by)
        .agg(pl.col("units").mean())
        .pivot(on=by, index=["store", "item"], values="units")
        .rename({"1": "on", "0": "off"})
        .drop_nulls()
    )


# --- taxonomy ------------------------------------------------------------------------------


def test_the_bundled_taxonomy_has_77_clean_unique_intents() -> None:
    taxonomy = synthetic_taxonomy()
    assert (taxonomy.name, taxonomy.version) == ("synthetic-intents", 1)
    assert len(taxonomy.intents) == len(set(taxonomy.intents)) == 77
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", intent) for intent in taxonomy.intents)
    assert all(taxonomy.description(intent) for intent in taxonomy.intents)
    assert taxonomy.label == "synthetic-intents@v1"


def test_the_generator_has_templates_for_exactly_the_taxonomy_intents() -> None:
    assert set(TEMPLATES) == set(synthetic_taxonomy().intents)
    assert min(len(templates) for templates in TEMPLATES.values()) >= 5


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"version": 1, "intents": [{"name": "a"}]}, "missing key(s) 'name'"),
        ({"name": "t", "version": 1, "intents": []}, "'intents' is empty"),
        (
            {"name": "t", "version": 1, "intents": [{"name": "a"}, {"name": "a"}]},
            "duplicate intent 'a'",
        ),
        ({"name": "t", "version": 0, "intents": [{"name": "a"}]}, "positive integer"),
        ({"name": "t", "version": 1, "intents": [{"name": "Card Lost"}]}, "snake_case"),
        ({"name": "t", "version": 1, "intents": ["a"]}, "must be an object"),
    ],
)
def test_a_bad_taxonomy_file_is_rejected_naming_the_file_and_the_problem(
    tmp_path: Path, document: dict[str, object], problem: str
) -> None:
    path = tmp_path / "broken_taxonomy.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"broken_taxonomy\.json") as raised:
        load_taxonomy(path)
    assert problem in str(raised.value)


def test_a_taxonomy_file_that_is_not_json_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "garbled.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"garbled\.json: not valid JSON"):
        load_taxonomy(path)


def test_a_source_can_bring_its_own_label_list() -> None:
    taxonomy = taxonomy_from_names("banking77", 1, ["card_arrival", "card_linking"])
    assert taxonomy == Taxonomy("banking77", 1, ("card_arrival", "card_linking"))
    assert "card_arrival" in taxonomy
    assert taxonomy.description("card_arrival") == ""
    with pytest.raises(ValueError, match=r"banking77.*duplicate intent 'x'"):
        taxonomy_from_names("banking77", 1, ["x", "x"])


# --- requests ------------------------------------------------------------------------------


def test_requests_are_reproducible_from_the_seed(requests: pl.DataFrame) -> None:
    again = generate_requests(5000, seed=7, start=START, end=END)
    other = generate_requests(5000, seed=8, start=START, end=END)
    assert requests.equals(again)
    assert not requests.equals(other)
    assert requests["request_id"][0] == "syn-7-000001"
    assert other["request_id"][0] == "syn-8-000001"


def test_requests_have_exactly_the_contract_columns(requests: pl.DataFrame) -> None:
    assert requests.schema == pl.Schema(
        {
            "request_id": pl.Utf8,
            "text": pl.Utf8,
            "intent": pl.Utf8,
            "source": pl.Utf8,
            "received_at": pl.Datetime("us", "UTC"),
        }
    )
    assert requests.height == 5000
    assert requests.null_count().row(0) == (0, 0, 0, 0, 0)
    assert requests["source"].unique().to_list() == ["synthetic"]
    assert requests["text"].str.strip_chars().str.len_chars().min() > 0


def test_every_taxonomy_intent_appears_and_nothing_else(requests: pl.DataFrame) -> None:
    assert set(requests["intent"]) == set(synthetic_taxonomy().intents)


def test_intents_are_strongly_imbalanced(requests: pl.DataFrame) -> None:
    counts = requests["intent"].value_counts()["count"]
    assert counts.max() >= 5 * counts.min()


def test_exact_duplicates_repeat_a_whole_row_under_the_same_request_id(
    requests: pl.DataFrame,
) -> None:
    repeated = requests.filter(pl.col("request_id").is_duplicated())
    assert 0.005 * requests.height <= repeated.height - repeated["request_id"].n_unique()
    assert repeated.height - repeated["request_id"].n_unique() <= 0.02 * requests.height
    assert repeated.unique().height == repeated["request_id"].n_unique()


def test_near_duplicates_are_an_earlier_text_lightly_edited_under_a_new_id(
    requests: pl.DataFrame,
) -> None:
    first_seen = requests.unique("text", keep="first", maintain_order=True)
    by_text = dict(zip(first_seen["text"], first_seen.iter_rows(named=True), strict=True))
    pairs = []
    for row in requests.iter_rows(named=True):
        head, _, tail = row["text"].partition(" ")
        stem, _, last = row["text"].rpartition(" ")
        for original, extra in ((tail, head), (stem, last)):
            if extra in EXTRA_WORDS and original in by_text:
                pairs.append((by_text[original], row))
    assert len(pairs) >= 10
    assert all(a["request_id"] != b["request_id"] for a, b in pairs)
    assert all(a["intent"] == b["intent"] for a, b in pairs)
    assert all(a["received_at"] <= b["received_at"] for a, b in pairs)


def test_received_at_spreads_over_the_requested_window(requests: pl.DataFrame) -> None:
    received = requests["received_at"]
    assert received.min() >= START
    assert received.max() <= END
    assert (received.max() - received.min()).days >= 85
    hours = Counter(received.dt.hour().to_list())
    assert hours[10] > 3 * hours[3]


def test_naive_bounds_are_read_as_utc() -> None:
    naive = generate_requests(50, start=datetime(2024, 1, 1), end=datetime(2024, 1, 2))
    aware = generate_requests(50, start=START, end=datetime(2024, 1, 2, tzinfo=UTC))
    assert naive.equals(aware)


def test_texts_are_learnable_but_not_trivially(requests: pl.DataFrame) -> None:
    """A bag-of-words naive Bayes, trained on 80%, separates intents well but not perfectly."""
    rows = requests.unique("text", keep="first", maintain_order=True)
    tokens = [re.findall(r"[a-z0-9']+", text.lower()) for text in rows["text"]]
    labels = rows["intent"].to_list()
    cut = int(0.8 * len(labels))
    vocabulary = {word: i for i, word in enumerate({w for t in tokens[:cut] for w in t})}
    classes = sorted(set(labels))
    counts = np.ones((len(classes), len(vocabulary)))
    for words, label in zip(tokens[:cut], labels[:cut], strict=True):
        for word in words:
            counts[classes.index(label), vocabulary[word]] += 1
    log_likelihood = np.log(counts / counts.sum(axis=1, keepdims=True))
    hits = 0
    for words, label in zip(tokens[cut:], labels[cut:], strict=True):
        known = [vocabulary[word] for word in words if word in vocabulary]
        hits += classes[int(log_likelihood[:, known].sum(axis=1).argmax())] == label
    accuracy = hits / (len(labels) - cut)
    assert 0.80 <= accuracy < 0.995


def test_about_one_text_in_ten_carries_a_typo(requests: pl.DataFrame) -> None:
    """A typo: a rare word one keystroke (swap, drop, double, neighbour) from a common one."""
    words = [re.findall(r"[a-z]+", text.lower()) for text in requests["text"]]
    frequency = Counter(word for text in words for word in text)
    common = {word for word, count in frequency.items() if count >= 20}

    def deletions(word: str) -> set[str]:
        return {word[:i] + word[i + 1 :] for i in range(len(word))}

    near_common = common | {variant for word in common for variant in deletions(word)}

    def is_typo(word: str) -> bool:
        rare = frequency[word] <= 2 and len(word) >= 3
        return rare and (word in near_common or not deletions(word).isdisjoint(near_common))

    share = sum(any(is_typo(word) for word in text) for text in words) / len(words)
    assert 0.04 <= share <= 0.18


def test_requests_reject_a_window_that_ends_before_it_starts() -> None:
    with pytest.raises(ValueError, match="before start"):
        generate_requests(10, start=END, end=START)


def test_zero_requests_is_an_empty_frame_with_the_schema() -> None:
    empty = generate_requests(0, start=START, end=END)
    assert empty.height == 0
    assert empty.schema["received_at"] == pl.Datetime("us", "UTC")


# --- demand --------------------------------------------------------------------------------


def test_demand_is_reproducible_from_the_seed(demand: pl.DataFrame) -> None:
    assert demand.equals(generate_demand(start=DEMAND_START, end=DEMAND_END, seed=7))
    assert not demand.equals(generate_demand(start=DEMAND_START, end=DEMAND_END, seed=8))


def test_demand_has_exactly_the_contract_columns_sorted_by_key(demand: pl.DataFrame) -> None:
    assert demand.schema == pl.Schema(
        {
            "store": pl.Utf8,
            "item": pl.Utf8,
            "period_start": pl.Date,
            "freq": pl.Utf8,
            "units": pl.Float64,
            "price": pl.Float64,
            "deal": pl.Int8,
            "feature": pl.Int8,
        }
    )
    assert demand.equals(demand.sort("store", "item", "period_start"))
    assert demand["store"].unique().sort().to_list() == ["S01", "S02", "S03", "S04", "S05"]
    assert demand["item"].n_unique() == 8
    assert demand["freq"].unique().to_list() == ["D"]


def test_demand_values_are_plausible(demand: pl.DataFrame) -> None:
    assert not demand.select("store", "item", "period_start").is_duplicated().any()
    assert demand["units"].min() >= 0
    assert (demand["units"] == demand["units"].round()).all()
    assert demand["price"].min() > 0
    assert set(demand["deal"].unique()) == {0, 1}
    assert demand.filter(pl.col("feature") == 1)["deal"].min() == 1
    assert demand.null_count().sum_horizontal().item() == 0


def test_about_two_percent_of_store_item_days_are_missing_but_no_whole_day(
    demand: pl.DataFrame,
) -> None:
    grid = 5 * 8 * ((DEMAND_END - DEMAND_START).days + 1)
    assert 0.01 * grid <= grid - demand.height <= 0.03 * grid
    assert demand["period_start"].n_unique() == (DEMAND_END - DEMAND_START).days + 1
    single = generate_demand(stores=1, items=1, start=DEMAND_START, end=date(2022, 3, 31))
    assert single.height == 90


def test_weekends_sell_more_than_weekdays(demand: pl.DataFrame) -> None:
    weekend = pl.col("period_start").dt.weekday() >= 6
    assert demand.filter(weekend)["units"].mean() > 1.15 * demand.filter(~weekend)["units"].mean()


def test_deals_cut_the_price_and_lift_units(demand: pl.DataFrame) -> None:
    units = _series_means(demand, "deal")
    regular, intermittent = units.filter(pl.col("item") != "I008"), units.filter(item="I008")
    assert regular.height == 35
    assert (regular["on"] > regular["off"]).all()
    assert intermittent["on"].sum() > intermittent["off"].sum()
    prices = (
        demand.group_by("store", "item", "deal")
        .agg(pl.col("price").mean())
        .pivot(on="deal", index=["store", "item"], values="price")
    )
    assert (prices["1"] < prices["0"]).all()


def test_feature_advertising_adds_lift_on_top_of_the_deal(demand: pl.DataFrame) -> None:
    on_deal = demand.filter(pl.col("deal") == 1)
    featured = on_deal.filter(pl.col("feature") == 1)["units"].mean()
    assert featured > 1.1 * on_deal.filter(pl.col("feature") == 0)["units"].mean()


def test_the_christmas_run_up_is_visible_and_christmas_day_is_quiet(demand: pl.DataFrame) -> None:
    december = demand.filter(pl.col("period_start").dt.month() == 12)
    day = pl.col("period_start").dt.day()
    run_up = december.filter(day.is_between(18, 24))["units"].mean()
    early = december.filter(day.is_between(1, 14))["units"].mean()
    christmas = december.filter(day == 25)["units"].mean()
    assert run_up > 1.25 * early
    assert christmas < 0.5 * early


def test_one_item_is_intermittent(demand: pl.DataFrame) -> None:
    zero_share = demand.group_by("item").agg((pl.col("units") == 0).mean().alias("zeros"))
    intermittent = zero_share.filter(pl.col("zeros") > 0.5)
    assert intermittent["item"].to_list() == ["I008"]
    assert zero_share.filter(pl.col("item") != "I008")["zeros"].max() < 0.3


def test_a_few_outliers_stand_far_above_their_series(demand: pl.DataFrame) -> None:
    ratio = demand.with_columns(
        (pl.col("units") / pl.col("units").mean().over("store", "item")).alias("ratio")
    )
    assert ratio.filter(pl.col("ratio") > 4).height >= 5


def test_demand_rejects_an_empty_grid() -> None:
    with pytest.raises(ValueError, match="stores and items"):
        generate_demand(stores=0, start=DEMAND_START, end=DEMAND_END)
    with pytest.raises(ValueError, match="before start"):
        generate_demand(start=DEMAND_END, end=DEMAND_START)


def test_a_sources_bare_label_list_loads_as_its_taxonomy_with_labels_kept_as_spelled(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "banking77"
    folder.mkdir()
    (folder / "categories.json").write_text(json.dumps(["card_arrival", "Refund_not_showing_up"]))
    taxonomy = load_taxonomy(folder / "categories.json")
    assert (taxonomy.name, taxonomy.version) == ("banking77", 1)
    assert taxonomy.intents == ("card_arrival", "Refund_not_showing_up")
    (folder / "categories.json").write_text(json.dumps(["ok", " padded"]))
    with pytest.raises(ValueError, match="without outer spaces"):
        load_taxonomy(folder / "categories.json")
