"""Staged release of a challenger: shadow → canary steps → promotion, with a rollback on a breach.

The release state of each registered model is one small JSON file under the data home, written
whole by the release job and read by every serving worker (re-read when it changes, no
restart): which challenger version is released, its stage, the share of traffic it answers
(`canary_share`, sticky by request id) and the share of champion traffic it scores off the
request path (`shadow_share`). A state that names another challenger than the one a worker
serves routes nothing to it.

The decisions are plain functions of the per-variant metrics of the traffic served since the
step began (`variant_metrics`), so the release sensor, the release job and the tests share them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from ml.data.atomic_files import write_text_atomically

CHAMPION_VARIANT = "champion"
CHALLENGER_VARIANT = "challenger"
SHADOW_VARIANT = "shadow"
"""A challenger's answer to champion traffic: logged, never returned."""

SHADOW, CANARY, OFF = "shadow", "canary", "off"
"""Release stages: `off` once the challenger was withdrawn or promoted."""

RELEASE_STATE_FILE = "release_state.json"


@dataclass(frozen=True)
class ReleasePolicy:
    """When a step may advance: thresholds and steps are configuration with these defaults."""

    canary_steps: tuple[float, ...] = (0.05, 0.25, 0.5)
    shadow_share: float = 0.25
    """Share of champion traffic the challenger scores in shadow (off the request path)."""
    min_requests: int = 50
    """Requests the challenger must have answered (or shadow-scored) before a step advances."""
    max_error_rate_increase: float = 0.01
    """Challenger 5xx rate may exceed the champion's by at most this (absolute)."""
    max_p99_ratio: float = 1.5
    """Challenger p99 latency at most this multiple of the champion's."""
    p99_slack_ms: float = 50.0
    """… plus this, so that two fast variants are not compared on noise."""
    min_shadow_agreement: float = 0.0
    """Shadow answers agreeing with the champion's at least this share (0: report only)."""
    max_accuracy_drop: float = 0.02
    """Live accuracy (served texts with adjudicated labels) at most this below the champion."""
    min_labeled: int = 20
    """Labeled served texts per variant before live accuracy is compared."""

    def __post_init__(self) -> None:
        steps = list(self.canary_steps)
        if not steps or any(not 0 < s <= 1 for s in steps) or steps != sorted(set(steps)):
            raise ValueError(f"canary_steps must rise strictly within (0, 1]: {steps}")
        if not 0 <= self.shadow_share <= 1:
            raise ValueError(f"shadow_share must be within [0, 1]: {self.shadow_share}")
        if self.min_requests < 1:
            raise ValueError("min_requests must be at least 1")


@dataclass(frozen=True)
class ReleaseState:
    model_name: str
    challenger_version: str
    champion_version: str
    stage: str = SHADOW
    step: int = 0
    """0 in shadow; n during the n-th canary step."""
    canary_share: float = 0.0
    shadow_share: float = 0.0
    step_started_at: str = ""
    reason: str = ""
    updated_by: str = ""
    history: tuple[dict[str, object], ...] = field(default_factory=tuple)
    """Every earlier state of this release (stage, share, when, why): what the UI shows."""

    def __post_init__(self) -> None:
        for name in ("canary_share", "shadow_share"):
            share = getattr(self, name)
            if not 0 <= share <= 1:
                raise ValueError(f"{name} must be within [0, 1]: {share}")
        if self.stage not in (SHADOW, CANARY, OFF):
            raise ValueError(f"stage must be {SHADOW}, {CANARY} or {OFF}: {self.stage!r}")

    @property
    def started(self) -> datetime:
        return datetime.fromisoformat(self.step_started_at)

    def moved_to(self, reason: str, by: str, **changes: object) -> ReleaseState:
        """The next state, the current one kept in `history`."""
        earlier = {
            k: getattr(self, k)
            for k in ("stage", "step", "canary_share", "shadow_share", "step_started_at", "reason")
        }
        return replace(
            self,
            **changes,
            reason=reason,
            updated_by=by,
            step_started_at=_now(),
            history=(*self.history, earlier),
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def start_release(
    model_name: str, challenger: str, champion: str, policy: ReleasePolicy, by: str
) -> ReleaseState:
    return ReleaseState(
        model_name,
        challenger,
        champion,
        stage=SHADOW,
        shadow_share=policy.shadow_share,
        step_started_at=_now(),
        reason=f"v{challenger} released in shadow against champion v{champion}",
        updated_by=by,
    )


def halted(state: ReleaseState, reason: str, by: str) -> ReleaseState:
    """A release stopped by hand (an admin on call): the challenger answers and scores nothing
    from now on; the release job then holds, and the challenger keeps its alias until an ML
    engineer withdraws it or registers another."""
    if state.stage == OFF:
        raise ValueError(f"the release of {state.model_name} v{state.challenger_version} is over")
    return state.moved_to(f"halted: {reason}", by, stage=OFF, canary_share=0.0, shadow_share=0.0)


# --- the state file ---------------------------------------------------------------------------


def read_release_states(path: Path) -> dict[str, ReleaseState]:
    """Every model's release state ({} when there is no file)."""
    if not path.exists():
        return {}
    states = {}
    for name, raw in json.loads(path.read_text(encoding="utf-8")).items():
        states[name] = ReleaseState(**{**raw, "history": tuple(raw.get("history", ()))})
    return states


def write_release_state(path: Path, state: ReleaseState) -> None:
    """Replace `state.model_name`'s entry; written whole and renamed, so a worker reads the old
    file or the new one."""
    states = read_release_states(path)
    states[state.model_name] = state
    document = {name: asdict(s) for name, s in sorted(states.items())}
    write_text_atomically(path, json.dumps(document, indent=2))


def variant_of(request_id: str, canary_share: float) -> str:
    """`challenger` for a stable `canary_share` of request ids, else `champion`: the same id
    always gets the same variant, and raising the share only moves ids to the challenger."""
    if canary_share <= 0:
        return CHAMPION_VARIANT
    bucket = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") / 2**64
    return CHALLENGER_VARIANT if bucket < canary_share else CHAMPION_VARIANT


def in_shadow_sample(request_id: str, shadow_share: float) -> bool:
    """Whether a champion answer is also scored by the challenger (stable per id)."""
    if shadow_share <= 0:
        return False
    salted = hashlib.sha256(b"shadow:" + request_id.encode()).digest()[:8]
    return int.from_bytes(salted, "big") / 2**64 < shadow_share


# --- live metrics per variant -----------------------------------------------------------------

OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.Utf8,
    "served_at": pl.Utf8,
    "endpoint": pl.Utf8,
    "model_name": pl.Utf8,
    "variant": pl.Utf8,
    "model_version": pl.Utf8,
    "status": pl.Int64,
    "latency_ms": pl.Float64,
}
"""One record per HTTP request to a model endpoint, written by the service's router: what the
error rate and latency of each variant are computed from."""

