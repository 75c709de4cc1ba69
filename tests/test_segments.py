"""exporter.segments against real blobs in Azurite."""

from __future__ import annotations

import gzip
import itertools
import json
import tracemalloc
from datetime import datetime, timedelta, timezone

import pytest

from exporter.domain import Refresh
from exporter.segments import (
    CsvFormat,
    SegmentFormatError,
    SegmentSchema,
    SegmentSourceError,
    SourceNotFoundError,
    SourceRow,
    blobs,
    find_latest_refresh,
    is_settled,
    load_schema,
    read_rows,
)

SEG = "VIP Customers"  # segment names may contain spaces
T = "2026/11/28/1200"
COLS = ["CustomerId", "FirstName", "PrimaryEmail"]


def put(container, name: str, data: bytes | str) -> None:
    container.upload_blob(name, data.encode("utf-8") if isinstance(data, str) else data, overwrite=True)


def part(folder: str, time: str = T, n: int = 1, segment: str = SEG, ext: str = ".csv") -> str:
    base = f"{folder}/{segment}" if folder else segment
    return f"{base}/{time}/{segment}_{n}{ext}"


def model_json(container, folder: str, columns, *, header=False, segment=SEG, settings=None, locations=None) -> None:
    fmt = {"$type": "CsvFormatSettings", "columnHeaders": header, "delimiter": ",",
           "quoteStyle": "QuoteStyle.Csv", "csvStyle": "CsvStyle.QuoteAlways", "encoding": "UTF-8"}
    if settings is not None:
        fmt = settings
    locations = locations or [f"https://acct.blob.core.windows.net/c/{part(folder)}"]
    doc = {
        "name": "export", "version": "1.0",
        "entities": [
            {"$type": "LocalEntity", "name": "Other", "attributes": [{"name": "X", "dataType": "string"}]},
            {
                "$type": "LocalEntity",
                "name": segment,
                "attributes": [{"name": c, "dataType": "string"} for c in columns],
                "partitions": [
                    {"name": f"{segment}_{i}", "location": loc, "refreshTime": "2026-11-28T12:00:00Z",
                     "fileFormatSettings": fmt}
                    for i, loc in enumerate(locations, 1)
                ],
            },
        ],
    }
    put(container, f"{folder}/model.json" if folder else "model.json", json.dumps(doc))


def read_all(container, folder: str = "ci", segment: str = SEG):
    refresh = find_latest_refresh(container, folder, segment)
    assert refresh is not None
    schema = load_schema(container, folder, segment, refresh)
    return refresh, schema, list(read_rows(container, refresh, schema))


# --------------------------------------------------------------------------- formats


def test_header_csv_without_model_json(segment_container):
    put(segment_container, part("ci"), "CustomerId,First Name,E-Mail Address\r\n1,Anna,anna@example.com\r\n2,Ben,ben@example.com\r\n")
    refresh, schema, rows = read_all(segment_container)
    assert schema == SegmentSchema(
        columns=("CustomerId", "First Name", "E-Mail Address"), fmt=CsvFormat(header=True), origin="header"
    )
    assert rows == [
        SourceRow(part("ci"), 1, ["1", "Anna", "anna@example.com"], None),
        SourceRow(part("ci"), 2, ["2", "Ben", "ben@example.com"], None),
    ]
    assert isinstance(rows[0], SourceRow) and rows[0].fields == ["1", "Anna", "anna@example.com"]


@pytest.mark.parametrize("column_headers", [False, "false", "False"])
def test_headerless_csv_with_model_json_column_names(segment_container, column_headers):
    model_json(segment_container, "ci", ["Customer Id", "First Name", "Primary Email"], header=column_headers)
    put(segment_container, part("ci"), '"1","Anna","anna@example.com"\n"2","Ben","ben@example.com"\n')
    _, schema, rows = read_all(segment_container)
    assert schema.origin == "model.json"
    assert schema.columns == ("Customer Id", "First Name", "Primary Email")
    assert schema.fmt == CsvFormat(header=False)
    assert [r.fields for r in rows] == [["1", "Anna", "anna@example.com"], ["2", "Ben", "ben@example.com"]]
    assert [r.number for r in rows] == [1, 2]


