"""``python -m bench.producer_send`` on the real broker: both ways deliver every record,
and the figures come out as one JSON line."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import producer_send
from headrace import infra
from streams.settings import Settings


async def _delivered(settings: Settings, send: str, keys: list[bytes]) -> dict[int, set[bytes]]:
    """The keys each partition of a fresh topic holds after ``send`` sent ``keys``."""
    topic = f"test-producer-send-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    await admin.create_topics([NewTopic(topic, producer_send.PARTITIONS, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest"
    )
    await producer.start()
    await consumer.start()
    try:
        await getattr(producer_send, send)(producer, topic, keys)
        partitions = [TopicPartition(topic, p) for p in range(producer_send.PARTITIONS)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        held: dict[int, set[bytes]] = {p.partition: set() for p in partitions}
        while sum(len(v) for v in held.values()) < sum(ends.values()):
            for tp, records in (await consumer.getmany(timeout_ms=1_000)).items():
                held[tp.partition] |= {r.key for r in records if r.key is not None}
        return held
    finally:
        await consumer.stop()
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()


def test_both_ways_put_every_record_in_its_keys_partition(
    infrastructure: list[infra.ServiceStatus],
) -> None:
    settings = Settings.from_env()
    keys = [f"k-{i}".encode() for i in range(3_000)]
    one = asyncio.run(_delivered(settings, "one_at_a_time", keys))
    batched = asyncio.run(_delivered(settings, "batched", keys))
    assert one == batched
    assert set().union(*one.values()) == set(keys)
    assert all(one.values())  # spread over every partition


def test_the_figures_are_one_json_line(
    infrastructure: list[infra.ServiceStatus], capsys: pytest.CaptureFixture[str]
) -> None:
    assert producer_send.main(["--records", "2000", "--rounds", "1"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["records"] == 2_000
    assert figures["send_cpu_us_per_record"] > 0
    assert figures["batch_cpu_us_per_record"] > 0


@pytest.mark.parametrize("argv", [["--records", "10"], ["--rounds", "0"], ["--records", "x"]])
def test_a_bad_argument_is_one_line_and_status_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        producer_send.main(argv)
    assert exited.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("python -m bench.producer_send: error:")
    )
