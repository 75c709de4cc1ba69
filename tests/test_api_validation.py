"""Bad requests get a 400 problem+json naming every bad field, unknown ids a 404, never a 500; and an
export is validated against its connection and its segment's schema when it is saved.

All calls go through the app's own HTTP functions with real ``azure.functions.HttpRequest`` objects,
against Azurite and the Omnisend sandbox.
"""

from __future__ import annotations

import json
import random
import string
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from devtools.sample_segment import COLUMNS, generate_profiles, write_segment_refresh
from exporter.api.validation import MAX_BODY_BYTES
from tests.apphelpers import call, create_connection, create_export
from tests.conftest import TEST_API_KEY

MAPPING = {"email": "PrimaryEmail", "firstName": "FirstName", "lastName": "LastName", "country": "Country"}
HEADER_COLUMNS = ("Id", "Email", "Given", "Family")


pytestmark = pytest.mark.usefixtures("module_services")  # installed for the whole module


@pytest.fixture(scope="module")
def container(azurite_storage):
    """Segments in every shape the export check meets:
    ci/VIP (model.json), hdr/Plain (CSV header, no model.json), pre/Soon (in model.json, no refresh yet),
    bad/Broken (model.json is not JSON), and nothing at all for ci/Future."""
    from azure.storage.blob import BlobServiceClient

    blobs = BlobServiceClient.from_connection_string(azurite_storage)
    c = blobs.create_container(f"valid{uuid.uuid4().hex[:10]}")
    when = datetime.now(timezone.utc) - timedelta(minutes=5)
    write_segment_refresh(c, folder="ci", segment="VIP", profiles=list(generate_profiles(10)), when=when)
    rows = [{"Id": str(i), "Email": f"p{i}@example.com", "Given": "Ann", "Family": "Lee"} for i in range(5)]
    write_segment_refresh(c, folder="hdr", segment="Plain", profiles=rows, when=when, header=True, model_json=False,
                          columns=HEADER_COLUMNS)
    for name in write_segment_refresh(c, folder="pre", segment="Soon", profiles=list(generate_profiles(3)), when=when):
        c.delete_blob(name)  # model.json describes the segment, but no refresh exists (yet)
    write_segment_refresh(c, folder="bad", segment="Broken", profiles=list(generate_profiles(3)), when=when)
    c.upload_blob("bad/model.json", b"{ this is not json", overwrite=True)
    yield c.container_name
    c.delete_container()


@pytest.fixture(scope="module")
def conn(module_services):
    return create_connection(TEST_API_KEY, name=f"Validation {uuid.uuid4().hex[:6]}")


def unique_tag() -> str:
    """The tests save many exports of one segment on one connection: each needs its own tag."""
    return f"VIP {uuid.uuid4().hex[:8]}"


@pytest.fixture
def export(conn, container):
    return create_export(conn["id"], container, "ci", "VIP", mapping=MAPPING, tag=unique_tag())


def export_body(conn, container, **changes) -> dict:
    body = {"name": "VIP to Omnisend", "connectionId": conn["id"],
            "source": {"container": container, "folder": "ci", "segment": "VIP"}, "mapping": dict(MAPPING),
            "enabled": True, "tag": unique_tag()}
    body.update(changes)
    return body


def connection_body(**changes) -> dict:
    body = {"displayName": f"C {uuid.uuid4().hex[:8]}", "apiKey": TEST_API_KEY, "allowContributors": False,
            "dataPrivacyConsent": True}
    body.update(changes)
    return body


def fields_of(body: dict) -> dict[str, str]:
    """{field: code} of a problem's errors; every error names a field and says what is wrong."""
    out = {}
    for e in body.get("errors", []):
        assert set(e) == {"field", "code", "message"} and e["field"] and e["message"], e
        out[e["field"]] = e["code"]
    return out


def assert_bad_request(status: int, body: dict, res, fields: dict[str, str] | None = None) -> dict[str, str]:
    assert status == 400, body
    assert res.mimetype == "application/problem+json"
    assert body["status"] == 400 and body["title"] == "Bad request" and body["detail"]
    found = fields_of(body)
    assert found, f"a 400 must name the bad field(s): {body}"
    if fields is not None:
        assert found == fields, body
    return found


# the three calls that take a body: (function, method, route params) - the PUT needs an export
def body_endpoints(export) -> list[tuple[str, str, dict]]:
    return [("connections", "POST", {}), ("exports", "POST", {}), ("export", "PUT", {"id": export["id"]})]