@pytest.mark.parametrize("column_headers", [True, "true"])
def test_model_json_with_header_rows_skips_them(segment_container, column_headers):
    model_json(segment_container, "ci", COLS, header=column_headers)
    put(segment_container, part("ci", n=1), "CustomerId,FirstName,PrimaryEmail\n1,Anna,a@example.com\n")
    put(segment_container, part("ci", n=2), "CustomerId,FirstName,PrimaryEmail\n2,Ben,b@example.com\n")
    _, schema, rows = read_all(segment_container)
    assert schema.fmt.header is True
    assert [(r.partition[-5:], r.number, r.fields[0]) for r in rows] == [("1.csv", 1, "1"), ("2.csv", 1, "2")]


def test_model_json_defaults_and_other_settings(segment_container):
    # No fileFormatSettings at all: CDM defaults (no header, ",", quotes, UTF-8).
    model_json(segment_container, "ci", COLS, settings={})
    put(segment_container, part("ci"), '"1","A","a@example.com"\n')
    assert read_all(segment_container)[1].fmt == CsvFormat(header=False, delimiter=",", quotechar='"', encoding="utf-8")
    # Semicolon, no quoting.
    model_json(segment_container, "ci", COLS, settings={"$type": "CsvFormatSettings", "columnHeaders": "false",
                                                        "delimiter": ";", "quoteStyle": "QuoteStyle.None"})
    put(segment_container, part("ci"), '1;"A";a,b@example.com\n')
    _, schema, rows = read_all(segment_container)
    assert schema.fmt == CsvFormat(header=False, delimiter=";", quotechar="")
    assert rows[0].fields == ["1", '"A"', "a,b@example.com"]


def test_format_settings_come_from_the_partition_in_the_refresh_folder(segment_container):
    old = f"https://acct.dfs.core.windows.net/c/{part('ci', time='2026/11/27/1200')}"
    new = f"https://acct.dfs.core.windows.net/c/{part('ci')}".replace(" ", "%20")
    doc_settings = []
    for loc, header in ((old, False), (new, True)):
        doc_settings.append({"name": "p", "location": loc,
                             "fileFormatSettings": {"$type": "CsvFormatSettings", "columnHeaders": header}})
    model_json(segment_container, "ci", COLS)
    doc = json.loads(segment_container.download_blob("ci/model.json").readall())
    doc["entities"][1]["partitions"] = doc_settings
    put(segment_container, "ci/model.json", json.dumps(doc))
    put(segment_container, part("ci"), "CustomerId,FirstName,PrimaryEmail\n1,A,a@example.com\n")
    refresh = find_latest_refresh(segment_container, "ci", SEG)
    assert load_schema(segment_container, "ci", SEG, refresh).fmt.header is True
    # Without a refresh (or no matching location) the first partition's settings apply.
    assert load_schema(segment_container, "ci", SEG, None).fmt.header is False


def test_gzip_partitions(segment_container):
    model_json(segment_container, "ci", COLS)
    put(segment_container, part("ci", n=1, ext=".csv.gz"), gzip.compress(b'"1","A","a@example.com"\n"2","B","b@example.com"\n'))
    # gzip is recognised by its content too
    put(segment_container, part("ci", n=2), gzip.compress(b'"3","C","c@example.com"\n'))
    _, _, rows = read_all(segment_container)
    assert [r.fields[0] for r in rows] == ["1", "2", "3"]
    assert rows[0].partition.endswith("_1.csv.gz")


def test_gzip_header_csv_without_model_json(segment_container):
    put(segment_container, part("ci", ext=".csv.gz"), gzip.compress("\ufeffE-Mail,Näme\r\nx@example.com,Jūratė\r\n".encode()))
    _, schema, rows = read_all(segment_container)
    assert schema.columns == ("E-Mail", "Näme")
    assert rows[0].fields == ["x@example.com", "Jūratė"]


def test_corrupt_gzip_is_a_format_error(segment_container):
    model_json(segment_container, "ci", COLS)
    put(segment_container, part("ci", ext=".csv.gz"), gzip.compress(b'"1","A","a@example.com"\n' * 100)[:-30])
    with pytest.raises(SegmentFormatError, match="not a valid gzip file"):
        read_all(segment_container)


