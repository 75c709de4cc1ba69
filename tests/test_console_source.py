"""The export form's source picker in Debian's Chromium (Playwright, as tests/test_console.py): the
container, folder and segment are chosen from what storage holds (GET /segments/containers, GET
/segments), the columns come as before, and names can still be typed.

``CONSOLE_SCREENSHOTS=docs/console`` saves docs/console/export-source-picker.png.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from devtools.sample_segment import COLUMNS, generate_profiles, write_segment_refresh
from tests.apphelpers import create_connection
from tests.conftest import TEST_API_KEY
from tests.test_console import browser, expect, open_console, page, shot, unlabelled_controls  # noqa: F401 (fixtures)


def test_the_source_is_picked_from_what_storage_holds(page, workers, services, segment_container):  # noqa: F811
    name = segment_container.container_name
    when = datetime.now(timezone.utc) - timedelta(minutes=5)
    write_segment_refresh(segment_container, folder="ci", segment="VIPCustomers", when=when,
                          profiles=list(generate_profiles(20, seed=2)))
    write_segment_refresh(segment_container, folder="ci/archive", segment="Old", when=when, header=True,
                          model_json=False, profiles=list(generate_profiles(5, seed=3)))
    create_connection(TEST_API_KEY, name="Store")

    open_console(page, workers)
    page.goto(workers.url + "/console/#/exports/new")
    page.wait_for_selector("h1:has-text('New export')")
    container = page.get_by_label("Container")
    state = page.locator("#export-source-state")
    choices = page.get_by_role("group", name="What the folder holds")

    # the containers starting with what is typed are suggested; choosing one lists its root
    container.fill(name[:12])
    expect(page.locator("#export-container-list option")).to_have_count(1)  # only this test's container
    assert page.locator("#export-container-list option").get_attribute("value") == name
    container.fill(name)
    container.press("Tab")
    expect(state).to_have_text(f"0 segments and 1 folder in {name}.")
    expect(choices.get_by_role("button")).to_have_text(["ci/"])

    # a folder opens: its segment and its own folder, and the way back up
    choices.get_by_role("button", name="Open folder ci").click()
    assert page.get_by_label("Folder (optional)").input_value() == "ci"
    expect(state).to_have_text(f"1 segment and 1 folder in {name}/ci.")
    expect(choices.get_by_role("button")).to_have_text(["VIPCustomers", "archive/", "↑ up"])
    expect(page.locator("#export-segment-list option")).to_have_count(1)
    expect(page.locator("#export-folder-list option")).to_have_count(1)
    choices.get_by_role("button", name="Open folder ci/archive").click()
    expect(state).to_have_text(f"1 segment and 0 folders in {name}/ci/archive.")

    # choosing a segment fills the field and reads its columns, as Read columns does
    choices.get_by_role("button", name="Segment Old").click()
    assert page.get_by_label("Segment", exact=True).input_value() == "Old"
    page.get_by_text("columns read from the header row of refresh ci/archive/Old/", exact=False).wait_for()
    choices.get_by_role("button", name="Open folder ci", exact=True).click()  # ↑ up
    expect(state).to_have_text(f"1 segment and 1 folder in {name}/ci.")
    choices.get_by_role("button", name="Segment VIPCustomers").click()
    page.get_by_text(f"{len(COLUMNS)} columns read from model.json.").wait_for()
    email = page.get_by_label("Email (required)")
    assert email.locator("option").all_inner_texts()[1:] == list(COLUMNS)

    # typing stays possible: a folder typed by hand is listed when the field is left
    folder = page.get_by_label("Folder (optional)")
    folder.fill("ci/archive")
    folder.press("Tab")
    expect(state).to_have_text(f"1 segment and 0 folders in {name}/ci/archive.")
    folder.fill("ci")
    folder.press("Tab")
    expect(state).to_have_text(f"1 segment and 1 folder in {name}/ci.")

    page.get_by_label("Name", exact=True).fill("Picked")
    page.get_by_label("Connection").select_option(label="Store (admins only)")
    email.select_option("PrimaryEmail")
    assert not unlabelled_controls(page)
    shot(page, "export-source-picker")
    page.get_by_role("button", name="Save").click()
    page.wait_for_selector("h1:has-text('Export: Picked')")
    (saved,) = services.exports.list()
    assert saved.source.to_api() == {"container": name, "folder": "ci", "segment": "VIPCustomers"}
    # a saved export's form lists its folder at once
    expect(state).to_have_text(f"1 segment and 1 folder in {name}/ci.")


def test_a_container_that_is_not_there_says_so_and_the_names_can_still_be_typed(page, workers, services):  # noqa: F811
    open_console(page, workers)
    page.goto(workers.url + "/console/#/exports/new")
    container = page.get_by_label("Container")
    container.fill("nosuchcontainer0")
    container.press("Tab")
    expect(page.locator("#export-source-state")).to_contain_text("The folder could not be listed (The container "
                                                                 "'nosuchcontainer0'")
    page.get_by_label("Segment", exact=True).fill("Typed")
    assert page.get_by_label("Segment", exact=True).input_value() == "Typed"
    assert page.get_by_role("group", name="What the folder holds").get_by_role("button").count() == 0