# --- malformed, unknown, mistyped, oversized ---------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"{", b"{'displayName': 'x'}", b'{"a": 1,}', b"\xff\xfe\x00{", b"", b"   \n", b"{\"a\": NaN",
    b"[" * 50_000, b'{"a":' * 12_000,  # nested deeper than the parser's recursion limit, but under 64 KiB
], ids=["unclosed", "single quotes", "trailing comma", "not utf-8", "empty", "blank", "bad literal", "deep list",
        "deep object"])
def test_malformed_json_is_400_naming_the_body(raw, export):
    for function, method, route in body_endpoints(export):
        status, body, res = call(function, method, "x", raw, route_params=route)
        assert_bad_request(status, body, res, {"(body)": body["errors"][0]["code"]})


@pytest.mark.parametrize("raw", [b"[]", b"null", b'"text"', b"42", b"true", b'[{"displayName": "x"}]'])
def test_a_body_that_is_not_an_object_is_400(raw, export):
    for function, method, route in body_endpoints(export):
        status, body, res = call(function, method, "x", raw, route_params=route)
        assert_bad_request(status, body, res, {"(body)": "type"})


def test_oversized_bodies_are_refused_before_anything_else(export, conn, container, module_services):
    before = len(module_services.connections.list()), len(module_services.exports.list())
    pad = "x" * (MAX_BODY_BYTES + 1)
    bodies = [connection_body(displayName=pad), export_body(conn, container, name=pad),
              export_body(conn, container, name=pad)]
    for (function, method, route), payload in zip(body_endpoints(export), bodies):
        raw = json.dumps(payload).encode()
        assert len(raw) > MAX_BODY_BYTES
        status, body, res = call(function, method, "x", raw, route_params=route)
        assert_bad_request(status, body, res, {"(body)": "too_large"})
        assert str(MAX_BODY_BYTES) in body["detail"]
    # just under the limit is read (and then refused for the long name, naming the field)
    raw = json.dumps(connection_body(displayName="x" * (MAX_BODY_BYTES - 200))).encode()
    assert len(raw) <= MAX_BODY_BYTES
    status, body, res = call("connections", "POST", "connections", raw)
    assert_bad_request(status, body, res, {"displayName": "invalid"})
    assert (len(module_services.connections.list()), len(module_services.exports.list())) == before


def test_unknown_fields_are_named_top_level_and_nested(conn, container, export):
    status, body, res = call("connections", "POST", "connections",
                             {**connection_body(), "apikey": "typo", "scope": "all"})
    assert_bad_request(status, body, res, {"apikey": "unknown", "scope": "unknown"})
    assert "allowed: allowContributors, apiKey, dataPrivacyConsent, displayName, maxProfilesPerExport" in \
        body["errors"][0]["message"]

    payload = export_body(conn, container, schedule="hourly")
    payload["source"]["path"] = "ci/VIP"
    payload["mapping"]["phone"] = "Mobile"
    for function, method, route in body_endpoints(export)[1:]:
        status, body, res = call(function, method, "x", payload, route_params=route)
        assert_bad_request(status, body, res, {"schedule": "unknown", "source.path": "unknown", "mapping.phone": "unknown"})


def test_a_typo_in_a_required_field_names_both(conn):
    status, body, res = call("connections", "POST", "connections",
                             {"displayname": "X", "apiKey": TEST_API_KEY, "dataPrivacyConsent": True})
    assert_bad_request(status, body, res, {"displayname": "unknown", "displayName": "required"})


def test_wrong_types_name_every_field_at_once():
    status, body, res = call("connections", "POST", "connections", {
        "displayName": 5, "apiKey": ["k"], "allowContributors": "yes", "dataPrivacyConsent": 1,
        "maxProfilesPerExport": True})
    found = assert_bad_request(status, body, res, {f: "type" for f in (
        "displayName", "apiKey", "allowContributors", "dataPrivacyConsent", "maxProfilesPerExport")})
    messages = {e["field"]: e["message"] for e in body["errors"]}
    assert messages["maxProfilesPerExport"] == "must be a whole number"  # true is not 1
    assert messages["allowContributors"] == "must be true or false"
    assert found


@pytest.mark.parametrize("value", [True, False, "10", 1.5, 10.0, [10], {"n": 10}])
def test_max_profiles_must_be_a_whole_number(value):
    status, body, res = call("connections", "POST", "connections", connection_body(maxProfilesPerExport=value))
    assert_bad_request(status, body, res, {"maxProfilesPerExport": "type"})


