import phonenumbers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.sms.phone import InvalidNumber, in_region, mask, parse_number


@pytest.mark.parametrize(
    ("text", "region", "api"),
    [
        ("+852 5123 4567", None, "85251234567"),
        ("00852 5123 4567", None, "85251234567"),
        ("+852-5123-4567", None, "85251234567"),
        ("+852.5123.4567", None, "85251234567"),
        ("(415) 555-0100", "US", "14155550100"),
        ("415.555.0100", "US", "14155550100"),
        ("85251234567", None, "85251234567"),
        ("  +65 8123 4567  ", None, "6581234567"),
    ],
)
def test_accepts_what_people_paste(text, region, api):
    number = parse_number(text, region)
    assert number.api == api
    assert number.e164 == "+" + api


def test_forms():
    number = parse_number("+852 5123 4567")
    assert number.e164 == "+85251234567"
    assert number.api == "85251234567"
    assert number.masked == "+852 5123 ****"
    assert number.country_name == "Hong Kong"
    assert "4567" not in str(number) and "4567" not in repr(number)


@pytest.mark.parametrize(
    ("text", "region", "reason"),
    [
        ("+86 138 0013 8000", None, "Chinese-mainland numbers (+86) cannot be reached"),
        ("008613800138000", None, "Chinese-mainland numbers (+86) cannot be reached"),
        ("+852 123", None, "Too short for a number in Hong Kong"),
        ("+852 5123 4567 8901 23", None, "Too long"),
        ("call me", None, "it contains letters"),
        ("---", None, "it has no digits"),
        ("", None, "No phone number was given"),
        ("5123 4567", None, "No country code"),
        ("+852 2123 4567", None, "is a landline in Hong Kong"),
        ("+999 1234 5678", None, "Unknown country code"),
        ("(415) 555-010", "US", "Too short for a number in the United States"),
        ("+852 4123 4567", None, "Not a valid number in Hong Kong"),
        ("+1 123 456 7890", None, "Not a valid number in the United States"),
        ("+44 20 7946 0958", None, "is a landline in the United Kingdom"),
        ("+63 2 8123 4567", None, "is a landline in the Philippines"),
    ],
)
def test_refuses_with_a_specific_reason(text, region, reason):
    with pytest.raises(InvalidNumber) as info:
        parse_number(text, region)
    assert reason in info.value.reason


def test_reason_does_not_repeat_the_number():
    with pytest.raises(InvalidNumber) as info:
        parse_number("+852 2123 4567")
    assert "2123" not in info.value.reason
    assert info.value.describe(masked=True).startswith("“+852 2123 ****”")
    assert info.value.describe().startswith("“+852 2123 4567”")


def test_mask_never_raises_and_hides_the_tail():
    assert mask("85251234567") == "+852 5123 ****"
    assert mask("+6581234567") == "+65 8123 ****"
    assert mask("garbage") == "****"


REGIONS = ["HK", "SG", "US", "GB", "AU", "MY", "TW", "JP", "DE", "ID"]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    region=st.sampled_from(REGIONS),
    sep=st.sampled_from(["", " ", "-", "."]),
    prefix=st.sampled_from(["+", "00"]),
)
def test_property_example_numbers_roundtrip(region, sep, prefix):
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    national = str(example.national_number)
    text = f"{prefix}{example.country_code}{sep}{sep.join([national[:4], national[4:]])}"
    number = parse_number(text)
    assert number.e164 == phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    # Idempotent: the API form and the E.164 form parse back to the same number.
    assert parse_number(number.e164) == number
    assert parse_number(number.api) == number
    assert number.masked.endswith("****")
    assert national[-4:] not in number.masked.split(" ", 1)[1].replace("****", "")


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_property_any_text_parses_or_refuses_cleanly(text):
    try:
        number = parse_number(text, "US")
    except InvalidNumber as exc:
        assert exc.reason and exc.reason[0].isupper()
    else:
        assert number.country_code != 86
        assert phonenumbers.is_valid_number(phonenumbers.parse(number.e164))


@pytest.mark.parametrize(
    ("name", "written"),
    [
        ("Hong Kong", "Hong Kong"),
        ("Singapore", "Singapore"),
        ("United Arab Emirates", "the United Arab Emirates"),
        ("Netherlands", "the Netherlands"),
        ("Cayman Islands", "the Cayman Islands"),
        ("Dominican Republic", "the Dominican Republic"),
        ("Iceland", "Iceland"),  # ends with "land", not " Islands"
        ("Czechia", "Czechia"),  # pycountry's name for what was the Czech Republic
    ],
)
def test_a_place_reads_as_english_writes_it_after_in(name, written):
    assert in_region(name) == written
