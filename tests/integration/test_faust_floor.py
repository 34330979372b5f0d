"""The benchmark's faust floor app forwards every message once, through the real broker."""

from __future__ import annotations

import asyncio

import pytest

from headrace import scenario
from headrace.kafka_io import collect, produce
from tests.integration.conftest import IsolatedRun

pytestmark = pytest.mark.integration


def test_the_floor_app_forwards_each_message_once_keyed_by_its_position(
    isolated: IsolatedRun,
) -> None:
    settings = isolated.settings
    asyncio.run(scenario.prepare_topics(settings))
    isolated.start_worker("floor", module="bench.faust_floor")
    sent = [(f"entity-{i % 7}".encode(), f"message-{i}".encode()) for i in range(500)]
    asyncio.run(produce(settings.bootstrap_servers, settings.topics.raw, sent))
    records = asyncio.run(
        collect(
            settings.bootstrap_servers,
            [settings.topics.predictions],
            until=lambda got: len(got) >= len(sent),
            timeout_s=90.0,
        )
    )
    assert sorted(r.value for r in records) == sorted(value for _, value in sent)
    keys = [r.key for r in records]
    assert len(set(keys)) == len(sent)  # "<partition>:<offset>": one per message
    assert all(key is not None and key.split(b":")[1].isdigit() for key in keys)
