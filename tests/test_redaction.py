"""Key scrubbing covers every form (#14 item 13): no copy of an API key, whole or in part, in any
case or escaping, reaches a log record, an API answer or a run's stored error; and a key read back
from the key store that an HTTP header cannot carry is refused before any request."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from exporter.api.http import problem
from exporter.blueprints.http_api import to_http_response
from exporter.logs import get_logger
from exporter.omnisend import OmnisendClient, OmnisendKeyUnusable
from exporter.redaction import Redactor, register_secret
from tests.apphelpers import create_connection, create_export, start_run, wait_for_run
from tests.conftest import TEST_BRAND

KEY = 'omni-9f3c2a71"b\\e4d8-5a6b7c8d9e0f1a2b'  # a quote and a backslash: JSON escapes them


def forms_of(key: str) -> list[str]:
    return [key, key.upper(), key.lower(), json.dumps(key)[1:-1], quote(key, safe=""), repr(key), key[:14],
            key[-13:], key[5:25], json.dumps({"detail": f"bad key {key}"})]


def test_every_form_and_part_of_a_key_is_hidden():
    redactor = Redactor()
    redactor.add(KEY)
    for form in forms_of(KEY):
        text = redactor.scrub(f"Omnisend said: {form} (request 42)")
        assert text.startswith("Omnisend said: ") and text.endswith(" (request 42)") and "***" in text, text
        leftover = text.removeprefix("Omnisend said: ").removesuffix(" (request 42)").replace("***", "")
        assert not any(part in KEY.casefold() for part in _runs(leftover.casefold(), 6)), (form, text)
    assert redactor.scrub("nothing secret here, 9f3c2a71 alone is too short to hide") == \
        "nothing secret here, 9f3c2a71 alone is too short to hide"


def _runs(text: str, n: int) -> list[str]:
    return [text[i:i + n] for i in range(len(text) - n + 1) if text[i:i + n].strip('"\\\' ()')]


def test_log_records_and_tracebacks_of_the_apps_loggers_are_scrubbed(caplog):
    register_secret(KEY)
    log = get_logger("exporter.test_redaction")
    caplog.set_level(logging.INFO)
    log.warning("key was %s / %s", KEY.upper(), json.dumps(KEY))
    try:
        raise RuntimeError(f"failed with {KEY[3:30]}")
    except RuntimeError:
        log.exception("it failed")
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records) + caplog.text
    assert "***" in text and "it failed" in text and "RuntimeError" in text
    for form in (KEY, KEY.upper(), json.dumps(KEY)[1:-1], KEY[3:30], KEY[10:24]):
        assert form.casefold() not in text.casefold()


def test_an_api_answer_quoting_a_key_never_shows_it():
    register_secret(KEY)
    res = to_http_response(problem(422, "Rejected", f"Omnisend: the key {KEY.lower()} is revoked"))
    body = res.get_body().decode()
    assert "***" in body and "is revoked" in body
    for form in (KEY.lower(), json.dumps(KEY)[1:-1].lower(), KEY[:20].lower()):
        assert form not in body.lower()


def test_a_key_a_header_cannot_carry_is_refused_before_any_request():
    for key in ("kéy-with-an-accent-0123", "two words-0123456789", "line\nbreak-0123456789"):
        try:
            OmnisendClient(key)
        except OmnisendKeyUnusable as e:
            assert key not in str(e) and "exactly as Omnisend shows it" in str(e)
        else:
            raise AssertionError(f"{key!r} was accepted")
    OmnisendClient("  visible-ascii-key-0123\n")  # surrounding whitespace (a pasted newline) is trimmed


def test_a_stored_key_that_is_not_visible_ascii_fails_its_batches_without_a_request(services, workers, sandbox,
                                                                                     segment_container):
    from devtools.sample_segment import generate_profiles, write_segment_refresh

    write_segment_refresh(segment_container, folder="ci", segment="Seg", profiles=list(generate_profiles(20, seed=3)),
                          when=datetime.now(timezone.utc) - timedelta(minutes=5))
    conn = create_connection("sandbox-test-key-0123456789")
    export = create_export(conn["id"], segment_container.container_name, "ci", "Seg")
    bad = "sandbox-test-key-01234\u200b56789"  # someone edited the secret: a zero-width space inside
    services.secrets.set(services.connections.get(conn["id"]).secret_name, bad)
    before = sandbox.stats(TEST_BRAND)["requests"]  # the key's check when the connection was made
    run = wait_for_run(start_run(export["id"])["runId"])
    c = run["counts"]
    assert run["status"] == "failed" and c["confirmed"] == 0 and c["failed"] == c["queued"] > 0
    assert c["failedByReason"] == {"not sent: the stored API key is unusable": c["queued"]}
    assert sandbox.stats(TEST_BRAND)["requests"] == before
    assert bad not in json.dumps(run)
