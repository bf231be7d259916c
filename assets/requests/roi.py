"""What the request classifier costs and earns (the shared pricing of assets/model_roi.py)."""

from assets.model_roi import Benefit, Pricing, roi_asset, scored
from assets.requests import GROUP, OWNERS
from assets.requests.annotation import REQUEST_ANNOTATION
from assets.requests.models import request_classifier_promotion
from assets.resources import Warehouse
from ml.lifecycle.economics import BusinessCase, request_benefit_per_month
from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
from ml.lifecycle.registry import ModelVersion, Registry


def _benefit(
    case: BusinessCase, champion: ModelVersion, registry: Registry, warehouse: Warehouse
) -> Benefit:
    accuracy = scored(champion, "test_accuracy")
    return Benefit(
        request_benefit_per_month(case.requests, accuracy),
        f"test accuracy {accuracy:.3f} on {case.requests.requests_per_month:,.0f} requests a "
        f"month, {case.requests.automated_share:.0%} routed by the model alone",
    )


request_classifier_roi = roi_asset(
    "request_classifier_roi",
    Pricing(
        model_name=REQUEST_CLASSIFIER,
        metric="test_f1_macro",
        annotations_table=REQUEST_ANNOTATION.annotations_table,
        benefit=_benefit,
        predictions_per_month=lambda case, warehouse: case.requests.requests_per_month,
    ),
    request_classifier_promotion,
    GROUP,
    OWNERS,
)
