"""The production Omnisend client against the sandbox, over real HTTP."""

from __future__ import annotations

import json
import logging
import pickle
import socket
import time

import pytest
import requests

from devtools.omnisend_sandbox import SandboxServer
from exporter.omnisend import (
    BatchInfo,
    BatchItemResult,
    OmnisendAuthError,
    OmnisendClient,
    OmnisendError,
    OmnisendNoAnswer,
    OmnisendNotFound,
    OmnisendRateLimited,
    OmnisendUnavailable,
    OmnisendValidationError,
    OmnisendVersionRetired,
    OmnisendWriteUnconfirmed,
)
from exporter.omnisend import client as client_module
from exporter.omnisend import errors as errors_module
from tests.omnisend_extra import ReadingClient

SECRET = "sk-live-SECRET-5f2c9a7e1b"
BRAND = "brand-client"


@pytest.fixture(scope="module")
def server():
    with SandboxServer(api_keys={SECRET: BRAND}, batch_delay_seconds=0.02, tags_delay_seconds=0.02) as srv:
        yield srv


@pytest.fixture
def sandbox(server):
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def client(sandbox):
    with ReadingClient(SECRET, base_url=sandbox.url, timeout=5) as c:
        yield c


def contact(email: str, **extra) -> dict:
    body = {"identifiers": [{"type": "email", "id": email, "sendWelcomeMessage": False,
                             "channels": {"email": {"status": "nonSubscribed"}}}]}
    body.update(extra)
    return body


def assert_no_secret(error: BaseException) -> None:
    for text in (str(error), repr(error), str(error.args), str(getattr(error, "problem", ""))):
        assert SECRET not in text
    assert error.__cause__ is None or SECRET not in repr(error.__cause__)


def wait_done(client: OmnisendClient, batch_id: str, timeout: float = 5.0) -> BatchInfo:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.get_batch(batch_id)
        if info.is_done:
            return info
        time.sleep(0.02)
    raise AssertionError("batch did not finish")


# ---- operations ----


def test_check_key_and_base_url_with_or_without_slash(sandbox):
    for base in (sandbox.url, sandbox.url.rstrip("/")):
        with ReadingClient(SECRET, base_url=base, timeout=5) as c:
            assert c.check_key() is None
    stats = sandbox.stats(BRAND)
    assert stats["byPath"] == {"GET /contacts": 2} and stats["byStatus"] == {"200": 2}


def test_upsert_contact(client, sandbox):
    created = client.upsert_contact(contact("Grace@Example.com", firstName="Grace"))
    assert created["email"] == "grace@example.com" and len(created["id"]) == 24
    updated = client.upsert_contact(contact("grace@example.com", lastName="Hopper"))
    assert updated["id"] == created["id"] and updated["firstName"] == "Grace" and updated["lastName"] == "Hopper"
    assert sandbox.stats(BRAND)["welcomeMessagesSent"] == 0


def test_batch_round_trip(client, sandbox):
    items = [contact(f"c{i}@example.com") for i in range(5)]
    items[3] = {"identifiers": [{"type": "email", "id": "broken-address"}]}
    batch_id = client.create_batch(items, origin="client-tests")
    info = wait_done(client, batch_id)
    assert info == BatchInfo(batch_id=batch_id, status="finished", total_count=5, finished_count=5, errors_count=1)
    results = client.get_batch_items(batch_id)
    assert [r.item_id for r in results] == ["0", "1", "2", "3", "4"]
    assert [r.ok for r in results] == [True, True, True, False, True]
    failed = results[3]
    assert failed.email == "broken-address" and failed.response_code == 400
    assert failed.response["errors"][0]["field"] == "identifiers[0].id"
    assert results[0].email == "c0@example.com" and results[0].response["email"] == "c0@example.com"
    assert len(sandbox.contacts(BRAND)) == 4


def test_stopped_batch_is_done(client):
    items = [{"identifiers": [{"type": "email", "id": f"bad{i}"}]} for i in range(12)]
    info = wait_done(client, client.create_batch(items))
    assert info.status == "stopped" and info.is_done
    assert not BatchInfo("x", "inProgress", 1, 0, 0).is_done and not BatchInfo("x", "pending", 1, 0, 0).is_done


def test_create_batch_refuses_empty_or_oversized_batches_locally(client, sandbox):
    with pytest.raises(ValueError):
        client.create_batch([])
    with pytest.raises(ValueError, match="at most 100"):
        client.create_batch([contact(f"x{i}@example.com") for i in range(101)])
    assert sandbox.stats(BRAND)["requests"] == 0
    client.create_batch([contact(f"x{i}@example.com") for i in range(100)])


