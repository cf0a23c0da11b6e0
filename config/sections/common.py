"""What every settings section shares: the environment prefix, number types and the pair parser."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import Field

ENV_PREFIX = "CALLTRACK_"

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


def parse_list(value: object) -> object:
    """``a, b,c`` as a list of its non-empty items, stripped; other types pass through."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def parse_pairs(value: object, rule: str) -> object:
    """``a=x,b=y`` or a JSON object as a dict; other types pass through. Errors never echo the text."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            raise ValueError(f"is not valid JSON; use {rule}") from None
    pairs: dict[str, str] = {}
    for item in text.split(","):
        name, sep, secret = item.partition("=")
        if not sep or not name.strip() or not secret.strip():
            raise ValueError(f"must be {rule}")
        pairs[name.strip()] = secret.strip()
    return pairs


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"
