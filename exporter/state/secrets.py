"""Where Omnisend API keys live: Azure Key Vault, and nowhere else.

``KeyVaultSecretStore`` is the production store (the real ``SecretClient``). ``DevSecretStore`` keeps
keys in process memory for the local runner only and refuses to exist on an app running in Azure.
``secret_store_from_settings`` picks one from the app settings.

Rule for this module: a secret *value* never appears in a log record, an exception message, or a
``repr``. Secret *names* (e.g. ``omnisend-<connection id>``) are not secret and may be logged.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from ..config import ConfigurationError, Settings
from ..logs import get_logger

if TYPE_CHECKING:  # pragma: no cover
    from azure.keyvault.secrets import SecretClient

logger = get_logger(__name__)

# Key Vault secret names: 1-127 characters, letters, digits and dashes. Names are case-insensitive.
_NAME_RE = re.compile(r"^[0-9A-Za-z-]{1,127}$")

# How long delete() waits for Key Vault to report a soft-delete as finished.
DELETE_WAIT_SECONDS = 60.0

ROLE_READ = "Key Vault Secrets User"
ROLE_WRITE = "Key Vault Secrets Officer"

NO_VAULT_MESSAGE = (
    "KEY_VAULT_URL is not set. The app keeps Omnisend API keys only in Azure Key Vault; set "
    "KEY_VAULT_URL to the vault URI (https://<name>.vault.azure.net). For local development use "
    "`python -m exporter serve`, which keeps keys in memory."
)


class SecretStoreError(RuntimeError):
    """A secret could not be read, written or deleted. The message says what happened and what to do.

    It never contains a secret value. ``secret_name`` and ``status_code`` (HTTP status from Key Vault,
    when there was one) are there for callers that want to branch on them.
    """

    def __init__(self, message: str, *, secret_name: str | None = None, status_code: int | None = None):
        super().__init__(message)
        self.secret_name = secret_name
        self.status_code = status_code


class SecretNotFoundError(SecretStoreError):
    """No (enabled, current) secret of that name exists: the connection needs its key again."""


class SecretAccessDeniedError(SecretStoreError):
    """Key Vault refused the app's identity (401/403), or no token could be had. Right after a
    deployment this is usually a role assignment still propagating (minutes): retry for a while."""


class SecretStoreUnavailableError(SecretStoreError):
    """Key Vault could not be reached, or is throttling or failing (429, 5xx): transient, retry."""


@runtime_checkable
class SecretStore(Protocol):
    def get(self, name: str) -> str: ...

    def set(self, name: str, value: str) -> None: ...

    def delete(self, name: str) -> None:
        """Delete the secret; deleting a secret that does not exist is not an error."""
        ...

    def forget(self, name: str) -> None:
        """Drop any cached value: the next ``get`` reads the store (a key rotated elsewhere)."""
        ...


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"Invalid secret name {name!r}: Key Vault secret names are 1-127 characters of letters, "
            "digits and dashes."
        )
    return name


def _check_value(name: str, value: str) -> None:
    if not isinstance(value, str) or value == "":
        # Do not echo the value (or its type's repr of it) back.
        raise ValueError(f"The value for secret {name!r} must be a non-empty string.")


def _error_code(exc: HttpResponseError) -> str | None:
    err = getattr(exc, "error", None)
    return getattr(err, "code", None) if err is not None else None


def _request_id(exc: HttpResponseError) -> str | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    return headers.get("x-ms-request-id")


class KeyVaultSecretStore:
    """Production store: Azure Key Vault through the real SecretClient."""

    def __init__(
        self,
        vault_url: str,
        credential: Any = None,
        *,
        cache_seconds: float = 300,
        client: "SecretClient | None" = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not vault_url or not vault_url.lower().startswith("https://"):
            raise ConfigurationError(
                f"KEY_VAULT_URL must be the vault URI, https://<name>.vault.azure.net; got {vault_url!r}."
            )
        self.vault_url = vault_url.rstrip("/")
        if client is None:
            from azure.keyvault.secrets import SecretClient

            if credential is None:
                from azure.identity import DefaultAzureCredential

                # Falls back to AZURE_CLIENT_ID (user-assigned identity) when no client id is given here.
                credential = DefaultAzureCredential()
            # logging_enable stays off: network-trace logging would write request/response bodies,
            # i.e. secret values, to the log.
            client = SecretClient(self.vault_url, credential, logging_enable=False)
        self._client = client
        self._cache_seconds = float(cache_seconds)
        self._clock = clock
        self._cache: dict[str, tuple[str, float]] = {}  # lower-case name -> (value, expires at)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KeyVaultSecretStore({self.vault_url!r})"

    __str__ = __repr__

    # -- cache -------------------------------------------------------------------------------

    def _cached(self, key: str) -> str | None:
        with self._lock:
            hit = self._cache.get(key)
            if hit is None:
                return None
            value, expires_at = hit
            if self._clock() < expires_at:
                return value
            del self._cache[key]
            return None

    def _remember(self, key: str, value: str) -> None:
        if self._cache_seconds <= 0:
            return
        with self._lock:
            self._cache[key] = (value, self._clock() + self._cache_seconds)

    def _forget(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key, None)

    def forget(self, name: str) -> None:
        self._forget(_check_name(name).lower())

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    # -- operations --------------------------------------------------------------------------

    def get(self, name: str) -> str:
        _check_name(name)
        key = name.lower()  # Key Vault names are case-insensitive
        value = self._cached(key)
        if value is not None:
            return value
        try:
            secret = self._client.get_secret(name)
        except ResourceNotFoundError:
            raise SecretNotFoundError(
                f"Secret {name!r} does not exist in Key Vault {self.vault_url} (or it was deleted). "
                "Store the connection's Omnisend API key again.",
                secret_name=name,
                status_code=404,
            ) from None
        except Exception as exc:  # noqa: BLE001 - mapped or re-raised unchanged
            self._raise_mapped(exc, "read", name)
        value = secret.value
        if value is None:  # disabled secrets come back without a value
            raise SecretNotFoundError(
                f"Secret {name!r} in Key Vault {self.vault_url} has no readable value (is it disabled?). "
                "Enable it or store the connection's Omnisend API key again.",
                secret_name=name,
            )
        self._remember(key, value)
        logger.debug("Read secret %s from Key Vault %s", name, self.vault_url)
        return value

    def set(self, name: str, value: str) -> None:
        _check_name(name)
        _check_value(name, value)
        key = name.lower()
        self._forget(key)
        try:
            self._client.set_secret(name, value, content_type="omnisend-api-key")
        except Exception as exc:  # noqa: BLE001
            mapped = self._map_error(exc, "write", name)
        else:
            self._remember(key, value)
            logger.info("Stored secret %s in Key Vault %s", name, self.vault_url)
            return
        # Outside the except block and without a cause: the failed request (which holds the value in
        # its body) is not kept alive on the exception chain.
        raise mapped

    def delete(self, name: str) -> None:
        _check_name(name)
        self._forget(name.lower())
        try:
            poller = self._client.begin_delete_secret(name)
        except ResourceNotFoundError:
            logger.info("Secret %s was already absent from Key Vault %s", name, self.vault_url)
            return
        except Exception as exc:  # noqa: BLE001
            self._raise_mapped(exc, "delete", name)
        # Soft-delete: the poller polls GET /deletedsecrets/{name} until the deletion is complete.
        # Never purge: vaults with purge protection refuse it, and recovery is the point of it.
        try:
            poller.wait(timeout=DELETE_WAIT_SECONDS)
        except ResourceNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            self._raise_mapped(exc, "delete", name)
        if not poller.done():
            raise SecretStoreError(
                f"Key Vault {self.vault_url} accepted the deletion of secret {name!r} but did not report it "
                f"finished within {DELETE_WAIT_SECONDS:.0f} s. The secret can no longer be read; call "
                "delete again later to confirm.",
                secret_name=name,
            )
        self._forget(name.lower())
        logger.info("Deleted secret %s from Key Vault %s", name, self.vault_url)

    # -- error mapping -----------------------------------------------------------------------

    def _raise_mapped(self, exc: Exception, action: str, name: str) -> None:
        mapped = self._map_error(exc, action, name)
        if mapped is exc:
            raise exc
        raise mapped from exc

    def _map_error(self, exc: Exception, action: str, name: str) -> Exception:
        """Translate an azure-core error into a SecretStoreError; other exceptions pass through."""
        vault = self.vault_url
        role = ROLE_READ if action == "read" else ROLE_WRITE
        if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
            return SecretStoreUnavailableError(
                f"Key Vault unreachable: could not {action} secret {name!r} at {vault} "
                f"({type(exc).__name__}: {str(exc.message)[:300]}). Check KEY_VAULT_URL, DNS/private "
                "endpoint and network rules of the vault, then retry.",
                secret_name=name,
            )
        if isinstance(exc, ClientAuthenticationError) and getattr(exc, "status_code", None) is None:
            # Raised by the credential itself: no token could be obtained.
            return SecretAccessDeniedError(
                f"Could not get a Microsoft Entra token to {action} secret {name!r} in Key Vault {vault}: "
                f"{exc.message}. In Azure, check that the app has a "
                "managed identity and that AzureWebJobsStorage__clientId / AZURE_CLIENT_ID names it; "
                "locally, sign in with `az login`.",
                secret_name=name,
            )
        if isinstance(exc, HttpResponseError):
            status = exc.status_code
            code = _error_code(exc)
            detail = f"HTTP {status}" + (f" {code}" if code else "")
            request_id = _request_id(exc)
            if request_id:
                detail += f", x-ms-request-id {request_id}"
            if status in (401, 403):
                return SecretAccessDeniedError(
                    f"The app identity lacks the Key Vault role to {action} secret {name!r} in {vault} "
                    f"({detail}). Assign the '{role}' role on the vault to the app's managed identity "
                    "(the vault must use Azure RBAC, enableRbacAuthorization: true); new role assignments "
                    "can take a few minutes to apply.",
                    secret_name=name,
                    status_code=status,
                )
            if status == 409 and action == "write":
                return SecretStoreError(
                    f"Secret {name!r} is deleted but recoverable in Key Vault {vault} ({detail}); its name "
                    "cannot be reused until the soft-delete retention ends (and cannot be purged when "
                    "purge protection is on). Store the key under a new secret name.",
                    secret_name=name,
                    status_code=status,
                )
            transient = status is not None and (status >= 500 or status == 429)
            kind = SecretStoreUnavailableError if transient else SecretStoreError
            return kind(
                f"Key Vault {vault} refused to {action} secret {name!r} ({detail}). "
                + ("The service is busy or failing; retry later." if transient
                   else "Check the secret name and the vault configuration."),
                secret_name=name,
                status_code=status,
            )
        return exc


class DevSecretStore:
    """Development-only store used by the local runner when KEY_VAULT_URL is not set: in memory, or,
    with ``EXPORTER_DEV_SECRETS_FILE`` (``python -m exporter serve`` sets ``.local/dev-secrets.json``),
    in that file too, readable by its owner only (mode 0600), so a restart of the app keeps the keys.

    It refuses to exist when running in Azure or outside development mode.
    """

    def __init__(self, settings: Settings) -> None:
        if settings.running_in_azure:
            raise ConfigurationError(
                "DevSecretStore cannot be used on an app running in Azure: Omnisend API keys must be kept "
                "in Azure Key Vault. Set KEY_VAULT_URL and remove EXPORTER_DEV_MODE."
            )
        if not settings.dev_mode:
            raise ConfigurationError(
                "DevSecretStore keeps API keys outside Key Vault and is only for local development "
                "(EXPORTER_DEV_MODE=1, as set by `python -m exporter serve`). Set KEY_VAULT_URL to use "
                "Azure Key Vault."
            )
        self._lock = threading.Lock()
        self._path = Path(settings.dev_secrets_file) if settings.dev_secrets_file else None
        self._values: dict[str, str] = self._load() if self._path else {}

    def __repr__(self) -> str:
        return f"DevSecretStore({'file' if self._path else 'memory'})"

    __str__ = __repr__

    @property
    def where(self) -> str:
        return f"the development key store ({self._path})" if self._path else \
            "the development key store (in memory: keys vanish when the process stops)"

    def _load(self) -> dict[str, str]:
        assert self._path is not None
        try:
            if self._path.stat().st_mode & 0o077:
                self._path.chmod(0o600)  # someone loosened it: only its owner may read keys
                logger.warning("%s was readable by others; made owner-only (0600)", self._path)
            data = json.loads(self._path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise ConfigurationError(f"The development key store {self._path} cannot be read ({type(e).__name__}); "
                                     "fix or delete it (its connections then need their keys again).") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ConfigurationError(f"The development key store {self._path} is not a JSON object of keys; "
                                     "fix or delete it.")
        return {str(k).lower(): v for k, v in data.items()}

    def _save(self) -> None:
        """Written whole to a new file (mode 0600 from its creation), then renamed over the old one."""
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temp = self._path.with_name(self._path.name + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._values, f)
        os.chmod(temp, 0o600)  # O_CREAT's mode applies to a new file only
        os.replace(temp, self._path)

    def get(self, name: str) -> str:
        _check_name(name)
        with self._lock:
            value = self._values.get(name.lower())
        if value is None:
            raise SecretNotFoundError(
                f"Secret {name!r} does not exist in {self.where}. Store the connection's Omnisend API key "
                "again.",
                secret_name=name,
                status_code=404,
            )
        return value

    def set(self, name: str, value: str) -> None:
        _check_name(name)
        _check_value(name, value)
        with self._lock:
            self._values[name.lower()] = value
            self._save()

    def delete(self, name: str) -> None:
        _check_name(name)
        with self._lock:
            if self._values.pop(name.lower(), None) is not None:
                self._save()

    def forget(self, name: str) -> None:
        """Nothing is cached in the process; a file another process changed is read again."""
        if self._path is not None:
            with self._lock:
                self._values = self._load()


def secret_store_from_settings(settings: Settings) -> SecretStore:
    if settings.key_vault_url:
        from azure.identity import DefaultAzureCredential

        return KeyVaultSecretStore(
            settings.key_vault_url,
            cache_seconds=settings.secret_cache_seconds,
            credential=DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id),
        )
    if settings.dev_mode:
        store = DevSecretStore(settings)
        if settings.dev_secrets_file:
            logger.warning("KEY_VAULT_URL is not set: Omnisend API keys are kept in %s, for development only.",
                           settings.dev_secrets_file)
        else:
            logger.warning("KEY_VAULT_URL is not set: Omnisend API keys are kept in memory for development only "
                           "and are lost when the process stops.")
        return store
    raise ConfigurationError(NO_VAULT_MESSAGE)