def test_quoted_fields_crlf_bom_and_non_ascii(segment_container):
    model_json(segment_container, "ci", COLS)
    data = (
        "\ufeff"
        '"1","Smith, Jr.","a@example.com"\r\n'
        '"2","Anna ""Ann""","b@example.com"\r\n'
        '"3","Line one\r\nline two","c@example.com"\r\n'
        '"4","Žygimantas","d@example.com"\n'
        '"5","",""\r\n'
    )
    put(segment_container, part("ci"), data)
    _, _, rows = read_all(segment_container)
    assert [r.fields for r in rows] == [
        ["1", "Smith, Jr.", "a@example.com"],
        ["2", 'Anna "Ann"', "b@example.com"],
        ["3", "Line one\r\nline two", "c@example.com"],
        ["4", "Žygimantas", "d@example.com"],
        ["5", "", ""],
    ]
    assert all(r.error is None for r in rows)
    assert [r.number for r in rows] == [1, 2, 3, 4, 5]


def test_header_with_bom_and_semicolons(segment_container):
    put(segment_container, part("ci"), "\ufeffCustomer Id;E-Mail\r\n1;a@example.com\r\n")
    _, schema, rows = read_all(segment_container)
    assert schema.columns == ("Customer Id", "E-Mail")
    assert schema.fmt.delimiter == ";"
    assert rows[0].fields == ["1", "a@example.com"]


def test_long_field_is_read(segment_container):
    model_json(segment_container, "ci", COLS)
    put(segment_container, part("ci"), '"1","' + "x" * 1_000_000 + '","a@example.com"\n"2","B","b@example.com"\n')
    _, _, rows = read_all(segment_container)
    assert len(rows[0].fields[1]) == 1_000_000 and rows[1].fields[0] == "2"


# --------------------------------------------------------------------------- bad rows and bad files


def test_bad_rows_are_yielded_with_a_reason(segment_container):
    model_json(segment_container, "ci", COLS)
    data = (
        b'"1","Anna","a@example.com"\n'
        b'"2","M\xfcller","b@example.com"\n'  # latin-1, not UTF-8
        b'"3","too","few"\n'.replace(b',"few"', b"")
        + b'"4","A","x@example.com","extra"\n'
        + b"\n"
        + b'"5","Ok","c@example.com"\n'
    )
    put(segment_container, part("ci"), data)
    _, _, rows = read_all(segment_container)
    assert [(r.number, r.error) for r in rows] == [
        (1, None),
        (2, "not valid UTF-8"),
        (3, "expected 3 columns, found 2"),
        (4, "expected 3 columns, found 4"),
        (5, "empty row"),
        (6, None),
    ]
    assert rows[2].fields == ["3", "too"]
    assert rows[5].fields == ["5", "Ok", "c@example.com"]


def test_invalid_utf8_split_across_download_chunks(segment_container, monkeypatch):
    monkeypatch.setattr(blobs, "DOWNLOAD_CHUNK_BYTES", 1024)
    model_json(segment_container, "ci", COLS)
    good = '"1","Jūratė Žukauskaitė","a@example.com"\n'.encode()
    data = good * 200 + b'"2","\xc5","b@example.com"\n' + good * 200
    put(segment_container, part("ci"), data)
    _, _, rows = read_all(segment_container)
    assert len(rows) == 401
    assert [r.number for r in rows if r.error] == [201]
    assert rows[200].error == "not valid UTF-8"
    assert rows[0].fields[1] == "Jūratė Žukauskaitė"


@pytest.mark.parametrize("bad", ['"3","unclosed,"c@example.com"\n', '"3","A"B,"c@example.com"\n'])
def test_malformed_csv_raises_with_partition_and_line(segment_container, bad):
    model_json(segment_container, "ci", COLS)
    put(segment_container, part("ci"), '"1","A","a@example.com"\n"2","secret-value","b@example.com"\n' + bad)
    refresh = find_latest_refresh(segment_container, "ci", SEG)
    schema = load_schema(segment_container, "ci", SEG, refresh)
    rows = read_rows(segment_container, refresh, schema)
    assert next(rows).number == 1
    with pytest.raises(SegmentFormatError) as info:
        list(rows)
    message = str(info.value)
    assert part("ci") in message and "malformed CSV at line 3" in message
    assert "secret-value" not in message and "unclosed" not in message


