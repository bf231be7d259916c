"""The staged release of a challenger in Dagster: the release sensor walks it through shadow →
canary steps → the promotion gate, the release job takes each step, and the pin job sets the
champion by hand. Every step, breach and pin is shown on the model's promotion asset (the
per-variant metrics with a chart, the alias history from the audit record)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
from dagster import (
    AssetObservation,
    Config,
    DefaultSensorStatus,
    OpExecutionContext,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    job,
    op,
    sensor,
)

from assets.metadata import markdown_table, picture
from assets.requests.datasets import frozen_test_set
from assets.resources import (
    REGISTRY_POOL,
    ModelRegistry,
    ReleaseControl,
    Warehouse,
    launched_by,
)
from assets.serving.jobs import alias_observation
from ml.lifecycle.aliases import default_actor
from ml.lifecycle.promotion import gate_released_challenger
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
from ml.lifecycle.registry import ModelVersion, Registry
from ml.lifecycle.release import (
    ADVANCE,
    CANARY,
    HOLD,
    OFF,
    OUTCOME_SCHEMA,
    PROMOTE,
    ROLLBACK,
    ReleaseState,
    ReleaseStep,
    decide_release_step,
    read_release_states,
    served_by_release,
    start_release,
    variant_metrics,
    write_release_state,
)
from ml.monitoring.prediction_log import read_log, read_predictions
from ml.plots import variant_figure
from ml.requests.classifiers import registered_f1_macro

RELEASED_MODELS = (REQUEST_CLASSIFIER,)
"""The models whose challenger is released in stages (the demand forecaster's /forecast is
routed and logged by variant too, but its gate needs a backtest re-run: not walked yet)."""


def served_labels(warehouse: Warehouse) -> pl.DataFrame:
    """Served texts that came back through annotation with an adjudicated label (text,
    intent): what live accuracy is scored on."""
    return warehouse.query_if_exists(
        "labeled_requests",
        """
        select s.text, l.intent
        from labeled_requests l join stg_requests s using (request_id)
        where s.source = 'serving'
          and l.version = (select max(version) from labeled_requests)
        """,
        None,
        {"text": pl.Utf8, "intent": pl.Utf8},
    )


def release_metrics(
    control: ReleaseControl, state: ReleaseState, labels: pl.DataFrame | None
) -> pl.DataFrame:
    """Per-variant metrics of the traffic served since `state`'s step began."""
    start, end = state.started, datetime.now(UTC) + timedelta(seconds=1)
    outcomes = read_log(Path(control.request_log_dir), start, end, OUTCOME_SCHEMA)
    predictions = read_predictions(control.prediction_log_dir, start, end, include_shadow=True)
    return variant_metrics(
        served_by_release(outcomes, state), served_by_release(predictions, state), labels
    )


def next_step(
    control: ReleaseControl, registry: Registry, model_name: str, labels: pl.DataFrame | None
) -> tuple[ReleaseState | None, ReleaseStep, pl.DataFrame | None]:
    """The state now, what the release does next, and the metrics it decided on."""
    champion = registry.champion(model_name)
    challenger = registry.by_alias(model_name, "challenger")
    state = read_release_states(Path(control.state_path)).get(model_name)
    if challenger is None or champion is None:
        if state is not None and state.stage != OFF:
            return state, ReleaseStep(ROLLBACK, "the challenger alias is gone", 0.0, OFF), None
        return state, ReleaseStep(HOLD, "no challenger to release", 0.0, OFF), None
    if state is None or state.challenger_version != challenger.version:
        return state, ReleaseStep("start", f"v{challenger.version} is the new challenger"), None
    if state.stage == OFF:
        return state, ReleaseStep(HOLD, f"the release of v{state.challenger_version} is over"), None
    metrics = release_metrics(control, state, labels)
    return state, decide_release_step(state, metrics, control.policy()), metrics


def _run_key(model_name: str, state: ReleaseState | None, step: ReleaseStep, challenger: str):
    where = f"{state.stage}:{state.step}" if state else "new"
    return f"release:{model_name}:v{challenger}:{where}:{step.action}"


class ReleaseStepConfig(Config):
    model_name: str = REQUEST_CLASSIFIER


@op(
    description=(
        "One step of a staged release, decided on the traffic since the step began: start in "
        "shadow, advance the canary share, promote through the gate, or roll back on a breach."
    ),
    pool=REGISTRY_POOL,
)
def release_step(
    context: OpExecutionContext,
    config: ReleaseStepConfig,
    model_registry: ModelRegistry,
    release_control: ReleaseControl,
    warehouse: Warehouse,
) -> None:
    registry = model_registry.registry()
    registry.ping()
    name = config.model_name
    path = Path(release_control.state_path)
    state, step, metrics = next_step(release_control, registry, name, served_labels(warehouse))
    by = f"release_job, dagster run {context.run_id}"
    context.log.info(f"{name}: {step.action}: {step.reason}")
    if step.action == "start":
        champion = registry.champion(name)
        challenger = registry.by_alias(name, "challenger")
        state = start_release(
            name, challenger.version, champion.version, release_control.policy(), by
        )
        write_release_state(path, state)
    elif step.action == ADVANCE:
        state = state.moved_to(
            step.reason, by, stage=CANARY, step=state.step + 1, canary_share=step.canary_share
        )
        write_release_state(path, state)
    elif step.action == ROLLBACK:
        state = _end_release(path, registry, state, step.reason, by, withdraw=True)
    elif step.action == PROMOTE:
        decision = gate_released_challenger(
            registry,
            name,
            state.challenger_version,
            "test_f1_macro",
            release_control.promotion_margin,
            _rescorer(registry, name, warehouse),
            step.reason,
            via=by,
        )
        reason = decision.reason if decision.promote else f"the gate refused: {decision.reason}"
        state = _end_release(path, registry, state, reason, by, withdraw=not decision.promote)
        context.log.info(f"{name} v{state.challenger_version}: {reason}")
    context.log_event(release_observation(registry, name, state, step, metrics))


