"""Membership tags are distinct (#14 item 5): readable defaults from any script, and one tag per
connection, so a leaver of one export never loses the tag it holds as a member of another."""

from __future__ import annotations

from exporter.domain import TAG_PATTERN, safe_tag
from tests.apphelpers import SAMPLE_MAPPING, call, create_connection, create_export
from tests.conftest import TEST_API_KEY


def test_default_tags_are_readable_from_any_script():
    assert safe_tag("Клиенты") == "Klienty" and safe_tag("Покупки") == "Pokupki"  # were both "-------"
    assert safe_tag("客户") == "KeHu" and safe_tag("Müller & Söhne") == "Muller - Sohne"
    assert safe_tag("VIP 🎉 customers") == "VIP customers"
    assert safe_tag("VIP_Customers-2024") == "VIP_Customers-2024"  # what was safe already stays as it was
    assert safe_tag("a" * 200) == "a" * 128
    for name in ("Клиенты", "客户", "🎉", "!!!", "a/b\\c", " x "):
        assert TAG_PATTERN.match(safe_tag(name, "export-1")), name


def test_a_name_without_letters_gets_a_stable_hash_of_the_export():
    first, second = safe_tag("🎉🎉", "export-1"), safe_tag("!!!", "export-2")
    assert first.startswith("segment-") and second.startswith("segment-") and first != second
    assert safe_tag("🎉🎉", "export-1") == first == safe_tag("???", "export-1")


def new_export(conn: str, container: str, segment: str, **extra) -> tuple[int, dict]:
    status, body, _ = call("exports", "POST", "exports", {
        "name": segment, "connectionId": conn, "mapping": SAMPLE_MAPPING,
        "source": {"container": container, "folder": "ci", "segment": segment}, **extra})
    return status, body


def test_two_exports_on_one_connection_cannot_share_a_tag(services, segment_container):
    container = segment_container.container_name
    conn = create_connection(TEST_API_KEY)["id"]
    clients = create_export(conn, container, "ci", "Клиенты")
    purchases = create_export(conn, container, "ci", "Покупки")
    assert (clients["tag"], purchases["tag"]) == ("Klienty", "Pokupki")

    for tag in ("Klienty", "KLIENTY"):  # explicitly, in any case
        status, body = new_export(conn, container, "Other", tag=tag)
        assert status == 409 and body["exportId"] == clients["id"], body
        assert body["errors"][0]["field"] == "tag" and "'Klienty' is the membership tag of export" in body["detail"]
    status, body = new_export(conn, container, "Клиенты")  # the same segment again: the same default tag
    assert status == 409 and body["exportId"] == clients["id"]
    status, body = new_export(conn, container, "Клиенты", tag="Klienty second")
    assert status == 201, body

    # moving an export onto another's tag is refused too; saving an export with its own tag is not
    body = {"name": "Покупки", "connectionId": conn, "mapping": SAMPLE_MAPPING, "source": purchases["source"]}
    status, answer, _ = call("export", "PUT", "", {**body, "tag": "Klienty"}, route_params={"id": purchases["id"]})
    assert status == 409 and answer["exportId"] == clients["id"]
    status, answer, _ = call("export", "PUT", "", body, route_params={"id": purchases["id"]})
    assert status == 200 and answer["tag"] == "Pokupki"

    # another connection is another Omnisend account: the same tag is fine there
    other = create_connection(TEST_API_KEY, name="Other store")["id"]
    status, body = new_export(other, container, "Клиенты")
    assert status == 201 and body["tag"] == "Klienty"
