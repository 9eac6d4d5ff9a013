import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.sms.encoding import GSM7_BASIC, GSM7_EXTENSION, MessageError, analyse, validate_message


@pytest.mark.parametrize(
    ("text", "encoding", "units", "segments"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("a" * 350, "GSM-7", 350, 3),  # 153 + 153 + 44
        ("€" * 80, "GSM-7", 160, 1),  # extension characters count 2
        ("€" * 81, "GSM-7", 162, 2),
        ("你" * 70, "UCS-2", 70, 1),
        ("你" * 71, "UCS-2", 71, 2),
        ("你" * 134, "UCS-2", 134, 2),
        ("你" * 135, "UCS-2", 135, 3),
        ("😀" * 35, "UCS-2", 70, 1),  # an emoji is two UTF-16 units
        ("😀" * 36, "UCS-2", 72, 2),
        ("", "GSM-7", 0, 0),
    ],
)
def test_segments(text, encoding, units, segments):
    info = analyse(text)
    assert (info.encoding, info.units, info.segments) == (encoding, units, segments)


def test_escape_pair_is_not_split_across_segments():
    # 152 plain characters then '€' (2 septets): the pair does not fit in the first 153, so it moves on.
    text = "a" * 152 + "€" + "a" * 10
    assert analyse(text).units == 164
    assert analyse(text).segments == 2
    text = "a" * 152 + "€" + "a" * 152  # 152 | 2+151 | 1 → 3 segments, where plain division says 2
    assert analyse(text).segments == 3


def test_reports_the_first_character_that_forced_ucs2():
    info = analyse("Your order ships today — thanks")
    assert info.encoding == "UCS-2"
    assert info.ucs2_trigger == "—"
    assert info.ucs2_trigger_index == 23
    assert "U+2014" in info.summary()


def test_gsm_summary():
    assert analyse("Hello").summary() == "5 characters · GSM-7 · 1 segment"


def test_rejects_empty_and_blank():
    for text in ("", "   \n"):
        with pytest.raises(MessageError, match="The message is empty"):
            validate_message(text)


def test_rejects_over_maximum_with_the_numbers():
    with pytest.raises(MessageError) as info:
        validate_message("a" * 1501)
    assert "1,501 characters" in info.value.reason and "1,500" in info.value.reason
    with pytest.raises(MessageError, match="the limit is 20"):
        validate_message("a" * 21, max_chars=20)
    assert validate_message("a" * 20, max_chars=20).characters == 20


GSM_ALPHABET = sorted(GSM7_BASIC | GSM7_EXTENSION)


@given(st.text(alphabet=GSM_ALPHABET, max_size=600))
def test_property_gsm_segments(text):
    info = analyse(text)
    assert info.encoding == "GSM-7"
    assert info.units == sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
    if info.units <= 160:
        assert info.segments == (1 if text else 0)
    else:
        # never fewer than plain division, and at most one more per escape pair that could straddle
        assert math.ceil(info.units / 153) <= info.segments <= math.ceil(info.units / 152)


@given(st.text(min_size=1, max_size=300))
def test_property_ucs2_when_any_char_is_outside_gsm(text):
    info = analyse(text)
    outside = [ch for ch in text if ch not in GSM7_BASIC and ch not in GSM7_EXTENSION]
    if outside:
        assert info.encoding == "UCS-2"
        assert info.ucs2_trigger == outside[0]
        assert info.units == len(text.encode("utf-16-le")) // 2
        if info.units > 70:
            assert math.ceil(info.units / 67) <= info.segments <= math.ceil(info.units / 66)
    else:
        assert info.encoding == "GSM-7"
