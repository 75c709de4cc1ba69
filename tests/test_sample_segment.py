"""devtools.sample_segment: deterministic profiles, written in the Customer Insights layout (Azurite)."""

from __future__ import annotations

import gzip
import json
import re
from datetime import datetime, timezone

import pytest

from devtools import sample_segment
from devtools.sample_segment import COLUMNS, generate_profiles, write_segment_refresh
from exporter.segments import find_latest_refresh, load_schema, read_rows

VALID_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
WHEN = datetime(2026, 11, 28, 12, 5, 42, tzinfo=timezone.utc)


def test_profiles_are_deterministic_and_have_exactly_the_columns():
    first = list(generate_profiles(500, seed=3))
    assert first == list(generate_profiles(500, seed=3))
    assert first != list(generate_profiles(500, seed=4))
    assert list(generate_profiles(100, seed=3)) == first[:100]
    assert all(tuple(p) == COLUMNS and all(isinstance(v, str) for v in p.values()) for p in first)
    assert len({p["CustomerId"] for p in first}) == 500


@pytest.mark.parametrize("count, share", [(10_000, 0.02), (1_000, 0.1), (1_000, 0.0), (50, 1.0)])
def test_invalid_share(count, share):
    profiles = list(generate_profiles(count, invalid_share=share))
    invalid = [p for p in profiles if not VALID_EMAIL.match(p["PrimaryEmail"])]
    assert len(invalid) == round(count * share)
    valid = [p["PrimaryEmail"] for p in profiles if VALID_EMAIL.match(p["PrimaryEmail"])]
    assert len({e.lower() for e in valid}) == len(valid)  # no duplicates unless asked for
    assert all(e.rsplit("@", 1)[1].lower().split(".")[-2:][0] == "example" for e in valid)


def test_duplicate_share_repeats_earlier_emails_in_other_case():
    profiles = list(generate_profiles(5_000, invalid_share=0.02, duplicate_share=0.05))
    seen: dict[str, str] = {}
    duplicates = 0
    for p in profiles:
        email = p["PrimaryEmail"]
        if not VALID_EMAIL.match(email):
            continue
        key = email.lower()
        if key in seen:
            duplicates += 1
            assert email != seen[key]  # different letter case
        else:
            seen[key] = email
    assert duplicates == 250


def test_profiles_hold_the_awkward_values():
    profiles = list(generate_profiles(5_000))
    fields = [v for p in profiles for v in p.values()]
    assert any("," in v for v in fields)
    assert any('"' in v for v in fields)
    assert any("\n" in v for v in fields)
    assert any(not v.isascii() for v in fields)
    countries = {p["Country"] for p in profiles}
    assert {"US", "DE", "LT", "", "Germany"} <= countries
    iso = sum(1 for p in profiles if re.fullmatch(r"[A-Z]{2}", p["Country"]))
    assert iso > 0.7 * len(profiles)


def test_layout_and_model_json_written(segment_container):
    names = write_segment_refresh(
        segment_container, folder="cdp/out", segment="Seg", profiles=generate_profiles(10), when=WHEN, partitions=3
    )
    assert names == [f"cdp/out/Seg/2026/11/28/1205/Seg_{n}.csv" for n in (1, 2, 3)]
    blobs = sorted(b.name for b in segment_container.list_blobs())
    assert blobs == sorted(names + ["cdp/out/model.json"])
    doc = json.loads(segment_container.download_blob("cdp/out/model.json").readall())
    assert doc["version"] == "1.0"
    (entity,) = doc["entities"]
    assert entity["name"] == "Seg"
    assert [a["name"] for a in entity["attributes"]] == list(COLUMNS)
    assert [p["location"].rsplit("/", 1)[1] for p in entity["partitions"]] == ["Seg_1.csv", "Seg_2.csv", "Seg_3.csv"]
    assert entity["partitions"][0]["location"].startswith(segment_container.url)
    settings = entity["partitions"][0]["fileFormatSettings"]
    assert settings["$type"] == "CsvFormatSettings" and settings["columnHeaders"] is False
    assert settings["quoteStyle"] == "QuoteStyle.Csv" and settings["csvStyle"] == "CsvStyle.QuoteAlways"
    # headerless, every field quoted, CRLF
    text = segment_container.download_blob(names[0]).readall().decode("utf-8")
    assert text.startswith('"') and text.endswith('"\r\n')
    assert not text.startswith('"CustomerId"')


