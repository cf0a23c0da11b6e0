"""Redis work written once, run by a synchronous or an asynchronous runner (issue 26).

The request path's domain code (the intake, the producer, the session leases) is written as a
generator of :data:`Step`s: it yields what it needs from Redis and gets the reply back (or the
exception, raised at the ``yield``, so its ``except RedisError`` reads as in plain code). The rules
live in that one generator; :func:`run_sync` runs it on the process's ``redis.Redis`` (workers, the
CLI, a thread), :func:`run_async` on a ``redis.asyncio.Redis`` inside the ingestion service's event
loop, so a request never hops to the thread pool for its common round trips.

* :class:`Scripts`: script calls and commands in one round trip (:func:`run_many`'s contract: each
  reply or the exception it raised, in order; ``NOSCRIPT`` answers loaded and sent again);
* :class:`Commands`: commands in one non-transactional pipeline (replies in order, errors raised);
* :class:`Blocking`: anything else on the synchronous client (a cache miss, a shard's first use, a
  held write). The asynchronous runner runs it in the thread pool, as every request did before: the
  rare paths keep their one implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from redis import Redis
from redis.exceptions import ResponseError

from worker.dataplane.scripts import ScriptCall, evalsha_command, run_many, take_round, unloaded

if TYPE_CHECKING:  # the asynchronous runner's imports wait for its first use (issue 25: ctl starts without them)
    from redis.asyncio import Redis as AsyncRedis

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Scripts:
    calls: Sequence[ScriptCall]
    then: Sequence[Sequence[Any]] = ()


@dataclass(frozen=True, slots=True)
class Commands:
    commands: Sequence[Sequence[Any]]


@dataclass(frozen=True, slots=True)
class Blocking:
    work: Callable[[], Any]


Step = Scripts | Commands | Blocking
Steps = Generator[Step, Any, T]


def blocking(work: Callable[[], T], needs_redis: bool = True) -> Steps[T]:
    """``work()``: a :class:`Blocking` step when it may touch Redis, else called here (no thread hop)."""
    if needs_redis:
        result: T = yield Blocking(work)
        return result
    return work()


def _advance(steps: Steps[T], reply: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Hand ``steps`` the last step's reply (or raise its error at the ``yield``): (True, the result)
    when they are done, else (False, the next step). Both runners drive the steps with it."""
    try:
        return False, steps.send(reply) if error is None else steps.throw(error)
    except StopIteration as done:
        return True, done.value


def run_sync(redis: Redis, steps: Steps[T]) -> T:
    """Run ``steps`` on the synchronous client."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        done, step = _advance(steps, reply, error)
        if done:
            return step  # type: ignore[no-any-return]
        reply, error = None, None
        try:
            if isinstance(step, Scripts):
                reply = run_many(redis, step.calls, step.then)
            elif isinstance(step, Commands):
                pipe = redis.pipeline(transaction=False)
                for command in step.commands:
                    pipe.execute_command(*command)  # type: ignore[no-untyped-call]
                reply = pipe.execute()
            else:
                reply = step.work()
        except Exception as raised:
            error = raised


async def run_async(redis: AsyncRedis, steps: Steps[T]) -> T:
    """Run ``steps`` on the asynchronous client (:class:`Blocking` steps in the thread pool)."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        done, step = _advance(steps, reply, error)
        if done:
            return step  # type: ignore[no-any-return]
        reply, error = None, None
        try:
            if isinstance(step, Scripts):
                reply = await run_many_async(redis, step.calls, step.then)
            elif isinstance(step, Commands):
                reply = await pipelined(redis, step.commands)
                failed = next((answer for answer in reply if isinstance(answer, Exception)), None)
                if failed is not None:
                    raise failed
            else:
                from anyio import to_thread  # noqa: PLC0415 - see the imports

                reply = await to_thread.run_sync(step.work)
        except Exception as raised:
            error = raised


async def run_many_async(redis: AsyncRedis, calls: Sequence[ScriptCall], then: Sequence[Sequence[Any]]) -> list[Any]:
    """:func:`worker.dataplane.scripts.run_many` on the asynchronous client: the same replies."""
    try:
        return await _run_many(redis, calls, then)
    except Exception as error:
        if len(calls) == 1 and not then:  # run_many's single call: its exception is its reply
            return [error]
        raise


async def _run_many(redis: AsyncRedis, calls: Sequence[ScriptCall], then: Sequence[Sequence[Any]]) -> list[Any]:
    replies: list[Any] = [None] * len(calls)
    tail: list[Any] = []
    pending = list(range(len(calls)))
    for _ in range(2):
        answers = await pipelined(redis, [*(evalsha_command(calls[i]) for i in pending), *then])
        tail = answers[len(pending) :]
        missing = take_round(replies, pending, answers)
        if not missing:
            break
        for script in unloaded(calls, missing):
            await redis.script_load(script.script)
        pending = missing
    return replies + tail


async def pipelined(redis: AsyncRedis, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """``commands`` in one round trip on one pooled connection, each reply (through the client's
    response callbacks) or the ``ResponseError`` it raised, in order: a non-transactional pipeline
    without ``redis.asyncio.Pipeline``'s bookkeeping (about half a session request's client time).
    A dropped connection is retried as the client's own commands are (its ``Retry``), then raised."""
    retry = redis.get_retry()
    if retry is None:
        return await _pipelined(redis, commands)
    return await retry.call_with_retry(lambda: _pipelined(redis, commands), _no_wait)


async def _no_wait(_error: Exception) -> None:
    """The failed attempt's connection is already disconnected (:func:`_pipelined`)."""


async def _pipelined(redis: AsyncRedis, commands: Sequence[Sequence[Any]]) -> list[Any]:
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(connection.pack_commands(commands))
        replies: list[Any] = []
        for command in commands:
            try:
                replies.append(await redis.parse_response(connection, command[0]))
            except ResponseError as error:
                replies.append(error)
        return replies
    except BaseException:
        await connection.disconnect(nowait=True)
        raise
    finally:
        await pool.release(connection)