def _end_release(
    path: Path, registry: Registry, state: ReleaseState, reason: str, by: str, withdraw: bool
) -> ReleaseState:
    """Route nothing more to the challenger (the workers read the state at once), then take
    its alias away when it lost."""
    state = state.moved_to(reason, by, stage=OFF, canary_share=0.0, shadow_share=0.0)
    write_release_state(path, state)
    if withdraw:
        registry.withdraw_challenger(state.model_name, state.challenger_version, reason, via=by)
    return state


def _rescorer(registry: Registry, model_name: str, warehouse: Warehouse):
    _test_version, test = frozen_test_set(warehouse)

    def rescore(version: ModelVersion) -> float:
        return registered_f1_macro(registry, model_name, version.version, test)

    return rescore


def release_observation(
    registry: Registry,
    model_name: str,
    state: ReleaseState | None,
    step: ReleaseStep,
    metrics: pl.DataFrame | None,
) -> AssetObservation:
    metadata: dict[str, object] = {"release_action": step.action, "release_reason": step.reason}
    if state is not None:
        metadata |= {
            "challenger_version": state.challenger_version,
            "release_stage": state.stage,
            "canary_share": state.canary_share,
            "shadow_share": state.shadow_share,
            "release_steps": markdown_table(
                pl.DataFrame(
                    [
                        *state.history,
                        {
                            "stage": state.stage,
                            "step": state.step,
                            "canary_share": state.canary_share,
                            "shadow_share": state.shadow_share,
                            "step_started_at": state.step_started_at,
                            "reason": state.reason,
                        },
                    ]
                )
            ),
        }
    if metrics is not None:
        metadata["variant_metrics"] = markdown_table(metrics)
        metadata["variant_chart"] = picture(
            variant_figure(metrics), f"{model_name}: champion vs challenger since the step began"
        )
    return alias_observation(registry, model_name, metadata)


@job(description="Take the next step of each staged release (the release sensor runs it).")
def release_job() -> None:
    release_step()


@sensor(
    job=release_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Walks each challenger through shadow → canary steps → the promotion gate, advancing "
        "only when the step saw enough traffic and the challenger is no worse than the champion "
        "on errors, p99 and live accuracy; rolls back on a breach. One run per step (run key)."
    ),
)
def release_sensor(
    context: SensorEvaluationContext,
    model_registry: ModelRegistry,
    release_control: ReleaseControl,
    warehouse: Warehouse,
):
    registry = model_registry.registry()
    labels = served_labels(warehouse)
    requests, waiting = [], []
    for name in RELEASED_MODELS:
        state, step, _ = next_step(release_control, registry, name, labels)
        if step.action == HOLD:
            waiting.append(f"{name}: {step.reason}")
            continue
        challenger = registry.by_alias(name, "challenger")
        version = challenger.version if challenger else (state.challenger_version if state else "")
        requests.append(
            RunRequest(
                run_key=_run_key(name, state, step, version),
                run_config={"ops": {"release_step": {"config": {"model_name": name}}}},
                tags={"mlops/release": f"{name}:v{version}:{step.action}"},
            )
        )
    return requests or SkipReason("; ".join(waiting))


class PinConfig(Config):
    model_name: str = REQUEST_CLASSIFIER
    version: str
    """The MLflow version to make champion."""
    actor: str
    """Who decided (a person: name or e-mail), recorded in the audit record."""
    reason: str


@op(
    description="Set `champion` to a named version by hand, with who and why, audited.",
    pool=REGISTRY_POOL,
)
def pin_champion(
    context: OpExecutionContext, config: PinConfig, model_registry: ModelRegistry
) -> None:
    registry = model_registry.registry()
    registry.ping()
    before, after = registry.pin_champion(
        config.model_name,
        config.version,
        config.reason,
        config.actor,
        via=(
            f"pin_champion_job, dagster run {context.run_id} launched by "
            f"{launched_by(context.run.tags)} ({default_actor()})"
        ),
    )
    context.log.info(f"{config.model_name}: champion v{before} → v{after} by {config.actor}")
    context.log_event(
        alias_observation(
            registry,
            config.model_name,
            {
                "champion_version": after,
                "pinned_from": before or "none",
                "pinned_by": config.actor,
                "reason": config.reason,
            },
        )
    )


@job(description="Pin a model's `champion` to a named version (actor and reason recorded).")
def pin_champion_job() -> None:
    pin_champion()
