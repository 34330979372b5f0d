"""The first-step hand-off (``streams.handoff``): a coroutine run by hand to its first wait
either finished there or carries on in a task exactly as it would have, cancellation and
errors included; faust's consumer hands messages on through it."""

from __future__ import annotations

import asyncio
import functools
import inspect
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from mode import Service
from mode.utils.locks import Event as ModeEvent

from streams.handoff import Finished, Resumed, first_step, install


def in_a_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run the test's coroutine in an event loop of its own."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


async def immediate(value: int) -> int:
    return value * 2


async def waits_on(future: asyncio.Future[int], log: list[str]) -> int:
    log.append("before")
    try:
        value = await future
    except asyncio.CancelledError:
        log.append("cancelled")
        raise
    except ValueError as error:
        log.append(f"caught {error}")
        return -1
    log.append("after")
    return value + 1


async def sleeps_then_returns(turns: int) -> int:
    for _ in range(turns):
        await asyncio.sleep(0)
    return turns


@in_a_loop
async def test_a_coroutine_that_never_waits_finishes_in_its_first_step() -> None:
    step = first_step(immediate(21))
    assert isinstance(step, Finished)
    assert step.value == 42


@in_a_loop
async def test_an_error_in_the_first_step_propagates() -> None:
    async def fails() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        first_step(fails())


@in_a_loop
async def test_a_coroutine_that_waits_carries_on_in_a_task_with_the_awaited_value() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    log: list[str] = []
    step = first_step(waits_on(future, log))
    assert isinstance(step, Resumed)
    assert log == ["before"]

    async def rest() -> Any:
        return await step

    task = asyncio.ensure_future(rest())
    await asyncio.sleep(0)
    assert not task.done()
    future.set_result(9)
    assert await task == 10
    assert log == ["before", "after"]


@in_a_loop
async def test_an_error_set_on_the_awaited_future_reaches_the_coroutine() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    log: list[str] = []
    step = first_step(waits_on(future, log))
    assert isinstance(step, Resumed)
    task = asyncio.ensure_future(_await(step))
    await asyncio.sleep(0)
    future.set_exception(ValueError("bad"))
    assert await task == -1
    assert log == ["before", "caught bad"]


@in_a_loop
async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits() -> None:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    log: list[str] = []
    step = first_step(waits_on(future, log))
    assert isinstance(step, Resumed)
    task = asyncio.ensure_future(_await(step))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["before", "cancelled"]
    assert future.cancelled()  # the task cancelled what the coroutine waited on


@in_a_loop
async def test_bare_yields_of_the_loop_pass_through() -> None:
    step = first_step(sleeps_then_returns(3))
    assert isinstance(step, Resumed)
    assert await _await(step) == 3


async def _await(step: Resumed) -> Any:
    return await step


class Consumer(Service):
    """A mode service, as faust's consumer is, with the hand-off installed."""


install(Consumer)


@in_a_loop
async def test_a_callback_that_needs_no_wait_wins_and_the_race_is_never_started() -> None:
    consumer = Consumer()
    suspended = asyncio.Event()
    suspend_wait = suspended.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a coroutine never awaited would warn
        results = await consumer.wait_first(immediate(4), suspend_wait)
    assert results.results == [8]
    assert not results.stopped
    assert inspect.getcoroutinestate(suspend_wait) == inspect.CORO_CLOSED


@in_a_loop
async def test_a_callback_that_waits_still_races_the_suspension_of_the_flow() -> None:
    consumer = Consumer()
    suspended = asyncio.Event()
    blocked: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    log: list[str] = []
    race = asyncio.ensure_future(consumer.wait_first(waits_on(blocked, log), suspended.wait()))
    await asyncio.sleep(0.01)
    assert not race.done()
    suspended.set()  # a rebalance: the stuck callback is left, as faust leaves it
    results = await race
    assert not results.stopped
    assert len(results.done) == 1
    await asyncio.sleep(0)
    assert log == ["before", "cancelled"]


@in_a_loop
async def test_a_callback_that_waits_and_then_finishes_wins() -> None:
    consumer = Consumer()
    results = await consumer.wait_first(sleeps_then_returns(2), asyncio.Event().wait())
    assert results.results == [2]


@in_a_loop
async def test_a_stopped_consumer_reports_stopped_as_faust_does() -> None:
    consumer = Consumer()
    consumer._stopped.set()
    results = await consumer.wait_first(immediate(1), asyncio.Event().wait())
    assert results.stopped


@in_a_loop
async def test_an_event_to_wait_for_takes_faust_own_path() -> None:
    consumer = Consumer()
    ready = ModeEvent()
    ready.set()
    results = await consumer.wait_first(ready)
    assert not results.stopped


def test_faust_still_hands_each_message_on_through_wait_first() -> None:
    """What the hand-off replaces is where faust's fetch loop passes a message on (the
    worker's app installs it: ``tests/unit/test_faust_costs.py``)."""
    source = inspect.getsource(FaustConsumer._drain_messages)
    assert "self.wait_first(\n" in source or "self.wait_first(callback" in source
    assert "callback(message), self.suspend_flow.wait()" in source
