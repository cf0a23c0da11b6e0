"""Metrica quotas: requests per IP per second, parallel requests and requests per day per login, the
daily count kept per group of methods (quotas page: "client_read: reading parameters for a tag or a
user account", "client_write: saving parameters"): GET requests are ``client_read``, every request
that changes something (uploads, switches, goals) ``client_write``; each group has its own day."""

from __future__ import annotations

from collections import deque
from typing import NoReturn

from emulator.config import QuotaConfig
from emulator.errors import ApiError, QuotaParallelRequests, QuotaRequestsByIp, QuotaRequestsByUid

DAY = 86400
GROUPS = ("client_read", "client_write")


def group_of(method: str) -> str:
    """The quota group of a request: reads are client_read, writes (POST, PUT, DELETE) client_write."""
    return "client_read" if method.upper() in ("GET", "HEAD") else "client_write"


class Quotas:
    """Quota bookkeeping on the emulator clock. Only admitted requests are counted."""

    def __init__(self, config: QuotaConfig) -> None:
        self.config = config
        self._ip_windows: dict[str, deque[float]] = {}
        self._parallel: dict[str, int] = {}
        self._daily: dict[tuple[str, str], tuple[int, int]] = {}  # (login, group) -> (day, count)
        self.rejections: dict[str, int] = {}
        self.peak_parallel: dict[str, int] = {}
        self.admitted: dict[str, int] = {}
        self.login_rejections: dict[str, dict[str, int]] = {}

    def _reject(self, error: type[ApiError], message: str, login: str | None = None) -> NoReturn:
        self.rejections[error.error_type] = self.rejections.get(error.error_type, 0) + 1
        if login is not None:
            self.note_rejection(login, error.error_type)
        raise error(message, "", self.config.http_status)

    def note_rejection(self, login: str, error_type: str) -> None:
        """Count a quota answer (429/420) against a login, by error type and by HTTP status."""
        counts = self.login_rejections.setdefault(login, {})
        for key in (error_type, f"status.{self.config.http_status}"):
            counts[key] = counts.get(key, 0) + 1

    def check_ip(self, ip: str, now: float) -> None:
        """Sliding one-second window per client IP."""
        limit = self.config.requests_per_ip_per_second
        if limit is None:
            return
        window = self._ip_windows.get(ip)
        if window is None:
            window = self._ip_windows[ip] = deque()
        while window and (window[0] <= now - 1.0 or window[0] > now):
            window.popleft()
        if len(window) >= limit:
            self._reject(
                QuotaRequestsByIp,
                f"The limit on the number of API requests per second for an IP address has been exceeded "
                f"({limit} per second)",
            )
        window.append(now)

    def acquire_parallel(self, login: str) -> None:
        """Take a parallel-request slot; pair with :meth:`release_parallel`."""
        limit = self.config.parallel_requests_per_login
        running = self._parallel.get(login, 0)
        if limit is not None and running >= limit:
            self._reject(
                QuotaParallelRequests,
                f"The limit on the number of parallel API requests for the user has been exceeded ({limit} at a time)",
                login,
            )
        self._parallel[login] = running + 1
        if running + 1 > self.peak_parallel.get(login, 0):
            self.peak_parallel[login] = running + 1

    def release_parallel(self, login: str) -> None:
        running = self._parallel.get(login, 0) - 1
        if running > 0:
            self._parallel[login] = running
        else:
            self._parallel.pop(login, None)

    def count_daily(self, login: str, now: float, group: str = "client_read") -> None:
        """Count one request of ``login`` in ``group``; the count resets at 00:00 UTC of the emulator clock."""
        limit = self.config.requests_per_login_per_day
        day = int(now // DAY)
        seen_day, count = self._daily.get((login, group), (day, 0))
        if seen_day != day:
            count = 0
        if limit is not None and count >= limit:
            self._reject(
                QuotaRequestsByUid,
                f"The limit on the number of API requests per day for the user has been exceeded ({limit} per day, "
                f"{group})",
                login,
            )
        self._daily[(login, group)] = (day, count + 1)
        self.admitted[login] = self.admitted.get(login, 0) + 1

    def in_flight(self, login: str) -> int:
        return self._parallel.get(login, 0)

    def used_today(self, login: str, now: float, group: str | None = None) -> int:
        """Requests of ``login`` today in ``group`` (every group when None)."""
        total = 0
        for name in GROUPS if group is None else (group,):
            seen_day, count = self._daily.get((login, name), (-1, 0))
            total += count if seen_day == int(now // DAY) else 0
        return total

    def reset_windows(self) -> None:
        """Forget per-IP windows (after the clock jumps)."""
        self._ip_windows.clear()

    def reset(self, config: QuotaConfig | None = None) -> None:
        """Forget all counts except in-flight requests; optionally switch config."""
        if config is not None:
            self.config = config
        self._ip_windows.clear()
        self._daily.clear()
        self.rejections.clear()
        self.peak_parallel.clear()
        self.admitted.clear()
        self.login_rejections.clear()

    def reset_login_stats(self) -> None:
        """Forget peaks, admitted counts and rejections per login (not the quota counts themselves)."""
        self.peak_parallel = {login: n for login, n in self._parallel.items() if n > 0}
        self.admitted.clear()
        self.login_rejections.clear()

    def login_stats(self, now: float) -> dict[str, dict[str, object]]:
        """Per login: requests in flight, peak parallel requests, admitted requests (and today), quota answers."""
        logins = set(self.peak_parallel) | set(self.admitted) | set(self.login_rejections) | set(self._parallel)
        return {
            login: {
                "in_flight": self.in_flight(login),
                "peak_parallel": self.peak_parallel.get(login, 0),
                "requests": self.admitted.get(login, 0),
                "requests_today": self.used_today(login, now),
                "requests_today_by_group": {group: self.used_today(login, now, group) for group in GROUPS},
                "quota_rejections": dict(sorted(self.login_rejections.get(login, {}).items())),
            }
            for login in sorted(logins)
        }
