"""local.settings.json.example: the settings `func start` (Azure Functions Core Tools) needs to run
the app locally, in the format the tools read, with every setting the app reads that makes sense
on a developer's machine. Copy it to local.settings.json (ignored by git, kept out of the package)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from exporter import config
from exporter.devhost import cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "local.settings.json.example"

# Settings in config.SETTING_NAMES the example leaves out, and why.
NOT_LOCAL = {
    "AzureWebJobsStorage__blobServiceUri": "identity-based storage of the deployed app; locally the "
    "AzureWebJobsStorage connection string reaches Azurite",
    "AzureWebJobsStorage__queueServiceUri": "as AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__tableServiceUri": "as AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__clientId": "the managed identity of the deployed app; none locally",
    "SEGMENTS_BLOB_SERVICE_URI": "locally the segments are in Azurite's account, the app's own (the default); "
    "a service URI means Entra ID auth, which Azurite does not do",
    "WEBSITE_AUTH_ENABLED": "set by the platform when App Service Authentication is on; never by us",
}

# Settings the example sets for the Functions tools, not for the app's code.
TOOLS = {
    "FUNCTIONS_WORKER_RUNTIME": "python",
    "AzureWebJobsFeatureFlags": "EnableWorkerIndexing",  # the Python v2 programming model's function indexing
}


@pytest.fixture(scope="module")
def example() -> dict:
    return json.loads(EXAMPLE.read_text())


@pytest.fixture(scope="module")
def values(example) -> dict:
    return example["Values"]


def test_format_is_the_one_core_tools_reads(example, values):
    assert example["IsEncrypted"] is False
    assert set(example) <= {"IsEncrypted", "Values", "Host", "ConnectionStrings"}
    for name, value in TOOLS.items():
        assert values[name] == value, name
    not_strings = [k for k, v in values.items() if not isinstance(v, str)]
    assert not not_strings, f"Core Tools wants every value as a string: {not_strings}"


def test_excluded_settings_are_settings_the_code_reads():
    unknown = set(NOT_LOCAL) - set(config.SETTING_NAMES)
    assert not unknown, f"NOT_LOCAL names settings config.py no longer reads: {sorted(unknown)}"


def test_every_setting_that_makes_sense_locally_is_named(values):
    expected = set(config.SETTING_NAMES) - set(NOT_LOCAL)
    missing = sorted(expected - set(values))
    assert not missing, f"local.settings.json.example lacks {missing}; add them or say in NOT_LOCAL why not"
    unknown = sorted(set(values) - set(config.SETTING_NAMES) - set(TOOLS))
    assert not unknown, f"local.settings.json.example sets {unknown}, which the app does not read"
    left_out = sorted(set(NOT_LOCAL) & set(values))
    assert not left_out, f"{left_out} should not be set locally: {[NOT_LOCAL[n] for n in left_out]}"


def test_values_are_the_local_stack(values):
    assert values["AzureWebJobsStorage"] == config.DEV_STORAGE  # Azurite
    readme = (ROOT / "README.md").read_text()
    # The README's block picks the port from SANDBOX_PORT=${SANDBOX_PORT:-8089}: compare with its default.
    default_port = re.search(r"SANDBOX_PORT=\$\{SANDBOX_PORT:-(\d+)\}", readme)
    sandbox_urls = set(re.findall(r"OMNISEND_API_URL=(\S+)", readme))
    if default_port:
        sandbox_urls = {url.replace("$SANDBOX_PORT", default_port.group(1)) for url in sandbox_urls}
    assert values["OMNISEND_API_URL"] in sandbox_urls, f"the README's sandbox URL is one of {sandbox_urls}"
    assert values["EXPORTER_DEV_MODE"] == "1", "keys in the development store, the local Admin trusted"
    assert values["EXPORTER_DEV_SECRETS_FILE"] == cli.DEV_SECRETS_FILE, "the same store as `serve`"
    assert values["KEY_VAULT_URL"] == "", "no vault locally: the development key store keeps the keys"
    assert values["EXPORT_SCHEDULE"] == config.DEFAULT_SCHEDULE


def test_the_app_loads_these_settings(values):
    settings = config.load_settings(values)
    code_defaults = config.load_settings({})
    assert settings.storage_connection_string == config.DEV_STORAGE
    assert settings.dev_mode and not settings.running_in_azure
    assert settings.key_vault_url is None
    assert settings.refresh_settle_seconds == 0, "sample segments are written whole: no need to wait"
    for field in ("secret_cache_seconds", "omnisend_timeout_seconds", "omnisend_rate_limit",
                  "omnisend_tags_rate_limit", "omnisend_rate_window_seconds", "batch_check_delay_seconds",
                  "planner_reader_process", "export_schedule"):
        assert getattr(settings, field) == getattr(code_defaults, field), f"{field}: the example keeps the default"


def _ignored(path: str, ignore_file: Path, scratch: Path) -> bool:
    """Whether the rules of ``ignore_file`` alone (.gitignore syntax, which .funcignore uses too)
    exclude ``path``: asked of git in an empty repository, so no other ignore file plays a part."""
    if not (scratch / ".git").exists():
        subprocess.run(["git", "init", "-q", str(scratch)], check=True)
    result = subprocess.run(
        ["git", "-c", f"core.excludesFile={ignore_file}", "check-ignore", "--no-index", "-q", path],
        cwd=scratch, capture_output=True,
    )
    assert result.returncode in (0, 1), result.stderr.decode()
    return result.returncode == 0


def test_the_real_file_is_ignored_and_the_example_is_not_deployed(tmp_path):
    gitignore, funcignore = ROOT / ".gitignore", ROOT / ".funcignore"
    assert _ignored("local.settings.json", gitignore, tmp_path), ".gitignore must keep local.settings.json out of git"
    assert not _ignored("local.settings.json.example", gitignore, tmp_path), "the example itself belongs in git"
    assert _ignored("local.settings.json", funcignore, tmp_path)
    assert _ignored("local.settings.json.example", funcignore, tmp_path), (
        ".funcignore must keep the example out of the package"
    )
