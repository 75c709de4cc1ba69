"""Row -> Omnisend contact: every optional field, country handling, and rejections with reasons."""

import pytest

from exporter.domain import Mapping
from exporter.mapping import ContactMapper, MappingError, Rejection, email_key, is_valid_email

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
                         "channels": {"email": {"status": "nonSubscribed"}}, "sendWelcomeMessage": False}],
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


def test_duplicates_are_detected_case_insensitively():
    assert email_key("Ana@Example.com") == email_key("ana@example.COM")


def test_a_mapping_naming_missing_columns_says_which_and_lists_the_available_ones():
    with pytest.raises(MappingError) as e:
        ContactMapper(COLUMNS, Mapping(email="Email", city="City"))
    assert "email -> 'Email'" in str(e.value) and "city -> 'City'" in str(e.value)
    assert "E Mail" in str(e.value) and "Town" in str(e.value)