def test_export_types_top_level_and_nested(conn, container, export):
    payload = {"name": 1, "connectionId": 7, "source": {"container": 3, "folder": [], "segment": None},
               "mapping": {"email": {"col": "x"}, "city": 0}, "enabled": "true"}
    expected = {"name": "type", "connectionId": "type", "source.container": "type", "source.folder": "type",
                "source.segment": "required", "mapping.email": "type", "mapping.city": "type", "enabled": "type"}
    for function, method, route in body_endpoints(export)[1:]:
        status, body, res = call(function, method, "x", payload, route_params=route)
        assert_bad_request(status, body, res, expected)
    status, body, res = call("exports", "POST", "exports", {**export_body(conn, container), "source": "ci/VIP",
                                                            "mapping": ["PrimaryEmail"]})
    assert_bad_request(status, body, res, {"source": "type", "mapping": "type"})


@pytest.mark.parametrize("text", ["bad \ud800 surrogate", "nul \u0000 inside", "\udfff"])
def test_text_that_is_not_storable_is_400_not_500(text, conn, container):
    status, body, res = call("connections", "POST", "connections", connection_body(displayName=text))
    assert_bad_request(status, body, res, {"displayName": "invalid"})
    status, body, res = call("exports", "POST", "exports", export_body(conn, container, name=text))
    assert_bad_request(status, body, res, {"name": "invalid"})
    payload = export_body(conn, container)
    payload["mapping"]["firstName"] = text
    status, body, res = call("exports", "POST", "exports", payload)
    assert_bad_request(status, body, res, {"mapping.firstName": "invalid"})


def create_with_source(conn, segments_container, **source) -> tuple:
    """POST /exports with the source's fields changed; (status, body, response)."""
    payload = export_body(conn, segments_container)
    payload["source"].update(source)
    return call("exports", "POST", "exports", payload)


@pytest.mark.parametrize("name", ["UPPER", "under_score", "ab", "-lead", "trail-", "dou--ble", "x" * 64, "a b c",
                                  "naïve", "a/b"])
def test_a_container_name_azure_cannot_have_is_400(name, conn, container):
    assert_bad_request(*create_with_source(conn, container, container=name), {"source.container": "invalid"})


@pytest.mark.parametrize("segment", ["a/b", "/", " ", "..", ".", "a\\b"])
def test_a_segment_name_with_a_slash_or_blank_is_400(segment, conn, container):
    assert_bad_request(*create_with_source(conn, container, segment=segment), {"source.segment": "invalid"})


@pytest.mark.parametrize("folder", ["../other/x", "..", "a/../b", "./ci", "a//b", "/ci", "ci\\sub", "a/./b"])
def test_a_folder_that_could_leave_its_container_is_400(folder, conn, container):
    """Found as an attacker would: '../other/x' was accepted, and with identity-based access read the
    column names of another container."""
    assert_bad_request(*create_with_source(conn, container, folder=folder), {"source.folder": "invalid"})
    status, body, res = call("segment_columns", "GET", "segments/columns",
                             params={"container": container, "folder": folder, "segment": "VIP"})
    assert_bad_request(status, body, res, {"folder": "invalid"})


@pytest.mark.parametrize("folder", ["", "ci", "ci/", "a/b/c", "sub.folder", "a..b"])
def test_folders_inside_the_container_are_accepted(folder, conn, container):
    status, body, _ = create_with_source(conn, container, folder=folder)
    assert status in (201, 400), body  # 400 only for a segment that is not there, never for the folder
    assert all(e["field"] != "source.folder" for e in (body.get("errors") or [])), body


# --- unknown ids -----------------------------------------------------------------------------------

ID_ROUTES = [
    ("connection", "GET"), ("connection", "DELETE"), ("export", "GET"), ("export", "PUT"), ("export", "DELETE"),
    ("export_runs", "GET"), ("export_runs", "POST"), ("run", "GET"), ("run_rejects", "GET"), ("run_cancel", "POST"),
]
ODD_IDS = [uuid.uuid4().hex, "0000000000000deadbeef", "x'y", 'q"q', "a#b", "a?b=c", "..", "%00", "a\\b", "é",
           "a" * 2000, "(PartitionKey eq 'x')", "~runs"]


@pytest.mark.parametrize("function, method", ID_ROUTES)
def test_unknown_or_odd_ids_are_404(function, method, conn, container, module_services):
    before = len(module_services.exports.list())
    for rid in ODD_IDS:
        payload = export_body(conn, container) if method == "PUT" else None
        status, body, res = call(function, method, "x", payload, route_params={"id": rid})
        assert status == 404, (rid, body)
        assert res.mimetype == "application/problem+json" and body["title"] == "Not found"
    assert len(module_services.exports.list()) == before


