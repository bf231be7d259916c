"""The Celery app the step workers run (`celery -A orchestration.celery_app worker`):
dagster-celery's step task on the broker and queues this deployment's settings name, so the
workers and the executor that feeds them cannot disagree. The broker URL is read from the
environment here and never written to a file or a command line."""

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from ml.settings import Settings
from orchestration.celery_workers import celery_executor_config

app = make_app(CeleryExecutor.for_cli(**celery_executor_config(Settings.from_env())).app_args())
execute_plan = create_task(app)
