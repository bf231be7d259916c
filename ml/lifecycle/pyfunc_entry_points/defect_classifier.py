"""MLflow models-from-code entry point of every defect_classifier version."""

from mlflow.models import set_model

from ml.lifecycle.pyfunc import DefectClassifierModel

set_model(DefectClassifierModel())
