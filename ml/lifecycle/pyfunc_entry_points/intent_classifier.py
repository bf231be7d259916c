"""MLflow models-from-code entry point of every request_classifier version."""

from mlflow.models import set_model

from ml.lifecycle.pyfunc import IntentClassifierModel

set_model(IntentClassifierModel())
