"""``ctl conversions``: offline conversions from a CRM export, or for a call that converted later."""

from __future__ import annotations

from pathlib import Path

import click

from ctl.context import Context
from ctl.output import emit, json_option, say
from ingest.crm_csv import ColumnMap, MappingError, import_file
from worker.intake.call_refs import record_conversion


@click.group()
def conversions() -> None:
    """Send offline conversions (orders, CRM deals) to Metrica through the pipeline."""


@conversions.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--map", "maps", multiple=True, metavar="FIELD=COLUMN",
    help="Which export column feeds a field (conversion_id is required), e.g. --map ClientId=ym_client_id.",
)  # fmt: skip
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE", help="A constant, e.g. --set Target=deal_won.")
@click.option("--timezone", default="UTC", show_default=True, help="Zone of export times that carry none.")
@click.option("--delimiter", default=",", show_default=True)
@click.option("--source", default="crm", show_default=True, help="Name of the source, part of the dedup key.")
@json_option
@click.pass_obj
def import_command(
    ctx: Context,
    path: Path,
    maps: tuple[str, ...],
    sets: tuple[str, ...],
    timezone: str,
    delimiter: str,
    source: str,
    as_json: bool,
) -> None:
    """Import conversions from a CRM CSV export; re-importing a file stores nothing twice."""
    try:
        mapping = ColumnMap.parse(list(maps), list(sets), timezone, source)
        with click.progressbar(length=sum(1 for _ in path.open(encoding="utf-8-sig")) - 1, label="rows") as bar:
            report = import_file(ctx.runtime.producer, path, mapping, delimiter=delimiter, progress=bar.update)
    except (MappingError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    rejected = [
        {"line": line, "errors": [{"field": e.field, "rule": e.rule, "message": e.message} for e in errors]}
        for line, errors in report.rejected
    ]
    emit(
        {"accepted": report.accepted, "rejected": rejected},
        as_json=as_json,
        headers=("line", "rejected because"),
        rows=[(line, "; ".join(str(e) for e in errors)) for line, errors in report.rejected],
    )
    if not as_json:
        say(f"{report.accepted} accepted, {len(rejected)} rejected")


@conversions.command("for-call")
@click.argument("provider")
@click.argument("call_id")
@click.option("--target", required=True, help="Goal identifier.")
@click.option("--at", "date_time", required=True, help="When it converted: Unix seconds or ISO 8601 with a zone.")
@click.option("--price")
@click.option("--currency")
@json_option
@click.pass_obj
def for_call(
    ctx: Context,
    provider: str,
    call_id: str,
    target: str,
    date_time: str,
    price: str | None,
    currency: str | None,
    as_json: bool,
) -> None:
    """Record a conversion for a call accepted earlier; counter and identifier come from the call."""
    result = record_conversion(
        ctx.runtime, provider, call_id, target=target, date_time=date_time, price=price, currency=currency
    )
    if result.rejected:
        raise click.ClickException(result.rejected[0].reason)
    emit({"status": "accepted", "conversion_id": result.accepted[0].source_id}, as_json=as_json)