def test_iter_contacts_follows_cursors_and_filters(client, sandbox):
    for i in range(7):
        client.upsert_contact(contact(f"i{i}@example.com", tags=["odd"] if i % 2 else ["even"]))
    assert [c["email"] for c in client.iter_contacts(page_size=3)] == [f"i{i}@example.com" for i in range(7)]
    assert sandbox.stats(BRAND)["byPath"]["GET /contacts"] == 3
    assert [c["email"] for c in client.iter_contacts(email="I4@example.com")] == ["i4@example.com"]
    assert len(list(client.iter_contacts(tag="odd"))) == 3
    with pytest.raises(ValueError):
        list(client.iter_contacts(page_size=251))


def test_add_and_remove_tags(client, sandbox):
    client.upsert_contact(contact("t1@example.com"))
    client.upsert_contact(contact("t2@example.com"))
    client.add_tags(["vip", "spring-2026"], ["t1@example.com", "t2@example.com", "ghost@example.com"])
    assert sandbox.wait_idle(2)
    client.remove_tags(["vip"], ["t2@example.com"])
    assert sandbox.wait_idle(2)
    assert {c["email"]: c["tags"] for c in sandbox.contacts(BRAND)} == {
        "t1@example.com": ["vip", "spring-2026"], "t2@example.com": ["spring-2026"]}
    with pytest.raises(ValueError):
        client.add_tags([], ["t1@example.com"])
    with pytest.raises(ValueError):
        client.add_tags(["x"], [f"u{i}@example.com" for i in range(251)])
    with pytest.raises(TypeError):
        client.remove_tags("vip", ["t1@example.com"])


# ---- typed errors ----


def test_bad_key_raises_auth_error_without_the_key(sandbox):
    wrong = SECRET + "-revoked"
    with ReadingClient(wrong, base_url=sandbox.url, timeout=5) as c:
        with pytest.raises(OmnisendAuthError) as caught:
            c.check_key()
    err = caught.value
    assert err.status == 401 and err.request_id.startswith("urn:omnisend:request:")
    assert "rejected the API key" in str(err) and "update" in str(err)
    assert wrong not in str(err) and wrong not in repr(err)
    assert_no_secret(err)


def test_forbidden_is_an_auth_error(client, sandbox):
    sandbox.faults.force_status(403)
    with pytest.raises(OmnisendAuthError) as caught:
        client.upsert_contact(contact("a@example.com"))
    assert caught.value.status == 403 and "permission" in str(caught.value)
    assert_no_secret(caught.value)


def test_validation_error_lists_fields(client):
    with pytest.raises(OmnisendValidationError) as caught:
        client.upsert_contact({"identifiers": [{"type": "email", "id": "nope"}], "countryCode": "XX"})
    err = caught.value
    assert err.status == 400
    assert {e["field"] for e in err.errors} == {"identifiers[0].id", "countryCode"}
    assert "countryCode (invalid_value)" in str(err)
    assert err.problem["type"] == "https://problems.omnisend.com/validation-failed"
    assert_no_secret(err)


def test_unprocessable_is_a_validation_error(client):
    with pytest.raises(OmnisendValidationError) as caught:
        client.create_batch([{"productID": "p"}], endpoint="products")
    assert caught.value.status == 422


def test_unknown_batch_is_not_found(client):
    with pytest.raises(OmnisendNotFound) as caught:
        client.get_batch("0123456789abcdef01234567")
    assert caught.value.status == 404
    with pytest.raises(OmnisendNotFound):
        client.get_batch_items("no/such batch")  # quoted into one path segment
    assert_no_secret(caught.value)


def test_retired_version_raises_version_retired(client, monkeypatch):
    monkeypatch.setattr(client_module, "OMNISEND_API_VERSION", "v5")
    monkeypatch.setattr(errors_module, "OMNISEND_API_VERSION", "v5")
    with pytest.raises(OmnisendVersionRetired) as caught:
        client.check_key()
    assert caught.value.status == 410 and "Upgrade" in str(caught.value)
    assert_no_secret(caught.value)


def test_rate_limited_carries_retry_after():
    with SandboxServer(api_keys={SECRET: BRAND}, rate_limit=2, window_seconds=20) as srv:
        with ReadingClient(SECRET, base_url=srv.url, timeout=5) as c:
            c.check_key()
            c.check_key()
            with pytest.raises(OmnisendRateLimited) as caught:
                c.check_key()
    err = caught.value
    assert err.status == 429 and 1 <= err.retry_after <= 20 and isinstance(err.retry_after, float)
    assert_no_secret(err)


