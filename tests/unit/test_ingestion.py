"""Reading files: every way a file can be bad gets a message naming the file and the line."""

import gzip
import json
import os
from pathlib import Path

import fsspec
import polars as pl
import pytest

from ml.data.atomic_files import (
    write_bytes_atomically,
    write_parquet_atomically,
    write_text_atomically,
)
from ml.data.drops import (
    DropScan,
    discover_drop_files,
    load_drop,
    read_drop,
    redrops_of,
    refused_files,
    register_drop,
    scan_drops,
    write_drop,
)
from ml.data.ingestion import DropTooLarge, IngestionError, content_sha256, read_raw_table
from ml.data.sources import StoreAttributesError, read_store_attributes


def write(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


def test_a_csv_is_read_as_text_with_line_numbers(tmp_path: Path) -> None:
    uri = write(tmp_path / "a.csv", b'text,intent\n"hello, world",x\n\n"two\nlines",y\n')
    frame = read_raw_table(uri)
    assert frame.schema == {"text": pl.Utf8, "intent": pl.Utf8, "_row": pl.Int64}
    assert frame["text"].to_list() == ["hello, world", "two\nlines"]
    assert frame["_row"].to_list() == [2, 5]


def test_a_row_with_the_wrong_number_of_fields_names_its_line(tmp_path: Path) -> None:
    uri = write(tmp_path / "ragged.csv", b"a,b\n1,2\n3,4,5\n")
    with pytest.raises(
        IngestionError, match=r"ragged\.csv: line 3: expected 2 fields \(a, b\), found 3"
    ):
        read_raw_table(uri)


def test_an_unterminated_quote_is_a_malformed_csv_naming_the_file(tmp_path: Path) -> None:
    uri = write(tmp_path / "quote.csv", b'a,b\n1,"oops\n')
    with pytest.raises(IngestionError, match=r"quote\.csv: line \d+: malformed CSV"):
        read_raw_table(uri)


def test_a_non_utf8_file_names_the_byte_and_line(tmp_path: Path) -> None:
    uri = write(tmp_path / "latin1.csv", "text\nok\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(IngestionError, match=r"latin1\.csv: not UTF-8 text: byte 0xe9 at line 3"):
        read_raw_table(uri)


@pytest.mark.parametrize("content", [b"", b"  \n\n"])
def test_an_empty_file_is_refused(tmp_path: Path, content: bytes) -> None:
    uri = write(tmp_path / "empty.csv", content)
    with pytest.raises(IngestionError, match=r"empty\.csv: file is empty"):
        read_raw_table(uri)


def test_a_header_only_file_is_a_drop_with_no_rows(tmp_path: Path) -> None:
    frame = read_raw_table(write(tmp_path / "header.csv", b"text,intent\n"))
    assert frame.height == 0
    assert frame.columns == ["text", "intent", "_row"]


def test_a_repeated_or_blank_header_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IngestionError, match=r"repeats column names \['a'\]"):
        read_raw_table(write(tmp_path / "rep.csv", b"a,a\n1,2\n"))
    with pytest.raises(IngestionError, match=r"empty column names at positions \[2\]"):
        read_raw_table(write(tmp_path / "blank.csv", b"a,\n1,2\n"))


def test_a_missing_file_and_an_unsupported_type_are_named(tmp_path: Path) -> None:
    with pytest.raises(IngestionError, match=r"nowhere\.csv: file not found"):
        read_raw_table(str(tmp_path / "nowhere.csv"))
    with pytest.raises(IngestionError, match=r"unsupported file type '\.xlsx'"):
        read_raw_table(write(tmp_path / "sheet.xlsx", b"PK"))


def test_parquet_is_read_as_text_too(tmp_path: Path) -> None:
    path = tmp_path / "typed.parquet"
    pl.DataFrame({"units": [1.5, None], "store": ["S1", "S2"]}).write_parquet(path)
    frame = read_raw_table(str(path))
    assert frame["units"].to_list() == ["1.5", None]
    assert frame["_row"].to_list() == [1, 2]


def test_a_corrupt_parquet_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(IngestionError, match=r"bad\.parquet: not a readable Parquet file"):
        read_raw_table(write(tmp_path / "bad.parquet", b"not parquet at all"))


def test_dropping_identical_content_twice_is_a_recorded_no_op(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    first = register_drop(write(tmp_path / "a.csv", b"text\nhi\n"), "synthetic", registry)
    again = register_drop(write(tmp_path / "copy.csv", b"text\nhi\n"), "synthetic", registry)
    assert first.is_new and not again.is_new
    assert again.drop == first.drop
    assert [r["uri"] for r in redrops_of(first.drop.drop_id, registry)] == [
        str(tmp_path / "copy.csv")
    ]
    other = register_drop(write(tmp_path / "b.csv", b"text\nbye\n"), "synthetic", registry)
    assert other.is_new and other.drop.drop_id != first.drop.drop_id


def test_a_file_changed_after_registration_is_refused(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    uri = write(tmp_path / "a.csv", b"text\nhi\n")
    drop = register_drop(uri, "synthetic", registry).drop
    write(tmp_path / "a.csv", b"text\nchanged\n")
    with pytest.raises(IngestionError, match=r"content changed since it was registered"):
        read_drop(drop)
    with pytest.raises(IngestionError, match=r"drop 'nope' is not registered"):
        load_drop("nope", registry)


def test_drops_are_discovered_per_source_folder(tmp_path: Path) -> None:
    (tmp_path / "banking77").mkdir()
    (tmp_path / "synthetic" / "2025").mkdir(parents=True)
    write(tmp_path / "banking77" / "train.csv", b"x")
    write(tmp_path / "synthetic" / "2025" / "jan.parquet", b"x")
    write(tmp_path / "synthetic" / "notes.txt", b"x")
    write(tmp_path / "loose.csv", b"x")
    found = discover_drop_files(str(tmp_path))
    assert [(source, Path(f.uri).name) for source, f in found] == [
        ("banking77", "train.csv"),
        ("synthetic", "jan.parquet"),
    ]
    assert found[0][1].stamp.startswith("1:")
    assert discover_drop_files(str(tmp_path / "absent")) == []


def test_drops_on_any_fsspec_filesystem_are_found_registered_and_read(tmp_path: Path) -> None:
    memory = fsspec.filesystem("memory")
    memory.pipe("/bucket/drops/banking77/jan.csv", b"text,category\nmy card,card_lost\n")
    ((source, found),) = discover_drop_files("memory://bucket/drops")
    assert (source, found.uri) == ("banking77", "memory:///bucket/drops/banking77/jan.csv")
    drop = register_drop(found.uri, source, tmp_path / "registry").drop
    assert read_drop(drop)["category"].to_list() == ["card_lost"]


# --- the drops folder, one file at a time ------------------------------------------------------


def scan(root: Path, cursor: dict, **options) -> DropScan:
    return scan_drops(
        str(root), root.parent / "registry", root.parent / "refused", cursor, **options
    )


def test_a_file_written_in_two_halves_is_registered_once_whole_after_it_settles(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "drops" / "synthetic"
    folder.mkdir(parents=True)
    whole = b"text\n" + b"".join(f"request {i}\n".encode() for i in range(200))
    (folder / "big.csv").write_bytes(whole[:700])
    first = scan(tmp_path / "drops", {}, settle=True)
    assert first.registrations == [] and first.pending == [str(folder / "big.csv")]
    with (folder / "big.csv").open("ab") as handle:
        handle.write(whole[700:])
    second = scan(tmp_path / "drops", first.cursor, settle=True)
    assert second.registrations == [], "a file that changed since the last look still waits"
    third = scan(tmp_path / "drops", second.cursor, settle=True)
    (registration,) = third.registrations
    assert registration.is_new and registration.drop.size_bytes == len(whole)
    assert read_drop(registration.drop).height == 200
    fourth = scan(tmp_path / "drops", third.cursor, settle=True)
    assert (fourth.registrations, fourth.refusals, fourth.pending) == ([], [], [])


def test_a_symlink_out_of_the_drops_folder_is_refused_and_one_inside_is_read(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "drops" / "synthetic"
    folder.mkdir(parents=True)
    secret = tmp_path / "elsewhere" / "secret.csv"
    secret.parent.mkdir()
    secret.write_bytes(b"text\nnot yours\n")
    (folder / "leak.csv").symlink_to(secret)
    (tmp_path / "drops" / "synthetic" / "real.csv").write_bytes(b"text\nmine\n")
    (folder / "alias.csv").symlink_to(folder / "real.csv")
    result = scan(tmp_path / "drops", {}, settle=False)
    (refused,) = result.refusals
    assert refused.uri == str(folder / "leak.csv")
    assert f"symlink to {secret}, outside the watched folder" in refused.reason
    assert json.loads(Path(refused.manifest).read_text())["reason"] == refused.reason
    assert [r.seen_uri for r in result.registrations] == [
        str(folder / "alias.csv"),
        str(folder / "real.csv"),
    ]
    assert not any(r.drop.sha256 == content_sha256(str(secret))[0] for r in result.registrations)


def test_files_that_cannot_be_drops_are_refused_and_the_good_one_beside_them_registers(
    tmp_path: Path,
) -> None:
    drops = tmp_path / "drops"
    (drops / "synthetic").mkdir(parents=True)
    (drops / "bad...name").mkdir()
    good = write(drops / "synthetic" / "good.csv", b"text\nhello\n")
    os.mkfifo(drops / "synthetic" / "pipe.csv")  # reading it would block the sensor forever
    (drops / "synthetic" / "gone.csv").symlink_to(drops / "synthetic" / "deleted.csv")
    write(drops / "synthetic" / "huge.csv", b"text\n" + b"x" * 100 + b"\n")
    write(drops / "bad...name" / "file.csv", b"text\nhello again\n")
    result = scan(drops, {}, settle=False, max_bytes=64)
    assert [r.drop.uri for r in result.registrations] == [good]
    reasons = {Path(r.uri).name: r.reason for r in result.refusals}
    assert "not a regular file" in reasons["pipe.csv"]
    assert "broken symlink" in reasons["gone.csv"]
    assert "106 bytes, over the drop size cap of 64" in reasons["huge.csv"]
    assert "source folder 'bad...name' is not a usable source name" in reasons["file.csv"]
    assert {Path(r.uri).name for r in refused_files(tmp_path / "refused")} == set(reasons)
    again = scan(drops, result.cursor, settle=False, max_bytes=64)
    assert (again.registrations, again.refusals) == ([], []), "the cursor moved past them"


def test_a_compressed_file_over_the_cap_once_inflated_is_refused_while_streaming(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(b"text\n" + b"a" * 5000 + b"\n"))
    assert path.stat().st_size < 200
    with pytest.raises(DropTooLarge, match=r"bomb\.csv\.gz: larger than the drop size cap of 1000"):
        register_drop(str(path), "synthetic", tmp_path / "registry", max_bytes=1000)
    assert not (tmp_path / "registry").exists()


def test_a_file_that_vanishes_between_listing_and_reading_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "drops" / "synthetic"
    folder.mkdir(parents=True)
    write(folder / "brief.csv", b"text\nhere for a moment\n")
    ((source, found),) = discover_drop_files(str(tmp_path / "drops"))
    (folder / "brief.csv").unlink()
    with pytest.raises(IngestionError, match=r"brief\.csv: file not found"):
        register_drop(found.uri, source, tmp_path / "registry")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_an_unreadable_file_is_refused_with_permission_denied(tmp_path: Path) -> None:
    folder = tmp_path / "drops" / "synthetic"
    folder.mkdir(parents=True)
    locked = folder / "locked.csv"
    write(locked, b"text\nsecret\n")
    locked.chmod(0)
    try:
        (refused,) = scan(tmp_path / "drops", {}, settle=False).refusals
    finally:
        locked.chmod(0o644)
    assert "locked.csv: cannot be read: permission denied" in refused.reason


def test_hidden_temporary_files_are_never_listed(tmp_path: Path) -> None:
    folder = tmp_path / "drops" / "serving"
    folder.mkdir(parents=True)
    write(folder / ".window.csv.x1y2.tmp", b"text\nhalf")
    write(folder / ".partial.csv", b"text\nhalf")
    uri = write_drop(str(tmp_path / "drops"), "serving", "window.csv", b"text\nwhole\n")
    assert [f.uri for _, f in discover_drop_files(str(tmp_path / "drops"))] == [uri]
    assert Path(uri).read_bytes() == b"text\nwhole\n"


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    write_text_atomically(path, '{"v": 1}')
    with pytest.raises(TypeError):
        write_bytes_atomically(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_text() == '{"v": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
    write_parquet_atomically(tmp_path / "raw.parquet", pl.DataFrame({"a": ["x"]}))
    assert pl.read_parquet(tmp_path / "raw.parquet")["a"].to_list() == ["x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "raw.parquet"]


# --- store attributes -------------------------------------------------------------------------

DEMOGRAPHICS = "STORE,AGE60,INCOME\n2,0.23,10.55\n5,0.12,10.92\n"


def test_store_attributes_are_one_row_per_store_with_numeric_columns(tmp_path: Path) -> None:
    path = tmp_path / "storedemo.csv"
    path.write_text(DEMOGRAPHICS)
    frame = read_store_attributes(str(path))
    assert frame.columns == ["store", "age60", "income"]
    assert frame.to_dicts() == [
        {"store": "2", "age60": 0.23, "income": 10.55},
        {"store": "5", "age60": 0.12, "income": 10.92},
    ]


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (DEMOGRAPHICS + "8,0.25,rich\n", r"line 4, store 8: income = 'rich', not a finite"),
        (DEMOGRAPHICS + "8,,10.6\n", r"line 4, store 8: age60 = empty, not a finite"),
        (DEMOGRAPHICS + "8,inf,10.6\n", r"line 4, store 8: age60 = 'inf', not a finite"),
        (DEMOGRAPHICS + "5,0.3,10.0\n", r"store\(s\) \['5'\] appear on more than one row"),
        (DEMOGRAPHICS + ",0.3,10.0\n", r"line 4: store is empty"),
        ("STORE\n2\n", "no attribute columns"),
    ],
)
def test_store_attributes_with_a_bad_value_are_refused_naming_it(
    tmp_path: Path, content: str, named: str
) -> None:
    path = tmp_path / "storedemo.csv"
    path.write_text(content)
    with pytest.raises(StoreAttributesError, match=named):
        read_store_attributes(str(path))


def test_store_attributes_without_a_store_column_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "storedemo.csv"
    path.write_text("shop,income\n2,10.5\n")
    with pytest.raises(IngestionError, match="store"):
        read_store_attributes(str(path))
