"""DuckDB allows one writing process per file: a writer waits for the lock, it does not fail."""

import subprocess
import sys
import time

import polars as pl

from assets.resources import Warehouse
from ml.settings import Settings

HOLD_LOCK = """
import duckdb, sys, time
con = duckdb.connect(sys.argv[1])
con.execute("create table if not exists held (x int)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def test_a_writer_waits_for_another_process_holding_the_warehouse(settings: Settings) -> None:
    warehouse = Warehouse(path=str(settings.warehouse_path))
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, warehouse.path, "2.0"], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    warehouse.replace_rows("numbers", pl.DataFrame({"n": [1, 2, 3]}), "true", [])
    waited = time.monotonic() - started
    holder.wait(timeout=30)
    assert waited > 0.5, "the write should have waited for the other process's lock"
    assert warehouse.query("select sum(n) from numbers").item() == 6
    warehouse.replace_rows("numbers", pl.DataFrame({"n": [4]}), "n < 3", [])
    assert sorted(warehouse.query("select n from numbers")["n"].to_list()) == [3, 4]
