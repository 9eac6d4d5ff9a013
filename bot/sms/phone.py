"""Phone numbers as people paste them, turned into the forms the provider and our logs need.

Everything goes through `phonenumbers` (Google's libphonenumber metadata); there is no hand-written
number pattern here. A number is refused with a specific reason, never a generic one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType, ValidationResult

CHINESE_MAINLAND_CODE = 86

_NOT_SMS_TYPES = {
    PhoneNumberType.FIXED_LINE: "a landline",
    PhoneNumberType.TOLL_FREE: "a toll-free number",
    PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    PhoneNumberType.SHARED_COST: "a shared-cost number",
    PhoneNumberType.UAN: "a universal access number",
    PhoneNumberType.VOICEMAIL: "a voicemail access number",
}

_EXAMPLE = "+852 5123 4567"


class InvalidNumber(ValueError):
    """A number we refuse.

    `reason` is a sentence that does not repeat the number, so it can go to a channel or a log;
    `describe()` puts the input in front of it for the person who typed it.
    """

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(reason)
        self.text = text
        self.reason = reason

    def describe(self, masked: bool = False) -> str:
        shown = mask(self.text) if masked else _clip(self.text.strip())
        return f"“{shown}”: {self.reason}" if shown else self.reason


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """A validated number outside the Chinese mainland."""

    e164: str  # "+85251234567"
    country_code: int  # 852
    national: str  # "51234567"
    region: str  # "HK" (ISO 3166-1 alpha-2, "001" for non-geographic)

    @property
    def api(self) -> str:
        """The provider's form: dialing code and number, digits only (`85251234567`)."""
        return self.e164[1:]

    @property
    def masked(self) -> str:
        """For logs and channel messages: `+852 5123 ****`."""
        return mask_digits(self.country_code, self.national)

    @property
    def country_name(self) -> str:
        return region_name(self.region)

    def __str__(self) -> str:  # never print a full number by accident
        return self.masked

    def __repr__(self) -> str:
        return f"PhoneNumber({self.masked})"


def mask_digits(country_code: int, national: str) -> str:
    keep = max(0, min(4, len(national) - 4))
    return f"+{country_code} {national[:keep]} ****" if keep else f"+{country_code} ****"


def mask(number: str) -> str:
    """Mask any number-like string (API digits, E.164 or raw text) for display and logs.

    Never raises; when the text cannot be parsed it keeps only its first few digits.
    """
    digits = "".join(ch for ch in number if ch.isdigit())
    try:
        parsed = phonenumbers.parse("+" + digits, None)
        return mask_digits(parsed.country_code, str(parsed.national_number))
    except NumberParseException:
        return (digits[:3] + " ****") if len(digits) > 3 else "****"


@functools.cache
def region_name(region: str) -> str:
    """The English name of a region (`HK` → "Hong Kong"), from ISO 3166 through pycountry: phonenumbers'
    own names come with its geocoder, ≈ 100 MiB and 0.3 s to load for the sake of 245 names."""
    if not region or region == "001":
        return "international"
    import pycountry

    country = pycountry.countries.get(alpha_2=region)
    if country is None:
        return region
    return getattr(country, "common_name", None) or country.name


# Names that English writes with "the" after "in" ("a landline in the United Kingdom"); the rest take none.
_WITH_THE = (
    "United ", "Central African", "Dominican Republic", "Czech Republic", "Russian Federation",
    "Netherlands", "Philippines", "Bahamas", "Gambia", "Maldives", "Comoros", "Holy See", "British Indian",
)  # fmt: skip


def in_region(name: str) -> str:
    """`name` as it reads after "in": `in_region("United Kingdom")` → "the United Kingdom"."""
    return f"the {name}" if name.startswith(_WITH_THE) or name.endswith(" Islands") else name


