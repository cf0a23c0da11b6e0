"""Serving the emulator with uvicorn: in the foreground or in a background thread for tests."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from emulator.app import EmulatorApp, create_app
from emulator.client import EmulatorAdmin
from emulator.config import EmulatorConfig
from emulator.state import EmulatorState


def uvicorn_config(app: EmulatorApp, config: EmulatorConfig, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        proxy_headers=False,  # X-Forwarded-For is honoured only with trust_forwarded_for
        access_log=config.access_log,
        log_level=config.log_level,
        timeout_graceful_shutdown=2,
    )


def serve(config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run in the foreground until interrupted."""
    config = config or EmulatorConfig()
    uvicorn.Server(uvicorn_config(create_app(config), config, host, port)).run()


class RunningEmulator:
    """An emulator serving from a background thread. ``stop()`` or use as a context manager."""

    def __init__(self, app: EmulatorApp, server: uvicorn.Server, thread: threading.Thread, base_url: str) -> None:
        self.app = app
        self.base_url = base_url
        self.admin = EmulatorAdmin(base_url)
        self._server = server
        self._thread = thread

    @property
    def state(self) -> EmulatorState:
        """Live state; it belongs to the server thread, so read it only while the server is idle."""
        return self.app.state

    def stop(self, timeout: float = 10.0) -> None:
        self.admin.close()
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_in_thread(
    config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 10.0
) -> RunningEmulator:
    """Start uvicorn in a daemon thread on ``host:port`` (0 picks a free port) and wait until it serves."""
    config = config or EmulatorConfig()
    app = create_app(config)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, config, host, bound_port))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="metrica-emulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the Metrica emulator did not start")
        time.sleep(0.01)
    url_host = f"[{host}]" if ":" in host else host
    return RunningEmulator(app, server, thread, f"http://{url_host}:{bound_port}")
