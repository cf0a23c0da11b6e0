"""The emulator's mutable state: config in force, clock, uploads, quotas, faults and counters."""

from __future__ import annotations

from collections import Counter

from emulator.clock import Clock
from emulator.config import Account, CounterInfo, EmulatorConfig
from emulator.counters import CounterRegistry, join_from
from emulator.faults import FaultInjector
from emulator.joins import JoinPolicy
from emulator.quotas import Quotas
from emulator.store import Store
from emulator.tokens import TokenStore
from emulator.validation import CALLS


class EmulatorState:
    """Touched only from the server's event loop (handlers never await between check and update)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock = Clock()
        self.store = Store()
        self.quotas = Quotas(config.quotas)
        self.faults = FaultInjector(seed=config.seed)
        self.counts: Counter[str] = Counter()
        self.counters = CounterRegistry()
        self.tokens = TokenStore()
        self.accounts: dict[str, Account] = {}
        self.step_seconds = config.step_seconds
        self.known_visitors: frozenset[str] | None = config.known_visitors
        self.trust_forwarded_for = config.trust_forwarded_for
        self.token_lifetime = config.token_lifetime
        self.join_rules = config.join_rules
        self.count_unjoined = config.count_unjoined
        self.strict = config.strict
        self.counter_info: dict[int, CounterInfo] = {}
        self.apply(config)

    def apply(self, config: EmulatorConfig) -> None:
        """Put ``config`` in force and forget run-time changes, counts and faults (not uploads)."""
        self.config = config
        self.accounts = {a.token: a for a in config.accounts}
        self.counter_info = {c.id: c for c in config.counters}
        self.step_seconds = config.step_seconds
        self.known_visitors = config.known_visitors
        self.trust_forwarded_for = config.trust_forwarded_for
        self.token_lifetime = config.token_lifetime
        self.join_rules = config.join_rules
        self.count_unjoined = config.count_unjoined
        self.strict = config.strict
        self.quotas.reset(config.quotas)
        self.faults = FaultInjector(seed=config.seed)
        self.faults.configure(config.faults, config.script)
        self.counts.clear()
        self.clock.reset()
        if config.clock_start is not None:
            self.clock.set(config.clock_start, frozen=config.clock_frozen)
        elif config.clock_frozen:
            self.clock.freeze()
        self.tokens.load(config.accounts, self.clock.now())

    def reset(self) -> None:
        """Drop uploads, goals, options and issued tokens; back to the start-up config (ids keep increasing)."""
        self.store.clear()
        self.counters.clear()
        self.apply(self.config)

    def counter_exists(self, counter: int) -> bool:
        """With any ``"*"`` account every positive counter exists; else only listed ones."""
        if counter <= 0:
            return False
        return any(a.counters is None or counter in a.counters for a in self.accounts.values())

    def reachable_counters(self, account: Account) -> list[int]:
        """Counters a login lists: its own list, or with ``"*"`` every counter the emulator knows of."""
        if account.counters is not None:
            return sorted(account.counters)
        known: set[int] = set(self.counter_info) | set(self.store.counters()) | set(self.counters.known())
        for other in self.accounts.values():
            known |= other.counters or set()
        return sorted(c for c in known if c > 0)

    def owner_of(self, counter: int) -> str:
        """The first configured login listing the counter explicitly (else one with ``"*"``)."""
        for account in self.accounts.values():
            if account.counters is not None and counter in account.counters:
                return account.login
        return next((a.login for a in self.accounts.values() if a.counters is None), "")

    def join_policy(self, counter: int, kind: str, now: float) -> JoinPolicy | None:
        """The join rules in force for an upload arriving now (None when join_rules is off)."""
        if not self.join_rules:
            return None
        settings = self.counters.get(counter)
        option = "offline_calls_extended_threshold" if kind == CALLS else "offline_conversion_extended_threshold"
        goals = list(settings.goals)
        return JoinPolicy(
            now=now,
            join_from=join_from(settings.enabled.get(option), now),
            known_visitors=self.known_visitors,
            count_unjoined=self.count_unjoined,
            goal_matcher=lambda target: any(goal.matches_target(target) for goal in goals),
        )

    @staticmethod
    def can_access(account: Account, counter: int) -> bool:
        return account.counters is None or counter in account.counters
