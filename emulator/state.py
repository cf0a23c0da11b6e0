"""The emulator's mutable state: config in force, clock, uploads, quotas, faults and counters."""

from __future__ import annotations

from collections import Counter

from emulator.clock import Clock
from emulator.config import Account, EmulatorConfig
from emulator.faults import FaultInjector
from emulator.quotas import Quotas
from emulator.store import Store


class EmulatorState:
    """Touched only from the server's event loop (handlers never await between check and update)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock = Clock()
        self.store = Store()
        self.quotas = Quotas(config.quotas)
        self.faults = FaultInjector(seed=config.seed)
        self.counts: Counter[str] = Counter()
        self.goals: dict[int, str] = {}
        self.accounts: dict[str, Account] = {}
        self.step_seconds = config.step_seconds
        self.known_visitors: frozenset[str] | None = config.known_visitors
        self.trust_forwarded_for = config.trust_forwarded_for
        self.apply(config)

    def apply(self, config: EmulatorConfig) -> None:
        """Put ``config`` in force and forget run-time changes, counts and faults (not uploads)."""
        self.config = config
        self.accounts = {a.token: a for a in config.accounts}
        self.step_seconds = config.step_seconds
        self.known_visitors = config.known_visitors
        self.trust_forwarded_for = config.trust_forwarded_for
        self.quotas.reset(config.quotas)
        self.faults = FaultInjector(seed=config.seed)
        self.faults.configure(config.faults, config.script)
        self.counts.clear()
        self.clock.reset()
        if config.clock_start is not None:
            self.clock.set(config.clock_start, frozen=config.clock_frozen)
        elif config.clock_frozen:
            self.clock.freeze()

    def reset(self) -> None:
        """Drop every upload and return to the start-up config (upload ids keep increasing)."""
        self.store.clear()
        self.goals.clear()
        self.apply(self.config)

    def counter_exists(self, counter: int) -> bool:
        """With any ``"*"`` account every positive counter exists; else only listed ones."""
        if counter <= 0:
            return False
        return any(a.counters is None or counter in a.counters for a in self.accounts.values())

    @staticmethod
    def can_access(account: Account, counter: int) -> bool:
        return account.counters is None or counter in account.counters
