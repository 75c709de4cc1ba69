"""The Omnisend sandbox obeys the rules of omnisend-api.md, proven over real HTTP with raw requests."""

from __future__ import annotations

import re
import time

import pytest
import requests

from devtools.omnisend_sandbox import Faults, SandboxServer
from exporter.config import OMNISEND_API_VERSION

KEY = "sandbox-test-key-1"
BRAND = "brand-a"
HEADERS = {"Authorization": f"Omnisend-API-Key {KEY}", "Omnisend-Version": OMNISEND_API_VERSION}
URN = re.compile(r"^urn:omnisend:request:[0-9a-f-]{36}$")


@pytest.fixture(scope="module")
def server():
    with SandboxServer(api_keys={KEY: BRAND}, batch_delay_seconds=0.05, tags_delay_seconds=0.02) as srv:
        yield srv


@pytest.fixture
def sandbox(server):
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def contact(email: str, **extra) -> dict:
    body = {"identifiers": [{"type": "email", "id": email, "sendWelcomeMessage": False,
                             "channels": {"email": {"status": "nonSubscribed"}}}]}
    body.update(extra)
    return body


def assert_problem(resp: requests.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/problem+json"
    body = resp.json()
    assert {"type", "title", "status", "detail", "instance"} <= body.keys()
    assert body["status"] == status
    assert URN.match(body["instance"])
    return body


def fields(problem: dict) -> set[str]:
    return {e["field"] for e in problem["errors"]}


def wait_batch(http, url, batch_id, timeout=5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = http.get(url + f"batches/{batch_id}", headers=HEADERS).json()
        if body["status"] in ("finished", "stopped"):
            return body
        time.sleep(0.02)
    raise AssertionError("batch did not end")


# ---- auth and versions ----


def test_missing_or_unknown_key_is_401(sandbox, http):
    assert_problem(http.get(sandbox.url + "contacts", headers={"Omnisend-Version": OMNISEND_API_VERSION}), 401)
    bad = {"Authorization": "Omnisend-API-Key nope-not-a-key", "Omnisend-Version": OMNISEND_API_VERSION}
    resp = http.get(sandbox.url + "contacts", headers=bad)
    assert_problem(resp, 401)
    assert "nope-not-a-key" not in resp.text
    bearer = {"Authorization": f"Bearer {KEY}", "Omnisend-Version": OMNISEND_API_VERSION}
    assert_problem(http.get(sandbox.url + "contacts", headers=bearer), 401)
    assert sandbox.stats(BRAND)["requests"] == 0  # unauthenticated requests are nobody's


def test_version_header_missing_unknown_or_retired(sandbox, http):
    auth = {"Authorization": HEADERS["Authorization"]}
    body = assert_problem(http.get(sandbox.url + "contacts", headers=auth), 400)
    assert "Omnisend-Version" in body["detail"]
    for retired in ("v3", "v4", "v5", "2025-06-01", "2026-03-14"):
        body = assert_problem(http.get(sandbox.url + "contacts", headers={**auth, "Omnisend-Version": retired}), 410)
        assert "API version has been retired" in body["detail"]
    for unknown in ("2026-preview", "2027-01-01", "latest", "2026-13-45"):
        assert_problem(http.get(sandbox.url + "contacts", headers={**auth, "Omnisend-Version": unknown}), 400)
    assert http.get(sandbox.url + "contacts", headers=HEADERS).status_code == 200


def test_malformed_json_unknown_path_and_wrong_method(sandbox, http):
    resp = http.post(sandbox.url + "contacts", headers={**HEADERS, "Content-Type": "application/json"}, data=b"{nope")
    assert_problem(resp, 400)
    assert_problem(http.post(sandbox.url + "contacts", headers=HEADERS), 400)  # no body at all
    assert_problem(http.get(sandbox.url + "products-nope", headers=HEADERS), 404)
    resp = http.get(sandbox.url + "contacts/tags", headers=HEADERS)
    assert_problem(resp, 405)
    assert "POST" in resp.headers["Allow"]
    assert_problem(http.delete(sandbox.url + "batches", headers=HEADERS), 405)


# ---- contacts ----


def test_contact_validation_lists_every_error_at_once(sandbox, http):
    body = {
        "identifiers": [
            {"type": "email", "id": "not-an-email", "channels": {"email": {"status": "maybe",
                                                                            "statusChangedAt": "yesterday"}},
             "sendWelcomeMessage": "no"},
            {"type": "fax", "id": ""},
            {"id": "x@example.com"},
        ],
        "countryCode": "XX",
        "gender": "x",
        "birthdate": "1990-02-30",
        "firstName": 42,
        "tags": ["ok"] * 101,
        "favouriteColour": "blue",
    }
    problem = assert_problem(http.post(sandbox.url + "contacts", json=body, headers=HEADERS), 400)
    assert problem["type"] == "https://problems.omnisend.com/validation-failed"
    assert {
        "identifiers[0].id", "identifiers[0].channels.email.status",
        "identifiers[0].channels.email.statusChangedAt", "identifiers[0].sendWelcomeMessage",
        "identifiers[1].type", "identifiers[1].id", "identifiers[2].type",
        "countryCode", "gender", "birthdate", "firstName", "tags", "favouriteColour",
    } <= fields(problem)
    assert all({"field", "code", "message"} == e.keys() for e in problem["errors"])
    assert sandbox.contacts(BRAND) == []


@pytest.mark.parametrize("body, field", [
    ({}, "identifiers"),
    ({"identifiers": []}, "identifiers"),
    ({"identifiers": [{"type": "email", "id": "a@b.co"}], "countryCode": "de"}, "countryCode"),
    ({"identifiers": [{"type": "email", "id": "a@b.co"}], "countryCode": "UK"}, "countryCode"),
    ({"identifiers": [{"type": "email", "id": "a@b.co"}], "lastName": None}, "lastName"),
    ({"identifiers": [{"type": "phone", "id": "0123"}]}, "identifiers[0].id"),
    ({"identifiers": [{"type": "email", "id": "a@b.co", "channels": {"sms": {"status": "subscribed"}}}]},
     "identifiers[0].channels.sms"),
    ({"identifiers": [{"type": "email", "id": "a@b.co", "sendWelcomeMesage": False}]},
     "identifiers[0].sendWelcomeMesage"),
    ({"identifiers": [{"type": "email", "id": "a@b.co"}], "tags": ["segment:vip"]}, "tags[0]"),
])
def test_contact_validation_cases(sandbox, http, body, field):
    problem = assert_problem(http.post(sandbox.url + "contacts", json=body, headers=HEADERS), 400)
    assert field in fields(problem)


def test_upsert_creates_then_updates_by_email_case_insensitively(sandbox, http):
    first = http.post(sandbox.url + "contacts", headers=HEADERS,
                      json=contact("Ada@Example.COM", firstName="Ada", lastName="Lovelace", countryCode="GB",
                                   birthdate="1815-12-10", gender="f", customProperties={"tier": "gold"}))
    assert first.status_code == 201, first.text
    created = first.json()
    assert re.fullmatch(r"[0-9a-f]{24}", created["id"])
    assert created["email"] == "ada@example.com"
    assert created["status"] == "nonSubscribed"
    assert created["identifiers"][0]["id"] == "ada@example.com"
    for name in ("createdAt", "updatedAt", "tags", "identifiers"):
        assert name in created

    second = http.post(sandbox.url + "contacts", headers=HEADERS,
                       json=contact("ADA@example.com", lastName="King", country="Germany",
                                    customProperties={"since": 2020}))
    assert second.status_code == 200, second.text
    updated = second.json()
    assert updated["id"] == created["id"]
    assert updated["firstName"] == "Ada"  # not given: kept
    assert updated["lastName"] == "King"  # given: overwritten
    assert updated["country"] == "Germany" and updated["countryCode"] == "DE"  # derived: no code given
    assert updated["customProperties"] == {"tier": "gold", "since": 2020}
    [stored] = sandbox.contacts(BRAND)
    assert stored["email"] == "ada@example.com" and stored["lastName"] == "King"
    assert sandbox.stats(BRAND)["contactsCreated"] == 1 and sandbox.stats(BRAND)["contactsUpdated"] == 1


def test_country_name_derives_country_code(sandbox, http):
    resp = http.post(sandbox.url + "contacts", headers=HEADERS, json=contact("de@example.com", country="Germany"))
    assert resp.json()["countryCode"] == "DE"


def test_tags_in_contact_body_replace_existing_tags(sandbox, http):
    http.post(sandbox.url + "contacts", headers=HEADERS, json=contact("t@example.com", tags=["a", "b"]))
    resp = http.post(sandbox.url + "contacts", headers=HEADERS, json=contact("t@example.com", tags=["c"]))
    assert resp.json()["tags"] == ["c"]
    resp = http.post(sandbox.url + "contacts", headers=HEADERS, json=contact("t@example.com", firstName="T"))
    assert resp.json()["tags"] == ["c"]  # no tags given: unchanged


def test_older_status_change_does_not_override_newer(sandbox, http):
    def write(status, at):
        body = {"identifiers": [{"type": "email", "id": "s@example.com", "sendWelcomeMessage": False,
                                 "channels": {"email": {"status": status, "statusChangedAt": at}}}]}
        return http.post(sandbox.url + "contacts", headers=HEADERS, json=body).json()

    assert write("subscribed", "2024-05-01T10:00:00Z")["status"] == "subscribed"
    assert write("nonSubscribed", "2023-01-01T00:00:00Z")["status"] == "subscribed"  # older: ignored
    assert write("unsubscribed", "2025-01-01T00:00:00+00:00")["status"] == "unsubscribed"  # newer: wins


def test_send_welcome_message_defaults_to_true_and_is_counted(sandbox, http):
    body = {"identifiers": [{"type": "email", "id": "w1@example.com"}]}
    assert http.post(sandbox.url + "contacts", headers=HEADERS, json=body).status_code == 201
    assert http.post(sandbox.url + "contacts", headers=HEADERS, json=contact("w2@example.com")).status_code == 201
    explicit = {"identifiers": [{"type": "email", "id": "w3@example.com", "sendWelcomeMessage": True}]}
    http.post(sandbox.url + "contacts", headers=HEADERS, json=explicit)
    assert sandbox.stats(BRAND)["welcomeMessagesSent"] == 2
    # a new contact without channels is not subscribed: exporting is not consent
    assert {c["email"]: c["status"] for c in sandbox.contacts(BRAND)}["w1@example.com"] == "nonSubscribed"


def test_list_contacts_paging_and_filters(sandbox, http):
    for i in range(7):
        tags = ["even"] if i % 2 == 0 else ["odd"]
        http.post(sandbox.url + "contacts", headers=HEADERS, json=contact(f"p{i}@example.com", tags=tags))
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"after": after} if after else {})}
        body = http.get(sandbox.url + "contacts", headers=HEADERS, params=params).json()
        pages += 1
        assert body["paging"]["limit"] == 3
        seen += [c["email"] for c in body["contacts"]]
        if not body["paging"]["hasMore"]:
            break
        after = body["paging"]["cursors"]["after"]
    assert pages == 3 and seen == [f"p{i}@example.com" for i in range(7)]

    default = http.get(sandbox.url + "contacts", headers=HEADERS).json()
    assert default["paging"]["limit"] == 100 and len(default["contacts"]) == 7
    one = http.get(sandbox.url + "contacts", headers=HEADERS, params={"email": "P3@Example.com"}).json()
    assert [c["email"] for c in one["contacts"]] == ["p3@example.com"]
    even = http.get(sandbox.url + "contacts", headers=HEADERS, params={"tag": "even"}).json()
    assert len(even["contacts"]) == 4
    status = http.get(sandbox.url + "contacts", headers=HEADERS, params={"status": "nonSubscribed"}).json()
    assert len(status["contacts"]) == 7


