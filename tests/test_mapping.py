"""Row -> Omnisend contact: every optional field, country handling, and rejections with reasons."""

import pytest

from exporter.domain import Consent, Mapping, email_key
from exporter.planning.mapping import (
    UNKNOWN_CONSENT_AT,
    ContactMapper,
    ContactOptions,
    MappingError,
    Rejection,
    is_valid_email,
)

COLUMNS = ("CustomerId", "E Mail", "First Name", "LastName", "Street", "Town", "Region", "Zip", "Country")
FULL = Mapping(email="E Mail", first_name="First Name", last_name="LastName", address="Street", city="Town",
               state="Region", postal_code="Zip", country="Country")


def row(**values):
    base = dict(zip(COLUMNS, ["1", "ana@example.com", "Ana", "Šimkutė", "Gedimino pr. 1, 2", "Vilnius", "Vilniaus",
                              "01103", "LT"]))
    base.update(values)
    return [base[c] for c in COLUMNS]


def test_every_optional_field_is_mapped_to_its_omnisend_name():
    contact = ContactMapper(COLUMNS, FULL).map(row())
    assert contact == {
        "identifiers": [{"type": "email", "id": "ana@example.com",
                         "channels": {"email": {"status": "nonSubscribed", "statusChangedAt": UNKNOWN_CONSENT_AT}},
                         "sendWelcomeMessage": False}],
        "firstName": "Ana", "lastName": "Šimkutė", "address": "Gedimino pr. 1, 2", "city": "Vilnius",
        "state": "Vilniaus", "postalCode": "01103", "countryCode": "LT",
    }


def test_only_mapped_fields_are_sent():
    contact = ContactMapper(COLUMNS, Mapping(email="E Mail", city="Town")).map(row())
    assert set(contact) == {"identifiers", "city"}


@pytest.mark.parametrize("value,expected", [
    ("DE", {"countryCode": "DE"}), ("de", {"countryCode": "DE"}), (" fr ", {"countryCode": "FR"}),
    ("Germany", {"country": "Germany"}), ("XX", {"country": "XX"}), ("", {}),
])
def test_country_goes_to_country_code_only_when_it_is_an_iso_alpha2_code(value, expected):
    contact = ContactMapper(COLUMNS, Mapping(email="E Mail", country="Country")).map(row(Country=value))
    assert {k: v for k, v in contact.items() if k.startswith("country")} == expected


def test_empty_cells_are_left_out_and_values_trimmed():
    contact = ContactMapper(COLUMNS, FULL).map(row(**{"First Name": "  ", "Town": " Kaunas "}))
    assert "firstName" not in contact and contact["city"] == "Kaunas"


@pytest.mark.parametrize("email,reason", [
    ("", "missing email"), ("   ", "missing email"), ("no-at-sign", "invalid email"), ("a@b", "invalid email"),
    ("two@@example.com", "invalid email"), ("sp ace@example.com", "invalid email"), (".lead@example.com", "invalid email"),
    ("dots..x@example.com", "invalid email"), ("x@-bad.example.com", "invalid email"), ("x" * 65 + "@example.com", "invalid email"),
])
def test_invalid_emails_are_rejected_with_a_reason(email, reason):
    result = ContactMapper(COLUMNS, FULL).map(row(**{"E Mail": email}))
    assert isinstance(result, Rejection) and result.reason == reason and result.detail


@pytest.mark.parametrize("email", ["a@example.com", "first.last+tag@sub.example.co.uk", "O'Brien@example.ie",
                                   "UPPER@EXAMPLE.COM"])
def test_valid_emails_pass(email):
    assert is_valid_email(email)


