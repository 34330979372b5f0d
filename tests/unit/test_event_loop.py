"""The worker's event loop: what each setting makes, and a clear error where it can't."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest
import uvloop

from streams.event_loop import EventLoopError, loop_factory, loop_name, use_event_loop


@pytest.fixture
def policy_restored() -> Iterator[None]:
    before = asyncio.get_event_loop_policy()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(before)


async def _running() -> str:
    return loop_name(asyncio.get_running_loop())


@pytest.mark.parametrize(
    ("name", "kind"), [("uvloop", uvloop.Loop), ("asyncio", asyncio.SelectorEventLoop)]
)
def test_each_factory_makes_its_kind_of_loop_and_it_runs(name: str, kind: type) -> None:
    with asyncio.Runner(loop_factory=loop_factory(name)) as runner:
        assert isinstance(runner.get_loop(), kind)
        assert runner.run(_running()) == name


@pytest.mark.usefixtures("policy_restored")
def test_use_event_loop_sets_the_kind_of_every_later_loop() -> None:
    use_event_loop("uvloop")
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(_running()) == "uvloop"
    finally:
        loop.close()
    use_event_loop("asyncio")
    loop = asyncio.new_event_loop()
    try:
        assert not isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(_running()) == "asyncio"
    finally:
        loop.close()


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(EventLoopError, match="unknown event loop 'trio'"):
        loop_factory("trio")


@pytest.mark.usefixtures("policy_restored")
def test_uvloop_missing_is_said_plainly_and_leaves_the_loop_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = asyncio.get_event_loop_policy()
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    with pytest.raises(
        EventLoopError, match=r"uvloop is not installed.*HEADRACE_EVENT_LOOP=asyncio"
    ):
        use_event_loop("uvloop")
    assert asyncio.get_event_loop_policy() is before
