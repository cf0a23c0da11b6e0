"""``ctl accounts``: the account registry (clients, their Yandex logins, tokens, counters, providers).

Secrets are read from stdin (``--token-stdin``), never from arguments (the process list shows those),
and never printed: tokens appear by name, login and fingerprint.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import orjson

from ctl.context import Context
from ctl.output import emit, json_option
from worker.accounts import edits, oauth
from worker.accounts.envimport import import_env
from worker.accounts.health import problems
from worker.accounts.model import AccountIn, parse
from worker.accounts.registry import Change
from worker.errors import AccountError, AccountInputError


@contextmanager
def registry_errors() -> Iterator[None]:
    """An AccountError is one clear line (field: rule), exit status 1; nothing was stored."""
    try:
        yield
    except AccountError as error:
        raise click.ClickException(str(error)) from None


def report(change: Change, as_json: bool) -> None:
    if as_json:
        emit({"outcomes": change.outcomes, **change.summary()}, as_json=True)
    else:
        click.echo(
            ", ".join(f"{account} {outcome}" for account, outcome in sorted(change.outcomes.items())) or "nothing"
        )


def token_checks(change: Change, token_name: str | None = None) -> None:
    """After a token was stored: one line per token Yandex's user info refused (exit status 1) or could not
    check; the account and token names only, never the token."""
    refused = False
    for account_id, checks in sorted(change.checks.items()):
        for name, check in sorted(checks.items()):
            if token_name is not None and name != token_name:
                continue
            refused = refused or check == "refused"
            what = "refused by Yandex (401/403)" if check == "refused" else "unchecked (user info unreachable)"
            click.echo(f"account {account_id}: token {name} {what}", err=True)
    if refused:
        raise click.exceptions.Exit(1)


def read_token(name: str, expires_at: str | None) -> dict[str, Any]:
    """A token (first line) and an optional refresh token (second line) from stdin."""
    lines = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
    if not lines:
        raise click.ClickException("token: expected the token on stdin (first line; refresh token on the second)")
    data: dict[str, Any] = {"name": name, "token": lines[0]}
    if len(lines) > 1:
        data["refresh_token"] = lines[1]
    if expires_at:
        data["expires_at"] = expires_at
    return data


token_options: list[Callable[[Any], Any]] = [
    click.option("--token-stdin", is_flag=True, help="Read the OAuth token (and a refresh token) from stdin."),
    click.option("--token-name", default="main", show_default=True, help="Name of the token in the account."),
    click.option("--expires-at", help="When the token expires (ISO 8601 with a zone)."),
]


def with_token_options(fn: Any) -> Any:
    for option in reversed(token_options):
        fn = option(fn)
    return fn


@click.group()
def accounts() -> None:
    """Clients: Yandex login, OAuth tokens, counters, telephony accounts (changes apply without a restart)."""


@accounts.command()
@click.argument("account_id")
@click.option("--name", default="", help="Display name of the client.")
@click.option("--counter", "counters", type=int, multiple=True, help="A counter of the account (repeat).")
@with_token_options
@json_option
@click.pass_obj
def add(
    ctx: Context, account_id: str, name: str, counters: tuple[int, ...], token_stdin: bool, token_name: str,
    expires_at: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Add ACCOUNT_ID (its token's login is learned from Yandex's user info)."""
    data: dict[str, Any] = {"id": account_id, "name": name, "counters": [{"id": c} for c in counters]}
    if token_stdin:
        data["tokens"] = [read_token(token_name, expires_at)]
    with registry_errors():
        change = edits.create(ctx.runtime.accounts, data)
        report(change, as_json)
        token_checks(change)


@accounts.command()
@click.argument("account_id")
@click.option("--name", help="New display name.")
@with_token_options
@click.option("--webhook-url", help="Where final upload statuses and held calls are posted (http(s) URL).")
@click.option("--webhook-secret-stdin", is_flag=True, help="Read the webhook's signing secret from stdin.")
@click.option("--no-webhook", is_flag=True, help="Remove the account's webhook.")
@json_option
@click.pass_obj
def update(
    ctx: Context, account_id: str, name: str | None, token_stdin: bool, token_name: str, expires_at: str | None,
    webhook_url: str | None, webhook_secret_stdin: bool, no_webhook: bool, as_json: bool,
) -> None:  # fmt: skip
    """Rename ACCOUNT_ID, add or rotate one of its tokens (--token-stdin; the next upload uses it), or set
    its webhook (--webhook-url, --webhook-secret-stdin; a signed POST per final upload status and held call)."""
    reg = ctx.runtime.accounts
    with registry_errors():
        webhook = webhook_url is not None or webhook_secret_stdin or no_webhook
        if name is None and not token_stdin and not webhook:
            raise AccountInputError("options", "give --name, --token-stdin, --webhook-url or --no-webhook")
        if token_stdin and webhook_secret_stdin:
            raise AccountInputError("options", "read one secret from stdin at a time")
        if name is not None:
            report(edits.update(reg, account_id, {"name": name}), as_json)
        if token_stdin:
            change = edits.set_token(reg, account_id, read_token(token_name, expires_at))
            report(change, as_json)
            token_checks(change, token_name)
        if no_webhook:
            report(edits.update(reg, account_id, {"webhook_url": None, "webhook_secret": None}), as_json)
        elif webhook:
            data: dict[str, Any] = {}
            if webhook_url is not None:
                data["webhook_url"] = webhook_url
            if webhook_secret_stdin:
                secret = sys.stdin.read().strip()
                if not secret:
                    raise AccountInputError("webhook_secret", "expected on stdin")
                data["webhook_secret"] = secret
            report(edits.update(reg, account_id, data), as_json)