@pytest.mark.parametrize("params, field", [
    ({"limit": 0}, "limit"), ({"limit": 251}, "limit"), ({"limit": "ten"}, "limit"),
    ({"tag": "even", "status": "subscribed"}, "tag"), ({"status": "maybe"}, "status"),
    ({"after": "garbage!"}, "after"),
])
def test_list_contacts_rejects_bad_parameters(sandbox, http, params, field):
    problem = assert_problem(http.get(sandbox.url + "contacts", headers=HEADERS, params=params), 400)
    assert field in fields(problem)


# ---- tags ----


def test_tags_are_added_and_removed_asynchronously(sandbox, http):
    for email in ("a@example.com", "b@example.com"):
        http.post(sandbox.url + "contacts", headers=HEADERS, json=contact(email, tags=["keep"]))
    resp = http.post(sandbox.url + "contacts/tags", headers=HEADERS,
                     json={"tags": ["vip", "segment 1"], "emails": ["A@example.com", "b@example.com",
                                                                    "nobody@example.com"]})
    assert resp.status_code == 202 and resp.content == b""
    assert sandbox.wait_idle(2)
    assert {c["email"]: c["tags"] for c in sandbox.contacts(BRAND)} == {
        "a@example.com": ["keep", "vip", "segment 1"], "b@example.com": ["keep", "vip", "segment 1"]}
    assert len(sandbox.contacts(BRAND)) == 2  # unknown email silently ignored, not created

    resp = http.delete(sandbox.url + "contacts/tags", headers=HEADERS, json={"tags": ["vip"], "emails": ["a@example.com"]})
    assert resp.status_code == 202
    assert sandbox.wait_idle(2)
    assert {c["email"]: c["tags"] for c in sandbox.contacts(BRAND)}["a@example.com"] == ["keep", "segment 1"]


