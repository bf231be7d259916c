"""The one promotion gate of every model: a candidate becomes champion only if it never loses to
the baseline and beats the current champion by a margin, all scored on the same frozen test.

The gate decides only on scores it computed itself: every version it compares is loaded from
the registry (its digests verified) and scored on the frozen test version by the caller's
`rescore`. Scores in a version's tags are whatever someone wrote there and are never read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ml.lifecycle.aliases import CHALLENGER, CHAMPION, REJECTED, AliasMoved, AlreadyDecided
from ml.lifecycle.artifacts import ArtifactIntegrityError
from ml.lifecycle.registry import ModelVersion, Registry

MARGIN_TOLERANCE = 1e-9
"""Float noise allowed when comparing a gain with the margin (0.85 - 0.80 < 0.05 in floats)."""


def check_margin(margin: float) -> float:
    """The margin, refused when negative: that would promote a model worse than the champion."""
    if margin < 0:
        raise ValueError(
            f"margin must be ≥ 0, got {margin} (a negative margin promotes a model worse than "
            "the champion)"
        )
    return margin


@dataclass(frozen=True)
class GateScores:
    """One model's score on the frozen test version the gate compares on."""

    version: str
    score: float


def _gain(candidate: GateScores, over: GateScores, higher_is_better: bool) -> float:
    """How much better `candidate` scored than `over` (negative: worse)."""
    difference = candidate.score - over.score
    return difference if higher_is_better else -difference


def _show(scores: GateScores, metric: str) -> str:
    return f"v{scores.version} {metric} {scores.score:.4f}"


def latest_baseline(registry: Registry, model_name: str, version: str) -> ModelVersion:
    """The latest baseline registered up to `version`: every model is compared with one."""
    baselines = [
        v
        for v in registry.versions(model_name)
        if v.tags.get("role") == "baseline" and int(v.version) <= int(version)
    ]
    if not baselines:
        raise ValueError(
            f"{model_name} v{version}: no baseline version registered before it; "
            "every model is compared with a baseline (train the baseline first)"
        )
    return baselines[-1]


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    rejected: bool = False
    """The artifact failed verification: scored by nobody, given no alias."""

    @property
    def alias(self) -> str:
        """The alias the version gets (`rejected`: none)."""
        if self.rejected:
            return REJECTED
        return CHAMPION if self.promote else CHALLENGER


def decide_promotion(
    candidate: GateScores,
    baseline: GateScores,
    champion: GateScores | None,
    metric: str,
    margin: float,
    higher_is_better: bool = True,
) -> GateDecision:
    """Promote `candidate` over `champion` (None: there is none yet) only if it is not worse than
    `baseline` and better than the champion by at least `margin` on `metric`."""
    check_margin(margin)

    def gain(over: GateScores) -> float:
        return _gain(candidate, over, higher_is_better)

    def show(scores: GateScores) -> str:
        return _show(scores, metric)

    if gain(baseline) < 0:
        return GateDecision(False, f"{show(candidate)} loses to the baseline {show(baseline)}")
    if champion is None:
        return GateDecision(True, f"no champion yet; {show(candidate)} ≥ baseline {show(baseline)}")
    if gain(champion) < margin - MARGIN_TOLERANCE:
        return GateDecision(
            False,
            f"{show(candidate)} does not beat the champion {show(champion)} "
            f"by the margin {margin:g}",
        )
    return GateDecision(
        True,
        f"{show(candidate)} beats the champion {show(champion)} by {gain(champion):.4f} "
        f"(margin {margin:g}) and the baseline {show(baseline)}",
    )


@dataclass(frozen=True)
class GateOutcome:
    version: str
    kind: str
    score: float
    """The gate's own score (NaN for a rejected version)."""
    decision: GateDecision


