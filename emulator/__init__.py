"""In-memory emulator of the Yandex Metrica calls and offline-conversions upload API.

Runs on its own (``python -m emulator``) or in a thread for tests
(:func:`emulator.server.start_in_thread`). Never imports ``worker``, ``tasks`` or ``config``.
"""

__all__: list[str] = []
