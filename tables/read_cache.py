"""A bounded read cache in front of a mapping that is slow to read.

The worker keeps its entity states in a changelogged Faust table on RocksDB: every read
is a RocksDB get and a JSON decode, and the ingest agent reads the state of every event's
entity. ``ReadCachedMapping`` keeps the values last read or written, up to
``max_entries``, least recently used first out; writes and deletes go through to the
backing mapping at once, so the cache never holds anything the mapping does not.

A cached value is the object the caller got: a caller that changes it in place and then
fails before writing it back must call :meth:`ReadCachedMapping.forget` (or
:meth:`ReadCachedMapping.clear_cache`) so the next read comes from the mapping again.
After a rebalance the owner of the mapping clears the cache, since another worker may
have written its keys meanwhile. A value of None reads as a missing key.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import TypeVar, overload

V = TypeVar("V")
D = TypeVar("D")


class ReadCachedMapping(MutableMapping[str, V]):
    def __init__(self, backing: MutableMapping[str, V], *, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.backing = backing
        self.max_entries = max_entries
        self._cache: OrderedDict[str, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def _keep(self, key: str, value: V) -> None:
        cache = self._cache
        cache[key] = value
        cache.move_to_end(key)
        if len(cache) > self.max_entries:
            cache.popitem(last=False)

    def __getitem__(self, key: str) -> V:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value  # type: ignore[return-value]  # not _MISSING, so a V

    @overload
    def get(self, key: str, /) -> V | None: ...
    @overload
    def get(self, key: str, default: V | D, /) -> V | D: ...
    def get(self, key: str, default: object = None, /) -> object:
        cache = self._cache
        if key in cache:
            self.hits += 1
            cache.move_to_end(key)
            return cache[key]
        self.misses += 1
        value = self.backing.get(key)  # one read of the mapping
        if value is None:
            return default  # a miss is not cached: the key may be written elsewhere
        self._keep(key, value)
        return value

    def __setitem__(self, key: str, value: V) -> None:
        self.backing[key] = value
        self._keep(key, value)

    def __delitem__(self, key: str) -> None:
        self._cache.pop(key, None)
        del self.backing[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.backing)

    def __len__(self) -> int:
        return len(self.backing)

    def __contains__(self, key: object) -> bool:
        return key in self._cache or key in self.backing

    def forget(self, key: str) -> None:
        """Drop one key from the cache (not from the mapping)."""
        self._cache.pop(key, None)

    def clear_cache(self) -> None:
        """Drop every cached value; the mapping keeps them all."""
        self._cache.clear()

    @property
    def cached(self) -> int:
        return len(self._cache)


_MISSING = object()
