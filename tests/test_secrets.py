"""exporter.secrets: the real SecretClient against a fake Key Vault service, and the dev store."""

from __future__ import annotations

import dataclasses
import logging
import stat
import traceback

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError

from exporter.config import ConfigurationError, load_settings
from exporter.state.secrets import (
    DevSecretStore,
    KeyVaultSecretStore,
    SecretNotFoundError,
    SecretStore,
    SecretStoreError,
    secret_store_from_settings,
)
from tests.keyvault_fake import (
    KV_SCOPE,
    TENANT_ID,
    VAULT_URL,
    FakeCredential,
    FakeKeyVault,
    make_keyvault_store,
)

NAME = "omnisend-conn-1"
VALUE = "omni-KEY-5f1e2d3c4b5a-do-not-leak"  # anything containing this string is a leak


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _all_text(exc: BaseException) -> str:
    """Everything a log handler could print for an exception: str, repr and the full chained traceback."""
    return str(exc) + repr(exc) + "".join(traceback.format_exception(exc))


def _gets(fake: FakeKeyVault, name: str = NAME):
    return fake.requests_to("GET", f"/secrets/{name}", authorized=True)  # HTTP GETs actually served


@pytest.fixture(autouse=True)
def _debug_logs(caplog):
    """Capture everything (azure-core's HTTP logging included) so leak checks see it all."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        assert VALUE not in record.getMessage()
        if record.exc_info:
            assert VALUE not in "".join(traceback.format_exception(*record.exc_info))


# -- through the real SDK ------------------------------------------------------------------


def test_set_get_delete_round_trip_through_real_sdk():
    store, fake = make_keyvault_store()
    assert isinstance(store, SecretStore)

    store.set(NAME, VALUE)
    assert fake.current_value(NAME) == VALUE
    store.clear_cache()
    assert store.get(NAME) == VALUE
    assert [r.path for r in _gets(fake)] == [f"/secrets/{NAME}/"]  # "latest" is an empty version segment

    store.delete(NAME)
    assert fake.current_value(NAME) is None
    assert fake.requests_to("DELETE", f"/secrets/{NAME}")
    assert fake.requests_to("GET", f"/deletedsecrets/{NAME}")  # the poller confirmed the deletion
    assert not fake.requests_to("DELETE", "/deletedsecrets/")  # never purges
    with pytest.raises(SecretNotFoundError) as info:
        store.get(NAME)
    assert info.value.status_code == 404 and info.value.secret_name == NAME
    assert isinstance(info.value, SecretStoreError)
    assert "KEY" not in str(info.value)  # no value in the message


def test_challenge_auth_round_then_bearer():
    store, fake = make_keyvault_store()
    store.set(NAME, VALUE)
    store.clear_cache()
    store.get(NAME)
    store.delete(NAME)

    first, *rest = fake.log
    assert (first.method, first.auth_present) == ("PUT", False)  # the SDK elicits the challenge first
    assert rest and all(r.auth_present and r.authorized for r in rest)
    assert sum(not r.auth_present for r in fake.log) == 1  # the challenge is cached afterwards
    assert {r.api_version for r in fake.log} == {"2026-04-01"}
    cred = store._client._client._config.credential
    assert isinstance(cred, FakeCredential)
    assert cred.requests and cred.requests[0] == ((KV_SCOPE,), TENANT_ID)


def test_wrong_token_is_reported_as_missing_role():
    store, fake = make_keyvault_store(credential=FakeCredential("some-other-token"))
    with pytest.raises(SecretStoreError) as info:
        store.get(NAME)
    assert info.value.status_code == 401
    assert "lacks the Key Vault role" in str(info.value)
    assert isinstance(info.value.__cause__, ClientAuthenticationError)


def test_credential_failure_is_explained():
    class NoIdentity(FakeCredential):
        def get_token_info(self, *scopes, options=None):
            raise ClientAuthenticationError("ManagedIdentityCredential: no managed identity endpoint found")

    store, _ = make_keyvault_store(credential=NoIdentity())
    with pytest.raises(SecretStoreError) as info:
        store.get(NAME)
    message = str(info.value)
    assert "token" in message and "managed identity" in message and "AZURE_CLIENT_ID" in message


# -- caching ----------------------------------------------------------------------------------


def test_get_is_cached_for_cache_seconds():
    clock = FakeClock()
    writer, fake = make_keyvault_store()
    writer.set(NAME, VALUE)
    reader, _ = make_keyvault_store(cache_seconds=300, clock=clock, fake=fake)

    assert reader.get(NAME) == VALUE
    assert len(_gets(fake)) == 1
    clock.advance(299)
    assert reader.get(NAME) == VALUE
    assert len(_gets(fake)) == 1  # served from memory, no HTTP call

    writer.set(NAME, "rotated-value")
    clock.advance(2)  # 301 s after the first read: expired
    assert reader.get(NAME) == "rotated-value"
    assert len(_gets(fake)) == 2


def test_cache_can_be_disabled():
    store, fake = make_keyvault_store(cache_seconds=0)
    store.set(NAME, VALUE)
    store.get(NAME)
    store.get(NAME)
    assert len(_gets(fake)) == 2


def test_set_updates_the_cache():
    clock = FakeClock()
    store, fake = make_keyvault_store(clock=clock)
    store.set(NAME, VALUE)
    assert store.get(NAME) == VALUE
    store.set(NAME, "second-value")
    assert store.get(NAME) == "second-value"
    assert _gets(fake) == []


def test_names_are_case_insensitive_like_key_vault():
    store, fake = make_keyvault_store()
    store.set("Omnisend-Conn-2", VALUE)
    assert store.get("omnisend-conn-2") == VALUE
    store.clear_cache()
    assert store.get("OMNISEND-CONN-2") == VALUE


def test_delete_evicts_cache_and_secret_is_gone():
    store, fake = make_keyvault_store()
    store.set(NAME, VALUE)
    assert store.get(NAME) == VALUE  # cached
    store.delete(NAME)
    with pytest.raises(SecretNotFoundError):
        store.get(NAME)
    assert len(_gets(fake)) == 1  # the get after delete went to the vault


def test_delete_missing_secret_is_fine():
    store, fake = make_keyvault_store()
    store.delete("never-created")
    store.delete("never-created")
    assert len(fake.requests_to("DELETE", "/secrets/never-created", authorized=True)) == 2


def test_delete_waits_until_key_vault_reports_it_deleted():
    fake = FakeKeyVault(deletion_polls=2)  # two polls say "not yet"
    store, _ = make_keyvault_store(fake=fake)
    store.set(NAME, VALUE)
    store.delete(NAME)
    assert len(fake.requests_to("GET", f"/deletedsecrets/{NAME}")) == 3
    assert fake.sleeps == [2, 2]  # the SDK's polling interval (recorded, not slept)
    assert not fake.requests_to("DELETE", "/deletedsecrets/")


def test_delete_in_vault_without_soft_delete_does_not_poll():
    store, fake = make_keyvault_store(fake=FakeKeyVault(soft_delete=False))
    store.set(NAME, VALUE)
    store.delete(NAME)
    assert not fake.requests_to("GET", "/deletedsecrets/")
    store.set(NAME, VALUE)  # name immediately reusable


def test_name_of_a_soft_deleted_secret_cannot_be_reused():
    store, fake = make_keyvault_store()
    store.set(NAME, VALUE)
    store.delete(NAME)
    with pytest.raises(SecretStoreError) as info:
        store.set(NAME, VALUE)
    assert info.value.status_code == 409
    assert "deleted but recoverable" in str(info.value) and "new secret name" in str(info.value)
    assert VALUE not in _all_text(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


# -- error mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize("operation, role", [("get", "Key Vault Secrets User"),
                                             ("set", "Key Vault Secrets Officer"),
                                             ("delete", "Key Vault Secrets Officer")])
def test_403_says_the_identity_lacks_the_role(operation, role):
    store, fake = make_keyvault_store()
    store.set(NAME, VALUE)
    store.clear_cache()
    fake.fail_next(1, status=403)
    with pytest.raises(SecretStoreError) as info:
        if operation == "set":
            store.set(NAME, VALUE)
        else:
            getattr(store, operation)(NAME)
    error = info.value
    assert not isinstance(error, SecretNotFoundError)
    assert error.status_code == 403
    assert "lacks the Key Vault role" in str(error) and role in str(error) and VAULT_URL in str(error)
    assert VALUE not in _all_text(error)
    # the store stays usable once the role is granted
    assert store.get(NAME) == VALUE


def test_connection_error_is_key_vault_unreachable():
    store, fake = make_keyvault_store()
    store.set(NAME, VALUE)
    store.clear_cache()
    fake.fail_next(50, exc=requests.ConnectionError)
    calls_before = len(fake.log)
    with pytest.raises(SecretStoreError) as info:
        store.get(NAME)
    assert "Key Vault unreachable" in str(info.value)
    assert VALUE not in _all_text(info.value)
    assert len(fake.log) - calls_before == 4  # azure-core retried the connection 3 times
    with pytest.raises(SecretStoreError, match="Key Vault unreachable"):
        store.set(NAME, VALUE)


def test_transient_connection_error_is_retried_by_the_sdk():
    store, fake = make_keyvault_store()
    store.set(NAME, VALUE)
    store.clear_cache()
    fake.fail_next(1, exc=requests.ConnectionError)
    assert store.get(NAME) == VALUE


def test_server_errors_after_retries_say_retry_later():
    store, fake = make_keyvault_store()
    store.set(NAME, VALUE)
    store.clear_cache()
    fake.fail_next(20, status=503)
    with pytest.raises(SecretStoreError) as info:
        store.get(NAME)
    assert info.value.status_code == 503 and "retry later" in str(info.value)


def test_bad_names_and_values_are_rejected_without_echoing_the_value():
    store, fake = make_keyvault_store()
    with pytest.raises(ValueError):
        store.get("bad_name")
    with pytest.raises(ValueError):
        store.set("x" * 128, VALUE)
    with pytest.raises(ValueError) as info:
        store.set(NAME, "")
    assert fake.log == []
    assert "non-empty" in str(info.value)


# -- development store -----------------------------------------------------------------------


def test_dev_store_round_trip():
    store = DevSecretStore(load_settings({"EXPORTER_DEV_MODE": "1"}))
    assert isinstance(store, SecretStore)
    store.set(NAME, VALUE)
    assert store.get(NAME) == VALUE
    store.delete(NAME)
    store.delete(NAME)
    with pytest.raises(SecretNotFoundError):
        store.get(NAME)


def test_dev_store_on_disk_keeps_keys_across_processes_for_its_owner_only(tmp_path):
    path = tmp_path / "keys" / "dev-secrets.json"
    settings = load_settings({"EXPORTER_DEV_MODE": "1", "EXPORTER_DEV_SECRETS_FILE": str(path)})
    DevSecretStore(settings).set(NAME, VALUE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = DevSecretStore(settings)  # a new process, as after a restart of serve
    assert again.get(NAME) == VALUE and "file" in repr(again) and VALUE not in repr(again)
    again.delete(NAME)
    with pytest.raises(SecretNotFoundError, match="development key store"):
        DevSecretStore(settings).get(NAME)
    path.chmod(0o644)  # loosened by hand: made owner-only again when read
    DevSecretStore(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("{not json")
    with pytest.raises(ConfigurationError, match="cannot be read") as caught:
        DevSecretStore(settings)
    assert str(path) in str(caught.value)


def test_dev_mode_in_azure_is_refused_by_load_settings():
    with pytest.raises(ConfigurationError, match="EXPORTER_DEV_MODE"):
        load_settings({"EXPORTER_DEV_MODE": "1", "WEBSITE_INSTANCE_ID": "x"})


def test_dev_store_refuses_outside_dev_mode_and_in_azure():
    settings = load_settings({})
    assert settings.dev_mode is False
    with pytest.raises(ConfigurationError, match="local development"):
        DevSecretStore(settings)
    in_azure = dataclasses.replace(load_settings({"EXPORTER_DEV_MODE": "1"}), running_in_azure=True)
    with pytest.raises(ConfigurationError, match="running in Azure"):
        DevSecretStore(in_azure)
    with pytest.raises(ConfigurationError):
        DevSecretStore(load_settings({"WEBSITE_SITE_NAME": "exporter-app"}))


# -- choosing a store ------------------------------------------------------------------------


def test_factory_picks_key_vault_when_url_is_set(monkeypatch):
    import azure.identity

    made = []

    class RecordingCredential(FakeCredential):
        def __init__(self, **kwargs):
            super().__init__()
            made.append(kwargs)

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", RecordingCredential)
    env = {"KEY_VAULT_URL": "https://prod-vault.vault.azure.net/", "SECRET_CACHE_SECONDS": "60",
           "AzureWebJobsStorage__clientId": "11111111-2222-3333-4444-555555555555",
           "EXPORTER_DEV_MODE": "1"}  # the vault wins over dev mode
    store = secret_store_from_settings(load_settings(env))
    assert isinstance(store, KeyVaultSecretStore)
    assert store.vault_url == "https://prod-vault.vault.azure.net"
    assert store._cache_seconds == 60
    assert made == [{"managed_identity_client_id": "11111111-2222-3333-4444-555555555555"}]
    assert repr(store) == "KeyVaultSecretStore('https://prod-vault.vault.azure.net')"


def test_key_vault_store_defaults_to_default_azure_credential():
    from azure.identity import DefaultAzureCredential

    store = KeyVaultSecretStore("https://prod-vault.vault.azure.net")  # no network at construction
    assert isinstance(store._client._client._config.credential, DefaultAzureCredential)
    with pytest.raises(ConfigurationError):
        KeyVaultSecretStore("http://prod-vault.vault.azure.net")


def test_factory_picks_dev_store_in_dev_mode_with_one_warning(caplog):
    store = secret_store_from_settings(load_settings({"EXPORTER_DEV_MODE": "true"}))
    assert isinstance(store, DevSecretStore)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "exporter.state.secrets"]
    assert len(warnings) == 1 and "development only" in warnings[0].getMessage()


def test_factory_without_vault_outside_dev_mode_is_a_clear_error():
    with pytest.raises(ConfigurationError) as info:
        secret_store_from_settings(load_settings({}))
    assert str(info.value) == (
        "KEY_VAULT_URL is not set. The app keeps Omnisend API keys only in Azure Key Vault; set "
        "KEY_VAULT_URL to the vault URI (https://<name>.vault.azure.net). For local development use "
        "`python -m exporter serve`, which keeps keys in memory."
    )


# -- no leaks --------------------------------------------------------------------------------


def test_secret_values_never_show_in_repr_str_errors_or_logs(caplog):
    kv, fake = make_keyvault_store()
    dev = DevSecretStore(load_settings({"EXPORTER_DEV_MODE": "1"}))
    errors: list[BaseException] = []
    for store in (kv, dev):
        store.set(NAME, VALUE)
        store.get(NAME)
        for text in (repr(store), str(store), f"{store!r} {store}"):
            assert VALUE not in text
        store.delete(NAME)
        try:
            store.get(NAME)
        except SecretStoreError as exc:
            errors.append(exc)
    assert repr(dev) == "DevSecretStore(memory)"
    assert repr(kv) == f"KeyVaultSecretStore('{VAULT_URL}')"

    kv2, fake2 = make_keyvault_store()
    for kwargs in ({"status": 403}, {"status": 500}, {"exc": requests.ConnectionError}):
        fake2.fail_next(20, **kwargs)
        try:
            kv2.set("another-one", VALUE)
        except SecretStoreError as exc:
            errors.append(exc)
            logging.getLogger("test").exception("set failed")
        fake2._failures.clear()
    assert len(errors) == 5
    for exc in errors:
        assert VALUE not in _all_text(exc)
    assert any(r.name.startswith("azure.core") for r in caplog.records)  # SDK logging was captured
    assert all(VALUE not in r.getMessage() for r in caplog.records)  # (and the autouse fixture re-checks)