def test_unknown_id_with_a_bad_body_is_404(conn):
    status, body, _ = call("export", "PUT", "x", b"{nope", route_params={"id": uuid.uuid4().hex})
    assert status == 404, body


# --- export validation on save ---------------------------------------------------------------------


def test_mapping_email_is_required(conn, container, export):
    for mapping, code in (({"firstName": "FirstName"}, "required"), ({}, "required"), ({"email": ""}, "invalid"),
                          ({"email": "  "}, "invalid"), ({"email": None, "city": "City"}, "required")):
        for function, method, route in body_endpoints(export)[1:]:
            status, body, res = call(function, method, "x", export_body(conn, container, mapping=mapping),
                                     route_params=route)
            assert_bad_request(status, body, res, {"mapping.email": code})


def test_every_mapped_column_must_exist_in_the_model_json_schema(conn, container, export, module_services):
    mapping = {"email": "PrimaryEmail", "firstName": "GivenName", "city": "Town", "country": "Country"}
    for function, method, route in body_endpoints(export)[1:]:
        status, body, res = call(function, method, "x", export_body(conn, container, mapping=mapping),
                                 route_params=route)
        assert_bad_request(status, body, res, {"mapping.firstName": "unknown_column", "mapping.city": "unknown_column"})
        messages = {e["field"]: e["message"] for e in body["errors"]}
        assert "'GivenName'" in messages["mapping.firstName"] and "'Town'" in messages["mapping.city"]
        for message in messages.values():
            assert "available columns: " + ", ".join(COLUMNS) in message
    assert module_services.exports.get(export["id"]).mapping.to_api() == MAPPING  # the PUT changed nothing


def test_mapped_columns_are_checked_against_the_csv_header(conn, container):
    source = {"container": container, "folder": "hdr", "segment": "Plain"}
    status, body, res = call("exports", "POST", "exports", export_body(
        conn, container, source=source, mapping={"email": "PrimaryEmail", "firstName": "Given"}))
    assert_bad_request(status, body, res, {"mapping.email": "unknown_column"})
    assert "available columns: Id, Email, Given, Family" in body["errors"][0]["message"]
    status, body, _ = call("exports", "POST", "exports", export_body(
        conn, container, source=source, mapping={"email": "Email", "firstName": "Given", "lastName": "Family"}))
    assert status == 201 and body["notices"] == [], body


def test_column_names_are_matched_exactly(conn, container):
    status, body, res = call("exports", "POST", "exports",
                             export_body(conn, container, mapping={"email": "primaryemail"}))
    assert_bad_request(status, body, res, {"mapping.email": "unknown_column"})


def test_the_connection_must_exist(conn, container, export, module_services):
    gone = uuid.uuid4().hex
    for function, method, route in body_endpoints(export)[1:]:
        status, body, res = call(function, method, "x", export_body(conn, container, connectionId=gone),
                                 route_params=route)
        assert_bad_request(status, body, res, {"connectionId": "unknown"})
        assert gone in body["errors"][0]["message"]
    assert module_services.exports.get(export["id"]).connection_id == conn["id"]


def test_a_source_without_a_refresh_is_saved_with_a_notice(conn, container, module_services):
    status, body, _ = call("exports", "POST", "exports", export_body(
        conn, container, source={"container": container, "folder": "ci", "segment": "Future"},
        mapping={"email": "AnyColumnForNow"}))
    assert status == 201, body
    assert len(body["notices"]) == 1 and "has no refresh" in body["notices"][0] and "Future" in body["notices"][0]
    assert module_services.exports.get(body["id"]) is not None
    assert call("export_runs", "GET", "x", route_params={"id": body["id"]})[1]["runs"] == []  # saving ran nothing
    status, problem, _ = call("export_runs", "POST", "x", route_params={"id": body["id"]})
    assert status == 409 and problem["title"] == "Nothing to export"


def test_a_source_without_a_refresh_is_checked_against_model_json_when_it_describes_the_segment(conn, container):
    source = {"container": container, "folder": "pre", "segment": "Soon"}
    status, body, res = call("exports", "POST", "exports", export_body(
        conn, container, source=source, mapping={"email": "Mail"}))
    assert_bad_request(status, body, res, {"mapping.email": "unknown_column"})
    status, body, _ = call("exports", "POST", "exports", export_body(conn, container, source=source))
    assert status == 201 and len(body["notices"]) == 1 and "no refresh" in body["notices"][0], body


