"""The table of every Redis key this project writes: the one place a key is documented (``TABLE``).

All keys of one shard share the hash tag ``{s<N>}`` so each Lua script touches a single slot (Redis
Cluster-ready); a counter always maps to one shard, so every key of a counter is in that slot too. In a
template, ``<ns>`` is the deployment's namespace and ``{sN}`` a shard's tag; ``<...>`` are the parts a
key is named by. ``accessor`` is the :class:`worker.dataplane.keys.Keys` method or property that builds
it (tests/test_dataplane.py checks that each exists, and builds the template's name); a ``+`` marks the
keys Lua scripts build too, only through the prelude functions generated from this table
(``K.<accessor>(prefix, parts...)``, :mod:`worker.dataplane.prelude`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SHARD_PREFIX = "<ns>:{sN}"

TABLE = """
Pipeline (per shard, issues 1-18):

==================================  ======  =================  =======================================================
key                                 type    accessor           what it holds (owner)
==================================  ======  =================  =======================================================
``<ns>:shards``                     string  shard_count        the shard count, pinned by the first process; stored
                                                               negated (``-N``) from format 2 (worker/format.py)
``<ns>:format``                     string  format_version     the data format's version (worker/format.py; none
                                                               before format 2: README, "Upgrading")
``<ns>:format:steps``               hash    format_steps       step -> ms done, of the migration under way (or last
                                                               done; expires 30 days after it)
``<ns>:{sN}:in``                    stream  stream+            accepted events not yet drained (producer -> drain.lua)
``<ns>:{sN}:inn``                   hash    stream_tally+      ``e`` grouped entries in the stream, ``n`` their events
                                                               (xadd_many.lua adds, drain.lua takes off): the stream
                                                               holds XLEN - e + n events (worker/dataplane/entries.py)
``<ns>:{sN}:epoch``                 string  epoch+             random id of this shard's data; part of every batch id
``<ns>:{sN}:buf:<bucket>``          list    buffer+            open buffer: rows of one (counter, kind, id type) and
                                                               one column set; ``<bucket>`` is ``<counter>:<kind>:<id
                                                               type>/<row mask>`` (no ``/<mask>``: a buffer opened
                                                               before issue 24, or rows stored as JSON)
``<ns>:{sN}:bufm:<bucket>``         list    buffer_marks+      the dedup marks its buffer's calls set, each
                                                               ``dd:<p>:<b>:<field>`` (a field of a dedup hash;
                                                               ``ref:<h>``/``seen:<h>`` before issue 18); renamed to
                                                               ``marks:<id>`` when sealed
``<ns>:{sN}:bufbytes``              hash    buffer_bytes+      bucket -> bytes in its open buffer
``<ns>:{sN}:bufseq``                hash    buffer_seq+        bucket -> the batch sequence number its open buffer
                                                               reserved when it opened (drain.lua; the batch is sealed
                                                               under that number)
``<ns>:{sN}:due``                   zset    due+               bucket -> ms when its buffer must be sealed by age
``<ns>:{sN}:seq``                   string  seq+               batch sequence number (with a nonce from Python in each
                                                               id)
``<ns>:{sN}:batch:<id>``            hash    batch+             batch record: state, bucket, rows, upload id, status,
                                                               ...
``<ns>:{sN}:rows:<id>``             list    rows+              the sealed batch's rows, each its CSV line "<hex
                                                               mask>,<cells>" (csvfile.py)
``<ns>:{sN}:marks:<id>``            list    marks+             the dedup marks its calls set (removed by discard;
                                                               expire with rows)
``<ns>:{sN}:sealed``                zset    sealed+            batch id -> sealed ms, for batches not yet uploaded
``<ns>:{sN}:uploaded``              zset    uploaded           batch id -> uploaded ms, for uploads whose status is not
                                                               final
