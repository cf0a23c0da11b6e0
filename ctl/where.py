"""``ctl where``: where one call is (the status API's answer, from a shell)."""

from __future__ import annotations

import click

from ctl.context import Context
from ctl.output import emit, json_option, local_time
from worker.ops.status import where_call


@click.command()
@click.argument("provider")
@click.argument("call_id")
@json_option
@click.pass_obj
def where(ctx: Context, provider: str, call_id: str, as_json: bool) -> None:
    """Where the call CALL_ID of PROVIDER is: stream, buffer, batch and upload, held (with the reason).

    Exits 1 when no such call is known (within the dedup window): one line, or the answer with --json."""
    found = where_call(ctx.runtime, provider, call_id)
    data = {"provider": provider, "call_id": call_id, **found.to_dict()}
    batch = data.get("batch") or {}
    rows = [
        ("place", data["place"]), ("state", data["state"]), ("counter", data.get("counter_id", "-")),
        ("batch", batch.get("batch_id", "-")), ("upload", batch.get("upload_id", "-")),
        ("reason", batch.get("reason") or (data.get("held") or {}).get("reason") or "-"),
        *((name, local_time(value)) for name, value in data["times"].items()),
    ]  # fmt: skip
    if not found.found and not as_json:
        raise click.ClickException(
            f"call: no call {call_id[:64]!r} of {provider[:32]!r} known (within the dedup window)"
        )
    emit(data, as_json=as_json, headers=("", ""), rows=rows)
    if not found.found:
        raise SystemExit(1)
