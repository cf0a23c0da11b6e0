"""Phone numbers: E.164 through libphonenumber's numbering plans (``phonenumbers``), per counter.

A number written with ``+`` or ``00`` is international; any other is read in the national plan of
its counter's region (the account registry's setting, ``phone_regions``, else ``phone_region``),
carried to the ``PhoneNumber`` rule in pydantic's validation context.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from pydantic import ValidationInfo
from pydantic_core import PydanticCustomError

_PHONE_STRIP_RE = re.compile(r"[\s\-().]")


# libphonenumber's parse is most of a call's validation (issue 18 profile). Tracking numbers repeat on
# every call, callers call again, and the intake path reads each number twice (the provider's format,
# then the call model reads the E.164 it produced): answers are kept per (text, region), bounded.
_CACHE_SIZE = 65_536
_cache: dict[tuple[str, str | None], str | None] = {}


def normalize_phone(text: str | None, region: str | None = None) -> str | None:
    """E.164 ``+<digits>`` for a phone number, else None.

    ``+`` or ``00`` mark an international number; without them the number is read in the national
    form of ``region`` (ISO 3166 code, e.g. ``RU``: ``8 (912) 345-67-89`` and ``9123456789`` are
    ``+79123456789``) and, failing that, as an international number without its ``+``. Numbering plans
    come from ``phonenumbers`` (Google's libphonenumber data); a number whose length no plan allows is
    None. Spaces, dashes, dots and parentheses are ignored; letters are not.
    """
    if not text:
        return None
    # A number written with + is read the same in every region: one entry for all of them.
    key = (text, None if text.startswith("+") else region)
    try:
        return _cache[key]
    except KeyError:
        pass
    number = _parse(text, region)
    if len(_cache) >= _CACHE_SIZE:
        _cache.clear()
    _cache[key] = number
    if number is not None:
        _cache[(number, None)] = number  # E.164 reads as itself
    return number


def _parse(text: str, region: str | None) -> str | None:
    if text[0] == "+":  # E.164 already (most numbers): nothing to strip
        fast = _e164(text)
        if fast is not None:
            return fast or None
    cleaned = _PHONE_STRIP_RE.sub("", text)
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    if not cleaned.removeprefix("+").isdigit():
        return None
    if cleaned.startswith("+"):
        fast = _e164(cleaned)
        if fast is not None:
            return fast or None
        candidates: list[tuple[str, str | None]] = [(cleaned, None)]
    else:
        candidates = [(cleaned, region)] if region else []
        candidates.append(("+" + cleaned, None))
    for candidate, plan in candidates:
        try:
            number = phonenumbers.parse(candidate, plan)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_possible_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


# --- E.164 fast path -----------------------------------------------------------------------------
# Most numbers arrive as E.164 already. For those, phonenumbers' parse + is_possible_number reduce to:
# the country code (the first 1-3 digits that name one), then the national number's length against the
# plan's possible lengths. Both come from the same numbering-plan data as the full parse; any number the
# parse could read otherwise (a national prefix to strip, a leading zero, odd lengths) takes the full parse.
_ASCII_DIGITS_RE = re.compile(r"\+[1-9][0-9]{2,16}")
_plans: dict[int, tuple[frozenset[int], re.Pattern[str] | None] | None] = {}


def _plan(country_code: int) -> tuple[frozenset[int], re.Pattern[str] | None] | None:
    """(lengths of a possible national number, the national prefix the parse would strip) of a country code."""
    try:
        return _plans[country_code]
    except KeyError:
        pass
    region = phonenumbers.region_code_for_country_code(country_code)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    plan = None
    if metadata is not None:
        lengths = frozenset(
            length
            for length in range(_MIN_NSN, _MAX_NSN + 1)
            if phonenumbers.is_possible_number(phonenumbers.PhoneNumber(country_code, int("1" * length)))
        )
        prefix = metadata.national_prefix_for_parsing
        plan = (lengths, re.compile(prefix) if prefix else None)
    _plans[country_code] = plan
    return plan


_MIN_NSN, _MAX_NSN = 2, 17  # phonenumbers' bounds on a national significant number


def _e164(cleaned: str) -> str | None:
    """``cleaned`` (``+digits``) as E.164: itself, "" when no plan allows it, None to ask the full parse."""
    if not _ASCII_DIGITS_RE.fullmatch(cleaned):
        return None
    for size in (1, 2, 3):
        country_code = int(cleaned[1 : 1 + size])
        if country_code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = cleaned[1 + size :]
    plan = _plan(country_code)
    if plan is None or len(national) < _MIN_NSN or national[0] == "0":
        return None
    lengths, prefix = plan
    if prefix is not None and prefix.match(national):
        return None
    return cleaned if len(national) in lengths else ""


PHONE_REGIONS = "phone_regions"


@dataclass(frozen=True, slots=True)
class PhoneRegions:
    """Which national numbering plan reads a number written without its country code, per counter."""

    default: str | None = None
    per_counter: Mapping[int, str] = field(default_factory=dict)
    #: The account registry's setting of a counter, asked first (worker/accounts/), when there is one.
    lookup: Callable[[int], str | None] | None = None

    def of(self, counter_id: object) -> str | None:
        if not isinstance(counter_id, int):
            return self.default
        found = self.lookup(counter_id) if self.lookup is not None else None
        return found or self.per_counter.get(counter_id, self.default)

    def context(self) -> dict[str, Any]:
        """The pydantic validation context that carries these regions to the ``PhoneNumber`` rule."""
        return {PHONE_REGIONS: self}


def phone_rule(value: str | None, info: ValidationInfo) -> str | None:
    """The ``PhoneNumber`` rule: E.164 in the counter's plan (from the validation context), else refused."""
    if value is None or value == "":
        return None
    regions = (info.context or {}).get(PHONE_REGIONS)
    region = regions.of(info.data.get("counter_id")) if isinstance(regions, PhoneRegions) else None
    number = normalize_phone(value, region)
    if number is None:
        plan = f" or a national number of {region}" if region else ""
        raise PydanticCustomError(
            "phone_number",
            "must be a phone number with its country code{plan}, as +70123456789 (numbering plans of libphonenumber)",
            {"plan": plan},
        )
    return number