``<ns>:{sN}:quarantine``            zset    quarantine+        batch id -> ms, batches Metrica refused for good
``<ns>:{sN}:done``                  zset    done+              batch id -> ms, batches with a final status (history)
``<ns>:{sN}:dd:<p>:<b>``            hash    dedup_hash+        dedup marks and call refs of period p
                                                               (``dedup_period_days``), bucket b: field 8 characters of
                                                               a digest, value a conversion's or chat's ":<seq>" (its
                                                               batch: the status API's index) or a call's
                                                               "counter:<seq>|column letter|identifier" (ref;
                                                               dataplane/marks.py); expires whole when the dedup window
                                                               after the period has passed (drain.lua writes it,
                                                               worker/intake/call_refs.py reads it)
``<ns>:{sN}:bn:<p>``                hash    batch_nonces+      batch seq -> the nonce of its id, for the batches opened
                                                               in period p (one field per batch, not per call; expires
                                                               with the period's dedup hashes)
``<ns>:{sN}:ddn``                   hash    dedup_sizes+       period -> its bucket count; "c<period>" -> marks written
                                                               in it
``<ns>:{sN}:ddsince``               string  dedup_since+       ms this shard began bucketed marks (0: never had one-key
                                                               marks); within the window after it, drain also reads the
                                                               old keys below
``<ns>:{sN}:seen:<hash>``           string  dedup_mark+        before issue 18: a conversion already accepted (read
                                                               only)
``<ns>:{sN}:lock:<ctr>``            string  lock               the counter's upload lock, valued with its fencing token
``<ns>:{sN}:fence:<ctr>``           string  fence              the counter's fencing-token sequence
``<ns>:{sN}:recheck``               hash    recheck            counter:kind -> "next check ms:interval s" (reconcile
                                                               back-off)
``<ns>:reconcile:lock``             string  reconcile_lock     one reconcile run at a time, fleet-wide (holder token,
                                                               leased)
``<ns>:{sN}:ref:<hash>``            string  call_ref+          before issue 18: a call's "counter|id column|identifier"
                                                               (read only, until the window after ``ddsince`` has
                                                               passed)
``<ns>:{sN}:pool:<ctr>``            zset    pool               a counter's dynamic numbers -> lease end ms (free when
                                                               past)
``<ns>:{sN}:psess:<ctr>``           hash    pool_sessions      session key -> the number it holds
                                                               (worker/intake/pools.py)
``<ns>:{sN}:pholder:<ctr>``         hash    pool_holders       number -> "session key|lease id" of its current holder
``<ns>:{sN}:plog:<ctr>``            hash    pool_log           lease id -> "number|start ms|end ms|session JSON"
                                                               (history)
``<ns>:{sN}:phist:<ctr>:<number>``  zset    pool_history+      lease id -> start ms, for attribution at a call's time
``<ns>:{sN}:pseq``                  string  pool_seq           lease id sequence
``<ns>:{sN}:pexhausted``            hash    pool_exhausted     counter -> times its pool had no free number
``<ns>:{sN}:rl:ctr:<ctr>:<s>``      string  rate               session API requests of a counter in second s
``<ns>:{sN}:plive:<ctr>:a:<h>``     zset    pool_live          live leases of one client address (hashed) in the pool
                                                               -> end ms
``<ns>:{sN}:plive:<ctr>:n:<h>``     zset    pool_live          live leases of one /24 or /64 (hashed) in the pool ->
                                                               end ms
``<ns>:{rl}:ip:<h>:<s>``            string  session_rate       session API requests of one client address (hashed) in
                                                               second s, across every counter (worker/intake/pools.py)
``<ns>:{sN}:hold``                  set     hold+              counters whose buffers seal by size only (quota budget
                                                               short)
``<ns>:{sN}:restored``              hash    restore_hold       a restore seen at Metrica: state held|confirmed, the
                                                               evidence, seen/accepted seq (delivery/restore.py)
``<ns>:{sN}:flushage``              hash    flush_ages+        counter -> its own flush age in ms
                                                               (worker/accounts/flush.py publishes the registry's;
                                                               drain.lua reads it for a new buffer)
``<ns>:{q:<lg>}:inflight``          zset    quota_inflight     a login's requests in flight -> lease end ms
                                                               (worker/delivery/quota.py)
``<ns>:{q:ip:<egress>}:rate``       zset    quota_rate         requests of the last second from one egress IP
                                                               (quota_rate.lua)
``<ns>:{q:<lg>}:day:<d>``           string  quota_day          a login's requests on UTC day d
                                                               (worker/delivery/quota.py)
``<ns>:{q:<lg>}:day:<d>:<group>``   string  quota_day_purpose  the same, per method group (client_read, client_write;
                                                               upload, poll before 24)
``<ns>:{q}:paused``                 hash    paused             token fingerprint [:counter] -> why uploads are paused
                                                               (401/403)
``<ns>:celery:*``                   -       celery_prefix      Celery broker keys (kombu's global key prefix) in the
                                                               broker's Redis (CALLTRACK_BROKER_URL; on RabbitMQ,
                                                               queues ``<ns>.calltrack.*``)
``<ns>:redbeat:*``                  -       redbeat_prefix     celery-redbeat schedule and its single-beat lock, in
                                                               CALLTRACK_BEAT_REDIS_URL's Redis
==================================  ======  =================  =======================================================

Ingestion (issue 5: ``worker/intake/routing.py``, ``worker/intake/held.py``, ``worker/intake/callers.py``,:

==================================  ======  =================  =======================================================
key                                 type    accessor           what it holds (owner)
==================================  ======  =================  =======================================================
``<ns>:routing``                    hash    routing            tracking number ``+digits`` -> JSON route (routing)
``<ns>:{held}:calls``               stream  held               calls not uploadable yet, with the reason (held)
``<ns>:{held}:seen:<hash>``         string  held_seen          a provider call already held once, valued with its first
                                                               held entry's id (held; the status API reads it)
``<ns>:{held}:owners``              hash    held_owners        client account id -> its held calls (hold.lua; capped)
``<ns>:{held}:reasons``             hash    held_reasons       reason's first word -> held calls (hold.lua,
                                                               held_release.lua; recounted by held_recount.lua)
``<ns>:{held}:recounted``           string  held_recounted     set for an hour by each recount: none, the next
                                                               ``/metrics`` scrape recounts
``<ns>:{sN}:ch:<p>:<b>``            hash    caller_hash+       caller history of period p
                                                               (``first_caller_period_days``), bucket b: 8 characters
                                                               of a keyed hash of (counter, caller number) -> 8 of the
                                                               digest of the caller's first call (callers,
                                                               lua/xadd_many.lua; FirstTimeCaller)