def test_tags_are_not_applied_synchronously(http):
    with SandboxServer(api_keys={KEY: BRAND}, tags_delay_seconds=0.3) as srv:
        http.post(srv.url + "contacts", headers=HEADERS, json=contact("late@example.com"))
        http.post(srv.url + "contacts/tags", headers=HEADERS, json={"tags": ["x"], "emails": ["late@example.com"]})
        assert srv.contacts(BRAND)[0]["tags"] == []
        assert srv.wait_idle(2)
        assert srv.contacts(BRAND)[0]["tags"] == ["x"]


@pytest.mark.parametrize("body, expected", [
    ({"emails": ["a@example.com"]}, {"tags"}),
    ({"tags": [], "emails": ["a@example.com"]}, {"tags"}),
    ({"tags": ["t"] * 101, "emails": ["a@example.com"]}, {"tags"}),
    ({"tags": ["t"]}, {"emails"}),
    ({"tags": ["t"], "emails": [f"u{i}@example.com" for i in range(251)]}, {"emails"}),
    ({"tags": ["t"], "emails": ["not-an-email"], "colour": 1}, {"emails[0]", "colour"}),
    ({"tags": [7, "ok"], "emails": "a@example.com"}, {"tags[0]", "emails"}),
])
def test_tags_validation(sandbox, http, body, expected):
    for method in (http.post, http.delete):
        problem = assert_problem(method(sandbox.url + "contacts/tags", headers=HEADERS, json=body), 400)
        assert expected <= fields(problem)


