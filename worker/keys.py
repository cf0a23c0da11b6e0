"""Every Redis key this project writes, in one place.

All keys of one shard share the hash tag ``{s<N>}`` so each Lua script touches a single slot (Redis
Cluster-ready); a counter always maps to one shard, so every key of a counter is in that slot too.

=========================  ======  ===========================================================
key                        type    what it holds (owner)
=========================  ======  ===========================================================
``<ns>:shards``            string  the shard count, pinned by the first process (worker/store.py)
``<ns>:{sN}:in``           stream  accepted events not yet drained (producer -> drain.lua)
``<ns>:{sN}:epoch``        string  random id of this shard's data; part of every batch id
``<ns>:{sN}:buf:<bucket>`` list    open buffer: rows of one (counter, kind, id type) and one column set;
                                   ``<bucket>`` is ``<counter>:<kind>:<id type>/<row mask>`` (no ``/<mask>``: a
                                   buffer opened before issue 24, or rows stored as JSON)
``<ns>:{sN}:bufm:<bucket>`` list   the dedup marks (``ref:<h>``/``seen:<h>``) its buffer's calls set
``<ns>:{sN}:bufbytes``     hash    bucket -> bytes in its open buffer
``<ns>:{sN}:bufseq``       hash    bucket -> the batch sequence number its open buffer reserved when
                                   it opened (drain.lua; the batch is sealed under that number)
``<ns>:{sN}:due``          zset    bucket -> ms when its buffer must be sealed by age
``<ns>:{sN}:seq``          string  batch sequence number (with a nonce from Python in each id)
``<ns>:{sN}:batch:<id>``   hash    batch record: state, bucket, rows, upload id, status, ...
``<ns>:{sN}:rows:<id>``    list    the sealed batch's rows, each its CSV line "<hex mask>,<cells>" (csvfile.py)
``<ns>:{sN}:marks:<id>``   list    the dedup marks its calls set (removed by discard; expire with rows)
``<ns>:{sN}:sealed``       zset    batch id -> sealed ms, for batches not yet uploaded
``<ns>:{sN}:uploaded``     zset    batch id -> uploaded ms, for uploads whose status is not final
``<ns>:{sN}:quarantine``   zset    batch id -> ms, batches Metrica refused for good
``<ns>:{sN}:done``         zset    batch id -> ms, batches with a final status (history)
``<ns>:{sN}:dd:<p>:<b>``   hash    dedup marks and call refs of period p (``dedup_period_days``),
                                   bucket b: field 8 characters of a digest, value a conversion's or chat's
                                   ":<seq>" (its batch: the status API's index) or a call's
                                   "counter:<seq>|column letter|identifier" (ref; worker/marks.py); expires whole
                                   when the dedup window after the period has passed (drain.lua writes it,
                                   worker/intake/call_refs.py reads it)
``<ns>:{sN}:bn:<p>``       hash    batch seq -> the nonce of its id, for the batches opened in period p (one
                                   field per batch, not per call; expires with the period's dedup hashes)
``<ns>:{sN}:ddn``          hash    period -> its bucket count; "c<period>" -> marks written in it
``<ns>:{sN}:ddsince``      string  ms this shard began bucketed marks (0: never had one-key marks);
                                   within the window after it, drain also reads the old keys below
``<ns>:{sN}:seen:<hash>``  string  before issue 18: a conversion already accepted (read only)
``<ns>:{sN}:lock:<ctr>``   string  the counter's upload lock, valued with its fencing token
``<ns>:{sN}:fence:<ctr>``  string  the counter's fencing-token sequence
``<ns>:{sN}:recheck``      hash    counter:kind -> "next check ms:interval s" (reconcile back-off)
``<ns>:reconcile:lock``    string  one reconcile run at a time, fleet-wide (holder token, leased)
``<ns>:{sN}:ref:<hash>``   string  before 18: "counter|id column|identifier" (read-only, window after ddsince)
``<ns>:{sN}:pool:<ctr>``   zset    a counter's dynamic numbers -> lease end ms (free when past)
``<ns>:{sN}:psess:<ctr>``  hash    session key -> the number it holds (worker/intake/pools.py)
``<ns>:{sN}:pholder:<ctr>`` hash   number -> "session key|lease id" of its current holder
``<ns>:{sN}:plog:<ctr>``   hash    lease id -> "number|start ms|end ms|session JSON" (history)
``<ns>:{sN}:phist:<ctr>:<number>`` zset  lease id -> start ms, for attribution at a call's time
``<ns>:{sN}:pseq``         string  lease id sequence
``<ns>:{sN}:pexhausted``   hash    counter -> times its pool had no free number
``<ns>:{sN}:rl:ctr:<ctr>:<s>`` string  session API requests of a counter in second s
``<ns>:{sN}:plive:<ctr>:a:<h>`` zset   live leases of one client address (hashed) in the pool -> end ms
``<ns>:{sN}:plive:<ctr>:n:<h>`` zset   live leases of one /24 or /64 (hashed) in the pool -> end ms
``<ns>:{rl}:ip:<h>:<s>``   string  session API requests of one client address (hashed) in second s,
                                   across every counter (worker/intake/pools.py)
``<ns>:{sN}:hold``         set     counters whose buffers seal by size only (quota budget short)
``<ns>:{sN}:restored``     hash    a restore seen at Metrica: state held|confirmed, evidence (restore.py)
``<ns>:{sN}:flushage``     hash    counter -> its own flush age in ms (worker/accounts/flush.py
                                   publishes the registry's; drain.lua reads it for a new buffer)
``<ns>:{q:<lg>}:inflight`` zset   a login's requests in flight -> lease end ms (worker/delivery/quota.py)
``<ns>:{q:ip:<egress>}:rate`` zset requests of the last second from one egress IP (quota_rate.lua)
``<ns>:{q:<lg>}:day:<d>``  string  a login's requests on UTC day d (worker/delivery/quota.py)
``<ns>:{q:<lg>}:day:<d>:<group>`` string  the same, per method group (client_read, client_write; upload, poll before 24)
``<ns>:{q}:paused``        hash    token fingerprint [:counter] -> why uploads are paused (401/403)
``<ns>:celery:*``          -       Celery broker keys (kombu's global key prefix) in the broker's Redis
                                   (CALLTRACK_BROKER_URL; on RabbitMQ, queues ``<ns>.calltrack.*``)
``<ns>:redbeat:*``         -       celery-redbeat schedule and its single-beat lock, in
                                   CALLTRACK_BEAT_REDIS_URL's Redis
=========================  ======  ===========================================================

Ingestion (issue 5: ``worker/intake/routing.py``, ``worker/intake/held.py``, ``worker/intake/callers.py``,
``ingest/pbx/cdr_csv.py``):

=================================  ======  ===================================================
key                                type    what it holds (owner)
=================================  ======  ===================================================
``<ns>:routing``                   hash    tracking number ``+digits`` -> JSON route (routing)
``<ns>:{held}:calls``              stream  calls not uploadable yet, with the reason (held)
``<ns>:{held}:seen:<hash>``        string  a provider call already held once, valued with its first
                                           held entry's id (held; the status API reads it)
``<ns>:{held}:owners``             hash    client account id -> its held calls (hold.lua; capped)
``<ns>:{sN}:ch:<p>:<b>``           hash    caller history of period p (``first_caller_period_days``),
                                           bucket b: 8 characters of a keyed hash of (counter,
                                           caller number) -> 8 of the digest of the caller's first
                                           call (callers, lua/xadd_many.lua; FirstTimeCaller)
``<ns>:{sN}:chn``                  hash    period -> its bucket count; "c<period>" -> callers in it
``<ns>:{sN}:caller:<ctr>:<hash>``  string  before issue 18: the same, one key each (read and moved
                                           into ``ch`` for a year after ``ddsince``)
``<ns>:cdrpos:<hash>``             hash    a CDR file reader's position: offset, inode
=================================  ======  ===================================================

Accounts (issue 15: ``worker/accounts/``; fleet-wide, tag ``{acct}``; no secret is ever part of a name):

=================================  ======  ===================================================
key                                type    what it holds (owner)
=================================  ======  ===================================================
``<ns>:{acct}:accounts``           hash    account id -> JSON of the account, its secrets
                                           encrypted with the key ring (registry)
``<ns>:{acct}:counters``           hash    counter id -> account id (registry's index)
``<ns>:{acct}:removed``            hash    counter id -> ms it was removed: its batches wait
``<ns>:{acct}:version``            string  bumped by every change; processes reload on a new one
``<ns>:{acct}:logins``             hash    token fingerprint -> its Yandex login, learned once for
                                           tokens given in the environment (quota key; not secret)
``<ns>:{acct}:oauth:<hash>``       string  a pending onboarding: blake2b of its OAuth state ->
                                           JSON {account}, expires (oauth_state_seconds)
``<ns>:{acct}:apikeys``            hash    a client API key's public id (the ``ctk_<id>`` part) ->
                                           JSON {account, name, scopes, sha256 of the key, created,
                                           rotated}; never the key (worker/accounts/apikeys.py)
=================================  ======  ===================================================

Operations (issue 6: ``worker/ops/metrics.py``, ``worker/ops/health.py``, ``worker/delivery/replay.py``):

=================================  ======  ===================================================
key                                type    what it holds (owner)
=================================  ======  ===================================================
``<ns>:{m}:counters``              hash    "family|label|label" -> count since the deployment
                                           began (metrics; HINCRBY per chunk, batch or request)
``<ns>:heartbeats``                hash    "role:node" -> JSON {at ms, host, pid, every s} of
                                           each live worker and beat (health); dead ones'
                                           removed after 12 intervals; the hash expires
``<ns>:counter_setup``             hash    counter -> JSON readiness (options switched on, join
                                           thresholds, goals); pending:<counter> -> ms (counter_setup.py)
=================================  ======  ===================================================

Webhooks (issue 19: ``worker/notify/``; fleet-wide, tag ``{n}``; events carry ids, never a secret or URL):

=================================  ======  ===================================================
key                                type    what it holds (owner)
=================================  ======  ===================================================
``<ns>:{n}:outbox``                hash    event id -> JSON event waiting for delivery
                                           (lua/notify_add.lua records it once)
``<ns>:{n}:pending``               zset    event id -> ms when the sweep may send it (again);
                                           0: never sent
``<ns>:{n}:sent``                  zset    event id -> ms delivered (the idempotency index;
                                           trimmed after ``dedup_window_days``)
``<ns>:{n}:dead``                  hash    event id -> JSON {event, error, at, attempts}: retries
                                           ran out (ctl notify dead / retry, the console)
``<ns>:{n}:cursor``                hash    "done|quarantine:<shard>" -> JSON [ms, batch] (plain ms
                                           before), "held" -> stream id: how far the sweep read
``<ns>:{n}:breaker``               hash    "<account>:failures|open|probe" -> failures in a row,
                                           ms the pause / the probe ends (lua/notify_breaker.lua)
``<ns>:console:fails:<hash>``      string  failed console logins of one client address, this window
``<ns>:console:session:<hash>``    string  a console login until logout or its TTL (ingest/console/app.py)
=================================  ======  ===================================================
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

from worker.ids import shard_of_batch


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

    def epoch(self, shard: int) -> str:
        return f"{self.prefix(shard)}:epoch"

    def buffer(self, shard: int, bucket: str) -> str:
        return f"{self.prefix(shard)}:buf:{bucket}"

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

    def pool_history(self, counter_id: int, number: str = "") -> str:
        """One number's lease history; with no number, the prefix lua/lease.lua completes."""
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
        """``fails`` (by address) or ``session`` (by session id, a secret): named by a digest, never the text."""
        return f"{self.namespace}:console:{what}:{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"

    @property
    def celery_prefix(self) -> str:
        return f"{self.namespace}:celery:"

    @property
    def shard_count(self) -> str:
        return f"{self.namespace}:shards"

    def all_pattern(self) -> str:
        return f"{self.namespace}:*"
