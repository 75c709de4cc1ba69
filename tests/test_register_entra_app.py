"""scripts/register-entra-app.sh: the Entra app registration the API's sign-in needs. `az` is not
logged in here, so these tests run the script's --dry-run, which prints the az commands and the
JSON it would send, and check them: both app roles with the values exporter/api/access.py reads,
the /.auth/login/aad/callback redirect URI of the function app, the service principal with
assignment required, and that re-running keeps what an existing registration has."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from exporter.api.access import ROLE_ADMIN, ROLE_CONTRIBUTOR

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "register-entra-app.sh"
HOST = "func-api-abc123.azurewebsites.net"
CALLBACK = f"https://{HOST}/.auth/login/aad/callback"


@pytest.fixture
def fake_az(tmp_path) -> Path:
    """``az`` and ``azd`` on PATH that record any call: a dry run must make none."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("az", "azd"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "$0 $*" >> {tmp_path}/calls\nexit 1\n')
        (bin_dir / tool).chmod(0o755)
    return tmp_path


def dry_run(fake_az: Path, *args: str, env: dict | None = None) -> tuple[list[str], dict, str]:
    """The commands (lines starting with '+ ') and the PATCH body a dry run prints, and its output."""
    clean = {k: v for k, v in os.environ.items() if k not in ("AUTH_CLIENT_ID", "AZURE_FUNCTION_APP_URL",
                                                               "AUTH_APP_DISPLAY_NAME", "AUTH_APP_REGISTRATION")}
    clean["PATH"] = f"{fake_az / 'bin'}{os.pathsep}{clean['PATH']}"
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], capture_output=True, text=True,
                            env={**clean, **(env or {})}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not (fake_az / "calls").exists(), f"a dry run called {(fake_az / 'calls').read_text()}"
    out = result.stdout
    body = re.search(r"^\{\n.*?^\}$", out, re.S | re.M)
    assert body, f"no PATCH body in the output:\n{out}"
    commands = [line[2:] for line in out.splitlines() if line.startswith("+ ")]
    return commands, json.loads(body.group(0)), out


def roles_by_value(body: dict) -> dict:
    return {r["value"]: r for r in body["appRoles"]}


def test_new_registration_has_both_roles_and_the_callback(fake_az):
    commands, body, out = dry_run(fake_az, "--host", HOST)
    roles = roles_by_value(body)
    assert set(roles) == {ROLE_ADMIN, ROLE_CONTRIBUTOR}
    for value, role in roles.items():
        uuid.UUID(role["id"])  # Graph needs a GUID per role
        assert role["isEnabled"] is True and role["displayName"] == value
        assert set(role["allowedMemberTypes"]) == {"User", "Application"}, "people, and daemon clients"
        assert role["description"]
    assert body["web"]["redirectUris"] == [CALLBACK]
    assert body["web"]["implicitGrantSettings"]["enableIdTokenIssuance"] is True, "Easy Auth's sign-in without a secret"
    assert body["api"]["requestedAccessTokenVersion"] == 2, "the issuer the templates configure is v2"
    assert body["identifierUris"] == ["api://<appId>"]
    assert commands[0].startswith("az ad app list --display-name"), "an existing registration is found first"
    assert any(c.startswith("az ad app create ") and "AzureADMyOrg" in c for c in commands)
    assert any(c.startswith("az rest --method PATCH --uri https://graph.microsoft.com/v1.0/applications/")
               for c in commands)
    assert any(c.startswith("az ad sp create ") for c in commands)
    assert any(c.startswith("az ad sp update ") and c.endswith("--set appRoleAssignmentRequired=true")
               for c in commands)
    assert not any(c.startswith("azd ") for c in commands), "only --azd touches the azd environment"
    assert out.rstrip().endswith("authClientId = <appId>")


@pytest.mark.parametrize("given", [HOST, f"https://{HOST}", f"https://{HOST}/"])
def test_host_may_be_a_name_or_the_deployments_url_output(fake_az, given):
    _, body, _ = dry_run(fake_az, "--host", given)
    assert body["web"]["redirectUris"] == [CALLBACK]
    _, body, _ = dry_run(fake_az, env={"AZURE_FUNCTION_APP_URL": given})
    assert body["web"]["redirectUris"] == [CALLBACK], "azd's postprovision hook passes the output this way"