# ---- batches ----


def test_batch_lifecycle_pending_to_finished_with_per_item_results(http):
    with SandboxServer(api_keys={KEY: BRAND}, batch_delay_seconds=0.15, batch_item_delay_seconds=0.03) as srv:
        items = [contact(f"b{i}@example.com") for i in range(4)]
        items.insert(2, {"identifiers": [{"type": "email", "id": "broken"}]})
        resp = http.post(srv.url + "batches", headers=HEADERS,
                         json={"endpoint": "contacts", "method": "POST", "items": items, "origin": "tests"})
        assert resp.status_code == 201, resp.text
        created = resp.json()
        assert created["totalCount"] == 5 and re.fullmatch(r"[0-9a-f]{24}", created["batchID"])
        batch_id = created["batchID"]

        seen = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            body = http.get(srv.url + f"batches/{batch_id}", headers=HEADERS).json()
            if not seen or seen[-1] != body["status"]:
                seen.append(body["status"])
            if body["status"] in ("finished", "stopped"):
                break
            time.sleep(0.01)
        assert seen == ["pending", "inProgress", "finished"]
        assert body["endpoint"] == "contacts" and body["method"] == "POST" and body["origin"] == "tests"
        assert (body["totalCount"], body["finishedCount"], body["errorsCount"]) == (5, 5, 1)
        assert body["createdAt"] and body["startedAt"] and body["endedAt"]
        assert "responses" not in body

        detail = http.get(srv.url + f"batches/{batch_id}/items", headers=HEADERS).json()
        assert detail["status"] == "finished"
        assert [r["itemID"] for r in detail["responses"]] == ["0", "1", "3", "4"]
        assert all(r["responseCode"] == 201 and r["response"]["email"] == r["request"]["identifiers"][0]["id"]
                   for r in detail["responses"])
        [error] = detail["errors"]
        assert error["itemID"] == "2" and error["responseCode"] == 400
        assert error["response"]["errors"][0]["field"] == "identifiers[0].id"
        assert error["request"] == items[2]
        assert {"itemID", "request", "response", "responseCode", "status"} <= error.keys()
        assert sorted(c["email"] for c in srv.contacts(BRAND)) == [f"b{i}@example.com" for i in range(4)]


