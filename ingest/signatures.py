"""The providers' request signatures, each checked with ``hmac.compare_digest``.

* Twilio: base64 HMAC-SHA1 of the URL plus every POST parameter name and value, sorted by name, keyed
  with the account's auth token; the URL is tried with and without its port. Under a Webhook Rule
  (``X-Twilio-Webhooks-Signature-Settings: key=<name>,algorithm=HMAC_SHA256``) the key is the rule's
  shared key and the algorithm the one the header names.
* Zadarma: base64 of the lowercase hex HMAC-SHA1 of an event-dependent string.
* Mango Office: lowercase hex SHA-256 of ``vpbx_api_key + json + vpbx_api_salt``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

_TWILIO_HASHES = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}


def twilio_signature(token: str, url: str, params: Iterable[tuple[str, str]], algorithm: str = "HMAC_SHA1") -> str:
    """What Twilio puts in ``X-Twilio-Signature`` for a request to ``url`` with form ``params``."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    text = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    digest = hmac.new(token.encode(), text.encode(), _TWILIO_HASHES[algorithm]).digest()
    return base64.b64encode(digest).decode()


def url_variants(url: str) -> list[str]:
    """The URL with an explicit default port and without any port, as Twilio's own validator tries."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return [url]
    with_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port}"))
    without_port = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
    return [url] + [u for u in (with_port, without_port) if u != url]


def twilio_settings(settings_header: str) -> dict[str, str]:
    """``X-Twilio-Webhooks-Signature-Settings`` (``key=<name>,algorithm=HMAC_SHA256``) as a dict."""
    parts: dict[str, str] = {}
    for part in settings_header.split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip():
            parts[name.strip().lower()] = value.strip()
    return parts


def twilio_valid(
    token: str, urls: Sequence[str], params: Sequence[tuple[str, str]], signature: str, settings_header: str = ""
) -> bool:
    """The signature checked with ``token`` (the auth token, or a Webhook Rule's shared key) and the
    algorithm the settings header names (HMAC_SHA1 without one)."""
    algorithm = (twilio_settings(settings_header).get("algorithm") or "HMAC_SHA1").upper()
    if algorithm not in _TWILIO_HASHES or not signature:
        return False
    expected = signature.encode()
    ok = False
    for url in urls:
        for variant in url_variants(url):
            ok |= hmac.compare_digest(twilio_signature(token, variant, params, algorithm).encode(), expected)
    return ok


# Zadarma: which fields make the signed string of each event.
ZADARMA_SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "NOTIFY_START": ("caller_id", "called_did", "call_start"),
    "NOTIFY_INTERNAL": ("caller_id", "called_did", "call_start"),
    "NOTIFY_END": ("caller_id", "called_did", "call_start"),
    "NOTIFY_ANSWER": ("caller_id", "destination", "call_start"),
    "NOTIFY_OUT_START": ("internal", "destination", "call_start"),
    "NOTIFY_OUT_END": ("internal", "destination", "call_start"),
    "NOTIFY_RECORD": ("pbx_call_id", "call_id_with_rec"),
}


def zadarma_signature(secret: str, text: str) -> str:
    hex_digest = hmac.new(secret.encode(), text.encode(), hashlib.sha1).hexdigest()
    return base64.b64encode(hex_digest.encode()).decode()


def zadarma_signed_text(form: Mapping[str, str]) -> str | None:
    """The exact string Zadarma signs for this notification's event (its fields joined without a
    separator), or None for an event it does not sign."""
    fields = ZADARMA_SIGNED_FIELDS.get(form.get("event", ""))
    if fields is None:
        return None
    return "".join(form.get(name, "") for name in fields)


def zadarma_valid(secret: str, form: Mapping[str, str], signature: str) -> bool:
    text = zadarma_signed_text(form)
    if text is None or not signature:
        return False
    return hmac.compare_digest(zadarma_signature(secret, text).encode(), signature.encode())


def mango_sign(api_key: str, json_text: str, salt: str) -> str:
    return hashlib.sha256((api_key + json_text + salt).encode()).hexdigest()


def mango_valid(api_key: str, salt: str, form: Mapping[str, str]) -> bool:
    sent_key, sign, json_text = form.get("vpbx_api_key", ""), form.get("sign", ""), form.get("json", "")
    key_ok = hmac.compare_digest(sent_key.encode(), api_key.encode())
    sign_ok = hmac.compare_digest(mango_sign(api_key, json_text, salt).encode(), sign.lower().encode())
    return key_ok and sign_ok and bool(sign)
