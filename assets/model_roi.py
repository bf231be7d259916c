"""Pricing one registered model, the same for every domain: what each version cost (training,
annotation), what serving the champion costs, what it earns (the domain's benefit from its test
scores and the business case), ROI, payback, rent-or-own, and the cost-effect curve, shown in
the UI and written into the champion's model card. The domains' `*_roi` assets call it."""

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import matplotlib.pyplot as plt
import polars as pl
from dagster import AssetExecutionContext, AssetsDefinition, MaterializeResult, MetadataValue, asset

from assets.metadata import picture
from assets.resources import REGISTRY_POOL, BusinessCaseFile, ModelRegistry, Warehouse
from ml.lifecycle.economics import (
    BusinessCase,
    Return,
    TrainedVersion,
    cost_effect_curve,
    money,
    predictions_per_second,
    priced_training_seconds,
    rent_or_own,
    serving_cost,
    version_costs,
)
from ml.lifecycle.registry import ModelVersion, Registry
from ml.plots import cost_effect_figure


@dataclass(frozen=True)
class Benefit:
    per_month: float
    because: str
    """The measurements and case figures it came from, in words."""


@dataclass(frozen=True)
class Pricing:
    """What differs between domains: the model, its test metric, where its annotators' time is
    kept, how its benefit and its serving volume are worked out."""

    model_name: str
    metric: str
    """The version tag plotted on the cost-effect curve (e.g. `test_accuracy`)."""
    annotations_table: str | None
    benefit: Callable[[BusinessCase, ModelVersion, Registry, Warehouse], Benefit]
    predictions_per_month: Callable[[BusinessCase, Warehouse], float]


def scored(champion: ModelVersion, metric: str) -> float:
    """A test score the champion must carry to be priced."""
    value = champion.metric(metric)
    if value is None:
        raise ValueError(f"{champion.name} v{champion.version} carries no {metric}: not priced")
    return value


def annotator_time(warehouse: Warehouse, table: str | None) -> list[tuple]:
    """(created at, seconds spent) of every answer Label Studio timed; answers collected before
    lead times were kept have none and are not priced (said in the metadata)."""
    if table is None or not warehouse.table_exists(table):
        return []
    if "lead_seconds" not in warehouse.query(f"select * from {table} limit 0").columns:
        return []
    timed = warehouse.query(
        f"select created_at, lead_seconds from {table} "
        "where not cancelled and lead_seconds is not null"
    )
    return list(timed.iter_rows())


