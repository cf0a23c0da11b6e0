"""Minimal multipart/form-data reader: returns one named part of an already read body."""

from __future__ import annotations

import re

from emulator.errors import MissingParameter

_BOUNDARY = re.compile(r'boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_NAME = re.compile(r'(?:^|;)\s*name\s*=\s*(?:"([^"]*)"|([^;\s]+))', re.IGNORECASE)


def _boundary(content_type: str | None, body: bytes) -> bytes | None:
    if content_type and content_type.lower().startswith("multipart/"):
        match = _BOUNDARY.search(content_type)
        if match:
            return (match.group(1) or match.group(2)).encode("latin-1")
    # Lenient like many servers: a body that starts with a delimiter line is multipart even when the
    # client labelled it otherwise (tapi-yandex-metrika sends Content-Type: application/json).
    if body.startswith(b"--"):
        end = body.find(b"\r\n")
        if end > 2:
            return body[2:end]
    return None


def _part_name(head: bytes) -> str | None:
    for line in head.decode("latin-1").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-disposition":
            match = _NAME.search(value)
            if match:
                return match.group(1) if match.group(1) is not None else match.group(2)
    return None


def extract_part(content_type: str | None, body: bytes, name: str = "file") -> bytes:
    """The content of part ``name``; MissingParameter (400) when there is none."""
    boundary = _boundary(content_type, body)
    if boundary is not None:
        for part in body.split(b"--" + boundary)[1:]:
            if part.startswith(b"--"):
                break
            if part.startswith(b"\r\n"):
                part = part[2:]  # noqa: PLW2901
            head_end = part.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            if _part_name(part[:head_end]) == name:
                content = part[head_end + 4 :]
                return content[:-2] if content.endswith(b"\r\n") else content
    raise MissingParameter(f"Required request part '{name}' is not present (multipart/form-data)", name)