def test_server_error_is_unavailable(client, sandbox):
    sandbox.faults.force_status(500)
    with pytest.raises(OmnisendUnavailable) as caught:
        client.create_batch([contact("a@example.com")])
    assert caught.value.status == 500 and "may or may not have taken effect" in str(caught.value)
    assert_no_secret(caught.value)


@pytest.mark.parametrize("status,unconfirmed", [(500, True), (502, True), (504, True), (501, False), (503, False),
                                                 (505, False)])
def test_a_server_error_to_a_write_is_unconfirmed_unless_it_says_the_request_was_not_done(client, sandbox, status,
                                                                                          unconfirmed):
    sandbox.faults.force_status(status)
    with pytest.raises(OmnisendUnavailable) as caught:
        client.create_batch([contact("a@example.com")])
    assert isinstance(caught.value, OmnisendWriteUnconfirmed) is unconfirmed and caught.value.status == status
    assert ("may or may not have taken effect" in str(caught.value)) is unconfirmed
    sandbox.faults.force_status(status)
    with pytest.raises(OmnisendUnavailable) as read:
        client.get_batch_result("b-1")  # a read changes nothing: never unconfirmed
    assert not isinstance(read.value, OmnisendWriteUnconfirmed)


def test_other_statuses_are_plain_omnisend_errors(client, sandbox):
    sandbox.faults.force_status(409)
    with pytest.raises(OmnisendError) as caught:
        client.upsert_contact(contact("a@example.com"))
    assert type(caught.value) is OmnisendError and caught.value.status == 409


def test_dropped_connection_is_unavailable(client, sandbox):
    sandbox.faults.drop_rate = 1.0
    with pytest.raises(OmnisendUnavailable) as caught:
        client.check_key()
    assert caught.value.status is None
    assert_no_secret(caught.value)


def test_timeout_is_unavailable():
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        port = listener.getsockname()[1]
        with ReadingClient(SECRET, base_url=f"http://127.0.0.1:{port}/api/", timeout=0.3) as c:
            started = time.monotonic()
            with pytest.raises(OmnisendUnavailable) as caught:
                c.check_key()
            assert time.monotonic() - started < 3
    assert "did not answer in time" in str(caught.value)
    assert_no_secret(caught.value)


def test_a_write_without_an_answer_has_an_unknown_outcome(client, sandbox):
    """A POST that went out and was not answered (too late, or the connection closed after it) may have
    been done: OmnisendNoAnswer; a read or a request that never connected is only unavailable."""
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        port = listener.getsockname()[1]
        with ReadingClient(SECRET, base_url=f"http://127.0.0.1:{port}/api/", timeout=5) as c:
            started = time.monotonic()
            with pytest.raises(OmnisendNoAnswer) as caught:
                c.create_batch([contact("a@example.com")], timeout=0.3)  # the call's own wait, not the client's
            assert time.monotonic() - started < 3
            assert "0.3s" in str(caught.value) and "may or may not have taken effect" in str(caught.value)
            with pytest.raises(OmnisendUnavailable) as caught:
                c.check_key()
            assert not isinstance(caught.value, OmnisendNoAnswer)
    sandbox.faults.drop_rate, sandbox.faults.drop_after_processing = 1.0, True
    with pytest.raises(OmnisendNoAnswer) as caught:
        client.create_batch([contact("a@example.com")])
    assert "closed before it answered" in str(caught.value)
    assert_no_secret(caught.value)


def test_connection_refused_is_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with ReadingClient(SECRET, base_url=f"http://127.0.0.1:{port}/api/", timeout=2) as c:
        with pytest.raises(OmnisendUnavailable) as caught:
            c.upsert_contact(contact("a@example.com"))
    assert "Could not reach Omnisend" in str(caught.value)
    assert not isinstance(caught.value, OmnisendNoAnswer)  # it never connected: nothing was sent
    assert_no_secret(caught.value)


def test_errors_survive_pickling(client):
    with pytest.raises(OmnisendValidationError) as caught:
        client.upsert_contact({"identifiers": []})
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is OmnisendValidationError
    assert (copy.status, copy.errors, str(copy)) == (400, caught.value.errors, str(caught.value))


# ---- tolerance, via canned responses ----