def test_a_schema_that_does_not_describe_the_file_is_one_error_not_a_rejection_per_row(segment_container):
    model_json(segment_container, "ci", [*COLS, "Phone"])
    put(segment_container, part("ci"), '"1","A","a@example.com"\n' * 50)
    refresh = find_latest_refresh(segment_container, "ci", SEG)
    rows = read_rows(segment_container, refresh, load_schema(segment_container, "ci", SEG, refresh))
    assert [r.error for r in itertools.islice(rows, 2)] == ["expected 4 columns, found 3"] * 2
    with pytest.raises(SegmentFormatError) as info:
        next(rows)
    message = str(info.value)
    assert part("ci") in message and "have 3 columns" in message and "model.json lists 4 columns" in message
    assert "a@example.com" not in message
    # bad rows that do not open the file, or differ in width, stay rejections of their own
    for data, good in (('"0","A","a@example.com","x"\n' + '"1","A","a@example.com"\n' * 3, [True] + [False] * 3),
                       ('"1","A"\n"2","B","b@example.com"\n"3","C"\n"4","D","d@example.com","x"\n',
                        [False] * 3 + [True])):
        put(segment_container, part("ci"), data)
        assert [r.error is None for r in read_all(segment_container)[2]] == good


def test_header_mismatch_between_partitions(segment_container):
    put(segment_container, part("ci", n=1), "CustomerId,FirstName,PrimaryEmail\n1,A,a@example.com\n")
    put(segment_container, part("ci", n=2), "CustomerId,GivenName,PrimaryEmail\n2,B,b@example.com\n")
    refresh = find_latest_refresh(segment_container, "ci", SEG)
    schema = load_schema(segment_container, "ci", SEG, refresh)
    rows = read_rows(segment_container, refresh, schema)
    assert next(rows).fields[0] == "1"
    with pytest.raises(SegmentFormatError) as info:
        next(rows)
    message = str(info.value)
    assert part("ci", n=2) in message and "'FirstName'" in message and "'GivenName'" in message


def test_missing_header_row_does_not_echo_the_data(segment_container):
    model_json(segment_container, "ci", COLS, header=True)
    put(segment_container, part("ci"), "1,Anna,anna.private@example.com\n")
    with pytest.raises(SegmentFormatError) as info:
        read_all(segment_container)
    assert "anna.private" not in str(info.value) and "header row" in str(info.value)


def test_headerless_csv_without_model_json_is_refused(segment_container):
    put(segment_container, part("ci"), "1,Anna,anna.private@example.com\n")
    with pytest.raises(SegmentFormatError) as info:
        read_all(segment_container)
    assert "anna.private" not in str(info.value) and "model.json" in str(info.value)


def test_missing_container(blob_service, unique):
    container = blob_service.get_container_client(f"missing{unique}")
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        find_latest_refresh(container, "ci", SEG)
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        load_schema(container, "ci", SEG, None)
    refresh = Refresh(folder="ci/x/", fingerprint="f", partitions=("ci/x/x_1.csv",), last_modified=datetime.now(timezone.utc))
    with pytest.raises(SourceNotFoundError):
        list(read_rows(container, refresh, SegmentSchema(("a",), CsvFormat(header=False), "model.json")))


@pytest.mark.parametrize(
    "content, match",
    [
        (b"{not json", "not valid JSON"),
        (b'{"entities": [{"name": "Other", "attributes": [{"name": "X"}]}]}', "no entity named"),
        (b'{"entities": [{"name": "VIP Customers", "attributes": []}]}', "lists no attributes"),
        (b'{"version": "1.0"}', "no 'entities' list"),
        (b'{"entities": [{"name": "VIP Customers", "attributes": [{"name": "A"}, {"name": "A"}]}]}', "appears twice"),
        (b'{"entities": [{"name": "VIP Customers", "attributes": [{"name": "A"}], "partitions": '
         b'[{"fileFormatSettings": {"$type": "CsvFormatSettings", "delimiter": ";;"}}]}]}', "delimiter"),
    ],
)
def test_unusable_model_json(segment_container, content, match):
    put(segment_container, "ci/model.json", content)
    put(segment_container, part("ci"), "A\n1\n")
    refresh = find_latest_refresh(segment_container, "ci", SEG)
    with pytest.raises(SegmentFormatError, match=match):
        load_schema(segment_container, "ci", SEG, refresh)


def test_schema_without_partitions_or_refresh(segment_container):
    with pytest.raises(SourceNotFoundError, match="no refresh"):
        load_schema(segment_container, "ci", SEG, None)
    empty = Refresh(folder=f"ci/{SEG}/{T}/", fingerprint="x", partitions=(), last_modified=datetime.now(timezone.utc))
    with pytest.raises(SegmentFormatError, match="no partition"):
        load_schema(segment_container, "ci", SEG, empty)


