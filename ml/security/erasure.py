"""Erasure by request id: a customer's request removed from everything the platform keeps of
it, and the erasure recorded (which ids, by whom, why, how much was removed where; never the
text).

Where a request lives, and what erasure does there:
- the prediction and request logs (JSON lines, encrypted or not) and the serving windows'
  feature files: its records are removed, each file rewritten whole under its own name;
- the warehouse: its rows in every table with a `request_id` column (validated rows, quarantine,
  splits, test versions, annotation items and answers, label versions), and its normalized text
  in `split_assignments` unless another request still has that text;
- the lineage snapshots: the same rows removed from each snapshot's files, and the manifest's
  counts and hashes recomputed, so a restore brings none of it back;
- immutable sources (the drops folder and the raw copies): the request's row keeps its place
  (row ids of the other rows stay valid) but every cell of it is emptied; a drop's manifest
  follows its new content, so the drop sensor does not take the rewritten file for a new drop;
- Label Studio: its tasks in every project (their annotations go with them).

Models trained on the text are not changed: the next training run no longer sees it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
from cryptography.fernet import MultiFernet

from ml.data.atomic_files import (
    append_line_atomically,
    write_text_atomically,
)
from ml.data.drops import drop_id_for, load_drop
from ml.data.ingestion import (
    ROW_COLUMN,
    SUPPORTED_SUFFIXES,
    file_sha256,
    file_suffix,
    read_bytes,
)
from ml.data.lineage_snapshot import MANIFEST, row_digest, sql_path, utc_session
from ml.data.objects import (
    files_under,
    read_parquet,
    remove,
    stem,
    write_bytes,
    write_parquet,
)
from ml.data.objects import read_bytes as read_object
from ml.data.warehouse import WarehouseSession
from ml.monitoring.prediction_log import LOG_SUFFIXES
from ml.security.encryption import ENCRYPTED_SUFFIX, decrypt, encrypt

REQUEST_ID = "request_id"
RAW_ROW_ID = "raw_row_id"
ERASURE_LOG = "erasures.jsonl"


@dataclass
class ErasureReport:
    """How many records, rows or tasks erasure removed, per store (`warehouse.<table>`,
    `prediction_logs`, `label_studio`, …); zero everywhere when run again."""

    request_ids: tuple[str, ...]
    removed: dict[str, int] = field(default_factory=dict)

    def add(self, store: str, count: int) -> None:
        self.removed[store] = self.removed.get(store, 0) + count

    @property
    def total(self) -> int:
        return sum(self.removed.values())


# --- logs and files of traffic ------------------------------------------------------------------


def erase_from_logs(root: str | Path, request_ids: set[str], cipher: MultiFernet | None) -> int:
    """Remove the records of `request_ids` from every JSON-lines log file under `root` (a
    folder or an object-store URI; `*.jsonl`, and `*.jsonl.enc` decrypted and encrypted again
    with `cipher`); a file left empty is deleted. Returns how many records were removed."""
    removed = 0
    for path in files_under(str(root), LOG_SUFFIXES):
        if stem(path).startswith("."):
            continue  # a writer's file still being written
        encrypted = path.endswith(ENCRYPTED_SUFFIX)
        data = read_object(path)
        if encrypted:
            if cipher is None:
                raise ValueError(f"{path} is encrypted: the deployment's keys are needed")
            data = decrypt(cipher, data, str(path))
        lines = data.decode("utf-8").splitlines(keepends=True)
        kept = [line for line in lines if json.loads(line).get(REQUEST_ID) not in request_ids]
        if len(kept) == len(lines):
            continue
        removed += len(lines) - len(kept)
        if not kept:
            remove(path)
            continue
        content = "".join(kept).encode("utf-8")
        write_bytes(path, encrypt(cipher, content) if encrypted else content)
    return removed


def erase_from_parquet_files(root: str | Path, request_ids: set[str]) -> int:
    """Remove the rows of `request_ids` from every Parquet file under `root` (a folder or an
    object-store prefix) that has a `request_id` column (the serving windows' features);
    returns how many rows."""
    removed = 0
    for uri in files_under(str(root), ".parquet"):
        frame = read_parquet(uri)
        if REQUEST_ID not in frame.columns:
            continue
        kept = frame.filter(~pl.col(REQUEST_ID).is_in(list(request_ids)).fill_null(False))
        if kept.height == frame.height:
            continue
        removed += frame.height - kept.height
        write_parquet(uri, kept)
    return removed


# --- the warehouse and its snapshots -----------------------------------------------------------


@dataclass(frozen=True)
class WarehouseErasure:
    removed: dict[str, int]
    """Rows removed per table."""
    source_rows: dict[str, set[int]]
    """Per drop id, the source rows (`_row`) the erased requests came from."""
    text_keys: frozenset[str]
    """Normalized texts no request holds any more, removed from `split_assignments`."""


def _tables_with(session: WarehouseSession, column: str) -> list[str]:
    return [
        table
        for (table,) in session.rows(
            "select c.table_name from information_schema.columns c join "
            "information_schema.tables t on c.table_name = t.table_name and "
            "c.table_schema = t.table_schema where c.table_schema = current_schema() and "
            "t.table_type = 'BASE TABLE' and c.column_name = ? order by c.table_name",
            [column],
        )
    ]


def _source_rows(raw_row_ids: Iterable[str]) -> dict[str, set[int]]:
    rows: dict[str, set[int]] = {}
    for raw_row_id in raw_row_ids:
        drop_id, _, row = str(raw_row_id).rpartition(":")
        if drop_id and row.isdigit():
            rows.setdefault(drop_id, set()).add(int(row))
    return rows


def erase_from_warehouse(session: WarehouseSession, request_ids: set[str]) -> WarehouseErasure:
    """Delete the requests' rows from every base table with a `request_id` column, and their
    normalized texts that no remaining request shares, in the session's one transaction (the
    caller compacts the warehouse afterwards, so no freed page still holds them)."""
    ids = sorted(request_ids)
    erased = "(select unnest(?::varchar[]))"
    tables = _tables_with(session, REQUEST_ID)
    raw_row_ids: list[str] = []
    for table in sorted(set(tables) & set(_tables_with(session, RAW_ROW_ID))):
        raw_row_ids += [
            row
            for (row,) in session.rows(
                f'select "{RAW_ROW_ID}" from "{table}" where request_id in {erased}', [ids]
            )
        ]
    keyed = _tables_with(session, "text_key")
    keyed_by_request = sorted(set(tables) & set(keyed))
    keys: set[str] = set()
    if "split_assignments" in keyed:
        for table in keyed_by_request:
            keys |= {
                key
                for (key,) in session.rows(
                    f'select text_key from "{table}" where request_id in {erased}', [ids]
                )
                if key is not None
            }
    removed = {
        table: session.affected(f'delete from "{table}" where request_id in {erased}', [ids])
        for table in tables
    }
    if keys:
        still_held = set()
        for table in keyed_by_request:
            still_held |= {
                key
                for (key,) in session.rows(
                    f'select distinct text_key from "{table}" where text_key in {erased}',
                    [sorted(keys)],
                )
            }
        keys -= still_held
        removed["split_assignments"] = session.affected(
            f"delete from split_assignments where text_key in {erased}", [sorted(keys)]
        )
    return WarehouseErasure(removed, _source_rows(raw_row_ids), frozenset(keys))


def erase_from_snapshots(
    snapshots: Path, request_ids: set[str], text_keys: Iterable[str] = ()
) -> int:
    """Remove the requests' rows (and the erased normalized texts) from every snapshot's files,
    recomputing each changed table's rows and hashes in its manifest; returns rows removed."""
    removed = 0
    if not snapshots.is_dir():
        return 0
    keys = sorted(text_keys)
    for manifest_path in sorted(snapshots.glob(f"*/{MANIFEST}")):
        folder = manifest_path.parent
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        changed = False
        for entry in manifest["tables"].values():
            path = folder / entry["file"]
            columns = {column["name"] for column in entry["columns"]}
            if REQUEST_ID in columns:
                where, params = "request_id in (select unnest(?::varchar[]))", [sorted(request_ids)]
            elif "text_key" in columns and keys:
                where, params = "text_key in (select unnest(?::varchar[]))", [keys]
            else:
                continue
            with duckdb.connect() as con:
                utc_session(con)
                source = f"read_parquet({sql_path(path)})"
                ((count,),) = con.execute(
                    f"select count(*) from {source} where {where}", params
                ).fetchall()
                if not count:
                    continue
                rewritten = path.with_name(f".{path.name}.erasing")
                con.execute(
                    f"copy (select * from {source} where not ({where})) to "
                    f"{sql_path(rewritten)} (format parquet)",
                    params,
                )
                rows, digest = row_digest(con, f"read_parquet({sql_path(rewritten)})")
            rewritten.replace(path)
            entry.update(rows=rows, row_sha256=digest, file_sha256=file_sha256(path))
            removed += int(count)
            changed = True
        if changed:
            write_text_atomically(manifest_path, json.dumps(manifest, indent=2))
    return removed


