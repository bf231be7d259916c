"""Reading files: every way a file can be bad gets a message naming the file and the line."""

from pathlib import Path

import fsspec
import polars as pl
import pytest

from ml.ingestion import (
    IngestionError,
    discover_drop_files,
    load_drop,
    read_drop,
    read_raw_table,
    redrops_of,
    register_drop,
)


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
