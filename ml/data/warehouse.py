"""The warehouse's two backends behind one interface: DuckDB (the embedded default, one file
under the data home) and PostgreSQL (the production profile, shared by every worker).

Callers write one SQL: `?` placeholders and SQL both engines run (`count(distinct (a, b))`,
`min` rather than DuckDB's `any_value`); what differs (how rows are loaded, how a table is
created from a frame, how writers wait for each other) is each backend's own.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import duckdb
import polars as pl

from ml.data.lineage_snapshot import sql_path
from ml.settings import VARIABLES, PostgresURL

LOCK_WAIT_SECONDS = 60.0
WAREHOUSE_URL_VARIABLE = VARIABLES["warehouse_url"]

Change = tuple[str, pl.DataFrame, str, list]
"""(table, frame, where, params): delete the rows `where` selects, insert `frame`."""


class WarehouseSession(Protocol):
    """Statements inside one transaction (see `transaction()` of each backend)."""

    def rows(self, sql: str, params: Sequence | None = None) -> list[tuple]: ...

    def affected(self, sql: str, params: Sequence | None = None) -> int:
        """Run a delete or an update; how many rows it changed."""
        ...


class DuckDBWarehouse:
    """One DuckDB file. DuckDB allows one writing process per file, so connections are opened
    only for the statement at hand, and writers wait briefly for a held lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                connection = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as error:
                if "lock" not in str(error).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        try:
            yield connection
        finally:
            connection.close()

    def query(self, sql: str, params: Sequence | None = None) -> pl.DataFrame:
        with self.connect(read_only=True) as con:
            return pl.from_arrow(con.sql(sql, params=list(params or []) or None).to_arrow_table())

    def table_exists(self, table: str) -> bool:
        if not self.path.exists():
            return False
        with self.connect(read_only=True) as con:
            return _duckdb_has_table(con, table)

    def query_if_exists(
        self, table: str, sql: str, params: Sequence | None, empty: Mapping[str, pl.DataType]
    ) -> pl.DataFrame:
        if not self.path.exists():
            return pl.DataFrame(schema=empty)
        with self.connect(read_only=True) as con:
            if not _duckdb_has_table(con, table):
                return pl.DataFrame(schema=empty)
            return pl.from_arrow(con.sql(sql, params=list(params or []) or None).to_arrow_table())

    def execute(self, sql: str, params: Sequence | None = None) -> None:
        with self.connect() as con:
            con.execute(sql, list(params or []))

    def replace_rows_together(self, changes: list[Change]) -> None:
        with self.connect() as con:
            for index, (_, frame, _, _) in enumerate(changes):
                con.register(f"incoming_{index}", frame.to_arrow())
            con.execute("begin transaction")
            for index, (table, _, where, params) in enumerate(changes):
                incoming = f"incoming_{index}"
                con.execute(
                    f"create table if not exists {table} as select * from {incoming} limit 0"
                )
                con.execute(f"delete from {table} where {where}", params)
                con.execute(f"insert into {table} by name select * from {incoming}")
            con.execute("commit")

    def replace_table(self, table: str, frame: pl.DataFrame) -> None:
        with self.connect() as con:
            con.register("incoming", frame.to_arrow())
            con.execute(f"create or replace table {table} as select * from incoming")

    def add_column_if_missing(self, table: str, column: str, definition: str) -> None:
        if not self.path.exists():
            return
        self.execute(add_column_sql(table, column, definition))

    def dbt_variables(self) -> dict[str, str]:
        return {"MLOPS_DBT_TARGET": "local", "MLOPS_WAREHOUSE_PATH": str(self.path)}

    def exists(self) -> bool:
        return self.path.exists()

    @contextmanager
    def transaction(self) -> Iterator[WarehouseSession]:
        with self.connect() as con:
            con.execute("begin transaction")
            try:
                yield _DuckDBSession(con)
            except BaseException:
                con.execute("rollback")
                raise
            con.execute("commit")
            con.execute("checkpoint")

    def compact(self) -> None:
        """Rewrite the file from its live rows: DuckDB leaves deleted rows' bytes in free
        blocks (a checkpoint or VACUUM does not overwrite them), so erased text would still be
        in the file. Copied into a new file, which replaces the old one."""
        fresh = self.path.with_name(f".{self.path.name}.compacting")
        fresh.unlink(missing_ok=True)
        with self.connect() as con:
            ((database,),) = con.execute("select current_database()").fetchall()
            con.execute(f"attach {sql_path(fresh)} as compacted")
            con.execute(f'copy from database "{database}" to compacted')
            con.execute("detach compacted")
        fresh.replace(self.path)