METRIC_COLUMNS = (
    "variant",
    "model_version",
    "requests",
    "server_errors",
    "error_rate",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "shadow_scored",
    "shadow_agreement",
    "labeled",
    "live_accuracy",
)


def served_by_release(frame: pl.DataFrame, state: ReleaseState) -> pl.DataFrame:
    """The rows (outcomes or predictions) of `state`'s two versions: the champion's answers and
    the challenger's (canary or shadow). Answers of another version, e.g. from a Bento that
    still serves an older challenger, never count toward this release."""
    champion = pl.col("variant").fill_null(CHAMPION_VARIANT) == CHAMPION_VARIANT
    version = pl.col("model_version")
    return frame.filter(
        (pl.col("model_name") == state.model_name)
        & (
            (champion & (version == state.champion_version))
            | (~champion & (version == state.challenger_version))
        )
    )


def variant_metrics(
    outcomes: pl.DataFrame,
    predictions: pl.DataFrame,
    labels: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Per variant: requests, 5xx count and rate, latency p50/p95/p99 (ms), how many champion
    answers the challenger scored in shadow and how often it agreed, and live accuracy on served
    texts that have an adjudicated label (`labels`: text, intent)."""
    answered = (
        outcomes.filter(pl.col("variant").is_in([CHAMPION_VARIANT, CHALLENGER_VARIANT]))
        .group_by("variant")
        .agg(
            pl.col("model_version").drop_nulls().last().alias("model_version"),
            pl.len().alias("requests"),
            (pl.col("status") >= 500).sum().alias("server_errors"),
            pl.col("latency_ms").quantile(0.5, "linear").alias("p50_ms"),
            pl.col("latency_ms").quantile(0.95, "linear").alias("p95_ms"),
            pl.col("latency_ms").quantile(0.99, "linear").alias("p99_ms"),
        )
        .with_columns(
            (pl.col("server_errors") / pl.col("requests")).alias("error_rate"),
            pl.col("requests").cast(pl.Int64),
            pl.col("server_errors").cast(pl.Int64),
        )
    )
    shadow = predictions.filter(pl.col("variant") == SHADOW_VARIANT)
    agreement = pl.DataFrame(
        {
            "variant": [CHALLENGER_VARIANT],
            "shadow_scored": [shadow.height],
            "shadow_agreement": [
                float(shadow["agrees"].cast(pl.Float64).mean()) if shadow.height else None
            ],
        },
        schema={"variant": pl.Utf8, "shadow_scored": pl.Int64, "shadow_agreement": pl.Float64},
    )
    accuracy = _live_accuracy(predictions, labels)
    frame = (
        pl.DataFrame({"variant": [CHAMPION_VARIANT, CHALLENGER_VARIANT]})
        .join(answered, on="variant", how="left")
        .join(agreement, on="variant", how="left")
        .join(accuracy, on="variant", how="left")
        .with_columns(
            pl.col("requests", "server_errors", "shadow_scored", "labeled").fill_null(0),
        )
    )
    return frame.select(METRIC_COLUMNS)


def _live_accuracy(predictions: pl.DataFrame, labels: pl.DataFrame | None) -> pl.DataFrame:
    schema = {"variant": pl.Utf8, "labeled": pl.Int64, "live_accuracy": pl.Float64}
    if labels is None or labels.is_empty() or predictions.is_empty():
        return pl.DataFrame(schema=schema)
    known = labels.select("text", pl.col("intent").alias("label")).unique("text", keep="last")
    scored = predictions.filter(pl.col("intent").is_not_null()).join(known, on="text")
    # A shadow answer is the challenger's answer to the same text: it counts as the challenger.
    scored = scored.with_columns(
        pl.when(pl.col("variant") == SHADOW_VARIANT)
        .then(pl.lit(CHALLENGER_VARIANT))
        .otherwise(pl.col("variant").fill_null(CHAMPION_VARIANT))
        .alias("variant")
    )
    return scored.group_by("variant").agg(
        pl.len().cast(pl.Int64).alias("labeled"),
        (pl.col("intent") == pl.col("label")).mean().alias("live_accuracy"),
    )


# --- the step decision ------------------------------------------------------------------------

ADVANCE, HOLD, ROLLBACK, PROMOTE = "advance", "hold", "rollback", "promote"


@dataclass(frozen=True)
class ReleaseStep:
    action: str
    """advance (to the next canary share), hold, rollback, or promote (through the gate)."""
    reason: str
    canary_share: float = 0.0
    stage: str = CANARY


def _row(metrics: pl.DataFrame, variant: str) -> Mapping[str, object]:
    rows = metrics.filter(pl.col("variant") == variant).to_dicts()
    return rows[0] if rows else {}


def breaches(metrics: pl.DataFrame, policy: ReleasePolicy) -> list[str]:
    """Where the challenger is worse than the champion beyond the policy's tolerances."""
    champion, challenger = _row(metrics, CHAMPION_VARIANT), _row(metrics, CHALLENGER_VARIANT)
    found = []
    if challenger.get("requests"):
        theirs = float(challenger.get("error_rate") or 0)
        ours = float(champion.get("error_rate") or 0)
        if theirs > ours + policy.max_error_rate_increase:
            found.append(
                f"error rate {theirs:.1%} vs the champion's {ours:.1%} "
                f"(allowed +{policy.max_error_rate_increase:.1%})"
            )
        p99, champion_p99 = challenger.get("p99_ms"), champion.get("p99_ms")
        if p99 is not None and champion_p99 is not None:
            allowed = float(champion_p99) * policy.max_p99_ratio + policy.p99_slack_ms
            if float(p99) > allowed:
                found.append(
                    f"p99 {float(p99):.0f} ms vs the champion's {float(champion_p99):.0f} ms "
                    f"(allowed {allowed:.0f} ms)"
                )
    agreement = challenger.get("shadow_agreement")
    if agreement is not None and float(agreement) < policy.min_shadow_agreement:
        found.append(
            f"shadow agreement {float(agreement):.1%} below {policy.min_shadow_agreement:.1%}"
        )
    ours_acc, theirs_acc = champion.get("live_accuracy"), challenger.get("live_accuracy")
    if (
        ours_acc is not None
        and theirs_acc is not None
        and min(int(champion.get("labeled") or 0), int(challenger.get("labeled") or 0))
        >= policy.min_labeled
        and float(theirs_acc) < float(ours_acc) - policy.max_accuracy_drop
    ):
        found.append(
            f"live accuracy {float(theirs_acc):.1%} vs the champion's {float(ours_acc):.1%}"
        )
    return found


def decide_release_step(
    state: ReleaseState, metrics: pl.DataFrame, policy: ReleasePolicy
) -> ReleaseStep:
    """What the release sensor does next with `state`, given the metrics since its step began."""
    if state.stage == OFF:
        return ReleaseStep(HOLD, "the release is over", 0.0, OFF)
    found = breaches(metrics, policy)
    if found:
        where = "in shadow" if state.stage == SHADOW else f"at {state.canary_share:.0%}"
        return ReleaseStep(ROLLBACK, f"v{state.challenger_version} {where}: " + "; ".join(found))
    challenger = _row(metrics, CHALLENGER_VARIANT)
    seen = int(challenger.get("shadow_scored" if state.stage == SHADOW else "requests") or 0)
    if seen < policy.min_requests:
        return ReleaseStep(
            HOLD,
            f"{seen} of {policy.min_requests} challenger "
            f"{'shadow answers' if state.stage == SHADOW else 'requests'} so far",
            state.canary_share,
            state.stage,
        )
    steps: Sequence[float] = policy.canary_steps
    if state.stage == SHADOW:
        return ReleaseStep(
            ADVANCE, f"shadow: {seen} answers scored, no breach; canary at {steps[0]:.0%}", steps[0]
        )
    if state.step < len(steps):
        share = steps[state.step]
        return ReleaseStep(
            ADVANCE,
            f"canary {state.canary_share:.0%}: {seen} requests, no breach; next {share:.0%}",
            share,
        )
    return ReleaseStep(
        PROMOTE,
        f"canary {state.canary_share:.0%}: {seen} requests, no breach; to the promotion gate",
        state.canary_share,
    )
