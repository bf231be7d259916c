"""The warehouse: the dbt project on DuckDB (staging and marts of every domain), rebuilt when
new validated data lands."""