def test_batch_items_upsert_like_post_contacts(sandbox, http):
    http.post(sandbox.url + "contacts", headers=HEADERS, json=contact("old@example.com", firstName="Old", tags=["x"]))
    items = [contact("OLD@example.com", lastName="Updated"), {"identifiers": [{"type": "email", "id": "new@example.com"}]}]
    batch_id = http.post(sandbox.url + "batches", headers=HEADERS,
                         json={"endpoint": "contacts", "method": "POST", "items": items}).json()["batchID"]
    assert wait_batch(http, sandbox.url, batch_id)["status"] == "finished"
    detail = http.get(sandbox.url + f"batches/{batch_id}/items", headers=HEADERS).json()
    assert [r["responseCode"] for r in detail["responses"]] == [200, 201]
    by_email = {c["email"]: c for c in sandbox.contacts(BRAND)}
    assert by_email["old@example.com"]["firstName"] == "Old" and by_email["old@example.com"]["lastName"] == "Updated"
    assert by_email["old@example.com"]["tags"] == ["x"]
    assert sandbox.stats(BRAND)["welcomeMessagesSent"] == 1  # the batch item without the flag


@pytest.mark.parametrize("body, field", [
    ({"endpoint": "contacts", "method": "POST", "items": []}, "items"),
    ({"endpoint": "contacts", "method": "POST", "items": [contact(f"x{i}@example.com") for i in range(101)]}, "items"),
    ({"endpoint": "contacts", "method": "PATCH", "items": [contact("a@example.com")]}, "method"),
    ({"endpoint": "orders", "method": "POST", "items": [contact("a@example.com")]}, "endpoint"),
    ({"method": "POST", "items": [contact("a@example.com")]}, "endpoint"),
    ({"endpoint": "contacts", "method": "POST", "items": [contact("a@example.com")], "eventID": "x"}, "eventID"),
])
def test_batch_envelope_validation(sandbox, http, body, field):
    problem = assert_problem(http.post(sandbox.url + "batches", headers=HEADERS, json=body), 400)
    assert field in fields(problem)
    assert sandbox.stats(BRAND)["batchesCreated"] == 0


def test_batch_for_other_endpoints_is_refused_with_422(sandbox, http):
    body = {"endpoint": "products", "method": "POST", "items": [{"productID": "p1"}]}
    assert_problem(http.post(sandbox.url + "batches", headers=HEADERS, json=body), 422)


def test_batch_stops_when_more_than_half_fail(sandbox, http):
    items = [{"identifiers": [{"type": "email", "id": f"bad{i}"}]} for i in range(20)]
    items += [contact(f"good{i}@example.com") for i in range(10)]
    batch_id = http.post(sandbox.url + "batches", headers=HEADERS,
                         json={"endpoint": "contacts", "method": "POST", "items": items}).json()["batchID"]
    body = wait_batch(http, sandbox.url, batch_id)
    assert body["status"] == "stopped"
    assert body["errorsCount"] == 16 and body["finishedCount"] == 16  # 16 > 30/2 and >= 10
    detail = http.get(sandbox.url + f"batches/{batch_id}/items", headers=HEADERS).json()
    assert len(detail["errors"]) == 16 and detail["responses"] == []
    assert sandbox.contacts(BRAND) == []  # the good items after the stop were never processed


def test_few_errors_do_not_stop_a_batch(sandbox, http):
    items = [{"identifiers": [{"type": "email", "id": f"bad{i}"}]} for i in range(9)]  # 9 of 9 fail, < 10
    batch_id = http.post(sandbox.url + "batches", headers=HEADERS,
                         json={"endpoint": "contacts", "method": "POST", "items": items}).json()["batchID"]
    body = wait_batch(http, sandbox.url, batch_id)
    assert (body["status"], body["errorsCount"], body["finishedCount"]) == ("finished", 9, 9)