class CannedAdapter(requests.adapters.BaseAdapter):
    """Answers every request with the given status, JSON body and headers; records the requests."""

    def __init__(self, status: int, body: object, headers: dict | None = None) -> None:
        super().__init__()
        self.status, self.body, self.headers, self.seen = status, body, headers or {}, []

    def send(self, request, **kwargs):
        self.seen.append((request, kwargs))
        resp = requests.Response()
        resp.status_code = self.status
        resp._content = json.dumps(self.body).encode() if self.body is not None else b""
        resp.headers.update({"Content-Type": "application/json", **self.headers})
        resp.url, resp.request = request.url, request
        return resp

    def close(self):
        pass


def canned_client(status, body, headers=None):
    session = requests.Session()
    adapter = CannedAdapter(status, body, headers)
    session.mount("https://", adapter)
    return ReadingClient(SECRET, timeout=7, session=session), adapter


def test_every_request_sends_both_headers_and_a_timeout():
    client, adapter = canned_client(200, {"contacts": [], "paging": {"hasMore": False}})
    client.check_key()
    request, kwargs = adapter.seen[0]
    assert request.url == "https://api.omnisend.com/api/contacts?limit=1"
    assert request.headers["Authorization"] == f"Omnisend-API-Key {SECRET}"
    assert request.headers["Omnisend-Version"] == "2026-03-15"
    assert kwargs["timeout"] == 7


def test_batch_items_under_an_unexpected_key_are_read_and_logged(caplog):
    rows = [{"itemID": "1", "request": contact("b@example.com"), "response": {"email": "b@example.com"},
             "responseCode": 201, "status": "finished"},
            {"itemID": "0", "request": contact("a@example.com"), "response": {"status": 400},
             "responseCode": 400, "status": "finished"}]
    client, _ = canned_client(200, {"batchID": "b1", "status": "finished", "items": rows})
    with caplog.at_level(logging.WARNING, logger="exporter.omnisend"):
        results = client.get_batch_items("b1")
    assert [(r.item_id, r.ok, r.email) for r in results] == [("0", False, "a@example.com"), ("1", True, "b@example.com")]
    assert "unexpected key(s) items" in caplog.text
    assert "example.com" not in caplog.text  # no personal data in the log


def test_retry_after_falls_back_to_header_then_sixty_seconds():
    client, _ = canned_client(429, {"type": "https://problems.omnisend.com/rate-limit-exceeded", "status": 429},
                              {"Retry-After": "7"})
    with pytest.raises(OmnisendRateLimited) as caught:
        client.check_key()
    assert caught.value.retry_after == 7.0
    client, _ = canned_client(429, None)
    with pytest.raises(OmnisendRateLimited) as caught:
        client.check_key()
    assert caught.value.retry_after == 60.0
    client, _ = canned_client(429, {"retryAfter": 2.5}, {"Retry-After": "9"})
    with pytest.raises(OmnisendRateLimited) as caught:
        client.check_key()
    assert caught.value.retry_after == 2.5


def test_batch_item_result_properties():
    item = BatchItemResult.from_api({"itemID": 3, "request": {"identifiers": [{"type": "phone", "id": "+37060000000"}]},
                                     "responseCode": "204"})
    assert (item.item_id, item.ok, item.email, item.response) == ("3", True, None, None)
    assert not BatchItemResult(None, None, None, None, None).ok


# ---- the key never leaks ----


def test_api_key_never_appears_in_errors_reprs_or_logs(sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    with ReadingClient(SECRET, base_url=sandbox.url, timeout=5) as c:
        assert SECRET not in repr(c) and SECRET not in str(vars(c).get("base_url"))
        c.check_key()
        batch_id = c.create_batch([contact("leak@example.com")])
        wait_done(c, batch_id)
        c.get_batch_items(batch_id)
        calls = [
            lambda: c.upsert_contact({"identifiers": [{"type": "email", "id": SECRET}]}),  # echo attempt
            lambda: c.add_tags([SECRET + "!"], ["x@example.com"]),
            lambda: c.get_batch("0123456789abcdef01234567"),
            lambda: (sandbox.faults.force_status(503), c.check_key()),
        ]
        for call in calls:
            with pytest.raises(OmnisendError) as caught:
                call()
            errors.append(caught.value)
    with ReadingClient(SECRET, base_url=sandbox.url + "nowhere/", timeout=5) as c:
        with pytest.raises(OmnisendError) as caught:
            c.check_key()
        errors.append(caught.value)
    with ReadingClient(SECRET + "x", base_url=sandbox.url, timeout=5) as c:
        with pytest.raises(OmnisendAuthError) as caught:
            c.check_key()
        errors.append(caught.value)
    for error in errors:
        assert_no_secret(error)
    assert caplog.records, "expected debug logs from the client and urllib3"
    assert SECRET not in caplog.text