def test_blob_rewritten_while_reading(segment_container, monkeypatch):
    monkeypatch.setattr(blobs, "DOWNLOAD_CHUNK_BYTES", 1024)
    model_json(segment_container, "ci", COLS)
    put(segment_container, part("ci"), '"1","A","a@example.com"\n' * 3000)
    refresh = find_latest_refresh(segment_container, "ci", SEG)
    rows = read_rows(segment_container, refresh, load_schema(segment_container, "ci", SEG, refresh))
    next(rows)
    put(segment_container, part("ci"), '"2","B","b@example.com"\n' * 3000)
    with pytest.raises(SegmentSourceError, match="changed while it was being read"):
        list(rows)


# --------------------------------------------------------------------------- refreshes


def test_partitions_in_numeric_order(segment_container):
    model_json(segment_container, "ci", ["N"])
    for n in (10, 2, 1, 9):
        put(segment_container, part("ci", n=n), f'"{n}"\n')
    refresh, _, rows = read_all(segment_container)
    assert [p.rsplit("_", 1)[1] for p in refresh.partitions] == ["1.csv", "2.csv", "9.csv", "10.csv"]
    assert [r.fields[0] for r in rows] == ["1", "2", "9", "10"]
    assert all(r.number == 1 for r in rows)


def test_latest_refresh_by_path_not_by_blob_time(segment_container):
    model_json(segment_container, "ci", ["N"])
    put(segment_container, part("ci", time="2026/11/28/1200"), '"newest"\n')  # written first
    put(segment_container, part("ci", time="2026/11/28/0900"), '"older"\n')
    put(segment_container, part("ci", time="2025/12/31/2359"), '"oldest"\n')
    refresh, _, rows = read_all(segment_container)
    assert refresh.folder == f"ci/{SEG}/2026/11/28/1200/"
    assert refresh.partitions == (part("ci"),)
    assert [r.fields for r in rows] == [["newest"]]
    assert refresh.last_modified.tzinfo is not None


def test_stray_blobs_are_ignored(segment_container):
    model_json(segment_container, "ci", ["N"])
    put(segment_container, part("ci", n=1), '"real"\n')
    for stray in (
        f"ci/{SEG}/readme.txt",
        f"ci/{SEG}/2026/11/28/1300/_SUCCESS",  # newer folder without partitions
        f"ci/{SEG}/2026/11/28/1300/Other_1.csv",
        f"ci/{SEG}/2026/11/28/1300/{SEG}_1.csv.tmp",
        f"ci/{SEG}/2026/11/28/1300/sub/{SEG}_1.csv",
        f"ci/{SEG}/2026/13/28/1300/{SEG}_1.csv",  # month 13
        f"ci/{SEG}/2026/11/28/13/{SEG}_1.csv",
        f"ci/{SEG}/2026/11/28/1200/{SEG}_x.csv",
        f"ci/{SEG}/2026/11/28/1200/{SEG}.csv",
        f"ci/{SEG}X/2026/11/28/1400/{SEG}X_1.csv",  # another segment sharing the prefix
        f"{SEG}/2026/11/28/1400/{SEG}_1.csv",  # outside the root folder
    ):
        put(segment_container, stray, "x\n")
    refresh, _, rows = read_all(segment_container)
    assert refresh.folder == f"ci/{SEG}/2026/11/28/1200/"
    assert refresh.partitions == (part("ci"),)
    assert [r.fields for r in rows] == [["real"]]


def test_root_folder_empty_and_no_refresh(segment_container):
    assert find_latest_refresh(segment_container, "", SEG) is None
    model_json(segment_container, "", ["N"])
    assert find_latest_refresh(segment_container, "", SEG) is None  # model.json alone is no refresh
    put(segment_container, part(""), '"1"\n')
    refresh, schema, rows = read_all(segment_container, folder="")
    assert refresh.folder == f"{SEG}/{T}/"
    assert schema.origin == "model.json" and [r.fields for r in rows] == [["1"]]
    assert find_latest_refresh(segment_container, "ci", SEG) is None


def test_is_settled():
    written = datetime(2026, 11, 28, 12, 0, 30, tzinfo=timezone.utc)
    refresh = Refresh(folder="f/", fingerprint="x", partitions=("f/a_1.csv",), last_modified=written)
    assert not is_settled(refresh, written + timedelta(seconds=119), 120)
    assert is_settled(refresh, written + timedelta(seconds=120), 120)
    assert not is_settled(refresh, written - timedelta(seconds=5), 120)  # clock skew: not yet
    assert is_settled(refresh, written, 0)
    assert is_settled(refresh, datetime(2026, 11, 28, 13, 0), 120)  # naive "now" is taken as UTC


