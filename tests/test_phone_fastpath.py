"""The E.164 fast path of worker/model/phones.py answers exactly as phonenumbers' full parse does."""

from __future__ import annotations

import random

import phonenumbers

from worker.model import phones


def _full_parse(text: str) -> str | None:
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _sample() -> list[str]:
    rnd = random.Random(26)
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    numbers = [
        "+79123456789",  # RU mobile
        "+78121234567",  # RU: starts with the national prefix 8 (the full parse decides)
        "+390612345678",  # IT: a leading zero kept in E.164
        "+14155552671",
        "+11234567890",
        "+80012345678",  # non-geographic
        "+7912",  # too short for RU
        "+999123",  # no such country code
        "+0123456",
        "+12",
        "+491234567890123456",
    ]
    for _ in range(20_000):
        digits = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(0, 15)))
        numbers.append(f"+{rnd.choice(codes)}{digits}")
        numbers.append("+" + "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 18))))
    return numbers


def test_fast_path_agrees_with_the_full_parse() -> None:
    taken = 0
    for text in _sample():
        fast = phones._e164(text)
        if fast is None:
            continue  # the full parse answers these
        taken += 1
        assert (fast or None) == _full_parse(text), text
    assert taken > 10_000  # the fast path does take most E.164 numbers


def test_normalize_phone_agrees_with_the_full_parse() -> None:
    for text in _sample()[:5_000]:
        phones._cache.clear()
        assert phones.normalize_phone(text) == _full_parse(text), text


def test_numbers_the_fast_path_leaves_to_the_full_parse() -> None:
    assert phones._e164("+78121234567") is None  # a national prefix the parse may strip
    assert phones._e164("+390612345678") is None  # Italian leading zero
    assert phones._e164("+999123") is None  # no country code: the parse says why
    assert phones._e164("+79123456789") == "+79123456789"
    assert phones._e164("+7912345678") == ""  # 9 national digits: no Russian number is that long
