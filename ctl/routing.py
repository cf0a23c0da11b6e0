"""``ctl routing``: the table that maps tracking numbers to counters."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from ctl.context import Context
from ctl.output import emit, json_option, say
from worker.intake.routing import Route, RouteError, parse_routes_csv
from worker.model.inbound import normalize_number


@click.group()
def routing() -> None:
    """Tracking number -> counter, static or dynamic, channel label, outgoing calls."""


@routing.command()
@click.argument("number")
@click.argument("counter_id", type=int)
@click.option("--kind", type=click.Choice(["static", "dynamic"]), default="static", show_default=True)
@click.option("--label", help="Channel label of the number (a later release makes it the call's Tag).")
@click.option("--outgoing/--no-outgoing", default=False, show_default=True, help="Track outgoing calls too.")
@click.option(
    "--across-accounts",
    is_flag=True,
    help="Operator override: move a number from one client account's counter to another account's counter.",
)
@json_option
@click.pass_obj
def add(
    ctx: Context,
    number: str,
    counter_id: int,
    kind: str,
    label: str | None,
    outgoing: bool,
    across_accounts: bool,
    as_json: bool,
) -> None:
    """Add or replace the entry of NUMBER (international format) for COUNTER_ID.

    A number routed to one client account's counter is not moved to another account's counter
    without --across-accounts.
    """
    try:
        route = Route.parse(number=number, counter_id=counter_id, kind=kind, label=label, outgoing=outgoing)
        ctx.intake.routing.add([route], across_accounts=across_accounts)
    except RouteError as error:
        raise click.ClickException(str(error)) from None
    emit({"added": asdict(route)}, as_json=as_json) if as_json else say(f"{route.number} -> {counter_id}")


@routing.command()
@click.argument("numbers", nargs=-1, required=True)
@json_option
@click.pass_obj
def remove(ctx: Context, numbers: tuple[str, ...], as_json: bool) -> None:
    """Remove the entries of NUMBERS; if one has no entry, nothing is removed (exit status 1)."""
    normalised = []
    for number in numbers:
        value = normalize_number(number)
        if value is None:
            raise click.ClickException(f"number: {number[:32]!r} is not an international number (7 to 15 digits)")
        normalised.append(value)
    found = ctx.intake.routing.lookup(normalised)
    absent = [number for number in normalised if found.get(number) is None]
    if absent:
        raise click.ClickException(f"number: no routing entry for {', '.join(absent[:10])}; nothing removed")
    removed = ctx.intake.routing.remove(normalised)
    emit({"removed": removed}, as_json=as_json) if as_json else say(f"removed {removed}")


@routing.command("list")
@json_option
@click.pass_obj
def list_(ctx: Context, as_json: bool) -> None:
    """Every entry, by number, with the client account that holds its counter (-: the deployment's)."""
    routes = ctx.intake.routing.all()
    owners = ctx.intake.owners.lookup(r.counter_id for r in routes) if ctx.intake.owners else {}
    emit(
        [{**asdict(r), "account": owners.get(r.counter_id)} for r in routes],
        as_json=as_json,
        headers=("number", "counter", "kind", "label", "outgoing", "account"),
        rows=[
            (
                r.number,
                r.counter_id,
                r.kind,
                r.label or "",
                "yes" if r.outgoing else "no",
                owners.get(r.counter_id) or "-",
            )
            for r in routes
        ],
    )


@routing.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check the file and say what would be written.")
@click.option(
    "--across-accounts",
    is_flag=True,
    help="Operator override: move a number from one client account's counter to another account's counter.",
)
@json_option
@click.pass_obj
def import_(ctx: Context, path: Path, dry_run: bool, across_accounts: bool, as_json: bool) -> None:
    """Add or replace entries from a CSV with a header: number,counter_id[,kind][,label][,outgoing].

    Every line is checked first; one bad line writes nothing and names the line and the field, and
    so does a number that would move from one client account's counter to another's (without
    --across-accounts).
    """
    try:
        routes = parse_routes_csv(path.read_text(encoding="utf-8-sig"))
    except RouteError as error:
        raise click.ClickException(f"{path.name}: {error}") from None
    except UnicodeDecodeError:
        raise click.ClickException(f"{path.name}: must be UTF-8 text") from None
    if not dry_run:
        try:
            ctx.intake.routing.add(routes, across_accounts=across_accounts)
        except RouteError as error:
            raise click.ClickException(f"{path.name}: {error}") from None
    result = {"imported": 0 if dry_run else len(routes), "checked": len(routes)}
    emit(result, as_json=as_json) if as_json else say(f"{'checked' if dry_run else 'imported'} {len(routes)} entries")
