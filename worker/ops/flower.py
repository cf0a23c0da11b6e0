"""``python -m worker.ops.flower``: Flower for this deployment, behind basic authentication.

The credentials come from the settings (``CALLTRACK_FLOWER_USER``, ``CALLTRACK_FLOWER_PASSWORD``)
and reach Flower through its environment, never its command line (which ``ps`` shows to everyone).
Without a password it refuses to start, unless ``CALLTRACK_FLOWER_UNAUTHENTICATED=true`` (or
``--unauthenticated``) says Flower sits behind authentication of your own. Extra arguments go to
``celery flower`` (``--url_prefix=flower``, ...).

Task arguments on Flower's pages are batch ids (and drain's ``seal_all`` flag): no token, phone
number or call data is ever a task argument.
"""

from __future__ import annotations

import os
import sys

import click

from config.settings import load_settings


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": True},
)
@click.option("--unauthenticated", is_flag=True, help="Start without a password (behind your own authentication).")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def main(unauthenticated: bool, flower_args: tuple[str, ...]) -> None:
    """Start Flower on CALLTRACK_FLOWER_ADDRESS:CALLTRACK_FLOWER_PORT with basic authentication."""
    settings = load_settings()
    for name in [n for n in os.environ if n.startswith("FLOWER_")]:
        del os.environ[name]  # only our settings decide how Flower authenticates
    if settings.flower_password is not None:
        password = settings.flower_password.get_secret_value()
        if "," in password or len(password) < 8:
            click.echo("CALLTRACK_FLOWER_PASSWORD: must be at least 8 characters, without commas", err=True)
            sys.exit(2)
        os.environ["FLOWER_BASIC_AUTH"] = f"{settings.flower_user}:{password}"
    elif not (unauthenticated or settings.flower_unauthenticated):
        click.echo(
            "Flower refuses to start without authentication: set CALLTRACK_FLOWER_PASSWORD (and "
            "CALLTRACK_FLOWER_USER), or CALLTRACK_FLOWER_UNAUTHENTICATED=true behind your own authentication",
            err=True,
        )
        sys.exit(2)
    from celery.bin.celery import main as celery_main  # noqa: PLC0415

    sys.argv = [
        "celery", "-A", "worker.main", "flower",
        f"--address={settings.flower_address}", f"--port={settings.flower_port}",
        "--persistent=False", *flower_args,
    ]  # fmt: skip
    celery_main()


if __name__ == "__main__":
    main()
