"""Fixtures of the emulator tests, loaded with ``pytest_plugins = ["tests.emulator.fixtures"]``.

(A conftest.py here would be a second top-level ``conftest`` module next to tests/conftest.py for mypy.)
``shared_emulator``: one in-thread server per session; ``emu``: that server reset to BASE_CONFIG;
``metrica``: a client of it; ``start_emulator``: servers with their own config, stopped after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from emulator.config import EmulatorConfig
from emulator.server import RunningEmulator, start_in_thread
from tests.emulator.support import BASE_CONFIG, Metrica


@pytest.fixture(scope="session")
def shared_emulator() -> Iterator[RunningEmulator]:
    with start_in_thread(BASE_CONFIG) as running:
        yield running


@pytest.fixture
def emu(shared_emulator: RunningEmulator) -> RunningEmulator:
    """The shared emulator, reset to BASE_CONFIG (uploads, clock, quotas, faults)."""
    shared_emulator.admin.reset()
    return shared_emulator


@pytest.fixture
def metrica(emu: RunningEmulator) -> Iterator[Metrica]:
    client = Metrica(emu.base_url)
    yield client
    client.close()


@pytest.fixture
def start_emulator() -> Iterator[Callable[[EmulatorConfig], RunningEmulator]]:
    """Start emulators with their own config; all are stopped after the test."""
    started: list[RunningEmulator] = []

    def start(config: EmulatorConfig) -> RunningEmulator:
        running = start_in_thread(config)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
