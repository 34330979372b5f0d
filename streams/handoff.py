"""The hand-off of each fetched message to the streams, without four tasks a message.

faust's fetch loop (``Consumer._drain_messages``) hands every message on with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: the callback
races the suspension of the flow, so that a rebalance can leave a callback stuck on a
full stream buffer. ``Service.wait_first`` makes a task of each argument and of the
service's ``stopped`` and ``crashed`` events, waits for the first with ``asyncio.wait``
and cancels the other three. In a worker draining payments that machinery took about a
tenth of its CPU (``Consumer._drain_messages`` less the fetch itself, BENCHMARKS.md),
though the callback almost never waits: it puts the event in a buffer with room.

:func:`install` gives faust's consumer a ``wait_first`` that first runs a coroutine
argument, in the caller's task, up to its first wait. One that finishes there is the
winner, as it would have been, and the other arguments are closed unstarted. One that
waits goes on in a task from where it stopped (:class:`Resumed`), raced against the
others by faust's own ``wait_first``, exactly as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any

from mode.services import WaitResults


class Resumed(Awaitable[Any]):
    """The rest of a coroutine that was run by hand up to its first wait.

    Awaiting it carries on from that wait: what the coroutine waits on goes up to the
    task that awaits this, and what the task sends or throws back goes down to the
    coroutine, as ``yield from`` delegates."""

    __slots__ = ("_coroutine", "_waiting")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self._coroutine = coroutine
        self._waiting = waiting  # what its first step yielded: a future, or None

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine, waiting = self._coroutine, self._waiting
        while True:
            try:
                sent = yield waiting
            except BaseException as error:  # noqa: BLE001 - cancellation and close go down too
                try:
                    waiting = coroutine.throw(error)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting = coroutine.send(sent)
                except StopIteration as stop:
                    return stop.value


class Finished:
    """A coroutine that finished in its first step, and what it returned."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def first_step(coroutine: Coroutine[Any, Any, Any]) -> Finished | Resumed:
    """Run ``coroutine`` in the calling task up to its first wait: what it returned if it
    finished there, else what is left of it. An exception it raises propagates."""
    try:
        waiting = coroutine.send(None)
    except StopIteration as stop:
        return Finished(stop.value)
    return Resumed(coroutine, waiting)


async def _rest(resumed: Resumed) -> Any:
    return await resumed


def install(consumer_class: Any) -> None:
    """Put the first-step hand-off in front of ``consumer_class.wait_first``."""
    faust_wait_first = consumer_class.wait_first

    async def wait_first(consumer: Any, *waits: Any, timeout: float | None = None) -> Any:  # noqa: ASYNC109 - faust's signature
        if not waits or not inspect.iscoroutine(waits[0]):
            return await faust_wait_first(consumer, *waits, timeout=timeout)
        step = first_step(waits[0])
        if isinstance(step, Resumed):
            return await faust_wait_first(consumer, _rest(step), *waits[1:], timeout=timeout)
        for other in waits[1:]:  # never started: closing them is all they need
            if inspect.iscoroutine(other):
                other.close()
        if consumer._stopped.is_set() or consumer._crashed.is_set():  # noqa: SLF001
            return WaitResults([], [], stopped=True)
        return WaitResults([waits[0]], [step.value], stopped=False)

    consumer_class.wait_first = wait_first
