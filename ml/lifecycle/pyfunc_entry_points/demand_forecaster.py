"""MLflow models-from-code entry point of every demand_forecaster version."""

from mlflow.models import set_model

from ml.lifecycle.pyfunc import DemandForecasterModel

set_model(DemandForecasterModel())