# --- immutable sources: drops and raw copies ---------------------------------------------------


def _blank_csv(data: bytes, rows: set[int], request_ids: set[str]) -> tuple[bytes, int]:
    """The CSV with every field of the given records emptied (records named by the line their
    reading ended on, as the raw reader numbers them, or by their `request_id` column)."""
    text = data.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    header = next(reader)
    writer.writerow(header)
    id_column = header.index(REQUEST_ID) if REQUEST_ID in header else None
    blanked = 0
    for record in reader:
        erased = reader.line_num in rows or (
            id_column is not None and record and record[id_column] in request_ids
        )
        if erased and any(record):
            record = [""] * len(record)
            blanked += 1
        writer.writerow(record)
    return out.getvalue().encode("utf-8"), blanked


def _blank_frame(
    frame: pl.DataFrame, rows: set[int], request_ids: set[str]
) -> tuple[pl.DataFrame, int]:
    """The frame with every cell but `_row` of the given rows nulled (by `_row`, else by
    position from 1, or by the `request_id` column)."""
    numbers = (
        frame[ROW_COLUMN]
        if ROW_COLUMN in frame.columns
        else pl.int_range(1, frame.height + 1, eager=True)
    )
    hit = numbers.is_in(sorted(rows))
    if REQUEST_ID in frame.columns:
        hit = hit | frame[REQUEST_ID].is_in(sorted(request_ids)).fill_null(False)
    cells = [c for c in frame.columns if c != ROW_COLUMN]
    filled = (
        frame.select(pl.any_horizontal(pl.col(cells).is_not_null())).to_series() if cells else hit
    )
    hit = hit & filled
    blanked = int(hit.sum())
    if not blanked:
        return frame, 0
    return (
        frame.with_columns([pl.when(hit).then(None).otherwise(pl.col(c)).alias(c) for c in cells]),
        blanked,
    )