def test_overlong_value_rejects_the_row_instead_of_truncating():
    result = ContactMapper(COLUMNS, FULL).map(row(Street="x" * 2001))
    assert isinstance(result, Rejection) and result.reason == "value too long" and "address" in result.detail


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f"])
def test_a_c0_control_character_rejects_the_row_on_both_paths(char):
    mapper = ContactMapper(COLUMNS, FULL)
    for result in (mapper.map(row(Town=f"Vil{char}nius")), mapper.map_json(row(Town=f"Vil{char}nius"), "x")):
        assert isinstance(result, Rejection) and result.reason == "control character"
        assert result.detail == f"city holds the control character U+{ord(char):04X}"


@pytest.mark.parametrize("value", ["a\tb", "line 1\nline 2", "line 1\r\nline 2", "Šimkutė", "a\xa0b", "a\u2028b"])
def test_tabs_line_breaks_and_other_text_are_not_control_characters(value):
    mapper = ContactMapper(COLUMNS, FULL)
    assert mapper.map(row(Street=value))["address"] == value.strip()
    assert not isinstance(mapper.map_json(row(Street=value), "x"), Rejection)


def test_duplicates_are_detected_case_insensitively():
    assert email_key("Ana@Example.com") == email_key("ana@example.COM")


def test_a_mapping_naming_missing_columns_says_which_and_lists_the_available_ones():
    with pytest.raises(MappingError) as e:
        ContactMapper(COLUMNS, Mapping(email="Email", city="City"))
    assert "email -> 'Email'" in str(e.value) and "city -> 'City'" in str(e.value)
    assert "E Mail" in str(e.value) and "Town" in str(e.value)


CONSENT_COLUMNS = ("Mail", "Opt In", "Opted At")


@pytest.mark.parametrize("value,at,channel", [
    ("Yes", "2026-05-01", {"status": "subscribed", "statusChangedAt": "2026-05-01T00:00:00Z"}),
    ("no", "2026-05-01T10:30:00+02:00", {"status": "unsubscribed", "statusChangedAt": "2026-05-01T08:30:00Z"}),
    ("", "2026-05-01", {"status": "nonSubscribed", "statusChangedAt": UNKNOWN_CONSENT_AT}),
    ("maybe", "", {"status": "nonSubscribed", "statusChangedAt": UNKNOWN_CONSENT_AT}),
])
def test_a_mapped_consent_column_sets_the_channel_status_with_its_date(value, at, channel):
    mapper = ContactMapper(CONSENT_COLUMNS, Mapping(email="Mail"),
                           ContactOptions(consent=Consent(column="Opt In", subscribed=("yes",), unsubscribed=("no",),
                                                          changed_at_column="Opted At")))
    contact = mapper.map(["a@example.com", value, at])
    assert contact["identifiers"][0]["channels"]["email"] == channel


def test_consent_without_a_date_column_is_left_for_the_refresh_time_and_bad_dates_reject_the_row():
    undated = ContactMapper(CONSENT_COLUMNS, Mapping(email="Mail"), ContactOptions(consent=Consent(column="Opt In")))
    assert undated.map(["a@example.com", "true", ""])["identifiers"][0]["channels"]["email"] == {"status": "subscribed"}
    dated = ContactMapper(CONSENT_COLUMNS, Mapping(email="Mail"),
                          ContactOptions(consent=Consent(column="Opt In", changed_at_column="Opted At")))
    rejected = dated.map(["a@example.com", "true", "last tuesday"])
    assert isinstance(rejected, Rejection) and rejected.reason == "invalid consent date"


def test_welcome_message_only_when_the_export_opts_in():
    mapper = ContactMapper(CONSENT_COLUMNS, Mapping(email="Mail"), ContactOptions(send_welcome_message=True))
    assert mapper.map(["a@example.com", "", ""])["identifiers"][0]["sendWelcomeMessage"] is True
    assert ContactMapper(CONSENT_COLUMNS, Mapping(email="Mail")).map(["a@example.com", "", ""])["identifiers"][0][
        "sendWelcomeMessage"] is False


def _as_sent(contact: dict) -> str:
    import json

    return json.dumps(contact, separators=(",", ":"))