def test_unknown_batch_is_404(sandbox, http):
    assert_problem(http.get(sandbox.url + "batches/0123456789abcdef01234567", headers=HEADERS), 404)
    assert_problem(http.get(sandbox.url + "batches/0123456789abcdef01234567/items", headers=HEADERS), 404)


def test_batches_are_per_brand(sandbox, http):
    sandbox.add_api_key("other-key", "brand-b")
    other = {**HEADERS, "Authorization": "Omnisend-API-Key other-key"}
    batch_id = http.post(sandbox.url + "batches", headers=HEADERS,
                         json={"endpoint": "contacts", "method": "POST", "items": [contact("a@example.com")]}).json()["batchID"]
    assert_problem(http.get(sandbox.url + f"batches/{batch_id}", headers=other), 404)


# ---- rate limits ----


def test_rate_limit_sliding_window_and_429_does_not_consume(http):
    with SandboxServer(api_keys={KEY: BRAND, "key-2": BRAND}, rate_limit=5, window_seconds=1) as srv:
        started = time.monotonic()
        for i in range(5):  # two keys of one brand share the budget
            key = KEY if i % 2 else "key-2"
            hdrs = {**HEADERS, "Authorization": f"Omnisend-API-Key {key}"}
            assert http.get(srv.url + "contacts", headers=hdrs, params={"limit": 1}).status_code == 200
        for _ in range(3):
            resp = http.get(srv.url + "contacts", headers=HEADERS)
            body = assert_problem(resp, 429)
            assert body["type"] == "https://problems.omnisend.com/rate-limit-exceeded"
            assert body["retryAfter"] == 1
            assert resp.headers["Retry-After"] == "1"
        stats = srv.stats(BRAND)
        assert (stats["requests"], stats["admitted"], stats["rateLimited"]) == (8, 5, 3)
        assert stats["byPath"]["GET /contacts"] == 8
        time.sleep(max(0.0, started + 1.05 - time.monotonic()))
        # the 429s did not consume budget: five fresh requests fit again
        assert [http.get(srv.url + "contacts", headers=HEADERS).status_code for _ in range(5)] == [200] * 5
        assert http.get(srv.url + "contacts", headers=HEADERS).status_code == 429


def test_tags_endpoints_have_their_own_lower_limit(http):
    with SandboxServer(api_keys={KEY: BRAND}, rate_limit=10, window_seconds=30, tags_rate_limit=2) as srv:
        body = {"tags": ["x"], "emails": ["a@example.com"]}
        assert http.post(srv.url + "contacts/tags", headers=HEADERS, json=body).status_code == 202
        assert http.delete(srv.url + "contacts/tags", headers=HEADERS, json=body).status_code == 202
        limited = assert_problem(http.post(srv.url + "contacts/tags", headers=HEADERS, json=body), 429)
        assert 1 <= limited["retryAfter"] <= 30
        # other endpoints still have budget; tags requests counted against it too (2 of 10 used)
        assert [http.get(srv.url + "contacts", headers=HEADERS).status_code for _ in range(8)] == [200] * 8
        assert http.get(srv.url + "contacts", headers=HEADERS).status_code == 429


def test_every_request_counts_including_errors_and_polling(http):
    with SandboxServer(api_keys={KEY: BRAND}, rate_limit=3, window_seconds=30) as srv:
        http.get(srv.url + "batches/0123456789abcdef01234567", headers=HEADERS)  # 404 counts
        http.get(srv.url + "contacts", headers={"Authorization": HEADERS["Authorization"]})  # 400 counts
        http.get(srv.url + "contacts", headers=HEADERS)
        assert_problem(http.get(srv.url + "contacts", headers=HEADERS), 429)


# ---- admin endpoints and fault hook ----


