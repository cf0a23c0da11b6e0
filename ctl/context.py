"""What every command needs: the settings and a runtime, made once per invocation.

Nothing heavy is imported here at module level: ``--help`` imports this module and must stay fast.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config.settings import Settings
    from worker.intake.service import Intake
    from worker.runtime import Runtime


class Context:
    """Built lazily, so ``--help`` works without settings or Redis."""

    def __init__(self, settings: Settings | None = None, *, verbose: int = 0) -> None:
        self._settings = settings
        self.verbose = verbose  # -v: info, -vv: debug; otherwise only warnings reach stderr

    @property
    def given_settings(self) -> Settings | None:
        """Settings a test passed in (``doctor`` loads its own, to report a bad configuration)."""
        return self._settings

    @property
    def log_level(self) -> str:
        return ("WARNING", "INFO", "DEBUG")[min(self.verbose, 2)]

    @cached_property
    def settings(self) -> Settings:
        from config.logging import configure_logging  # noqa: PLC0415 - off the --help path
        from config.settings import load_settings  # noqa: PLC0415

        settings = self._settings or load_settings()
        configure_logging(settings, force_format="console", level=self.log_level)
        return settings

    @cached_property
    def runtime(self) -> Runtime:
        import click  # noqa: PLC0415 - off the --help path

        from worker.errors import FormatVersionError  # noqa: PLC0415
        from worker.format import refuse_unknown  # noqa: PLC0415
        from worker.runtime import Runtime  # noqa: PLC0415

        runtime = Runtime(self.settings)
        try:  # a format a newer release wrote: this ctl would misread it (an older one: `ctl migrate`)
            refuse_unknown(runtime.redis, runtime.keys)
        except FormatVersionError as error:
            runtime.close()
            raise click.ClickException(str(error)) from None
        return runtime

    @cached_property
    def intake(self) -> Intake:
        from worker.intake.service import build_intake  # noqa: PLC0415 - off the --help path

        return build_intake(self.runtime)

    def send_upload(self, batch_id: str) -> bool:
        """Send a batch's upload task now; if the broker refuses, the sweeper sends it later."""
        from kombu.exceptions import OperationalError  # noqa: PLC0415

        from worker.app import create_app  # noqa: PLC0415 - only commands that send tasks need Celery

        try:
            create_app(self.settings).send_task("calltrack.upload_batch", args=(batch_id,))
        except OperationalError:
            return False
        return True

    def close(self) -> None:
        if "runtime" in self.__dict__:
            self.runtime.close()