``<ns>:{sN}:chn``                   hash    caller_sizes+      period -> its bucket count; "c<period>" -> callers in it
``<ns>:{sN}:caller:<ctr>:<hash>``   string  caller+            before issue 18: the same, one key each (read and moved
                                                               into ``ch`` for a year after ``ddsince``)
``<ns>:cdrpos:<hash>``              hash    cdr_position       a CDR file reader's position: offset, inode
==================================  ======  =================  =======================================================

Accounts (issue 15: ``worker/accounts/``; fleet-wide, tag ``{acct}``; no secret is ever part of a name):

==================================  ======  =================  =======================================================
key                                 type    accessor           what it holds (owner)
==================================  ======  =================  =======================================================
``<ns>:{acct}:accounts``            hash    accounts           account id -> JSON of the account, its secrets encrypted
                                                               with the key ring (registry)
``<ns>:{acct}:counters``            hash    account_counters   counter id -> account id (registry's index)
``<ns>:{acct}:removed``             hash    removed_counters   counter id -> ms it was removed: its batches wait
``<ns>:{acct}:version``             string  accounts_version   bumped by every change; processes reload on a new one
``<ns>:{acct}:logins``              hash    token_logins       token fingerprint -> its Yandex login, learned once for
                                                               tokens given in the environment (quota key; not secret)
``<ns>:{acct}:oauth:<hash>``        string  oauth_state        a pending onboarding: blake2b of its OAuth state -> JSON
                                                               {account}, expires (oauth_state_seconds)
``<ns>:{acct}:apikeys``             hash    api_keys           a client API key's public id (the ``ctk_<id>`` part) ->
                                                               JSON {account, name, scopes, sha256 of the key, created,
                                                               rotated}; never the key (worker/accounts/apikeys.py)
==================================  ======  =================  =======================================================

Operations (issue 6: ``worker/ops/metrics.py``, ``worker/ops/health.py``, ``worker/delivery/replay.py``):

==================================  ======  =================  =======================================================
key                                 type    accessor           what it holds (owner)
==================================  ======  =================  =======================================================
``<ns>:{m}:counters``               hash    metrics            "family|label|label" -> count since the deployment began
                                                               (metrics; HINCRBY per chunk, batch or request)
``<ns>:heartbeats``                 hash    heartbeats         "role:node" -> JSON {at ms, host, pid, every s} of each
                                                               live worker and beat (health); dead ones' removed after
                                                               12 intervals; the hash expires
``<ns>:counter_setup``              hash    counter_setup      counter -> JSON readiness (options switched on, join
                                                               thresholds, goals); pending:<counter> -> ms
                                                               (counter_setup.py)
==================================  ======  =================  =======================================================

Webhooks (issue 19: ``worker/notify/``; fleet-wide, tag ``{n}``; events carry ids, never a secret or URL):

==================================  ======  =================  =======================================================
key                                 type    accessor           what it holds (owner)
==================================  ======  =================  =======================================================
``<ns>:{n}:outbox``                 hash    notify             event id -> JSON event waiting for delivery
                                                               (lua/notify_add.lua records it once)
``<ns>:{n}:pending``                zset    notify             event id -> ms when the sweep may send it (again); 0:
                                                               never sent
``<ns>:{n}:sent``                   zset    notify             event id -> ms delivered (the idempotency index; trimmed
                                                               after ``dedup_window_days``)
``<ns>:{n}:dead``                   hash    notify             event id -> JSON {event, error, at, attempts}: retries
                                                               ran out (ctl notify dead / retry, the console)
``<ns>:{n}:cursor``                 hash    notify             "done|quarantine:<shard>" -> JSON [ms, batch] (plain ms
                                                               before), "held" -> stream id: how far the sweep read
``<ns>:{n}:breaker``                hash    notify             "<account>:failures|open|probe" -> failures in a row, ms
                                                               the pause / the probe ends (lua/notify_breaker.lua)
``<ns>:console:fails:<hash>``       string  console            failed console logins of one client address, this window
``<ns>:console:session:<hash>``     string  console            a console login until logout or its TTL
                                                               (ingest/console/app.py)
==================================  ======  =================  =======================================================
"""


@dataclass(frozen=True, slots=True)
class KeyDef:
    """One row of the table: a key (or key family), its Redis type, accessor and what it holds."""

    section: str
    template: str
    type: str
    accessor: str
    lua: bool
    doc: str

    @property
    def parts(self) -> list[str]:
        """The names of the template's variable parts, in order (``<bucket>`` -> ``bucket``)."""
        return re.findall(r"<([a-z]+)>", self.template.removeprefix("<ns>"))


def _parse(text: str) -> tuple[KeyDef, ...]:
    rows: list[list[str]] = []
    section = ""
    for line in text.splitlines():
        if line.startswith("``"):
            template, kind, accessor, doc = re.split(r"\s{2,}", line, maxsplit=3)
            rows.append([section, template.strip("`"), kind, accessor, doc])
        elif line.startswith(" ") and line.strip() and rows:
            rows[-1][4] += " " + line.strip()
        elif line.endswith(":") and not line.startswith(("=", "key ")):
            section = line.removesuffix(":")
    return tuple(
        KeyDef(sec, template, kind, acc.rstrip("+").strip("-"), acc.endswith("+"), doc)
        for sec, template, kind, acc, doc in rows
    )


KEYS: tuple[KeyDef, ...] = _parse(TABLE)
LUA_KEYS: tuple[KeyDef, ...] = tuple(key for key in KEYS if key.lua)
