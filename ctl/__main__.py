"""``python -m ctl``: the operator CLI (``--help`` on every group and command)."""

from __future__ import annotations

import click

from ctl.context import Context
from ctl.held import held
from ctl.routing import routing


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Operate calltrack-worker: settings come from CALLTRACK_* variables or .env."""
    if ctx.obj is None:  # tests pass a Context of their own
        ctx.obj = Context()
    ctx.call_on_close(ctx.obj.close)


main.add_command(routing)
main.add_command(held)


if __name__ == "__main__":
    main()
