"""Every Redis key name this project writes is built here, by :class:`Keys`.

The keys themselves (template, type, what each holds, its owner) are documented once, in the table of
:mod:`worker.dataplane.templates`; every accessor below is a row of it (tests/test_dataplane.py checks
each name against its template, and the Lua prelude's builders against these accessors).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from worker.dataplane.ids import shard_of_batch


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one deployment (``namespace``) split into ``shards``."""

    namespace: str
    shards: int

    def shard_of(self, counter_id: int) -> int:
        return zlib.crc32(str(counter_id).encode()) % self.shards

    def prefix(self, shard: int) -> str:
        return f"{self.namespace}:{{s{shard}}}"

    def stream(self, shard: int) -> str:
        return f"{self.prefix(shard)}:in"

    def stream_tally(self, shard: int) -> str:
        return f"{self.prefix(shard)}:inn"

    def epoch(self, shard: int) -> str:
        return f"{self.prefix(shard)}:epoch"

    def buffer(self, shard: int, bucket: str) -> str:
        return f"{self.prefix(shard)}:buf:{bucket}"

    def buffer_marks(self, shard: int, bucket: str) -> str:
        return f"{self.prefix(shard)}:bufm:{bucket}"

    def buffer_bytes(self, shard: int) -> str:
        return f"{self.prefix(shard)}:bufbytes"

    def buffer_seq(self, shard: int) -> str:
        return f"{self.prefix(shard)}:bufseq"

    def seq(self, shard: int) -> str:
        return f"{self.prefix(shard)}:seq"

    def dedup_mark(self, shard: int, digest: str) -> str:
        return f"{self.prefix(shard)}:seen:{digest}"

    def due(self, shard: int) -> str:
        return f"{self.prefix(shard)}:due"

    def batch(self, batch_id: str) -> str:
        return f"{self.prefix(shard_of_batch(batch_id))}:batch:{batch_id}"

    def rows(self, batch_id: str) -> str:
        return f"{self.prefix(shard_of_batch(batch_id))}:rows:{batch_id}"

    def marks(self, batch_id: str) -> str:
        return f"{self.prefix(shard_of_batch(batch_id))}:marks:{batch_id}"

    def sealed(self, shard: int) -> str:
        return f"{self.prefix(shard)}:sealed"

    def uploaded(self, shard: int) -> str:
        return f"{self.prefix(shard)}:uploaded"

    def quarantine(self, shard: int) -> str:
        return f"{self.prefix(shard)}:quarantine"

    def done(self, shard: int) -> str:
        return f"{self.prefix(shard)}:done"

    def lock(self, shard: int, counter_id: int) -> str:
        return f"{self.prefix(shard)}:lock:{counter_id}"

    def fence(self, shard: int, counter_id: int) -> str:
        return f"{self.prefix(shard)}:fence:{counter_id}"

    def _pool_key(self, name: str, counter_id: int) -> str:
        return f"{self.prefix(self.shard_of(counter_id))}:{name}:{counter_id}"

    def pool(self, counter_id: int) -> str:
        return self._pool_key("pool", counter_id)

    def pool_sessions(self, counter_id: int) -> str:
        return self._pool_key("psess", counter_id)

    def pool_holders(self, counter_id: int) -> str:
        return self._pool_key("pholder", counter_id)

    def pool_log(self, counter_id: int) -> str:
        return self._pool_key("plog", counter_id)

    def pool_history(self, counter_id: int, number: str) -> str:
        """One number's lease history (lua/lease.lua builds it with ``K.pool_history``)."""
        return self._pool_key("phist", counter_id) + f":{number}"

    def pool_seq(self, counter_id: int) -> str:
        return f"{self.prefix(self.shard_of(counter_id))}:pseq"

    def pool_exhausted(self, shard: int) -> str:
        return f"{self.prefix(shard)}:pexhausted"

    def rate(self, counter_id: int, what: str, ident: str, second: int) -> str:
        """Session API requests in one second, under the counter's shard tag (one script touches it)."""
        return f"{self.prefix(self.shard_of(counter_id))}:rl:{what}:{ident}:{second}"

    def pool_live(self, counter_id: int, what: str, ident: str) -> str:
        """Live leases of one client address (``a``) or network (``n``) in a counter's pool."""
        return self._pool_key("plive", counter_id) + f":{what}:{ident}"

    def session_rate(self, ident: str, second: int) -> str:
        """Session API requests of one client address in one second, across counters (tag ``{rl}``)."""
        return f"{self.namespace}:{{rl}}:ip:{ident}:{second}"

    def call_ref(self, shard: int, digest: str) -> str:
        """Before issue 18, one key per call ref; read for the dedup window after ``dedup_since``."""
        return f"{self.prefix(shard)}:ref:{digest}"

    def dedup_hash(self, shard: int, period: int, bucket: int) -> str:
        return f"{self.prefix(shard)}:dd:{period}:{bucket}"

    def caller_hash(self, shard: int, period: int, bucket: int) -> str:
        return f"{self.prefix(shard)}:ch:{period}:{bucket}"

    def caller_sizes(self, shard: int) -> str:
        return f"{self.prefix(shard)}:chn"

    def batch_nonces(self, shard: int, period: int) -> str:
        return f"{self.prefix(shard)}:bn:{period}"

    def dedup_sizes(self, shard: int) -> str:
        return f"{self.prefix(shard)}:ddn"

    def dedup_since(self, shard: int) -> str:
        return f"{self.prefix(shard)}:ddsince"

    @property
    def reconcile_lock(self) -> str:
        return f"{self.namespace}:reconcile:lock"

    def recheck(self, shard: int) -> str:
        return f"{self.prefix(shard)}:recheck"

    def hold(self, shard: int) -> str:
        return f"{self.prefix(shard)}:hold"

    def restore_hold(self, shard: int) -> str:
        return f"{self.prefix(shard)}:restored"

    def flush_ages(self, shard: int) -> str:
        return f"{self.prefix(shard)}:flushage"

    # Quota state is fleet-wide, not per shard. ``login`` is the Yandex
    # login the registry learned for the token, else the token's fingerprint; never the token.
    # A login's quota keys share its own slot ({q:<login>}, one transaction per login); an egress IP's
    # rate its own ({q:ip:<egress>}): a cluster spreads them over its masters instead of one hot {q}.
    def quota_inflight(self, login: str) -> str:
        return f"{self.namespace}:{{q:{login}}}:inflight"

    def quota_rate(self, egress: str) -> str:
        return f"{self.namespace}:{{q:ip:{egress}}}:rate"

    def quota_day(self, login: str, day: str) -> str:
        return f"{self.namespace}:{{q:{login}}}:day:{day}"

    def quota_day_purpose(self, login: str, purpose: str, day: str) -> str:
        return f"{self.namespace}:{{q:{login}}}:day:{day}:{purpose}"

    @property
    def paused(self) -> str:
        return f"{self.namespace}:{{q}}:paused"

    @property
    def redbeat_prefix(self) -> str:
        return f"{self.namespace}:redbeat:"

    # --- Ingestion (issue 5) -------------------------------------------------------------------
    @property
    def routing(self) -> str:
        return f"{self.namespace}:routing"

    @property
    def held(self) -> str:
        return f"{self.namespace}:{{held}}:calls"

    def held_seen(self, digest: str) -> str:
        return f"{self.namespace}:{{held}}:seen:{digest}"

    def held_owners(self) -> str:
        return f"{self.namespace}:{{held}}:owners"

    def held_reasons(self) -> str:
        return f"{self.namespace}:{{held}}:reasons"

    def held_recounted(self) -> str:
        return f"{self.namespace}:{{held}}:recounted"

    def caller(self, counter_id: int, caller_hash: str) -> str:
        return f"{self.prefix(self.shard_of(counter_id))}:caller:{counter_id}:{caller_hash}"

    def cdr_position(self, source_hash: str) -> str:
        return f"{self.namespace}:cdrpos:{source_hash}"

    # --- Accounts (issue 15) -------------------------------------------------------------------
    def _account_key(self, name: str) -> str:
        return f"{self.namespace}:{{acct}}:{name}"

    @property
    def accounts(self) -> str:
        return self._account_key("accounts")

    @property
    def account_counters(self) -> str:
        return self._account_key("counters")

    @property
    def removed_counters(self) -> str:
        return self._account_key("removed")

    @property
    def accounts_version(self) -> str:
        return self._account_key("version")

    @property
    def api_keys(self) -> str:
        """Client API keys by public id (their hashes only: worker/accounts/apikeys.py)."""
        return self._account_key("apikeys")

    @property
    def token_logins(self) -> str:
        return self._account_key("logins")

    def oauth_state(self, state: str) -> str:
        """A pending onboarding, named by a digest of its state (the state itself is a bearer secret)."""
        digest = hashlib.blake2b(state.encode(), digest_size=12).hexdigest()
        return self._account_key(f"oauth:{digest}")

    # --- Operations (issue 6) ------------------------------------------------------------------
    @property
    def metrics(self) -> str:
        return f"{self.namespace}:{{m}}:counters"

    @property
    def heartbeats(self) -> str:
        return f"{self.namespace}:heartbeats"

    @property
    def counter_setup(self) -> str:
        return f"{self.namespace}:counter_setup"

    # --- Webhooks (issue 19) -------------------------------------------------------------------
    def notify(self, name: str) -> str:
        """``outbox``, ``pending``, ``sent``, ``dead``, ``cursor`` or ``breaker`` (tag ``{n}``: one slot)."""
        return f"{self.namespace}:{{n}}:{name}"

    def console(self, what: str, text: str) -> str:
        """``fails`` (by client address) or ``session`` (by session id, the cookie's secret): the key holds
        a digest, never the address or the id."""
        return f"{self.namespace}:console:{what}:{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"

    @property
    def celery_prefix(self) -> str:
        return f"{self.namespace}:celery:"

    @property
    def shard_count(self) -> str:
        return f"{self.namespace}:shards"

    @property
    def format_version(self) -> str:
        return f"{self.namespace}:format"

    @property
    def format_steps(self) -> str:
        return f"{self.namespace}:format:steps"

    def all_pattern(self) -> str:
        return f"{self.namespace}:*"
