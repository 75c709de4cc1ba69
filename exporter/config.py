"""All configuration the app reads, in one place.

Every environment variable the code uses is named here (and only here), so that the Bicep app
settings and the docs can be checked against one list: see ``SETTING_NAMES``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from . import ncrontab
from .omnisend import limits
from .omnisend.limits import OMNISEND_API_VERSION, OMNISEND_DEFAULT_URL

__all__ = ["OMNISEND_API_VERSION", "OMNISEND_DEFAULT_URL"]  # re-exported: their one copy is in omnisend/limits.py

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"

# Names of the storage resources the app owns (Bicep creates the same names).
QUEUE_RUNS = "export-runs"  # one message per run to plan
QUEUE_BATCHES = "export-batches"  # one message per batch to send, and its follow-up checks
POISON_SUFFIX = "-poison"
TABLE_CONNECTIONS = "connections"
TABLE_EXPORTS = "exports"
TABLE_RUNS = "runs"
TABLE_BATCHES = "batches"
TABLE_RATE_LIMITS = "ratelimits"  # the shared request budget of each Omnisend connection
CONTAINER_RUN_ARTIFACTS = "exporter-runs"  # per-run reject reports and batch spools; membership states

# Environment variables (app settings), with their defaults.
SETTING_NAMES = (
    "AzureWebJobsStorage",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__clientId",
    "SEGMENTS_BLOB_SERVICE_URI",
    "KEY_VAULT_URL",
    "OMNISEND_API_URL",
    "EXPORT_SCHEDULE",
    "REFRESH_SETTLE_SECONDS",
    "SECRET_CACHE_SECONDS",
    "OMNISEND_TIMEOUT_SECONDS",
    "OMNISEND_RATE_LIMIT",
    "OMNISEND_TAGS_RATE_LIMIT",
    "OMNISEND_RATE_WINDOW_SECONDS",
    "BATCH_CHECK_DELAY_SECONDS",
    "PLANNER_READER_PROCESS",
    "EXPORTER_DEV_MODE",
    "EXPORTER_DEV_SECRETS_FILE",
    "WEBSITE_AUTH_ENABLED",  # set by the platform when App Service Authentication is on; never by us
    "APPLICATIONINSIGHTS_CONNECTION_STRING",  # telemetry.py: export to Azure Monitor when set
)
DEFAULT_SCHEDULE = "0 */15 * * * *"  # NCRONTAB: every 15 minutes
DEV_STORAGE = "UseDevelopmentStorage=true"


class ConfigurationError(RuntimeError):
    """The app is not configured to do what was asked; the message says which setting to fix."""


@dataclass(frozen=True)
class Settings:
    storage_connection_string: str | None
    blob_service_uri: str | None
    queue_service_uri: str | None
    table_service_uri: str | None
    managed_identity_client_id: str | None
    segments_blob_service_uri: str | None  # where the platform writes segments, when not the app's own account
    key_vault_url: str | None
    omnisend_api_url: str
    export_schedule: str
    refresh_settle_seconds: int
    secret_cache_seconds: int
    omnisend_timeout_seconds: float
    omnisend_rate_limit: int  # requests per window per brand (Omnisend: 400 a minute)
    omnisend_tags_rate_limit: int  # tags endpoints (Omnisend: 60 a minute)
    omnisend_rate_window_seconds: int
    batch_check_delay_seconds: int
    planner_reader_process: str  # "auto", "on" or "off": read and map a large segment in a second process
    dev_mode: bool
    dev_secrets_file: str | None  # development only: where the development key store keeps keys (None: memory)
    running_in_azure: bool
    platform_auth_enabled: bool  # App Service Authentication validates callers and sets X-MS-CLIENT-PRINCIPAL


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"Setting {name} must be a whole number, got {raw!r}.") from None
    if value < minimum:
        raise ConfigurationError(f"Setting {name} must be at least {minimum}, got {value}.")
    return value


def check_schedule(value: str, what: str = "Setting EXPORT_SCHEDULE") -> ncrontab.Schedule:
    """The schedule of an NCRONTAB app setting; ConfigurationError naming the setting, its value and a
    valid example when the Functions host would refuse it (or it never fires)."""
    try:
        return ncrontab.parse(value)
    except ncrontab.ScheduleError as e:
        raise ConfigurationError(
            f"{what} must be an NCRONTAB schedule of six fields, {ncrontab.FORM}, got {value!r}: {e}. "
            f"For example {ncrontab.EXAMPLE!r} (every 15 minutes) or '0 30 9 * * Mon-Fri' (9:30 on weekdays, UTC)."
        ) from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    conn = env.get("AzureWebJobsStorage") or None
    blob_uri = env.get("AzureWebJobsStorage__blobServiceUri") or None
    if conn is None and blob_uri is None:
        conn = DEV_STORAGE  # same default as the Functions tooling uses locally
    running_in_azure = bool(env.get("WEBSITE_INSTANCE_ID") or env.get("WEBSITE_SITE_NAME"))
    dev_mode = env.get("EXPORTER_DEV_MODE", "").lower() in ("1", "true", "yes")
    if dev_mode and running_in_azure:
        raise ConfigurationError(
            "EXPORTER_DEV_MODE is set on an app running in Azure. Development mode keeps API keys "
            "outside Key Vault and trusts identity headers; remove the setting."
        )
    timeout_raw = env.get("OMNISEND_TIMEOUT_SECONDS") or "30"
    try:
        timeout = float(timeout_raw)
    except ValueError:
        raise ConfigurationError(f"Setting OMNISEND_TIMEOUT_SECONDS must be a number, got {timeout_raw!r}.") from None
    schedule = env.get("EXPORT_SCHEDULE") or DEFAULT_SCHEDULE
    check_schedule(schedule)  # at start, as the host refuses to run the timer with a schedule it cannot read
    reader = (env.get("PLANNER_READER_PROCESS") or "auto").strip().lower()
    if reader not in ("auto", "on", "off"):
        raise ConfigurationError(f"Setting PLANNER_READER_PROCESS must be auto, on or off, got {reader!r}.")
    return Settings(
        storage_connection_string=conn,
        blob_service_uri=blob_uri,
        queue_service_uri=env.get("AzureWebJobsStorage__queueServiceUri") or None,
        table_service_uri=env.get("AzureWebJobsStorage__tableServiceUri") or None,
        managed_identity_client_id=env.get("AzureWebJobsStorage__clientId") or env.get("AZURE_CLIENT_ID") or None,
        segments_blob_service_uri=env.get("SEGMENTS_BLOB_SERVICE_URI") or None,
        key_vault_url=env.get("KEY_VAULT_URL") or None,
        omnisend_api_url=env.get("OMNISEND_API_URL") or OMNISEND_DEFAULT_URL,
        export_schedule=schedule,
        refresh_settle_seconds=_int(env, "REFRESH_SETTLE_SECONDS", 120),
        secret_cache_seconds=_int(env, "SECRET_CACHE_SECONDS", 300),
        omnisend_timeout_seconds=timeout,
        omnisend_rate_limit=_int(env, "OMNISEND_RATE_LIMIT", limits.RATE_LIMIT, minimum=1),
        omnisend_tags_rate_limit=_int(env, "OMNISEND_TAGS_RATE_LIMIT", limits.TAGS_RATE_LIMIT, minimum=1),
        omnisend_rate_window_seconds=_int(env, "OMNISEND_RATE_WINDOW_SECONDS", limits.RATE_WINDOW_SECONDS, minimum=1),
        batch_check_delay_seconds=_int(env, "BATCH_CHECK_DELAY_SECONDS", 2),
        planner_reader_process=reader,
        dev_mode=dev_mode,
        dev_secrets_file=env.get("EXPORTER_DEV_SECRETS_FILE") or None,
        running_in_azure=running_in_azure,
        platform_auth_enabled=env.get("WEBSITE_AUTH_ENABLED", "").lower() == "true",
    )


# --- host.json: the queue rules the Functions host applies (the local runner applies the same) -----


def _timespan_seconds(value: str) -> float:
    h, m, s = value.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


@dataclass(frozen=True)
class QueueRules:
    max_dequeue_count: int = 5  # deliveries of a message before the host moves it to the poison queue
    visibility_timeout: float = 0.0  # delay before a failed message is retried
    max_polling_interval: float = 60.0
    batch_size: int = 16  # messages fetched per receive

    @classmethod
    def from_host_json(cls, path: Path = HOST_JSON) -> "QueueRules":
        queues = json.loads(path.read_text()).get("extensions", {}).get("queues", {})
        return cls(
            batch_size=int(queues.get("batchSize", 16)),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout=_timespan_seconds(queues.get("visibilityTimeout", "00:00:00")),
            max_polling_interval=_timespan_seconds(queues.get("maxPollingInterval", "00:01:00")),
        )


@lru_cache(maxsize=1)
def queue_rules() -> QueueRules:
    """host.json's queue rules, read once (the host reads the same file)."""
    return QueueRules.from_host_json()
