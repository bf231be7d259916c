"""Staged release: sticky canary shares, the state file the workers read, per-variant metrics
and the step decisions (advance, hold, roll back, promote)."""

import time
import uuid
from datetime import UTC, datetime

import polars as pl
import pytest

from ml.lifecycle.release import (
    ADVANCE,
    CANARY,
    HOLD,
    OUTCOME_SCHEMA,
    PROMOTE,
    ROLLBACK,
    SHADOW,
    ReleasePolicy,
    decide_release_step,
    read_release_states,
    served_by_release,
    start_release,
    variant_metrics,
    variant_of,
    write_release_state,
)
from ml.monitoring.prediction_log import RECORD_SCHEMA, prediction_record
from serving.release import ReleaseStates, Route, canary_variant, shadow_share

POLICY = ReleasePolicy(min_requests=50)


def test_a_30_percent_canary_takes_30_percent_of_ids_and_each_id_keeps_its_variant() -> None:
    ids = [uuid.uuid4().hex for _ in range(1000)]
    first = [variant_of(i, 0.3) for i in ids]
    share = first.count("challenger") / len(ids)
    assert 0.26 <= share <= 0.34, share
    assert [variant_of(i, 0.3) for i in ids] == first, "the same id gets the same variant"
    assert all(variant_of(i, 0.0) == "champion" for i in ids)
    assert all(variant_of(i, 1.0) == "challenger" for i in ids)
    # Raising the share only moves ids to the challenger: a canary id stays in the canary.
    wider = [variant_of(i, 0.5) for i in ids]
    assert all(w == "challenger" for f, w in zip(first, wider, strict=True) if f == "challenger")


def test_workers_see_a_new_share_without_a_restart_and_a_broken_file_keeps_the_last(
    tmp_path,
) -> None:
    path = tmp_path / "release_state.json"
    state = start_release("request_classifier", "4", "3", POLICY, "test")
    write_release_state(path, state.moved_to("canary", "test", stage=CANARY, canary_share=0.3))
    seen = ReleaseStates(path, interval_s=0.0)
    assert seen.get("request_classifier").canary_share == 0.3
    later = read_release_states(path)["request_classifier"]
    time.sleep(0.01)  # a new mtime on coarse file systems
    write_release_state(path, later.moved_to("breach", "test", canary_share=0.0))
    assert seen.get("request_classifier").canary_share == 0.0
    assert [h["canary_share"] for h in seen.get("request_classifier").history] == [0.0, 0.3]
    path.write_text("{not json", encoding="utf-8")
    assert seen.get("request_classifier").canary_share == 0.0, "the last good state is kept"


def test_a_release_routes_only_in_the_bento_of_its_own_champion_and_challenger() -> None:
    state = start_release("request_classifier", "4", "3", POLICY, "test")
    canary = state.moved_to("c", "t", stage=CANARY, step=1, canary_share=1.0)
    own = Route("request_classifier", "3", "4", "/internal/classify-challenger")
    assert canary_variant(canary, own, "id-1") == "challenger"
    assert shadow_share(state, own) == POLICY.shadow_share
    for other in (
        Route("request_classifier", "1", "4", ""),
        Route("request_classifier", "3", "5", ""),
    ):
        assert canary_variant(canary, other, "id-1") == "champion"
        assert shadow_share(state, other) == 0.0
    ended = canary.moved_to("breach", "t", stage="off", canary_share=0.0)
    assert canary_variant(ended, own, "id-1") == "champion" and shadow_share(ended, own) == 0.0


def test_a_share_outside_0_to_1_is_refused() -> None:
    with pytest.raises(ValueError, match="canary_share"):
        start_release("m", "2", "1", POLICY, "t").moved_to("x", "t", canary_share=1.5)
    with pytest.raises(ValueError, match="canary_steps"):
        ReleasePolicy(canary_steps=(0.5, 0.25))


def outcomes(variant: str, count: int, latency_ms: float, errors: int = 0) -> list[dict]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "request_id": uuid.uuid4().hex,
            "served_at": now,
            "endpoint": "classify",
            "model_name": "request_classifier",
            "variant": variant,
            "model_version": "4" if variant == "challenger" else "3",
            "status": 500 if i < errors else 200,
            "latency_ms": latency_ms + (i % 10),
        }
        for i in range(count)
    ]


def shadow(count: int, agreeing: int) -> list[dict]:
    return [
        prediction_record(
            "classify",
            "request_classifier",
            "4",
            {"text": f"t{i}"},
            None,
            text=f"t{i}",
            intent="a",
            variant="shadow",
            agrees=i < agreeing,
        )
        for i in range(count)
    ]


def metrics_of(rows: list[dict], predictions: list[dict] = ()) -> pl.DataFrame:
    return variant_metrics(
        pl.DataFrame(rows, schema=OUTCOME_SCHEMA),
        pl.DataFrame(list(predictions), schema=RECORD_SCHEMA),
    )


