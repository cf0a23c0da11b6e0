"""The one-command demo (``standalone.run``) as a test starts it: a child process whose output is
read line by line while it runs, waited on for the lines a test expects, and stopped with Ctrl-C
(SIGINT) as a person would stop it."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Demo:
    """A running ``standalone.run``: its output so far, read by a thread so the pipe never fills."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout or []:
            self._lines.put(line)

    @property
    def output(self) -> str:
        return "".join(self.seen)

    def wait_for(self, parts: Iterable[str], timeout: float) -> str:
        """The output once every one of ``parts`` was printed (no fixed sleep: a loaded machine takes
        longer); fails when the demo exits first or ``timeout`` seconds pass."""
        wanted = tuple(parts)
        deadline = time.monotonic() + timeout
        while not all(any(part in line for line in self.seen) for part in wanted):
            assert self.proc.poll() is None, self.output
            assert time.monotonic() < deadline, f"no {wanted} within {timeout:.0f} s:\n" + self.output
            try:
                self.seen.append(self._lines.get(timeout=1))
            except queue.Empty:
                continue
        while not self._lines.empty():
            self.seen.append(self._lines.get())
        return self.output


@contextmanager
def running_demo(env: dict[str, str], calls: int) -> Iterator[Demo]:
    """``python -m standalone.run --calls N`` in ``env``; stopped with SIGINT on the way out (killed if
    it has not exited 60 s later). Its exit status is ``demo.proc.returncode`` afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "standalone.run", "--calls", str(calls)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield Demo(proc)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