def test_the_planners_json_fast_path_is_byte_for_byte_what_json_dumps_makes_of_the_contact():
    """map_json must give the exact text of json.dumps(map(...)): membership fingerprints depend on it."""
    from devtools.sample_segment import COLUMNS as SAMPLE_COLUMNS
    from devtools.sample_segment import generate_profiles

    mapping = Mapping(email="PrimaryEmail", first_name="FirstName", last_name="LastName", address="StreetAddress",
                      city="City", state="State", postal_code="PostCode", country="Country")
    rows = [[p[c] for c in SAMPLE_COLUMNS] for p in generate_profiles(3000, seed=3, invalid_share=0.05,
                                                                      duplicate_share=0.02)]
    odd = ['Zoë "Z" \\ O\'Brien', "tab\there", "emoji \U0001f600", "ctl \x01\x1f", "  ", "x" * 2001, "lt", "Xx", "\u2028"]
    for i, value in enumerate(odd):
        for col in (1, 2, 4, 8):
            r = list(rows[i])
            r[col] = value
            rows.append(r)
    for options in (ContactOptions(), ContactOptions(send_welcome_message=True)):
        mapper = ContactMapper(SAMPLE_COLUMNS, mapping, options)
        for r in rows:
            contact, fast = mapper.map(r), mapper.map_json(r, "2026-01-02T03:04:05Z")
            if isinstance(contact, Rejection):
                assert fast == contact
                continue
            assert fast[:3] == (contact["identifiers"][0]["id"], _as_sent(contact), _as_sent(contact))


@pytest.mark.parametrize("changed_at_column", [None, "ConsentDate"])
def test_the_fast_path_matches_with_consent_mapped(changed_at_column):
    columns = ("Email", "Consent", "ConsentDate", "City")
    consent = Consent(column="Consent", changed_at_column=changed_at_column)
    mapper = ContactMapper(columns, Mapping(email="Email", city="City"), ContactOptions(consent=consent))
    for value in ("yes", "NO ", "", "maybe"):
        for date in ("2026-07-01", "2026-07-01T10:00:00+02:00", "not a date", ""):
            r = ["a@example.com", value, date, "Vilnius"]
            contact, fast = mapper.map(r), mapper.map_json(r, "2026-01-02T03:04:05Z")
            if isinstance(contact, Rejection):
                assert fast == contact
                continue
            fp_text = _as_sent(contact)
            channel = contact["identifiers"][0]["channels"]["email"]
            if "statusChangedAt" not in channel:  # the planner dates it with the refresh time after fingerprinting
                channel["statusChangedAt"] = "2026-01-02T03:04:05Z"
            assert fast[:3] == ("a@example.com", fp_text, _as_sent(contact))


def test_field_marks_name_the_fields_that_changed_and_only_those():
    from exporter.domain import changed_fields

    columns = ("Email", "First", "City", "Country", "Consent")
    consent = Consent(column="Consent")
    mapper = ContactMapper(columns, Mapping(email="Email", first_name="First", city="City", country="Country"),
                           ContactOptions(consent=consent))
    base = ["a@example.com", "Ann", "Vilnius", "LT", "yes"]

    def marks(row):
        return mapper.map_json(row, "2026-01-02T03:04:05Z")[3]

    assert changed_fields(marks(base), marks(list(base))) == ()
    assert changed_fields(marks(base), marks(["a@example.com", "Anna", "Kaunas", "LT", "yes"])) == ("firstName", "city")
    assert changed_fields(marks(base), marks(["A@Example.com", "Ann", "Vilnius", "lt", "no"])) == ("email", "consent")
    assert changed_fields(marks(base), marks(["a@example.com", "", "Vilnius", "Lithuania", "yes"])) == \
        ("firstName", "country")
    assert changed_fields(0, marks(base)) is None  # a state written before marks were kept
