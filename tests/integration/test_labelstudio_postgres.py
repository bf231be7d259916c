"""Label Studio in the production profile keeps projects, tasks and accounts in PostgreSQL."""

from pathlib import Path

import psycopg2
import pytest

from ml.annotation.label_studio_client import LabelStudioClient
from ml.requests.taxonomy import SYNTHETIC_TAXONOMY_PATH, load_taxonomy
from ml.settings import child_environment
from orchestration.labelstudio import LabelStudioConfig, database_environment, start_server
from tests.conftest import free_port, scratch_postgres_database


def test_label_studio_keeps_its_projects_and_tasks_in_postgresql(tmp_path: Path) -> None:
    with scratch_postgres_database("mlops_labelstudio") as database:
        config = LabelStudioConfig.scratch(
            tmp_path / "labelstudio", free_port(), "admin@tests.local", database_url=database
        )
        server = start_server(config)
        try:
            client = LabelStudioClient(config.url, config.token)
            project = client.ensure_project("requests-pg", load_taxonomy(SYNTHETIC_TAXONOMY_PATH))
            tasks = [{"data": {"ext_id": f"r{i}", "text": f"request {i}"}} for i in range(3)]
            assert client.import_missing(project, tasks) == 3
        finally:
            server.stop()
        with psycopg2.connect(database) as connection, connection.cursor() as cursor:
            cursor.execute("select title from project")
            assert [row[0] for row in cursor.fetchall()] == ["requests-pg"]
            cursor.execute("select count(*) from task where project_id = %s", [project])
            assert cursor.fetchone()[0] == 3
            cursor.execute("select email from htx_user")
            assert "admin@tests.local" in {row[0] for row in cursor.fetchall()}
    assert not list(config.data_dir.glob("*.sqlite3"))  # nothing went to a SQLite file


def test_the_database_url_becomes_label_studios_own_variables_and_reaches_no_other_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "postgresql://annotations:s3cr%40t@db.internal:6543/labelstudio"
    assert database_environment(url) == {
        "DJANGO_DB": "postgresql",
        "POSTGRE_NAME": "labelstudio",
        "POSTGRE_USER": "annotations",
        "POSTGRE_PASSWORD": "s3cr@t",
        "POSTGRE_HOST": "db.internal",
        "POSTGRE_PORT": "6543",
    }
    assert database_environment("") == {}
    with pytest.raises(ValueError, match="expected postgresql://"):
        database_environment("mysql://db/labelstudio")
    monkeypatch.setenv("MLOPS_LABEL_STUDIO_DATABASE_URL", url)
    assert "MLOPS_LABEL_STUDIO_DATABASE_URL" not in child_environment()