def blank_source_rows(
    data: bytes, uri: str, rows: set[int], request_ids: set[str]
) -> tuple[bytes, int]:
    """A drop file's bytes with the erased rows emptied in place; (new bytes, rows emptied)."""
    if file_suffix(uri) in (".parquet", ".pq"):
        frame, blanked = _blank_frame(pl.read_parquet(io.BytesIO(data)), rows, request_ids)
        if not blanked:
            return data, 0
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        return buffer.getvalue(), blanked
    if file_suffix(uri) == ".csv":
        return _blank_csv(data, rows, request_ids)
    raise ValueError(f"{uri}: erasure cannot rewrite a {file_suffix(uri)!r} file; erase it by hand")


def erase_from_drops(
    registry_dir: Path, source_rows: dict[str, set[int]], request_ids: set[str]
) -> int:
    """Empty the erased rows of every registered drop's file (by source row, or by a
    `request_id` column), and move its manifest to the new content: the drop keeps its id, and
    the rewritten file is known to the drop registry (never ingested as a new drop)."""
    blanked_total = 0
    if not registry_dir.is_dir():
        return 0
    for manifest in sorted(registry_dir.glob("*.json")):
        drop = load_drop(manifest.stem, registry_dir)
        if drop.drop_id != manifest.stem:
            continue  # the alias of an earlier erasure's content
        if file_suffix(drop.uri) not in SUPPORTED_SUFFIXES:
            continue  # another domain's drop (a ZIP of images) holds no request
        try:
            data = read_bytes(drop.uri)
        except FileNotFoundError:
            continue  # the file was taken away after ingestion: nothing left to erase
        if hashlib.sha256(data).hexdigest() != drop.sha256:
            continue  # changed since registration: read_drop refuses it anyway
        new, blanked = blank_source_rows(
            data, drop.uri, source_rows.get(drop.drop_id, set()), request_ids
        )
        if not blanked:
            continue
        write_bytes(drop.uri, new)
        sha256 = hashlib.sha256(new).hexdigest()
        moved = json.dumps(asdict(replace(drop, sha256=sha256, size_bytes=len(new))), indent=2)
        write_text_atomically(manifest, moved)
        write_text_atomically(registry_dir / f"{drop_id_for(drop.source, sha256)}.json", moved)
        blanked_total += blanked
    return blanked_total


def erase_from_raw_copies(
    raw_location: str, source_rows: dict[str, set[int]], request_ids: set[str]
) -> int:
    """Empty the erased rows of the raw copies (`<raw>/<domain>/<drop id>.parquet`, a folder or
    an object store), keeping `_row` so every other row keeps its id."""
    blanked_total = 0
    for uri in files_under(raw_location, ".parquet"):
        frame, blanked = _blank_frame(
            read_parquet(uri), source_rows.get(stem(uri), set()), request_ids
        )
        if blanked:
            write_parquet(uri, frame)
            blanked_total += blanked
    return blanked_total


# --- the record --------------------------------------------------------------------------------


def record_erasure(
    folder: Path,
    report: ErasureReport,
    requested_by: str,
    reason: str,
    erased_by: str,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, object]:
    """Append the erasure to `<folder>/erasures.jsonl` (ids, who asked, who ran it, why, what
    was removed where; no text): the record an auditor asks for."""
    entry = {
        "erased_at": now().isoformat(),
        "requested_by": requested_by,
        "erased_by": erased_by,
        "reason": reason,
        "request_ids": list(report.request_ids),
        "removed": dict(sorted(report.removed.items())),
    }
    append_line_atomically(folder / ERASURE_LOG, json.dumps(entry))
    return entry


def erasure_records(folder: Path) -> list[dict[str, object]]:
    path = folder / ERASURE_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