@accounts.command()
@click.argument("account_id")
@click.argument("provider", type=click.Choice(["twilio", "zadarma", "mango"]))
@click.argument("name")
@click.option("--secret-stdin", is_flag=True, help="Read the secret from stdin (Mango: key:salt).")
@click.option("--timezone", help="The provider account's time zone (Zadarma's call_start), IANA name.")
@click.option("--remove", "drop", is_flag=True, help="Remove this telephony account.")
@json_option
@click.pass_obj
def telephony(
    ctx: Context, account_id: str, provider: str, name: str, secret_stdin: bool, timezone: str | None, drop: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """Add, change or remove the telephony account NAME of PROVIDER (its webhooks' secret) in ACCOUNT_ID."""
    reg = ctx.runtime.accounts
    with registry_errors():
        if drop:
            report(edits.remove_telephony(reg, account_id, provider, name), as_json)
            return
        data: dict[str, Any] = {"provider": provider, "account": name}
        if secret_stdin:
            secret = sys.stdin.read().strip()
            if not secret:
                raise AccountInputError("secret", "expected on stdin")
            data["secret"] = secret
        if timezone:
            data["timezone"] = timezone
        report(edits.set_telephony(reg, account_id, data), as_json)


@accounts.command()
@click.argument("account_id")
@json_option
@click.pass_obj
def remove(ctx: Context, account_id: str, as_json: bool) -> None:
    """Remove ACCOUNT_ID; its counters' batches wait (visible in 'ctl status') until a counter is added again."""
    with registry_errors():
        report(ctx.runtime.accounts.remove(account_id), as_json)


@accounts.command("list")
@json_option
@click.pass_obj
def list_(ctx: Context, as_json: bool) -> None:
    """Every account with its login, counters and token state (refused, expired, near expiry)."""
    reg = ctx.runtime.accounts
    with registry_errors():
        docs = reg.documents()
        trouble = problems(ctx.runtime.redis, ctx.runtime.keys, ctx.settings.token_warning_days)
    found = docs.accounts
    states: dict[str, list[str]] = {}
    for problem in trouble:
        states.setdefault(problem.account, []).append(f"{problem.token} {problem.state}")
    unreadable = sorted(docs.unreadable.values(), key=lambda u: u.account)
    if as_json:
        items = [{**a.public(), "problems": states.get(a.id, [])} for a in found]
        extra = {"unreadable": [u.to_dict() for u in unreadable]} if unreadable else {}  # only when there are
        emit({"accounts": items, **extra}, as_json=True)
        return
    rows: list[tuple[object, ...]] = [
        (
            a.id,
            a.name,
            a.login or "?",
            len(a.tokens),
            len(a.counters),
            len(a.telephony),
            "; ".join(states.get(a.id, [])) or "ok",
        )
        for a in found
    ]
    rows += [(u.account, u.name, "?", "?", len(u.counters), "?", f"unreadable: {u.reason}") for u in unreadable]
    emit(
        None, as_json=False, headers=("account", "name", "login", "tokens", "counters", "telephony", "state"), rows=rows
    )


@accounts.command()
@click.argument("account_id")
@json_option
@click.pass_obj
def show(ctx: Context, account_id: str, as_json: bool) -> None:
    """One account: tokens (name, login, fingerprint, expiry), counters with their settings, telephony."""
    with registry_errors():
        account = ctx.runtime.accounts.get(account_id)
    if account is None:
        raise click.ClickException(f"account: no account {account_id!r}")
    emit(account.public(), as_json=True) if as_json else click.echo(
        orjson.dumps(account.public(), option=orjson.OPT_INDENT_2).decode()
    )


@accounts.command()
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@json_option
@click.pass_obj
def sync(ctx: Context, source: str, as_json: bool) -> None:
    """Make the registry exactly the accounts in SOURCE (JSON {"accounts": [...]}, '-' for stdin)."""
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    with registry_errors():
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise AccountInputError("source", "must be a JSON document") from None
        if not isinstance(data, dict) or not isinstance(data.get("accounts"), list):
            raise AccountInputError("accounts", 'is required: {"accounts": [...]}')
        specs = [parse(AccountIn, item) for item in data["accounts"]]
        change = ctx.runtime.accounts.sync(specs)
        report(change, as_json)
        token_checks(change)


@accounts.command()
@click.argument("account_id")
@click.pass_obj
def connect(ctx: Context, account_id: str) -> None:
    """Print the link that onboards ACCOUNT_ID by OAuth (the client opens it and allows access)."""
    with registry_errors():
        click.echo(oauth.start(ctx.runtime.accounts, account_id))


@accounts.command()
@click.pass_obj
def rekey(ctx: Context) -> None:
    """Re-encrypt every stored secret with the first key of CALLTRACK_SECRET_KEYS."""
    with registry_errors():
        click.echo(f"re-encrypted {ctx.runtime.accounts.rekey()} accounts")


@accounts.command("import-env")
@json_option
@click.pass_obj
def import_env_command(ctx: Context, as_json: bool) -> None:
    """Import CALLTRACK_METRICA_COUNTER_TOKENS and the provider secrets as account 'env' (workers do at start)."""
    with registry_errors():
        change = import_env(ctx.runtime.accounts, ctx.settings)
    if change is None:
        raise click.ClickException("secret_keys: CALLTRACK_SECRET_KEYS is not set, or nothing to import")
    report(change, as_json)
