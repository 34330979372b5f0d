"""CachedPartitioner picks the partitions aiokafka's DefaultPartitioner picks."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from streams.partitioner import CachedPartitioner, murmur2


@given(st.binary(max_size=200))
def test_murmur2_is_aiokafkas(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@given(
    keys=st.lists(st.binary(max_size=40), min_size=1, max_size=50),
    count=st.integers(1, 64),
)
def test_every_key_goes_where_the_default_partitioner_sends_it(
    keys: list[bytes], count: int
) -> None:
    partitions = list(range(count))
    cached, default = CachedPartitioner(capacity=8), DefaultPartitioner()
    for key in [*keys, *keys]:  # the second time from the remembered hash
        assert cached(key, partitions, partitions) == default(key, partitions, partitions)


def test_known_kafka_partitions() -> None:
    # murmur2 as Kafka's Java client computes it: the partitions a Java producer picks.
    cached = CachedPartitioner()
    partitions = list(range(1000))
    assert cached(b"", partitions, partitions) == 681
    assert cached(b"a", partitions, partitions) == 524
    assert cached(b"ab", partitions, partitions) == 434
    assert cached(b"abc", partitions, partitions) == 107
    assert cached(b"123456789", partitions, partitions) == 566
    assert cached(b"\x00 ", partitions, partitions) == 742


def test_the_memory_is_bounded() -> None:
    cached = CachedPartitioner(capacity=3)
    for number in range(10):
        cached(str(number).encode(), [0, 1, 2], [0, 1, 2])
        assert len(cached._hashes) <= 3  # the bound under test


def test_a_key_of_none_goes_to_an_available_partition() -> None:
    random.seed(5)
    cached = CachedPartitioner()
    assert {cached(None, [0, 1, 2, 3], [1, 3]) for _ in range(50)} == {1, 3}
    assert {cached(None, [0, 1], []) for _ in range(50)} == {0, 1}


def test_the_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CachedPartitioner(capacity=0)
