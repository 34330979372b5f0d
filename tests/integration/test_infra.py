"""The local infrastructure answers: Kafka, Redis and the S3 endpoint, through real clients.

``up`` is idempotent, so this module calls it itself; it never calls ``down``, since other
integration tests share the servers.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import pytest

from headrace.infra import (
    ServiceStatus,
    bootstrap_servers,
    default_state_dir,
    redis_url,
    s3_endpoint_url,
    status,
    up,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def state_dir(infrastructure: object) -> Path:
    """The session's servers (started, and stopped at the end, by ``infrastructure``)."""
    return default_state_dir()


@pytest.mark.integration
def test_up_is_idempotent_and_status_reports_all_three_running(state_dir: Path) -> None:
    again = up(state_dir)
    assert [service.name for service in again] == ["kafka", "redis", "s3"]
    assert all(service.running for service in again), again
    reported = status(state_dir)
    assert [service.name for service in reported] == ["kafka", "redis", "s3"]
    assert all(isinstance(service, ServiceStatus) for service in reported)
    assert all(service.running for service in reported), reported
    by_name = {service.name: service for service in reported}
    assert by_name["kafka"].address == bootstrap_servers()
    assert by_name["s3"].address == s3_endpoint_url()


@pytest.mark.integration
def test_kafka_metadata_and_roundtrip(state_dir: Path) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    servers = bootstrap_servers(state_dir)
    topic = f"headrace-infra-test-{uuid.uuid4().hex[:12]}"
    payload = uuid.uuid4().bytes

    async def roundtrip() -> tuple[list[str], bytes | None, bytes | None]:
        admin = AIOKafkaAdminClient(bootstrap_servers=servers)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, payload, key=b"k")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=servers,
            group_id=f"{topic}-group",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), timeout=30)
            await consumer.commit()
        finally:
            await consumer.stop()
        # Listed last: right after create_topics the admin client's metadata may predate it.
        admin = AIOKafkaAdminClient(bootstrap_servers=servers)
        await admin.start()
        try:
            topics = list(await admin.list_topics())
        finally:
            await admin.close()
        return topics, message.key, message.value

    topics, key, value = asyncio.run(asyncio.wait_for(roundtrip(), timeout=90))
    assert topic in topics
    assert key == b"k"
    assert value == payload


@pytest.mark.integration
def test_redis_ping_set_get(state_dir: Path) -> None:
    import redis

    assert state_dir.is_dir()
    client = redis.Redis.from_url(redis_url())
    try:
        assert client.ping() is True
        key = f"headrace:infra-test:{uuid.uuid4().hex}"
        assert client.set(key, b"value", ex=60) is True
        assert client.get(key) == b"value"
        assert client.delete(key) == 1
    finally:
        client.close()


@pytest.mark.integration
def test_s3_bucket_put_get_with_boto3(state_dir: Path) -> None:
    import boto3

    assert state_dir.is_dir()
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint_url(),
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto accepts any credentials
        region_name="us-east-1",
    )
    bucket = f"headrace-infra-test-{uuid.uuid4().hex[:12]}"
    try:
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="dir/object.bin", Body=b"payload")
        body = client.get_object(Bucket=bucket, Key="dir/object.bin")["Body"].read()
        assert body == b"payload"
        names = [entry["Name"] for entry in client.list_buckets()["Buckets"]]
        assert bucket in names
    finally:
        client.close()


@pytest.mark.integration
def test_s3_put_get_with_s3fs(state_dir: Path) -> None:
    import s3fs

    assert state_dir.is_dir()
    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",  # noqa: S106 - moto accepts any credentials
        # No region_name: with one, s3fs sends a LocationConstraint that us-east-1 rejects.
        client_kwargs={"endpoint_url": s3_endpoint_url()},
        skip_instance_cache=True,
    )
    bucket = f"headrace-infra-s3fs-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    fs.pipe(f"{bucket}/a/b.txt", b"hello")
    assert fs.cat(f"{bucket}/a/b.txt") == b"hello"
    assert fs.ls(f"{bucket}/a") == [f"{bucket}/a/b.txt"]
