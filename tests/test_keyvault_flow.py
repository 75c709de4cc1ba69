"""The app with its production secret store: Key Vault through the real SecretClient."""

from datetime import datetime, timedelta, timezone

from devtools.sample_segment import generate_profiles, write_segment_refresh
from tests.apphelpers import call, create_connection, create_export, start_run, wait_for_run
from tests.conftest import TEST_API_KEY, TEST_BRAND
from tests.keyvault_fake import make_keyvault_store


def test_a_run_reads_the_connection_key_from_key_vault(services, workers, sandbox, segment_container):
    store, vault = make_keyvault_store(cache_seconds=300)
    services.secrets = store
    write_segment_refresh(segment_container, folder="ci", segment="Seg", profiles=generate_profiles(450, seed=9),
                          when=datetime.now(timezone.utc) - timedelta(minutes=5))
    conn = create_connection(TEST_API_KEY)
    secret_name = f"omnisend-connection-{conn['id']}"
    assert vault.current_value(secret_name) == TEST_API_KEY  # written through the real SDK
    assert TEST_API_KEY not in str(conn)

    store.clear_cache()  # a worker on another instance starts cold: it must read Key Vault
    reads_before = len(vault.requests_to("GET", f"/secrets/{secret_name}", authorized=True))
    run = wait_for_run(start_run(create_export(conn["id"], segment_container.container_name, "ci", "Seg")["id"])["runId"])
    assert run["counts"]["confirmed"] == len(sandbox.contacts(TEST_BRAND)) > 0
    reads = len(vault.requests_to("GET", f"/secrets/{secret_name}", authorized=True)) - reads_before
    assert 1 <= reads <= 4  # read from the vault, then served from the short cache, not once per batch

    for table in services.clients.app_tables().values():
        for entity in table.list_entities():
            assert TEST_API_KEY not in str(dict(entity))

    status, _, _ = call("connection", "DELETE", "", route_params={"id": conn["id"]})
    assert status == 204 and vault.current_value(secret_name) is None
