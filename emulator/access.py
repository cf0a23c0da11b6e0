"""Who calls the emulator: the client's address, the OAuth token of a request, the account it acts as,
and the scopes each endpoint needs (Metrica's authorization page: metrika:read, metrika:write,
metrika:offline_data)."""

from __future__ import annotations

from starlette.requests import Request

from emulator.config import Account
from emulator.errors import AccessDenied, InvalidToken, Unauthorized
from emulator.state import EmulatorState


def client_ip(request: Request, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.client.host if request.client else "unknown"


def bearer_token(request: Request) -> str:
    """The token of ``Authorization: OAuth <token>``; 401 ``unauthorized`` when absent or malformed."""
    header = request.headers.get("authorization")
    if not header:
        message = "Authorization is required: send the header 'Authorization: OAuth <token>'"
        raise Unauthorized(message, "Authorization")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "oauth" or not token or len(token.split()) != 1:
        raise Unauthorized("Malformed Authorization header; expected 'OAuth <token>'", "Authorization")
    return token


def authenticate(state: EmulatorState, request: Request) -> Account:
    """Configured tokens act with their own counter list; OAuth-issued ones with their login's counters.
    Unknown, revoked and expired tokens answer 403 ``invalid_token``."""
    token = bearer_token(request)
    record = state.tokens.tokens.get(token)
    if record is None:
        raise InvalidToken("Invalid oauth_token", "Authorization")
    if record.expired(state.clock.now()):
        raise InvalidToken("Expired oauth_token", "Authorization")
    configured = state.accounts.get(token)
    if record.source == "config" and configured is not None:
        return configured
    return state.tokens.account(record)


#: the scopes (any one of them) a request needs: management reads metrika:read, management writes
#: metrika:write, uploads and their statuses and lists metrika:offline_data (or the broader metrika:write)
UPLOAD_SCOPES = frozenset({"metrika:offline_data", "metrika:write"})


def required_scopes(endpoint: str, method: str) -> frozenset[str]:
    if endpoint == "management":
        return frozenset({"metrika:read"}) if method in ("GET", "HEAD") else frozenset({"metrika:write"})
    return UPLOAD_SCOPES


def check_scopes(state: EmulatorState, request: Request, endpoint: str) -> None:
    """403 ``access_denied`` for a token without any scope the request needs."""
    record = state.tokens.tokens.get(bearer_token(request))
    needed = required_scopes(endpoint, request.method)
    if record is not None and not record.scopes & needed:
        state.counts["status.scope_denied"] += 1
        raise AccessDenied(f"The token has no scope for this method: needs one of {sorted(needed)}", "Authorization")


def login_of_request(state: EmulatorState, request: Request) -> str | None:
    """The login behind the request's token, if any (to count a per-IP rejection against it)."""
    header = request.headers.get("authorization", "")
    record = state.tokens.tokens.get(header.strip().partition(" ")[2].strip())
    return record.login if record is not None else None