def test_a_missing_container_is_400_naming_source_container(conn, container, module_services):
    before = len(module_services.exports.list())
    missing = f"nosuch{uuid.uuid4().hex[:8]}"
    status, body, res = call("exports", "POST", "exports", export_body(
        conn, container, source={"container": missing, "folder": "ci", "segment": "VIP"}))
    assert_bad_request(status, body, res, {"source.container": "not_found"})
    assert missing in body["errors"][0]["message"]
    assert len(module_services.exports.list()) == before


def test_an_unreadable_schema_is_400_naming_the_source(conn, container):
    status, body, res = call("exports", "POST", "exports", export_body(
        conn, container, source={"container": container, "folder": "bad", "segment": "Broken"}))
    assert_bad_request(status, body, res, {"source": "unreadable"})
    assert "model.json" in body["errors"][0]["message"]


def test_a_valid_export_is_saved_and_replaced_without_running(conn, container, export, module_services):
    assert export["notices"] == [] and export["mapping"] == MAPPING and export["enabled"] is True
    status, body, _ = call("export", "PUT", "x", export_body(conn, container, name="Renamed", enabled=False,
                                                             mapping={"email": "PrimaryEmail"}),
                           route_params={"id": export["id"]})
    assert status == 200, body
    saved = module_services.exports.get(export["id"])
    assert saved.name == "Renamed" and saved.enabled is False and saved.mapping.to_api() == {"email": "PrimaryEmail"}
    assert body["createdAt"] == export["createdAt"]
    assert module_services.runs.list(export["id"]) == []


def test_connection_create_validation_lists_every_bad_field():
    status, body, res = call("connections", "POST", "connections", {
        "displayName": "", "apiKey": "", "dataPrivacyConsent": False, "maxProfilesPerExport": 0})
    assert_bad_request(status, body, res, {"displayName": "invalid", "apiKey": "invalid",
                                           "dataPrivacyConsent": "invalid", "maxProfilesPerExport": "invalid"})
    status, body, res = call("connections", "POST", "connections", {})
    assert_bad_request(status, body, res, {"displayName": "required", "apiKey": "required",
                                           "dataPrivacyConsent": "required"})


# --- fuzz: random shapes never make a 500 ----------------------------------------------------------


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(12 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63, 10**30, -(10**30), 7])
    if kind == 3:
        return rng.choice([0.5, -2.5, 1e308, 1e-308, 3.0])
    if kind in (4, 5, 6, 7):
        alphabet = rng.choice([string.ascii_letters, string.printable, "\u00e9\u4e2d\U0001f600/'\"#?\\%",
                               "\ud800\udfff\u0000\u202e\n\t"])
        return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 3, 20, 300])))
    if kind in (8, 9):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["email", "firstName", "container", "folder", "segment", "name", "x", ""]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _mutate(rng: random.Random, body):
    """Replace, drop or add one field somewhere in a valid body."""
    body = json.loads(json.dumps(body))
    node = body
    while isinstance(node, dict) and node and rng.random() < 0.5:
        key = rng.choice(list(node))
        if isinstance(node[key], dict):
            node = node[key]
        else:
            break
    action = rng.randrange(3)
    if action == 0 and node:
        node[rng.choice(list(node))] = _random_value(rng)
    elif action == 1 and node:
        del node[rng.choice(list(node))]
    else:
        node[rng.choice(["extra", "email", "segment", "maxProfilesPerExport", "\u0000"])] = _random_value(rng)
    return body


def test_fuzzed_bodies_never_cause_a_500(conn, container, export, module_services):
    rng = random.Random(20260315)
    seen = set()
    for i in range(240):
        target = i % 3
        if target == 0:
            function, method, route, valid = "connections", "POST", {}, connection_body(apiKey="not-a-sandbox-key")
        elif target == 1:
            function, method, route, valid = "exports", "POST", {}, export_body(conn, container)
        else:
            function, method, route, valid = "export", "PUT", {"id": export["id"]}, export_body(conn, container)
        payload = _random_value(rng) if rng.random() < 0.3 else _mutate(rng, valid)
        try:
            raw = json.dumps(payload).encode()
        except (TypeError, ValueError):
            continue
        if rng.random() < 0.1:  # some raw garbage and truncations too
            raw = raw[: rng.randrange(len(raw) + 1)]
        status, body, res = call(function, method, "x", raw, route_params=route)
        assert status < 500, (function, method, raw[:300], body)
        if status >= 400:
            assert res.mimetype == "application/problem+json" and body["detail"], body
        seen.add(status)
    assert 400 in seen
