"""``python -m ctl``: the operator CLI (``--help`` on every group and command)."""

from __future__ import annotations

import click

from ctl.accounts import accounts
from ctl.calls import replay_calls
from ctl.context import Context
from ctl.conversions import conversions
from ctl.counters import counters
from ctl.doctor import doctor
from ctl.held import held
from ctl.keys import keys
from ctl.notify import notify
from ctl.quarantine import quarantine
from ctl.routing import routing
from ctl.status import status, uploads
from ctl.where import where


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Operate calltrack-worker: settings come from CALLTRACK_* variables or .env."""
    if ctx.obj is None:  # tests pass a Context of their own
        ctx.obj = Context()
    ctx.call_on_close(ctx.obj.close)


main.add_command(routing)
main.add_command(held)
for _command in (status, uploads, quarantine, replay_calls, doctor):  # operations (issue 6)
    main.add_command(_command)
main.add_command(conversions)
main.add_command(accounts)  # issue 15: the account registry
main.add_command(counters)
main.add_command(notify)  # issue 19: webhooks
main.add_command(where)  # issue 19: where is a call
main.add_command(keys)  # issue 22: client API keys


if __name__ == "__main__":
    main()
