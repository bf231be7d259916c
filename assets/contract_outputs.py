"""What every validating step emits, in both domains: the validated and quarantine assets, their
materializations, the blocking checks on the validated asset, and its publication.

The checks run inside the validating step, before anything is written (they judge the drop
that step just split, against the rows already published), and a failing one stops everything
downstream of the asset in the same run. Publication follows the checks: a partition's valid
rows are written with `published` = every blocking check passed, in the same transaction as its
quarantine, and dbt's staging models read only published rows. A blocked partition's rows stay
in the validated table, queryable, with the failing checks on its materialization; they reach
nothing downstream until a re-materialization passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandera.errors
import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    MaterializeResult,
)

from assets.metadata import column_schema, counts_table, preview
from assets.resources import Warehouse
from ml.data.contracts import Contract
from ml.data.validation import ValidationOutcome

CHECKS = {
    "rows_reconcile": "Rows in = valid + quarantined, for this drop: nothing is lost.",
    "schema_conforms": "Every valid row passes the pandera contract again.",
    "null_rates_within_limits": "No column of the drop is emptier than the contract tolerates.",
    "no_duplicate_keys": "No record key appears twice in the whole validated table.",
    "fresh": "The newest record is within the source's declared cadence (live feeds only).",
}


def validation_specs(
    domain: str, raw: AssetsDefinition, group: str, owners: list[str], validated_description: str
) -> list[AssetSpec]:
    """`validated_<domain>` and `quarantine_<domain>`, both read from the raw asset."""

    def spec(name: str, description: str) -> AssetSpec:
        return AssetSpec(
            name,
            deps=[raw],
            group_name=group,
            owners=owners,
            code_version="1",
            kinds={"python", "duckdb"},
            description=description,
        )

    return [
        spec(f"validated_{domain}", validated_description),
        spec(
            f"quarantine_{domain}",
            f"{domain.capitalize()} rows that failed the contract, with every failing check "
            "named and the raw record kept as JSON; duplicates point at the row they repeat.",
        ),
    ]


def validation_results(
    domain: str, outcome: ValidationOutcome, quarantine, metadata: dict[str, object]
) -> list[MaterializeResult]:
    """The two materializations, with the counts, schema and preview a person looks at."""
    return [
        MaterializeResult(
            asset_key=f"validated_{domain}",
            metadata={
                "dagster/row_count": outcome.valid.height,
                "rows_in": outcome.rows_in,
                "quarantined": outcome.quarantine.height,
                **metadata,
                "dagster/column_schema": column_schema(outcome.valid),
                "preview": preview(outcome.valid),
            },
        ),
        MaterializeResult(
            asset_key=f"quarantine_{domain}",
            metadata={
                "dagster/row_count": quarantine.height,
                "reasons": counts_table(outcome.reason_counts(), "failing check"),
                "preview": preview(quarantine.drop("raw_record")),
            },
        ),
    ]


def contract_check_specs(asset: str) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(name, asset=asset, description=description, blocking=True)
        for name, description in CHECKS.items()
    ]


def contract_check_results(
    asset: str,
    contract: Contract,
    outcome: ValidationOutcome,
    *,
    duplicate_keys_in_table: int,
    newest: datetime | None,
    max_age_days: float | None,
    now: datetime | None = None,
) -> list[AssetCheckResult]:
    key = AssetKey(asset)

    def result(name: str, passed: bool, **metadata: object) -> AssetCheckResult:
        return AssetCheckResult(
            asset_key=key,
            check_name=name,
            passed=bool(passed),
            severity=AssetCheckSeverity.ERROR,
            metadata=metadata,
        )

    try:
        contract.schema.validate(outcome.valid.select(contract.columns), lazy=True)
        schema_problem = ""
    except pandera.errors.SchemaErrors as errors:
        schema_problem = str(errors.failure_cases.head(5))

    over_limit = {
        column: round(rate, 4)
        for column, rate in outcome.null_rates.items()
        if rate > contract.max_null_rate.get(column, 1.0)
    }
    return [
        result(
            "rows_reconcile",
            outcome.reconciles,
            rows_in=outcome.rows_in,
            valid=outcome.valid.height,
            quarantined=outcome.quarantine.height,
        ),
        result("schema_conforms", not schema_problem, problem=schema_problem or "none"),
        result(
            "null_rates_within_limits",
            not over_limit,
            over_limit=str(over_limit or "none"),
            null_rates=str({c: round(r, 4) for c, r in outcome.null_rates.items()}),
        ),
        result(
            "no_duplicate_keys",
            duplicate_keys_in_table == 0,
            duplicate_keys=duplicate_keys_in_table,
            key=", ".join(contract.key),
        ),
        _freshness(result, newest, max_age_days, now or datetime.now(UTC)),
    ]


def _freshness(result, newest: datetime | None, max_age_days: float | None, now: datetime):
    if max_age_days is None:
        return result("fresh", True, status="not applicable: the source declares no cadence")
    if newest is None:
        return result("fresh", False, status="no valid record to date the drop by")
    if newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)
    age = now - newest
    return result(
        "fresh",
        age <= timedelta(days=max_age_days),
        newest=newest.isoformat(),
        age_days=round(age.total_seconds() / 86400, 2),
        max_age_days=max_age_days,
    )


PUBLISHED = "published"
"""Per validated row: its partition passed every blocking check (dbt's `stg_*` read only these)."""


@dataclass(frozen=True)
class Publication:
    """Whether a partition's valid rows are published, and if not, which checks blocked them."""

    blocked_by: tuple[str, ...]

    @property
    def published(self) -> bool:
        return not self.blocked_by

    def stamp(self, valid: pl.DataFrame) -> pl.DataFrame:
        """The rows as written: each carries its partition's publication."""
        return valid.with_columns(pl.lit(self.published).alias(PUBLISHED))

    def metadata(self) -> dict[str, object]:
        return {
            "published": self.published,
            "blocked_by": ", ".join(self.blocked_by) or "none",
            "visible_downstream": (
                "yes: dbt's staging models read these rows"
                if self.published
                else "no: the rows stay in the table, unpublished, until a re-materialization "
                "passes every blocking check"
            ),
        }


def publication_of(checks: list[AssetCheckResult]) -> Publication:
    """Every contract check is blocking: one failure holds the whole partition back."""
    return Publication(tuple(check.check_name for check in checks if not check.passed))


def prepare_publication(warehouse: Warehouse, table: str) -> None:
    """A validated table written before publication existed gets the column; its old rows are
    unpublished until their partition is validated again."""
    warehouse.add_column_if_missing(table, PUBLISHED, "boolean default false")