def test_metrics_per_variant_count_errors_latency_and_shadow_agreement() -> None:
    metrics = metrics_of(
        outcomes("champion", 100, 20) + outcomes("challenger", 40, 60, errors=4),
        shadow(30, agreeing=27),
    )
    champion, challenger = metrics.to_dicts()
    assert (champion["requests"], champion["server_errors"]) == (100, 0)
    assert (challenger["requests"], challenger["server_errors"]) == (40, 4)
    assert challenger["error_rate"] == pytest.approx(0.1)
    assert 60 <= challenger["p50_ms"] <= 70 and champion["p99_ms"] < 30
    assert challenger["shadow_scored"] == 30
    assert challenger["shadow_agreement"] == pytest.approx(0.9)


def test_answers_of_other_versions_never_count_toward_a_release() -> None:
    """A Bento still serving an older challenger (v2) beside the same champion: its canary
    and shadow answers are not the released v4's evidence."""
    stale = [{**row, "model_version": "2"} for row in outcomes("challenger", 30, 10, errors=30)]
    rows = outcomes("champion", 60, 20) + outcomes("challenger", 40, 60) + stale
    kept = served_by_release(pl.DataFrame(rows, schema=OUTCOME_SCHEMA), shadow_state())
    assert kept.group_by("variant").len().sort("variant").rows() == [
        ("challenger", 40),
        ("champion", 60),
    ]
    assert set(kept["model_version"]) == {"3", "4"}
    shadows = pl.DataFrame([*shadow(5, 5), {**shadow(1, 0)[0], "model_version": "2"}])
    assert served_by_release(shadows, shadow_state()).height == 5


def shadow_state():
    return start_release("request_classifier", "4", "3", POLICY, "test")


def canary_state(step: int, share: float):
    return shadow_state().moved_to("t", "t", stage=CANARY, step=step, canary_share=share)


def test_shadow_advances_to_the_first_canary_step_once_enough_was_scored() -> None:
    few = decide_release_step(
        shadow_state(), metrics_of(outcomes("champion", 60, 20), shadow(10, 10)), POLICY
    )
    assert few.action == HOLD and "10 of 50" in few.reason
    enough = decide_release_step(
        shadow_state(), metrics_of(outcomes("champion", 200, 20), shadow(60, 55)), POLICY
    )
    assert (enough.action, enough.canary_share) == (ADVANCE, 0.05)


def test_a_good_canary_advances_step_by_step_then_goes_to_the_gate() -> None:
    good = metrics_of(outcomes("champion", 400, 20) + outcomes("challenger", 80, 22))
    first = decide_release_step(canary_state(1, 0.05), good, POLICY)
    assert (first.action, first.canary_share) == (ADVANCE, 0.25)
    assert decide_release_step(canary_state(2, 0.25), good, POLICY).canary_share == 0.5
    assert decide_release_step(canary_state(3, 0.5), good, POLICY).action == PROMOTE


def test_a_challenger_that_errors_or_is_slow_is_rolled_back_with_the_reason() -> None:
    erring = metrics_of(outcomes("champion", 400, 20) + outcomes("challenger", 80, 22, errors=8))
    step = decide_release_step(canary_state(1, 0.05), erring, POLICY)
    assert step.action == ROLLBACK and "error rate 10.0%" in step.reason
    slow = metrics_of(outcomes("champion", 400, 20) + outcomes("challenger", 80, 400))
    step = decide_release_step(canary_state(1, 0.05), slow, POLICY)
    assert step.action == ROLLBACK and "p99" in step.reason
    # A breach needs no minimum traffic: five errors in ten requests is enough to stop.
    early = metrics_of(outcomes("champion", 400, 20) + outcomes("challenger", 10, 20, errors=5))
    assert decide_release_step(canary_state(1, 0.05), early, POLICY).action == ROLLBACK


def test_live_accuracy_breaches_only_with_enough_labels() -> None:
    labels = pl.DataFrame({"text": [f"t{i}" for i in range(40)], "intent": ["a"] * 40})
    champion = [
        prediction_record(
            "classify",
            "request_classifier",
            "3",
            {},
            None,
            text=f"t{i}",
            intent="a",
            variant="champion",
        )
        for i in range(40)
    ]
    wrong = [
        prediction_record(
            "classify",
            "request_classifier",
            "4",
            {},
            None,
            text=f"t{i}",
            intent="b" if i < 20 else "a",
            variant="shadow",
            agrees=i >= 20,
        )
        for i in range(40)
    ]
    metrics = variant_metrics(
        pl.DataFrame(outcomes("champion", 100, 20), schema=OUTCOME_SCHEMA),
        pl.DataFrame(champion + wrong, schema=RECORD_SCHEMA),
        labels,
    )
    challenger = metrics.filter(pl.col("variant") == "challenger").row(0, named=True)
    assert (challenger["labeled"], challenger["live_accuracy"]) == (40, 0.5)
    step = decide_release_step(shadow_state(), metrics, POLICY)
    assert step.action == ROLLBACK and "live accuracy 50.0%" in step.reason
    assert shadow_state().stage == SHADOW
