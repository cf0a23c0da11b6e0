"""``ctl keys``: a client's API keys (issue 22). A key reaches only its account's counters.

A new or rotated key is printed once and never stored (Redis keeps its SHA-256); listings show its
name, public prefix, scopes and dates.
"""

from __future__ import annotations

import click

from ctl.accounts import registry_errors
from ctl.context import Context
from ctl.output import emit, json_option, local_time, say
from worker.accounts.apikeys import SCOPES, ApiKeys, NewKey


def _keys(ctx: Context) -> ApiKeys:
    return ApiKeys(ctx.runtime.redis, ctx.runtime.keys)


def _show(new: NewKey, as_json: bool) -> None:
    if as_json:
        emit(new.public(), as_json=True)
        return
    say(f"key {new.record.name} of {new.record.account} ({', '.join(new.record.scopes)}):")
    say(new.key)
    say("It is shown this once: give it to the client now (it is stored only as a hash).")


@click.group()
def keys() -> None:
    """Client API keys: each reaches only its account's counters (scopes: ingest, status)."""


@keys.command()
@click.argument("account")
@click.option(
    "--scope",
    "scope",
    required=True,
    help=f"Comma-separated scopes: {', '.join(SCOPES)} (ingest: write routes, status: read routes).",
)
@click.option("--name", default="default", show_default=True, help="The key's name in the account.")
@json_option
@click.pass_obj
def create(ctx: Context, account: str, scope: str, name: str, as_json: bool) -> None:
    """Make a key for ACCOUNT; the key is printed once."""
    with registry_errors():
        _show(_keys(ctx).create(account, scope, name), as_json)


@keys.command(name="list")
@click.argument("account")
@json_option
@click.pass_obj
def list_keys(ctx: Context, account: str, as_json: bool) -> None:
    """ACCOUNT's keys: name, prefix, scopes, created, last rotated (never the key)."""
    with registry_errors():
        found = _keys(ctx).listing(account)
    rows = [(k.name, k.prefix, ",".join(k.scopes), local_time(k.created), local_time(k.rotated)) for k in found]
    emit(
        {"account": account, "keys": [k.public() for k in found]},
        as_json=as_json,
        headers=("name", "prefix", "scopes", "created", "rotated"),
        rows=rows,
    )


@keys.command()
@click.argument("account")
@click.argument("name")
@json_option
@click.pass_obj
def rotate(ctx: Context, account: str, name: str, as_json: bool) -> None:
    """A new key for NAME (printed once); the old one stops working at once."""
    with registry_errors():
        _show(_keys(ctx).rotate(account, name), as_json)


@keys.command()
@click.argument("account")
@click.argument("name")
@json_option
@click.pass_obj
def revoke(ctx: Context, account: str, name: str, as_json: bool) -> None:
    """Remove the key NAME of ACCOUNT: it stops working at once."""
    with registry_errors():
        old = _keys(ctx).revoke(account, name)
    if as_json:
        emit({"account": account, "revoked": old.name, "prefix": old.prefix}, as_json=True)
    else:
        say(f"revoked {old.name} ({old.prefix}) of {account}")