def test_without_a_host_the_redirect_waits_for_a_later_run(fake_az):
    _, body, out = dry_run(fake_az)
    assert body["web"]["redirectUris"] == []
    assert "run again after the deployment" in out


def test_an_existing_registration_keeps_what_it_has(fake_az, tmp_path):
    admin_id, other_id = str(uuid.uuid4()), str(uuid.uuid4())
    current = {
        "appRoles": [
            {"id": admin_id, "value": ROLE_ADMIN, "displayName": "Old name", "isEnabled": True,
             "allowedMemberTypes": ["User"], "description": "old"},
            {"id": other_id, "value": "Reader", "displayName": "Reader", "isEnabled": True,
             "allowedMemberTypes": ["User"], "description": "someone else's"},
        ],
        "identifierUris": ["api://app-123"],
        "web": {"redirectUris": ["https://localhost/cb", CALLBACK], "homePageUrl": "https://home",
                "implicitGrantSettings": {"enableAccessTokenIssuance": False, "enableIdTokenIssuance": False}},
    }
    manifest = tmp_path / "app.json"
    manifest.write_text(json.dumps(current))
    commands, body, _ = dry_run(fake_az, "--app-id", "app-123", "--current", str(manifest), "--host", HOST)
    roles = roles_by_value(body)
    assert roles[ROLE_ADMIN]["id"] == admin_id, "Graph refuses to change the id of an enabled role"
    assert roles[ROLE_ADMIN]["displayName"] == ROLE_ADMIN and set(roles[ROLE_ADMIN]["allowedMemberTypes"]) == {
        "User", "Application"}
    assert roles["Reader"] == current["appRoles"][1], "roles that are not the app's are left alone"
    uuid.UUID(roles[ROLE_CONTRIBUTOR]["id"])
    assert body["identifierUris"] == ["api://app-123"], "not added twice"
    assert body["web"]["redirectUris"] == ["https://localhost/cb", CALLBACK], "kept, and not added twice"
    assert body["web"]["homePageUrl"] == "https://home"
    assert body["web"]["implicitGrantSettings"] == {"enableAccessTokenIssuance": False, "enableIdTokenIssuance": True}
    assert not any(c.startswith("az ad app create ") or c.startswith("az ad app list ") for c in commands), (
        "a given app id is used, never a new registration"
    )


def test_azd_mode_stores_the_client_id_and_can_be_skipped(fake_az):
    commands, _, _ = dry_run(fake_az, "--azd", env={"AUTH_CLIENT_ID": "app-456"})
    assert commands[-1] == "azd env set AUTH_CLIENT_ID app-456"
    result = subprocess.run(["bash", str(SCRIPT), "--azd"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "AUTH_APP_REGISTRATION": "skip",
                                 "PATH": f"{fake_az / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode == 0 and "AUTH_APP_REGISTRATION=skip" in result.stdout
    assert not (fake_az / "calls").exists()


def test_bad_arguments_are_refused(fake_az):
    for args in (["--bogus"], ["--current", "x.json"]):  # --current only previews
        result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, (args, result.stdout, result.stderr)


def test_azure_yaml_runs_it_around_provisioning():
    lines = [line.split("#", 1)[0].rstrip() for line in (ROOT / "azure.yaml").read_text().splitlines()]
    block = "\n".join(lines)
    for hook in ("preprovision", "postprovision"):
        match = re.search(rf"^  {hook}:\n((?:    .*\n?)+)", block, re.M)
        assert match, f"azure.yaml should declare hooks: {hook}:"
        assert "run: bash ./scripts/register-entra-app.sh --azd" in match.group(1)
    assert re.search(r"^hooks:$", block, re.M)
    assert os.access(SCRIPT, os.X_OK), "the script is executable"


def test_docs_say_how_to_use_it():
    doc = (ROOT / "docs" / "deploy.md").read_text()
    assert "scripts/register-entra-app.sh" in doc and "AUTH_APP_REGISTRATION=skip" in doc


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean():
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
