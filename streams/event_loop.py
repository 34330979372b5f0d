"""The event loop a worker runs on: uvloop by default, asyncio's own on request.

A worker is bound by its event loop's machinery as much as by its own code: every Kafka
message passes through several tasks, futures and callbacks (faust's consumer, stream and
producer, aiokafka's sender). uvloop runs them in C; on the 2-core machine a worker
draining payments went about 13% faster on it for 11% less CPU an event (BENCHMARKS.md).
``HEADRACE_EVENT_LOOP=asyncio`` keeps the standard library's loop, for a platform without
uvloop or to rule the loop out while debugging.

The choice is made once, before any loop exists, by setting asyncio's loop policy: the
worker's main loop and the loop of faust's consumer thread are both made from it. The
end-to-end benchmark's plain loop runs on the same kind of loop (``loop_factory``), so the
two stay comparable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

EVENT_LOOPS: Final = ("uvloop", "asyncio")


class EventLoopError(RuntimeError):
    """The event loop asked for cannot run here."""


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a new loop of the kind ``name`` (one of ``EVENT_LOOPS``)."""
    if name == "asyncio":
        return asyncio.SelectorEventLoop
    if name != "uvloop":
        raise EventLoopError(f"unknown event loop {name!r}; expected one of {EVENT_LOOPS}")
    try:
        import uvloop  # noqa: PLC0415 - optional: not every platform has it
    except ImportError as error:
        raise EventLoopError(
            "HEADRACE_EVENT_LOOP=uvloop, but uvloop is not installed here; "
            "install it or set HEADRACE_EVENT_LOOP=asyncio"
        ) from error
    return uvloop.new_event_loop


def use_event_loop(name: str) -> None:
    """Make every loop created from now on (``asyncio.new_event_loop``, faust's worker and
    its threads) a loop of the kind ``name``."""
    if name == "asyncio":
        asyncio.set_event_loop_policy(None)
        return
    loop_factory(name)  # fails with a clear message where uvloop is missing
    import uvloop  # noqa: PLC0415 - present: loop_factory checked

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``"uvloop"`` or ``"asyncio"``: what a running loop is, for logs and metrics."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