def test_admin_endpoints(sandbox, http):
    admin = sandbox.admin_url
    assert http.post(admin + "keys", json={"key": "fresh-key", "brand": "brand-z"}).status_code == 204
    hdrs = {**HEADERS, "Authorization": "Omnisend-API-Key fresh-key"}
    assert http.post(sandbox.url + "contacts", headers=hdrs, json=contact("z@example.com")).status_code == 201
    listed = http.get(admin + "brands/brand-z/contacts").json()["contacts"]
    assert [c["email"] for c in listed] == ["z@example.com"]
    stats = http.get(admin + "brands/brand-z/stats").json()
    assert stats["requests"] == 1 and stats["byPath"] == {"POST /contacts": 1}
    assert stats["welcomeMessagesSent"] == 0
    assert http.post(admin + "reset").status_code == 204
    assert http.get(admin + "brands/brand-z/contacts").json()["contacts"] == []
    assert http.post(sandbox.url + "contacts", headers=hdrs, json=contact("z@example.com")).status_code == 201


def test_fault_hook_forced_status_and_drop(sandbox, http):
    sandbox.faults.force_status(503)
    assert_problem(http.get(sandbox.url + "contacts", headers=HEADERS), 503)
    assert http.get(sandbox.url + "contacts", headers=HEADERS).status_code == 200
    sandbox.faults.drop_rate = 1.0
    with pytest.raises(requests.ConnectionError):
        http.get(sandbox.url + "contacts", headers=HEADERS)
    sandbox.faults.drop_rate = 0.0
    assert http.get(sandbox.url + "contacts", headers=HEADERS).status_code == 200
    assert sandbox.stats(BRAND)["faultsInjected"] == 2


def test_fault_hook_stops_batches(http):
    faults = Faults()
    faults.stop_batches_after = 1
    with SandboxServer(api_keys={KEY: BRAND}, faults=faults, batch_delay_seconds=0) as srv:
        items = [contact(f"f{i}@example.com") for i in range(3)]
        batch_id = http.post(srv.url + "batches", headers=HEADERS,
                             json={"endpoint": "contacts", "method": "POST", "items": items}).json()["batchID"]
        body = wait_batch(http, srv.url, batch_id)
        assert (body["status"], body["finishedCount"]) == ("stopped", 1)


def test_fault_hook_slow_answers_come_after_the_request_took_effect(sandbox, http):
    sandbox.faults.slow_rate, sandbox.faults.slow_seconds = 1.0, 0.6
    with pytest.raises(requests.Timeout):
        http.post(sandbox.url + "contacts", headers=HEADERS, json=contact("slow@example.com"), timeout=0.3)
    sandbox.faults.slow_rate = 0.0
    assert [c["email"] for c in sandbox.contacts(BRAND)] == ["slow@example.com"]  # it was written all the same
    assert sandbox.stats(BRAND)["faultsInjected"] == 1


def test_fault_hook_refuses_items_by_their_email(http):
    faults = Faults()
    faults.item_error_rate = 0.3
    emails = [f"Item{i}@example.com" for i in range(40)]
    refused = {e.lower() for e in emails if Faults.item_fails(e, 0.3)}
    assert 0 < len(refused) < 40 and Faults.item_fails("ITEM1@example.com", 0.3) == Faults.item_fails("item1@example.com", 0.3)
    with SandboxServer(api_keys={KEY: BRAND}, faults=faults, batch_delay_seconds=0, batch_stop_min_errors=100) as srv:
        batch_id = http.post(srv.url + "batches", headers=HEADERS, json={
            "endpoint": "contacts", "method": "POST", "items": [contact(e) for e in emails]}).json()["batchID"]
        wait_batch(http, srv.url, batch_id)
        body = http.get(srv.url + f"batches/{batch_id}/items", headers=HEADERS).json()
        assert body["status"] == "finished" and body["errorsCount"] == len(refused)
        assert {e["request"]["identifiers"][0]["id"].lower() for e in body["errors"]} == refused
        problem = body["errors"][0]["response"]
        assert body["errors"][0]["responseCode"] == 400 and problem["status"] == 400
        assert problem["errors"][0]["field"] == "identifiers[0].id"
        assert {c["email"] for c in srv.contacts(BRAND)} == {e.lower() for e in emails} - refused


def test_serves_many_requests_quickly(sandbox, http):
    started = time.monotonic()
    for i in range(300):
        assert http.post(sandbox.url + "contacts", headers=HEADERS, json=contact(f"m{i}@example.com")).status_code == 201
    assert time.monotonic() - started < 5
    assert len(sandbox.contacts(BRAND)) == 300