def gate_pending_versions(
    registry: Registry,
    model_name: str,
    test_version: str,
    metric: str,
    margin: float,
    rescore: Callable[[ModelVersion], float],
    higher_is_better: bool = True,
    via: str = "",
) -> list[GateOutcome]:
    """Decide every registered version no gate has decided, oldest first, against the champion
    of that moment and the latest baseline registered up to it; the decisions this run made.

    Every score is `rescore(version)`: the version loaded through the registry and scored on
    the frozen `test_version`, once per version in this run. A candidate whose artifact fails
    verification is rejected (no alias); a baseline or champion that fails stops the gate.
    Decisions are recorded by compare-and-set: if the champion moved meanwhile (another gate, a
    rollback) the candidate is decided again against the new one; one decision per version.
    """
    check_margin(margin)
    if not str(test_version).strip():
        raise ValueError("test_version is empty: the gate compares models on a frozen test")
    registry.reconcile(model_name)
    scores: dict[tuple[str, str], float] = {}

    def score(version: ModelVersion) -> float:
        key = (version.version, test_version)
        if key not in scores:
            scores[key] = float(rescore(version))
        return scores[key]

    outcomes = []
    while pending := registry.awaiting_gate(model_name):
        candidate = pending[0]
        kind = candidate.tags.get("kind", "")
        baseline = latest_baseline(registry, model_name, candidate.version)
        champion = registry.champion(model_name)
        expected = champion.version if champion else None
        try:
            candidate_score = GateScores(candidate.version, score(candidate))
        except ArtifactIntegrityError as error:
            decision = GateDecision(False, f"artifact not trusted: {error}", rejected=True)
            recorded = _record(
                registry, model_name, candidate, decision, None, test_version, expected, via
            )
            if recorded:
                outcomes.append(GateOutcome(candidate.version, kind, float("nan"), decision))
            continue
        decision = decide_promotion(
            candidate_score,
            GateScores(baseline.version, score(baseline)),
            GateScores(champion.version, score(champion)) if champion else None,
            metric,
            margin,
            higher_is_better,
        )
        if _record(
            registry,
            model_name,
            candidate,
            decision,
            candidate_score.score,
            test_version,
            expected,
            via,
        ):
            outcomes.append(GateOutcome(candidate.version, kind, candidate_score.score, decision))
    return outcomes


def _record(
    registry: Registry,
    model_name: str,
    candidate: ModelVersion,
    decision: GateDecision,
    score: float | None,
    test_version: str,
    expected_champion: str | None,
    via: str,
) -> bool:
    """Record `decision` unless another run got there first (False: decide again or skip)."""
    try:
        registry.record_decision(
            model_name,
            candidate.version,
            decision.alias,
            decision.reason,
            score,
            test_version,
            expected_champion,
            via,
        )
    except (AliasMoved, AlreadyDecided):
        return False
    return True


def decide_release_promotion(
    candidate: GateScores,
    baseline: GateScores,
    champion: GateScores,
    metric: str,
    margin: float,
    live_evidence: str,
    higher_is_better: bool = True,
) -> GateDecision:
    """The gate at the end of a staged release: the challenger passed shadow and every canary
    step (`live_evidence` says how), so it needs no offline margin over the champion, but it
    still never loses to the baseline, nor to the champion by more than the margin, on the
    gate's own scores on the frozen test."""
    check_margin(margin)
    shown = _show(candidate, metric)
    if _gain(candidate, baseline, higher_is_better) < 0:
        return GateDecision(False, f"{shown} loses to the baseline {_show(baseline, metric)}")
    if _gain(candidate, champion, higher_is_better) < -margin - MARGIN_TOLERANCE:
        return GateDecision(
            False,
            f"{shown} is worse than the champion {_show(champion, metric)} "
            f"by more than the margin {margin:g}",
        )
    return GateDecision(
        True,
        f"{live_evidence}; offline {shown} vs the champion {_show(champion, metric)} "
        f"(margin {margin:g}) and the baseline {_show(baseline, metric)}",
    )


def gate_released_challenger(
    registry: Registry,
    model_name: str,
    challenger: str,
    metric: str,
    margin: float,
    rescore: Callable[[ModelVersion], float],
    live_evidence: str,
    higher_is_better: bool = True,
    via: str = "",
) -> GateDecision:
    """Score the challenger, the champion and the latest baseline up to the challenger with
    `rescore` (the gate's own scores), decide, and promote the challenger if the gate says so.
    A refusal moves no alias: the release sensor withdraws the challenger with the reason."""
    champion = registry.champion(model_name)
    if champion is None:
        raise ValueError(f"{model_name} has no champion to release v{challenger} against")
    candidate = registry.version(model_name, challenger)
    baseline = latest_baseline(registry, model_name, challenger)
    decision = decide_release_promotion(
        GateScores(candidate.version, float(rescore(candidate))),
        GateScores(baseline.version, float(rescore(baseline))),
        GateScores(champion.version, float(rescore(champion))),
        metric,
        margin,
        live_evidence,
        higher_is_better,
    )
    if decision.promote:
        registry.promote_challenger(model_name, challenger, decision.reason, champion.version, via)
    return decision