def test_written_segment_reads_back(segment_container):
    expected = [[p[c] for c in COLUMNS] for p in generate_profiles(2_000, seed=11)]
    write_segment_refresh(
        segment_container, folder="ci", segment="Roundtrip", profiles=generate_profiles(2_000, seed=11),
        when=WHEN, partitions=3, gzip=True,
    )
    refresh = find_latest_refresh(segment_container, "ci", "Roundtrip")
    assert [p.rsplit("/", 1)[1] for p in refresh.partitions] == [f"Roundtrip_{n}.csv.gz" for n in (1, 2, 3)]
    schema = load_schema(segment_container, "ci", "Roundtrip", refresh)
    assert schema.origin == "model.json" and schema.columns == COLUMNS
    rows = list(read_rows(segment_container, refresh, schema))
    assert [r.fields for r in rows] == expected  # contiguous split: partition order == profile order
    assert all(r.error is None for r in rows)
    assert [sum(1 for r in rows if r.partition == p) for p in refresh.partitions] == [667, 667, 666]


def test_header_gzip_and_custom_columns_without_model_json(segment_container):
    columns = ("Customer Id", "E-Mail Address")
    profiles = [{"Customer Id": "1", "E-Mail Address": "a@example.com"}, {"Customer Id": "2"}]
    names = write_segment_refresh(
        segment_container, folder="", segment="Plain", profiles=profiles, when=WHEN, header=True, gzip=True,
        model_json=False, columns=columns,
    )
    assert names == ["Plain/2026/11/28/1205/Plain_1.csv.gz"]
    assert [b.name for b in segment_container.list_blobs()] == names
    raw = gzip.decompress(segment_container.download_blob(names[0]).readall())
    assert raw == b'"Customer Id","E-Mail Address"\r\n"1","a@example.com"\r\n"2",""\r\n'
    refresh = find_latest_refresh(segment_container, "", "Plain")
    schema = load_schema(segment_container, "", "Plain", refresh)
    assert schema.origin == "header" and schema.columns == columns


def test_model_json_keeps_other_segments_and_points_at_the_new_refresh(segment_container):
    write_segment_refresh(segment_container, folder="ci", segment="A", profiles=generate_profiles(3), when=WHEN)
    write_segment_refresh(segment_container, folder="ci", segment="B", profiles=generate_profiles(3), when=WHEN,
                          header=True)
    later = datetime(2026, 11, 29, 8, 0, tzinfo=timezone.utc)
    write_segment_refresh(segment_container, folder="ci", segment="A", profiles=generate_profiles(3), when=later)
    doc = json.loads(segment_container.download_blob("ci/model.json").readall())
    by_name = {e["name"]: e for e in doc["entities"]}
    assert sorted(by_name) == ["A", "B"]
    assert "/2026/11/29/0800/" in by_name["A"]["partitions"][0]["location"]
    assert by_name["B"]["partitions"][0]["fileFormatSettings"]["columnHeaders"] is True


def test_large_refresh_is_written_in_blocks(segment_container, monkeypatch):
    monkeypatch.setattr(sample_segment, "_BLOCK_BYTES", 64 * 1024)
    monkeypatch.setattr(sample_segment, "_TEXT_FLUSH_CHARS", 16 * 1024)

    def unsized():  # a plain generator: no length hint, spooled to split contiguously
        yield from generate_profiles(3_000)

    names = write_segment_refresh(segment_container, folder="ci", segment="Big", profiles=unsized(), when=WHEN,
                                  partitions=2)
    blocks = segment_container.get_blob_client(names[0]).get_block_list("committed")[0]
    assert len(blocks) > 1
    refresh = find_latest_refresh(segment_container, "ci", "Big")
    rows = list(read_rows(segment_container, refresh, load_schema(segment_container, "ci", "Big", refresh)))
    assert [r.fields[0] for r in rows] == [p["CustomerId"] for p in generate_profiles(3_000)]
    assert sum(1 for r in rows if r.partition == names[0]) == 1_500


def test_cli(segment_container, azurite_storage, monkeypatch, capsys):
    monkeypatch.setenv("AzureWebJobsStorage", azurite_storage)
    code = sample_segment.main([
        "--rows", "250", "--segment", "Cli", "--container", segment_container.container_name, "--folder", "ci",
        "--partitions", "2", "--header", "--when", "2026-11-28T09:30:00Z",
    ])
    assert code == 0
    assert "ci/Cli/2026/11/28/0930/Cli_2.csv" in capsys.readouterr().out
    refresh = find_latest_refresh(segment_container, "ci", "Cli")
    schema = load_schema(segment_container, "ci", "Cli", refresh)
    assert schema.fmt.header is True
    assert len(list(read_rows(segment_container, refresh, schema))) == 250
