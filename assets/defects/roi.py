"""What the defect classifier costs and earns (the shared pricing of assets/model_roi.py)."""

from assets.defects import GROUP, OWNERS
from assets.defects.annotation import DEFECT_ANNOTATION
from assets.defects.models import defect_classifier_promotion
from assets.model_roi import Benefit, Pricing, roi_asset, scored
from assets.resources import Warehouse
from ml.lifecycle.economics import BusinessCase, defect_benefit_per_month
from ml.lifecycle.registered_models import DEFECT_CLASSIFIER
from ml.lifecycle.registry import ModelVersion, Registry


def _benefit(
    case: BusinessCase, champion: ModelVersion, registry: Registry, warehouse: Warehouse
) -> Benefit:
    recall = scored(champion, "test_defect_recall")
    false_alarms = champion.metric("test_false_positive_rate")
    said = (
        f"false-alarm rate {false_alarms:.3f}"
        if false_alarms is not None
        else "false alarms not measured for this version (registered before they were): 0"
    )
    return Benefit(
        defect_benefit_per_month(case.defects, recall, false_alarms or 0.0),
        f"test recall {recall:.3f}, {said}, on {case.defects.units_per_day:,.0f} units a day",
    )


defect_classifier_roi = roi_asset(
    "defect_classifier_roi",
    Pricing(
        model_name=DEFECT_CLASSIFIER,
        metric="test_defect_f1",
        annotations_table=DEFECT_ANNOTATION.annotations_table,
        benefit=_benefit,
        predictions_per_month=lambda case, warehouse: (
            case.defects.units_per_day * case.defects.days_per_month
        ),
    ),
    defect_classifier_promotion,
    GROUP,
    OWNERS,
)
