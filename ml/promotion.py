"""The one promotion gate of every model: a candidate becomes champion only if it never loses to
the baseline and beats the current champion by a margin, all scored on the same frozen test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ml.registry import CHALLENGER, CHAMPION, ModelVersion, Registry

MARGIN_TOLERANCE = 1e-9
"""Float noise allowed when comparing a gain with the margin (0.85 - 0.80 < 0.05 in floats)."""


@dataclass(frozen=True)
class GateScores:
    """One model's score on the frozen test version the gate compares on."""

    version: str
    score: float


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str

    @property
    def alias(self) -> str:
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
    if margin < 0:
        raise ValueError(f"promotion margin must be ≥ 0, got {margin}")

    def gain(over: GateScores) -> float:
        difference = candidate.score - over.score
        return difference if higher_is_better else -difference

    def show(scores: GateScores) -> str:
        return f"v{scores.version} {metric} {scores.score:.4f}"

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
    decision: GateDecision


def gate_pending_versions(
    registry: Registry,
    model_name: str,
    test_version: str,
    metric: str,
    margin: float,
    rescore: Callable[[ModelVersion], float],
    higher_is_better: bool = True,
) -> list[GateOutcome]:
    """Decide every registered version the gate has not seen, oldest first, against the
    champion of that moment and the latest baseline registered up to it.

    Scores come from the version's tags when they were taken on `test_version`, else from
    `rescore` (load the version and score it on that frozen test): models are only ever
    compared on the same test version.
    """

    def score(version: ModelVersion) -> float:
        tagged = version.metric(metric)
        if version.tags.get("test_version") == test_version and tagged is not None:
            return tagged
        return rescore(version)

    everything = registry.versions(model_name)
    outcomes = []
    for candidate in registry.awaiting_gate(model_name):
        baselines = [
            v
            for v in everything
            if v.tags.get("role") == "baseline" and int(v.version) <= int(candidate.version)
        ]
        if not baselines:
            raise ValueError(
                f"{model_name} v{candidate.version}: no baseline version registered before it; "
                "every model is compared with a baseline (train the baseline first)"
            )
        champion = registry.champion(model_name)
        candidate_score = GateScores(candidate.version, score(candidate))
        decision = decide_promotion(
            candidate_score,
            GateScores(baselines[-1].version, score(baselines[-1])),
            GateScores(champion.version, score(champion)) if champion else None,
            metric,
            margin,
            higher_is_better,
        )
        registry.record_decision(model_name, candidate.version, decision.promote, decision.reason)
        outcomes.append(
            GateOutcome(
                candidate.version, candidate.tags.get("kind", ""), candidate_score.score, decision
            )
        )
    return outcomes
