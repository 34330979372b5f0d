"""Kafka's default partitioner with each key's murmur2 hash remembered.

aiokafka computes the murmur2 hash of a record's key in pure Python at every keyed send
(about 2 µs for a 10-byte key here), and a worker sends two keyed records an event (its
features record and its prediction; its tables' changelog records name their partition),
under a bounded set of keys: the entities'. ``CachedPartitioner`` picks the same partition as
aiokafka's ``DefaultPartitioner`` (``tests/unit/test_partitioner.py``) and hashes each key
once while it is among the last ``capacity`` distinct keys.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from aiokafka.partitioner import murmur2

DEFAULT_CAPACITY = 65_536  # distinct keys remembered (about 10 MiB at most)


class CachedPartitioner:
    """``partitioner(key, all_partitions, available) -> partition``, as aiokafka calls it."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._hashes: dict[bytes, int] = {}

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        if key is None:  # as DefaultPartitioner: any partition, an available one first
            return random.choice(available or all_partitions)
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self.capacity:
                self._hashes.clear()  # a new generation: hot keys come back at once
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]
