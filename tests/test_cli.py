"""CLI parity: ``python -m exporter connections|exports|run`` in a separate process, acting as the local
Admin of the development mode against the local runner's HTTP server (the ``workers`` fixture), which
serves the app's own functions on Azurite with the Omnisend sandbox behind them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from devtools.sample_segment import generate_profiles, write_segment_refresh
from exporter.state.secrets import SecretNotFoundError
from tests.apphelpers import call
from tests.conftest import TEST_API_KEY, TEST_BRAND

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, key: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OMNISEND_API_KEY", "EXPORTER_DEV_MODE")}
    if key is not None:
        env["OMNISEND_API_KEY"] = key
    done = subprocess.run([sys.executable, "-m", "exporter", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    for key_value in (TEST_API_KEY, key):
        if key_value:
            assert key_value not in done.stdout + done.stderr  # the CLI never shows a key either
    return done


@pytest.fixture
def segment(segment_container):
    profiles = list(generate_profiles(150, seed=4, invalid_share=0.02))
    write_segment_refresh(segment_container, folder="ci", segment="CliSeg", profiles=profiles,
                          when=datetime.now(timezone.utc) - timedelta(minutes=5))
    return segment_container.container_name


def test_connections_exports_and_run_from_the_command_line(services, workers, sandbox, segment):
    url = workers.url

    # connections add (the key from OMNISEND_API_KEY), list
    done = cli("connections", "add", "--url", url, "--name", "CLI Omnisend", "--consent", key=TEST_API_KEY)
    assert done.returncode == 0, done.stderr
    conn = json.loads(done.stdout)
    assert conn["displayName"] == "CLI Omnisend" and conn["consentedBy"] == "local-admin@dev"
    assert conn["allowContributors"] is False and "apiKey" not in conn
    assert services.secrets.get(services.connections.get(conn["id"]).secret_name) == TEST_API_KEY
    done = cli("connections", "--url", url, "add", "--name", "Shared", "--consent", "--allow-contributors",
               "--max-profiles", "5000", key=TEST_API_KEY)
    assert done.returncode == 0, done.stderr
    shared = json.loads(done.stdout)
    assert shared["allowContributors"] is True and shared["maxProfilesPerExport"] == 5000
    done = cli("connections", "list", "--url", url)
    assert done.returncode == 0, done.stderr
    assert f"{conn['id']}  CLI Omnisend  (admins only)" in done.stdout.splitlines()
    assert f"{shared['id']}  Shared  (admins and contributors)" in done.stdout.splitlines()

    # exports add, list, show
    done = cli("exports", "add", "--url", url, "--name", "VIP", "--connection", conn["id"], "--container", segment,
               "--folder", "ci", "--segment", "CliSeg", "--map", "email=PrimaryEmail", "--map", "firstName=FirstName",
               "--map", "country=Country")
    assert done.returncode == 0, done.stderr
    export = json.loads(done.stdout)
    assert export["mapping"] == {"email": "PrimaryEmail", "firstName": "FirstName", "country": "Country"}
    assert export["notices"] == [] and export["enabled"] is True
    done = cli("exports", "list", "--url", url)
    assert f"{export['id']}  VIP  segment CliSeg  enabled" in done.stdout.splitlines()
    listed = json.loads(cli("exports", "list", "--url", url, "--output", "json").stdout)
    assert [x["id"] for x in listed] == [export["id"]]
    listed = json.loads(cli("connections", "list", "--url", url, "--output", "json").stdout)
    assert {c["id"] for c in listed} == {conn["id"], shared["id"]} and all("apiKey" not in c for c in listed)
    done = cli("exports", "show", export["id"], "--url", url)
    assert done.returncode == 0 and json.loads(done.stdout) == call("export", "GET", "", route_params={
        "id": export["id"]})[1]

    # run --wait: progress until the run ends, then the counts
    done = cli("run", export["id"], "--wait", "--url", url, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = re.search(r"^Run (\w+) queued\.$", done.stdout, re.M).group(1)
    api_run = call("run", "GET", "", route_params={"id": run_id})[1]
    c = api_run["counts"]
    assert api_run["status"] == "partiallySucceeded" and c["read"] == 150 and c["confirmed"] == 147
    assert re.search(r"^  (queued|planning|uploading|verifying|partiallySucceeded)\s", done.stdout, re.M)
    assert f"Run {run_id}: partiallySucceeded" in done.stdout
    assert re.search(r"rows read\s+150$", done.stdout, re.M)
    assert re.search(r"exported \(confirmed\)\s+147$", done.stdout, re.M)
    assert re.search(r"rejected\s+3$", done.stdout, re.M)
    assert len(sandbox.contacts(TEST_BRAND)) == 147

    # remove: the export, then the connection (its secret goes too)
    done = cli("exports", "remove", export["id"], "--url", url)
    assert done.returncode == 0 and services.exports.get(export["id"]) is None
    secret = services.connections.get(conn["id"]).secret_name
    done = cli("connections", "remove", conn["id"], "--url", url)
    assert done.returncode == 0 and "removed" in done.stdout
    assert services.connections.get(conn["id"]) is None
    with pytest.raises(SecretNotFoundError):
        services.secrets.get(secret)
    assert [line.split()[0] for line in cli("connections", "list", "--url", url).stdout.splitlines()] == [shared["id"]]


def test_cli_errors_say_what_to_fix(services, workers, segment):
    url = workers.url
    done = cli("connections", "add", "--url", url, "--name", "No consent", key=TEST_API_KEY)
    assert done.returncode == 1 and "--consent: must be true" in done.stderr, done.stderr
    assert "(API field dataPrivacyConsent)" in done.stderr  # the flag first, the API field for the API docs
    bad_key = "not-a-key-" + uuid.uuid4().hex
    done = cli("connections", "add", "--url", url, "--name", "Bad key", "--consent", key=bad_key)
    assert done.returncode == 1 and "422" in done.stderr and "Omnisend rejected this API key" in done.stderr
    done = cli("connections", "add", "--url", url, "--name", "Zero", "--consent", "--max-profiles", "0",
               key=TEST_API_KEY)
    assert done.returncode == 1 and "--max-profiles: must be 1 to" in done.stderr, done.stderr
    assert services.connections.list() == []

    conn = json.loads(cli("connections", "add", "--url", url, "--name", "Ok", "--consent", key=TEST_API_KEY).stdout)
    done = cli("exports", "add", "--url", url, "--name", "Bad", "--connection", conn["id"], "--container", segment,
               "--folder", "ci", "--segment", "CliSeg", "--map", "email=PrimaryEmail", "--map", "city=Town")
    assert done.returncode == 1 and "--map city=COLUMN: column 'Town' is not in the segment" in done.stderr
    assert "available columns: CustomerId, FirstName" in done.stderr
    done = cli("exports", "add", "--url", url, "--name", "Bad", "--connection", conn["id"], "--container", segment,
               "--segment", "CliSeg", "--map", "email")
    assert done.returncode == 2 and "expected FIELD=COLUMN" in done.stderr
    done = cli("exports", "show", uuid.uuid4().hex, "--url", url)
    assert done.returncode == 1 and "404" in done.stderr
    assert services.exports.list() == []

    done = cli("connections", "add", "--url", url, "--name", "No key", "--consent")  # no key, no terminal
    assert done.returncode == 1 and "no terminal to ask for it" in done.stderr and "Traceback" not in done.stderr
    done = cli("connections", "list", "--url", "http://127.0.0.1:9/api")
    assert done.returncode == 1 and "Cannot reach the exporter API" in done.stderr and "Traceback" not in done.stderr


def test_run_wait_ends_for_a_run_that_fails_before_sending(services, workers, sandbox, segment):
    url = workers.url
    conn = json.loads(cli("connections", "add", "--url", url, "--name", "Tiny", "--consent", "--max-profiles", "10",
                          key=TEST_API_KEY).stdout)
    export = json.loads(cli("exports", "add", "--url", url, "--name", "Tiny", "--connection", conn["id"],
                            "--container", segment, "--folder", "ci", "--segment", "CliSeg",
                            "--map", "email=PrimaryEmail").stdout)
    done = cli("run", "--url", url, export["id"], "--wait", timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r": failed$", done.stdout, re.M)
    assert "147 valid profiles, more than the 10 allowed" in done.stdout
    assert sandbox.contacts(TEST_BRAND) == []


def test_the_report_says_which_changed_members_kept_their_tag():
    import io

    from exporter.devhost.api_client import print_counts

    counts = {"read": 10, "confirmed": 4, "rejected": 0, "rejectedByReason": {}, "duplicates": 0, "failed": 0,
              "failedByReason": {}, "skipped": 6, "tagged": 1, "alreadyTagged": 3, "left": 0, "untagged": 0}
    out = io.StringIO()
    print_counts({"runId": "r1", "status": "succeeded", "counts": counts}, out)
    assert "tagged as members            1  (and 3 changed members kept their tag)" in out.getvalue()
    out = io.StringIO()
    print_counts({"runId": "r1", "status": "succeeded", "counts": {**counts, "alreadyTagged": 0}}, out)
    assert "kept their tag" not in out.getvalue()
    assert "joined the segment" not in out.getvalue()  # not counted apart (a run recorded before they were)
    out = io.StringIO()
    print_counts({"runId": "r1", "status": "succeeded",
                  "counts": {**counts, "joined": 1, "changed": 3, "changedFields": {"lastName": 2, "city": 1}}}, out)
    lines = out.getvalue().splitlines()
    at = lines.index("  joined the segment           1")
    assert lines[at + 1:at + 4] == ["  changed                      3  (fields:)",
                                    "    city                                 1",
                                    "    lastName                             2"]


def test_safety_thresholds_and_confirm_from_the_command_line(services, workers, sandbox, segment):
    url = workers.url
    conn = json.loads(cli("connections", "add", "--url", url, "--name", "C", "--consent", key=TEST_API_KEY).stdout)
    add = ("exports", "add", "--url", url, "--name", "Strict", "--connection", conn["id"], "--container", segment,
           "--folder", "ci", "--segment", "CliSeg", "--map", "email=PrimaryEmail")
    done = cli(*add, "--max-removal-percent", "101")
    assert done.returncode == 1 and "--max-removal-percent: must be 0 to 100" in done.stderr, done.stderr
    done = cli(*add, "--max-removal-percent", "30", "--max-rejected-percent", "1")
    assert done.returncode == 0, done.stderr
    export = json.loads(done.stdout)
    assert export["maxRemovalPercent"] == 30 and export["maxRejectedPercent"] == 1

    done = cli("run", "--url", url, export["id"], "--wait", timeout=60)  # 3 of 150 rows (2%) are invalid
    assert done.returncode == 1 and re.search(r": failed$", done.stdout, re.M), done.stdout + done.stderr
    assert "3 of 150 rows (2%) were rejected" in done.stdout and "run --confirm" in done.stdout
    assert sandbox.contacts(TEST_BRAND) == []
    done = cli("run", "--url", url, export["id"], "--wait", "--confirm", timeout=90)
    assert done.returncode == 0 and ": partiallySucceeded" in done.stdout, done.stdout + done.stderr
    assert len(sandbox.contacts(TEST_BRAND)) == 147


def test_runs_from_the_command_line(services, workers, sandbox, segment, tmp_path):
    url = workers.url
    conn = json.loads(cli("connections", "add", "--url", url, "--name", "Runs", "--consent", key=TEST_API_KEY).stdout)
    export = json.loads(cli("exports", "add", "--url", url, "--name", "R", "--connection", conn["id"],
                            "--container", segment, "--folder", "ci", "--segment", "CliSeg",
                            "--map", "email=PrimaryEmail").stdout)
    done = cli("runs", "list", export["id"], "--url", url)
    assert done.returncode == 0 and "No runs yet" in done.stdout
    run_id = re.search(r"^Run (\w+) queued\.$", cli("run", export["id"], "--wait", "--url", url, timeout=90).stdout,
                       re.M).group(1)

    done = cli("runs", "list", export["id"], "--url", url)
    header, row = done.stdout.splitlines()
    assert header.split() == ["RUN", "STATUS", "TRIGGER", "STARTED", "READ", "EXPORTED", "REJECTED", "FAILED"]
    assert row.split()[:2] == [run_id, "partiallySucceeded"] and row.split()[-4:] == ["150", "147", "3", "0"]
    listed = json.loads(cli("runs", "list", export["id"], "--url", url, "--output", "json").stdout)
    assert [r["runId"] for r in listed] == [run_id]
    shown = json.loads(cli("runs", "show", run_id, "--url", url, "--output", "json").stdout)
    api_run = call("run", "GET", "", route_params={"id": run_id})[1]
    assert shown["statusUrl"] == f"{url}/runs/{run_id}"  # the URLs the app at --url hands out
    urls = {"statusUrl": None, "changesUrl": None}  # both name the app the request went to
    assert shown["changesUrl"] == f"{url}/runs/{run_id}/changes"
    assert {**shown, **urls} == {**api_run, **urls}
    assert re.search(r"exported \(confirmed\)\s+147$", cli("runs", "show", run_id, "--url", url).stdout, re.M)

    out = tmp_path / "rejects.csv"
    done = cli("runs", "rejects", run_id, "--url", url, "--out", str(out))
    assert done.returncode == 0 and out.read_text().startswith("stage,partition,row,email,reason,detail")
    assert len(out.read_text().splitlines()) == 1 + 3
    assert cli("runs", "rejects", run_id, "--url", url).stdout == out.read_text()

    done = cli("runs", "retry", run_id, "--url", url)  # nothing failed at Omnisend: nothing to send again
    assert done.returncode == 0 and "0 failed batches sent again" in done.stdout
    done = cli("runs", "cancel", run_id, "--url", url)  # it has ended: the API's 409, said plainly
    assert done.returncode == 1 and "409" in done.stderr and "Traceback" not in done.stderr


def test_a_dry_run_from_the_command_line_says_what_a_run_would_do(services, workers, sandbox, segment, tmp_path):
    url = workers.url
    conn = json.loads(cli("connections", "add", "--url", url, "--name", "Dry", "--consent", key=TEST_API_KEY).stdout)
    export = json.loads(cli("exports", "add", "--url", url, "--name", "D", "--connection", conn["id"],
                            "--container", segment, "--folder", "ci", "--segment", "CliSeg",
                            "--map", "email=PrimaryEmail").stdout)
    requests_before = sandbox.stats(TEST_BRAND)["requests"]
    done = cli("run", export["id"], "--dry-run", "--url", url, timeout=90)
    assert done.returncode == 0, done.stderr
    assert "(nothing was sent)" in done.stdout
    assert re.search(r"would be sent\s+147$", done.stdout, re.M)
    assert re.search(r"new members \(joined\)\s+147$", done.stdout, re.M)
    assert re.search(r"tag 'CliSeg' added to 147 members", done.stdout)
    assert re.search(r"estimated duration\s+\d+ s \(4 contact requests and 1 tag calls at 400 and 6000 per 60 s",
                     done.stdout)
    assert sandbox.stats(TEST_BRAND)["requests"] == requests_before
    run_id = re.search(r"^Preview (\w+) of refresh", done.stdout, re.M).group(1)
    out = tmp_path / "changes.csv"
    assert cli("runs", "changes", run_id, "--url", url, "--out", str(out)).returncode == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "email,change,fields" and len(lines) == 1 + 147 and lines[1].endswith(",joined,")
    listed = cli("runs", "list", export["id"], "--url", url).stdout.splitlines()
    assert listed[1].split()[:3] == [run_id, "succeeded", "preview"]
    as_json = json.loads(cli("run", export["id"], "--dry-run", "--output", "json", "--url", url, timeout=90).stdout)
    assert as_json["kind"] == "preview" and len(as_json["preview"]["sample"]) == 20


def test_the_url_and_a_bearer_token_come_from_the_environment():
    import http.server

    seen: list[dict] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
            body = b'{"exports": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    thread = __import__("threading").Thread(target=server.handle_request, daemon=True)
    thread.start()
    env_url = f"http://127.0.0.1:{server.server_port}/api"
    done = subprocess.run([sys.executable, "-m", "exporter", "exports", "list"], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, env={**os.environ, "EXPORTER_URL": env_url,
                                                      "EXPORTER_TOKEN": "eyJ.test-token"})
    thread.join(10)
    server.server_close()
    assert done.returncode == 0, done.stderr
    (request,) = seen
    assert request["path"] == "/api/exports" and request["authorization"] == "Bearer eyJ.test-token"
    assert "x-ms-client-principal" not in request  # a deployed app gets the token, not the development identity
    version = subprocess.run([sys.executable, "-m", "exporter", "--version"], cwd=ROOT, capture_output=True, text=True)
    from exporter import __version__
    assert version.returncode == 0 and version.stdout.strip() == f"python -m exporter {__version__}"


def test_help_has_a_sentence_and_an_example_and_lists_the_map_fields():
    from exporter.domain import MAPPABLE_FIELDS

    top = cli("--help")
    assert top.returncode == 0 and "``" not in top.stdout
    done = cli("exports", "add", "--help")
    assert "Save an export" in done.stdout and "example:" in done.stdout
    assert all(api in done.stdout for api, _ in MAPPABLE_FIELDS)
    for command in (("connections", "add"), ("connections", "update"), ("exports", "list"), ("runs", "show")):
        text = cli(*command, "--help").stdout
        assert "--url" in text and "--token" in text and text.split("\n\n")[1].strip(), command


def test_run_wait_on_a_terminal_shows_one_line_updated_in_place(services, workers, sandbox, segment):
    import pty

    url = workers.url
    conn = json.loads(cli("connections", "add", "--url", url, "--name", "Tty", "--consent", key=TEST_API_KEY).stdout)
    export = json.loads(cli("exports", "add", "--url", url, "--name", "T", "--connection", conn["id"],
                            "--container", segment, "--folder", "ci", "--segment", "CliSeg",
                            "--map", "email=PrimaryEmail").stdout)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "run", export["id"], "--wait", "--url", url], cwd=ROOT,
                            stdout=follower, stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=90) == 0
    os.close(leader)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "\r" in text and "contacts" in text and "partiallySucceeded" in text  # a tqdm bar, redrawn in place
    assert not re.search(r"^  (queued|planning|uploading|verifying)\s", text, re.M)  # no line per poll
    assert re.search(r"exported \(confirmed\)\s+147", text)
