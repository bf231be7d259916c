"""What the demand forecaster costs and earns (the shared pricing of assets/model_roi.py)."""

from assets.demand import GROUP, OWNERS
from assets.demand.forecasting import GATE_METRIC, demand_forecaster_promotion
from assets.model_roi import Benefit, Pricing, recent_units_per_month, roi_asset, scored
from assets.resources import Warehouse
from ml.lifecycle.economics import BusinessCase, demand_benefit_per_month
from ml.lifecycle.registered_models import DEMAND_FORECASTER
from ml.lifecycle.registry import ModelVersion, Registry


def _benefit(
    case: BusinessCase, champion: ModelVersion, registry: Registry, warehouse: Warehouse
) -> Benefit:
    """Against the best baseline fitted on the same backtest version (the naive yardstick)."""
    model_wape = scored(champion, GATE_METRIC)
    baselines = [
        v
        for v in registry.versions(DEMAND_FORECASTER)
        if v.tags.get("role") == "baseline"
        and v.tags.get("test_version") == champion.tags.get("test_version")
    ]
    if not baselines:
        raise ValueError(
            f"{DEMAND_FORECASTER} v{champion.version}: no baseline version on its backtest "
            "version to price it against"
        )
    baseline = baselines[-1]
    baseline_wape = scored(baseline, GATE_METRIC)
    units = recent_units_per_month(warehouse)
    return Benefit(
        demand_benefit_per_month(case.demand, model_wape, baseline_wape, units),
        f"backtest WAPE {model_wape:.4f} against {baseline.tags.get('kind')} "
        f"v{baseline.version}'s {baseline_wape:.4f} on {units:,.0f} units a month",
    )


def _forecasts_per_month(case: BusinessCase, warehouse: Warehouse) -> float:
    """One forecast per series per week."""
    ((series,),) = warehouse.query(
        "select count(*) from (select distinct store, item from mart_demand)"
    ).rows()
    return series * 30.4 / 7


demand_forecaster_roi = roi_asset(
    "demand_forecaster_roi",
    Pricing(
        model_name=DEMAND_FORECASTER,
        metric=GATE_METRIC,
        annotations_table=None,
        benefit=_benefit,
        predictions_per_month=_forecasts_per_month,
    ),
    demand_forecaster_promotion,
    GROUP,
    OWNERS,
)