def test_refresh_being_written_is_not_settled(segment_container):
    model_json(segment_container, "ci", ["N"])
    put(segment_container, part("ci"), '"1"\n')
    refresh = find_latest_refresh(segment_container, "ci", SEG)
    now = datetime.now(timezone.utc)
    assert abs((now - refresh.last_modified).total_seconds()) < 60
    assert not is_settled(refresh, now, 120)
    assert is_settled(refresh, now + timedelta(seconds=200), 120)


def test_fingerprint_changes_only_when_a_blob_changes(segment_container):
    model_json(segment_container, "ci", ["N"])
    put(segment_container, part("ci", n=1), '"1"\n')
    put(segment_container, part("ci", n=2), '"2"\n')
    first = find_latest_refresh(segment_container, "ci", SEG)
    assert len(first.fingerprint) == 64 and int(first.fingerprint, 16) >= 0
    put(segment_container, f"ci/{SEG}/{T}/notes.txt", "stray")  # not a partition
    model_json(segment_container, "ci", ["N"])
    again = find_latest_refresh(segment_container, "ci", SEG)
    assert again.fingerprint == first.fingerprint
    assert again.last_modified >= first.last_modified
    put(segment_container, part("ci", n=2), '"2"\n')  # same bytes, new ETag
    rewritten = find_latest_refresh(segment_container, "ci", SEG)
    assert rewritten.fingerprint != first.fingerprint
    put(segment_container, part("ci", n=3), '"3"\n')
    assert find_latest_refresh(segment_container, "ci", SEG).fingerprint not in (first.fingerprint, rewritten.fingerprint)


def test_reading_a_large_partition_streams(segment_container, monkeypatch):
    # The storage SDK and its HTTP stack briefly need several times the size of a ranged GET, so the
    # bound is a multiple of the chunk size, independent of the blob size.
    monkeypatch.setattr(blobs, "DOWNLOAD_CHUNK_BYTES", 128 * 1024)
    model_json(segment_container, "ci", COLS)
    row = ('"{n}","' + "Jūratė " * 130 + '","person{n}@example.com"\n')
    data = "".join(row.format(n=n) for n in range(8000)).encode("utf-8")
    assert len(data) > 8_000_000
    put(segment_container, part("ci"), data)
    del data
    refresh = find_latest_refresh(segment_container, "ci", SEG)
    schema = load_schema(segment_container, "ci", SEG, refresh)
    tracemalloc.start()
    try:
        count = 0
        for r in read_rows(segment_container, refresh, schema):
            count += 1
            assert r.error is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 8000
    assert peak < 2_500_000, f"peak {peak} bytes while reading an 8 MB partition"


def test_reading_stops_cleanly_when_abandoned(segment_container, monkeypatch):
    monkeypatch.setattr(blobs, "DOWNLOAD_CHUNK_BYTES", 1024)
    model_json(segment_container, "ci", COLS)
    put(segment_container, part("ci"), '"1","A","a@example.com"\n' * 2000)
    refresh = find_latest_refresh(segment_container, "ci", SEG)
    rows = read_rows(segment_container, refresh, load_schema(segment_container, "ci", SEG, refresh))
    assert next(rows).number == 1
    rows.close()  # no error, background download stopped


def test_header_schema_reads_only_the_beginning_of_the_blob(segment_container, monkeypatch):
    from azure.storage.blob import BlobClient

    put(segment_container, part("ci"), "CustomerId,FirstName,PrimaryEmail\n" + "1,Anna,anna@example.com\n" * 150_000)
    requested = []
    original = BlobClient.download_blob

    def spy(self, offset=None, length=None, **kwargs):
        if self.blob_name == part("ci"):
            requested.append(length)
        return original(self, offset=offset, length=length, **kwargs)

    monkeypatch.setattr(BlobClient, "download_blob", spy)
    refresh = find_latest_refresh(segment_container, "ci", SEG)
    schema = load_schema(segment_container, "ci", SEG, refresh)
    assert schema.columns == tuple(COLS)
    assert requested and None not in requested
    assert sum(requested) <= 2 * blobs.HEADER_CHUNK_BYTES  # at most one range read ahead