def parse_number(text: str, default_region: str | None = None) -> PhoneNumber:
    """Parse what a person pasted (`+852 5123 4567`, `00852 5123 4567`, `(415) 555-0100`, `85251234567`).

    `default_region` (e.g. "US") is used for numbers written without a country code. Raises
    `InvalidNumber` with a specific reason.
    """
    raw = text
    text = text.strip()
    if not text:
        raise InvalidNumber(raw, "No phone number was given.")
    if any(ch.isalpha() for ch in text):
        raise InvalidNumber(raw, "Not a phone number: it contains letters.")
    digits = "".join(ch for ch in text if ch.isdigit())
    if not digits:
        raise InvalidNumber(raw, "Not a phone number: it has no digits.")

    candidates: list[tuple[str, str | None]] = []
    if text.startswith("+"):
        candidates.append((text, None))
    elif digits.startswith("00") and text.lstrip().startswith("00"):
        candidates.append(("+" + digits[2:], None))
    else:
        if default_region:
            candidates.append((text, default_region))
        candidates.append(("+" + digits, None))

    first_error: InvalidNumber | None = None
    for candidate, region in candidates:
        try:
            return _validate(raw, candidate, region)
        except InvalidNumber as exc:
            if exc.reason.startswith(_MAINLAND_PREFIX):
                raise
            first_error = first_error or exc
    assert first_error is not None
    if not text.startswith("+") and not default_region and not digits.startswith("00"):
        raise InvalidNumber(raw, f"No country code. Write it with + and the country code, e.g. {_EXAMPLE}.")
    raise first_error


_MAINLAND_PREFIX = "Chinese-mainland numbers"


def _validate(raw: str, candidate: str, region: str | None) -> PhoneNumber:
    try:
        parsed = phonenumbers.parse(candidate, region)
    except NumberParseException as exc:
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            reason = f"Unknown country code (write the number like {_EXAMPLE})."
        elif exc.error_type in (NumberParseException.TOO_SHORT_NSN, NumberParseException.TOO_SHORT_AFTER_IDD):
            reason = "Too short to be a phone number."
        elif exc.error_type == NumberParseException.TOO_LONG:
            reason = "Too long to be a phone number."
        else:
            reason = "Not a phone number."
        raise InvalidNumber(raw, reason) from None
    if parsed.country_code == CHINESE_MAINLAND_CODE:
        raise InvalidNumber(
            raw,
            f"{_MAINLAND_PREFIX} (+86) cannot be reached: the international SMS API does not deliver "
            "to the Chinese mainland.",
        )
    region_code = phonenumbers.region_code_for_number(parsed) or ""

    def where() -> str:  # only for error messages: the display name costs more than the parse
        fallback = phonenumbers.region_code_for_country_code(parsed.country_code)
        code = region_code or (fallback if fallback != "ZZ" else "")
        return in_region(region_name(code)) if code else f"+{parsed.country_code}"

    # number_type() is UNKNOWN exactly when is_valid_number() is False (both match the number against
    # its region's patterns, lengths included), so one call decides validity; the reason for an invalid
    # number is looked for only then. A bulk list of 10,000 valid numbers pays for one match each.
    ntype = phonenumbers.number_type(parsed)
    if ntype == phonenumbers.PhoneNumberType.UNKNOWN:
        possible = phonenumbers.is_possible_number_with_reason(parsed)
        if possible == ValidationResult.TOO_SHORT:
            raise InvalidNumber(raw, f"Too short for a number in {where()}.")
        if possible == ValidationResult.TOO_LONG:
            raise InvalidNumber(raw, f"Too long for a number in {where()}.")
        if possible == ValidationResult.INVALID_COUNTRY_CODE:
            raise InvalidNumber(raw, f"Unknown country code (write the number like {_EXAMPLE}).")
        raise InvalidNumber(raw, f"Not a valid number in {where()}.")
    kind = _NOT_SMS_TYPES.get(ntype)
    if kind:
        raise InvalidNumber(raw, f"This is {kind} in {where()}, which cannot receive SMS.")
    return PhoneNumber(
        e164=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
        country_code=parsed.country_code,
        national=str(parsed.national_number),
        region=region_code or "001",
    )


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