class _DuckDBSession:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def rows(self, sql: str, params: Sequence | None = None) -> list[tuple]:
        return self.con.execute(sql, list(params or [])).fetchall()

    def affected(self, sql: str, params: Sequence | None = None) -> int:
        ((count,),) = self.con.execute(sql, list(params or [])).fetchall()
        return int(count)


def add_column_sql(table: str, column: str, definition: str) -> str:
    """Both engines take `alter table if exists … add column if not exists`."""
    return f"alter table if exists {table} add column if not exists {column} {definition}"


def _duckdb_has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    ((found,),) = con.execute(
        "select count(*) from information_schema.tables where table_name = ?", [table]
    ).fetchall()
    return bool(found)


_POSTGRES_COLUMN_TYPES: dict[type[pl.DataType], str] = {
    pl.String: "text",
    pl.Categorical: "text",
    pl.Null: "text",
    pl.Boolean: "boolean",
    pl.Int8: "smallint",
    pl.Int16: "smallint",
    pl.UInt8: "smallint",
    pl.Int32: "integer",
    pl.UInt16: "integer",
    pl.Int64: "bigint",
    pl.UInt32: "bigint",
    pl.Float32: "real",
    pl.Float64: "double precision",
    pl.Date: "date",
    pl.Time: "time",
    pl.Duration: "interval",
}
_POLARS_TYPES: dict[int, pl.DataType] = {
    16: pl.Boolean(),
    20: pl.Int64(),
    21: pl.Int16(),
    23: pl.Int32(),
    25: pl.String(),
    700: pl.Float32(),
    701: pl.Float64(),
    1042: pl.String(),
    1043: pl.String(),
    1082: pl.Date(),
    1083: pl.Time(),
    1114: pl.Datetime("us"),
    1184: pl.Datetime("us", "UTC"),
    1186: pl.Duration("us"),
    1700: pl.Float64(),
    2950: pl.String(),
}
"""PostgreSQL type OIDs (pg_type) → the polars type DuckDB's reader gives the same column."""


