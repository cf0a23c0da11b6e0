"""``./scripts/ctl``: the operator CLI (``--help`` on every group and command).

A command's module is imported only when that command runs (or its own ``--help`` is asked for):
``--help`` and the listing of commands load click and nothing of the worker, so they answer at
once. Errors are one line on stderr with a non-zero exit status (see :mod:`ctl.errors`); logs reach
stderr at warning and above unless ``-v`` is given.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from ctl.context import Context
from ctl.demo import DEMO_FILE, use_demo
from ctl.errors import one_line

PROG_NAME = "./scripts/ctl"

# name -> (module, attribute, short help). The short help is the first line of the command's docstring
# (tests/test_ctl_cli.py checks that they agree), so listing the commands imports none of them.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "accounts": (
        "ctl.accounts",
        "accounts",
        "Clients: Yandex login, OAuth tokens, counters, telephony accounts (changes apply without a restart).",
    ),
    "conversions": (
        "ctl.conversions",
        "conversions",
        "Send offline conversions (orders, CRM deals) to Metrica through the pipeline.",
    ),
    "counters": (
        "ctl.counters",
        "counters",
        "Counters of the registry's accounts; adding one starts its uploads, removing one parks them.",
    ),
    "doctor": (
        "ctl.doctor",
        "doctor",
        "Check the configuration, Redis persistence, each counter's token, the clocks and the fleet.",
    ),
    "held": (
        "ctl.held",
        "held",
        "Calls kept with the reason they could not be uploaded; replay them once that is fixed.",
    ),
    "keys": (
        "ctl.keys",
        "keys",
        "Client API keys: each reaches only its account's counters (scopes: ingest, status).",
    ),
    "migrate": (
        "ctl.migrate",
        "migrate",
        "Migrate the data in Redis to this release's format (also done by the first worker that starts).",
    ),
    "notify": (
        "ctl.notify",
        "notify",
        "Webhook notifications: final upload statuses and held calls, per account.",
    ),
    "quarantine": (
        "ctl.quarantine",
        "quarantine",
        "Quarantined batches keep their rows: replay them once the cause is fixed, or discard them.",
    ),
    "replay-calls": (
        "ctl.calls",
        "replay_calls",
        "Send every call of PATH (NDJSON, one call per line) into the pipeline; bad lines are named, and so",
    ),
    "restore": (
        "ctl.restore",
        "restore",
        "Shards held after a restore of Redis was detected; confirm to let them upload again.",
    ),
    "routing": (
        "ctl.routing",
        "routing",
        "Tracking number -> counter, static or dynamic, channel label, outgoing calls.",
    ),
    "status": (
        "ctl.status",
        "status",
        "Per counter: pending calls, open batches, last upload and its status, quarantined batches, quota left.",
    ),
    "uploads": (
        "ctl.status",
        "uploads",
        "COUNTER's batches, newest first: state, rows, upload id, Metrica status, quantities.",
    ),
    "where": (
        "ctl.where",
        "where",
        "Where the call CALL_ID of PROVIDER is: stream, buffer, batch and upload, held (with the reason).",
    ),
}


class LazyGroup(click.Group):
    """A group that imports a command's module when the command is looked up, not before."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return super().get_command(ctx, cmd_name)  # one added with main.add_command()
        command = getattr(importlib.import_module(entry[0]), entry[1])
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        # A bare Command carries the stored help: click shortens it as it would the real command's.
        rows = [
            (name, (self.commands.get(name) or click.Command(name, help=COMMANDS[name][2])).get_short_help_str(limit))
            for name in names
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        with one_line():
            return super().invoke(ctx)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log to stderr at info level (-vv: debug); default: warnings only.")
@click.option(
    "--demo",
    is_flag=True,
    help="Use the running ./scripts/run demo (its Redis, namespace, emulator); the default when no "
    "CALLTRACK_REDIS_URL, REDIS_URL or CALLTRACK_NAMESPACE is set.",
)
@click.pass_context
def main(ctx: click.Context, verbose: int, demo: bool) -> None:
    """Operate calltrack-worker: settings come from CALLTRACK_* variables or .env.

    \b
    Exit status: 0 done; 1 refused (bad input, unknown counter, number,
    account or call); 2 wrong usage or invalid settings; 3 Redis unreachable.
    """
    if ctx.obj is None:  # tests pass a Context of their own
        if use_demo(forced=demo) is None and demo:
            raise click.UsageError(f"--demo: no running demo ({DEMO_FILE} is missing or stale)")
        ctx.obj = Context()
    ctx.obj.verbose = verbose
    ctx.call_on_close(ctx.obj.close)


if __name__ == "__main__":
    main(prog_name=PROG_NAME)