def price_model(
    context: AssetExecutionContext,
    pricing: Pricing,
    case: BusinessCase,
    registry: Registry,
    warehouse: Warehouse,
) -> MaterializeResult:
    registry.ping()
    champion = registry.champion(pricing.model_name)
    if champion is None:
        return MaterializeResult(metadata={"priced": "no: no champion yet"})
    records = {
        v.version: (v, registry.run_record(v)) for v in registry.versions(pricing.model_name)
    }
    seconds = {v: priced_training_seconds(record.metrics) for v, (_, record) in records.items()}
    trained = [
        TrainedVersion(
            version.version,
            version.tags.get("kind", ""),
            record.started_at,
            seconds[version.version] or 0.0,
            record.params.get("device", "cpu"),
            version.metric(pricing.metric),
        )
        for version, record in records.values()
    ]
    untimed = [f"v{version}" for version, recorded in seconds.items() if recorded is None]
    costs, pending_hours = version_costs(
        trained, annotator_time(warehouse, pricing.annotations_table), case.prices
    )
    benefit = pricing.benefit(case, champion, registry, warehouse)
    serving = serving_cost(
        pricing.predictions_per_month(case, warehouse),
        predictions_per_second(records[champion.version][1].metrics),
        case.prices,
    )
    spent = sum(cost.total for cost in costs)
    returns = Return(benefit.per_month, spent, serving.per_month, case.prices.horizon_months)
    last_month = max(t.started_at for t in trained) - timedelta(days=30)
    recent_hours = sum(t.training_seconds for t in trained if t.started_at >= last_month) / 3600
    gpu = rent_or_own(recent_hours, case.prices)
    curve = cost_effect_curve(costs)
    roi = f"{returns.roi:,.1f}×" if returns.roi is not None else "undefined (nothing spent)"
    summary = "\n".join(
        [
            f"**{pricing.model_name} v{champion.version}** (champion): earns "
            f"{money(benefit.per_month)} a month ({benefit.because}).",
            "",
            "| | |",
            "|---|---|",
            f"| benefit per month | {money(benefit.per_month)} |",
            f"| spent so far (training + annotation, every version) | {money(spent)} |",
            f"| serving per month | {money(serving.per_month)} ({serving.instances} instance(s) "
            f"for {serving.predictions_per_month:,.0f} answers a month) |",
            "| compute per 1,000 answers | "
            + (
                f"{serving.per_1000:.5f} at {serving.predictions_per_second:,.0f} answers/s |"
                if serving.per_1000 is not None
                else "not measured (no batch latency recorded): one instance |"
            ),
            f"| ROI over {case.prices.horizon_months:.0f} months | {roi} |",
            f"| payback | {returns.payback_text()} |",
            f"| annotator hours not yet in a version | {pending_hours:,.2f} |",
            "",
            *(
                [
                    f"Training time not recorded for {', '.join(untimed)} (registered before it "
                    "was): counted as 0.",
                    "",
                ]
                if untimed
                else []
            ),
            f"GPU: {gpu.verdict()}.",
            "",
            f"Prices and business figures: `{case.source}`.",
        ]
    )
    versions = MetadataValue.md(
        "\n".join(
            [
                f"| version | kind | device | training h | training | annotator h | annotation "
                f"| {pricing.metric} |",
                "|---|---|---|---|---|---|---|---|",
            ]
            + [
                f"| v{c.trained.version} | {c.trained.kind} | {c.trained.device} | "
                f"{c.trained.training_seconds / 3600:.4f} | {money(c.training_cost)} | "
                f"{c.annotation_hours:.2f} | {money(c.annotation_cost)} | "
                + ("–" if c.trained.metric is None else f"{c.trained.metric:.4f}")
                + " |"
                for c in costs
            ]
        )
    )
    _write_into_model_card(registry, champion, summary, versions.value, curve, pricing.metric)
    context.log.info(
        f"{pricing.model_name} v{champion.version}: {money(benefit.per_month)} a month, ROI {roi}"
    )
    return MaterializeResult(
        metadata={
            "champion": f"v{champion.version}",
            "benefit_per_month": benefit.per_month,
            "spent": spent,
            "serving_per_month": serving.per_month,
            "serving_per_1000": serving.per_1000 if serving.per_1000 is not None else "unmeasured",
            "roi": returns.roi if returns.roi is not None else "undefined",
            "payback": returns.payback_text(),
            "summary": MetadataValue.md(summary),
            "versions": versions,
            "rent_or_own_gpu": gpu.verdict(),
            "cost_effect_curve": picture(
                cost_effect_figure(curve, pricing.metric, champion.version),
                f"{pricing.model_name}: {pricing.metric} against cumulative cost",
            ),
        }
    )


def _write_into_model_card(
    registry: Registry,
    champion: ModelVersion,
    summary: str,
    versions: str,
    curve: list[tuple[str, float, float]],
    metric: str,
) -> None:
    """The champion's model card gets (or replaces) its `## Cost and return` section, with the
    curve and the full table beside it in `report/`."""
    figure = cost_effect_figure(curve, metric, champion.version)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    registry.add_to_report(
        champion,
        {"cost_effect.png": buffer.getvalue(), "economics.md": f"{summary}\n\n{versions}\n"},
        "## Cost and return\n\n"
        f"{summary}\n\nPer version: `report/economics.md`; curve: `report/cost_effect.png`.",
    )


def recent_units_per_month(warehouse: Warehouse) -> float:
    """Demand volume now: the mean total units of the last four periods, scaled to a month by
    the periods' own spacing (weeks for weekly data)."""
    totals = warehouse.query(
        "select period_start, sum(units) as units from mart_demand "
        "group by period_start order by period_start desc limit 4"
    )
    if totals.height < 2:
        raise ValueError("mart_demand holds fewer than two periods: no volume to price demand by")
    days = (totals["period_start"][0] - totals["period_start"][1]).days or 7
    return float(totals["units"].cast(pl.Float64).mean()) * 30.4 / days


def roi_asset(name: str, pricing: Pricing, gate: AssetsDefinition, group: str, owners: list[str]):
    """A domain's pricing asset: runs after its promotion gate, in its group."""

    @asset(
        name=name,
        deps=[gate],
        group_name=group,
        owners=owners,
        code_version="1",
        kinds={"python", "mlflow"},
        pool=REGISTRY_POOL,
        description=(
            f"What {pricing.model_name} costs and earns: every version's training and annotation "
            "cost, the champion's serving cost from its measured throughput, its benefit from its "
            f"test scores and the business case (MLOPS_BUSINESS_CASE), ROI, payback, rent-or-own "
            "GPU and the cost-effect curve, also written into the champion's model card."
        ),
    )
    def _roi(
        context: AssetExecutionContext,
        business_case: BusinessCaseFile,
        model_registry: ModelRegistry,
        warehouse: Warehouse,
    ) -> MaterializeResult:
        return price_model(
            context, pricing, business_case.load(), model_registry.registry(), warehouse
        )

    return _roi
