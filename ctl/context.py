"""What every command needs: the settings and a runtime, made once per invocation."""

from __future__ import annotations

from functools import cached_property

from config.logging import configure_logging
from config.settings import Settings, load_settings
from worker.intake.service import Intake, build_intake
from worker.runtime import Runtime


class Context:
    """Built lazily, so ``--help`` works without settings or Redis."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings

    @property
    def given_settings(self) -> Settings | None:
        """Settings a test passed in (``doctor`` loads its own, to report a bad configuration)."""
        return self._settings

    @cached_property
    def settings(self) -> Settings:
        settings = self._settings or load_settings()
        configure_logging(settings, force_format="console")
        return settings

    @cached_property
    def runtime(self) -> Runtime:
        return Runtime(self.settings)

    @cached_property
    def intake(self) -> Intake:
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