def postgres_column_type(name: str, dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return "timestamptz" if dtype.time_zone else "timestamp"
    for kind, sql_type in _POSTGRES_COLUMN_TYPES.items():
        if isinstance(dtype, kind):
            return sql_type
    raise TypeError(
        f"column {name!r} is {dtype}: the PostgreSQL warehouse stores text, numbers, booleans, "
        "dates and times (encode nested values as JSON text)"
    )


def postgres_sql(sql: str, params: Sequence | None) -> str:
    """The one SQL with psycopg's placeholders: `?` → `%s` (and a literal `%` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s") if params else sql


def _run(cursor, sql: str, params: Sequence | None) -> None:
    cursor.execute(postgres_sql(sql, params), list(params or []) or None)


class PostgresWarehouse:
    """One PostgreSQL database (its default schema). Writers of a table wait for each other on
    an advisory lock per table, taken in name order: a table is created once, and a partition's
    delete-then-insert is never interleaved with another writer's of the same table."""

    def __init__(self, url: str) -> None:
        self.url = url

    @contextmanager
    def connect(self) -> Iterator:
        import psycopg2

        connection = psycopg2.connect(self.url, options="-c TimeZone=UTC")
        try:
            with connection:  # commits on success, rolls back on an error
                yield connection
        finally:
            connection.close()

    def query(self, sql: str, params: Sequence | None = None) -> pl.DataFrame:
        with self.connect() as con, con.cursor() as cursor:
            _run(cursor, sql, params)
            return _frame(cursor)

    def table_exists(self, table: str) -> bool:
        with self.connect() as con, con.cursor() as cursor:
            return _postgres_has_table(cursor, table)

    def query_if_exists(
        self, table: str, sql: str, params: Sequence | None, empty: Mapping[str, pl.DataType]
    ) -> pl.DataFrame:
        with self.connect() as con, con.cursor() as cursor:
            if not _postgres_has_table(cursor, table):
                return pl.DataFrame(schema=empty)
            _run(cursor, sql, params)
            return _frame(cursor)

    def execute(self, sql: str, params: Sequence | None = None) -> None:
        with self.connect() as con, con.cursor() as cursor:
            _run(cursor, sql, params)

    def replace_rows_together(self, changes: list[Change]) -> None:
        with self.connect() as con, con.cursor() as cursor:
            _lock_tables(cursor, [table for table, _, _, _ in changes])
            for table, frame, where, params in changes:
                cursor.execute(f"create table if not exists {table} ({_columns(frame)})")
                cursor.execute(f"delete from {table} where {postgres_sql(where, params)}", params)
                _copy_in(cursor, table, frame)

    def replace_table(self, table: str, frame: pl.DataFrame) -> None:
        with self.connect() as con, con.cursor() as cursor:
            _lock_tables(cursor, [table])
            cursor.execute(f"drop table if exists {table}")
            cursor.execute(f"create table {table} ({_columns(frame)})")
            _copy_in(cursor, table, frame)

    def add_column_if_missing(self, table: str, column: str, definition: str) -> None:
        self.execute(add_column_sql(table, column, definition))

    def dbt_variables(self) -> dict[str, str]:
        """dbt-postgres takes the connection in parts (profiles.yml's `postgres` target); the
        password as a DBT_ENV_SECRET_ variable, which dbt keeps out of its logs."""
        database = PostgresURL.parse(self.url, WAREHOUSE_URL_VARIABLE)
        return {
            "MLOPS_DBT_TARGET": "postgres",
            "MLOPS_WAREHOUSE_PG_HOST": database.host,
            "MLOPS_WAREHOUSE_PG_PORT": str(database.port),
            "MLOPS_WAREHOUSE_PG_USER": database.user,
            "MLOPS_WAREHOUSE_PG_DATABASE": database.database,
            "DBT_ENV_SECRET_WAREHOUSE_PG_PASSWORD": database.password,
        }

    def exists(self) -> bool:
        return True

    @contextmanager
    def transaction(self) -> Iterator[WarehouseSession]:
        with self.connect() as con, con.cursor() as cursor:
            yield _PostgresSession(cursor)

    def compact(self) -> None:
        """VACUUM FULL every table: PostgreSQL keeps deleted rows' bytes in their pages until
        a table is rewritten, so erased text would still be on disk."""
        import psycopg2

        connection = psycopg2.connect(self.url)
        try:
            connection.autocommit = True  # VACUUM runs outside a transaction
            with connection.cursor() as cursor:
                cursor.execute(
                    "select table_name from information_schema.tables "
                    "where table_schema = current_schema() and table_type = 'BASE TABLE'"
                )
                for (table,) in cursor.fetchall():
                    cursor.execute(f'vacuum full "{table}"')
        finally:
            connection.close()


class _PostgresSession:
    def __init__(self, cursor) -> None:
        self.cursor = cursor

    def rows(self, sql: str, params: Sequence | None = None) -> list[tuple]:
        _run(self.cursor, sql, params)
        return self.cursor.fetchall()

    def affected(self, sql: str, params: Sequence | None = None) -> int:
        _run(self.cursor, sql, params)
        return self.cursor.rowcount


def _postgres_has_table(cursor, table: str) -> bool:
    cursor.execute(
        "select count(*) from information_schema.tables "
        "where table_name = %s and table_schema = current_schema()",
        [table],
    )
    return bool(cursor.fetchone()[0])


def _lock_tables(cursor, tables: list[str]) -> None:
    for table in sorted(set(tables)):
        cursor.execute("select pg_advisory_xact_lock(hashtext(%s))", [f"warehouse.{table}"])


def _columns(frame: pl.DataFrame) -> str:
    return ", ".join(
        f'"{name}" {postgres_column_type(name, dtype)}' for name, dtype in frame.schema.items()
    )


def _copy_in(cursor, table: str, frame: pl.DataFrame) -> None:
    """Insert `frame` by column name (CSV through COPY: an unquoted empty field is NULL, a
    quoted one the empty string)."""
    if frame.is_empty():
        return
    columns = ", ".join(f'"{name}"' for name in frame.columns)
    text = frame.write_csv(include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.f%z")
    cursor.copy_expert(f"copy {table} ({columns}) from stdin with (format csv)", io.StringIO(text))


def _frame(cursor) -> pl.DataFrame:
    """The cursor's rows with the types DuckDB's reader would give (an empty result keeps its
    column types)."""
    schema = {
        column.name: _POLARS_TYPES.get(column.type_code, pl.Object())
        for column in cursor.description
    }
    unknown = [name for name, dtype in schema.items() if dtype == pl.Object()]
    if unknown:
        raise TypeError(f"warehouse query returned columns of types polars is not given: {unknown}")
    return pl.DataFrame(cursor.fetchall(), schema=schema, orient="row", strict=False)


def warehouse_location(path: str | Path, url: str = "") -> str:
    """Where the warehouse is, to print: the DuckDB file, or PostgreSQL without the password."""
    if not url:
        return str(path)
    return PostgresURL.parse(url, WAREHOUSE_URL_VARIABLE).without_password()


def open_warehouse(path: str | Path, url: str = "") -> DuckDBWarehouse | PostgresWarehouse:
    """PostgreSQL when `url` names one (postgresql://…), else the DuckDB file at `path`."""
    if url:
        PostgresURL.parse(url, WAREHOUSE_URL_VARIABLE)  # a clear error before any connection
        return PostgresWarehouse(url)
    return DuckDBWarehouse(path)
