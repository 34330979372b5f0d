from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tables.read_cache import ReadCachedMapping


class CountingDict(dict[str, int]):
    """A backing mapping that counts its reads."""

    reads = 0

    def __getitem__(self, key: str) -> int:
        self.reads += 1
        return super().__getitem__(key)

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.reads += 1
        return super().get(key, default)


def test_a_read_value_is_served_from_the_cache() -> None:
    backing = CountingDict(a=1)
    cached = ReadCachedMapping(backing, max_entries=10)
    assert cached["a"] == 1
    assert cached.get("a") == 1
    assert backing.reads == 1
    assert (cached.hits, cached.misses) == (1, 1)


def test_writes_and_deletes_go_through_at_once() -> None:
    backing = CountingDict()
    cached = ReadCachedMapping(backing, max_entries=10)
    cached["a"] = 1
    assert backing == {"a": 1}
    assert cached["a"] == 1
    assert backing.reads == 0  # the written value was kept
    del cached["a"]
    assert backing == {}
    assert cached.get("a") is None
    with pytest.raises(KeyError):
        cached["a"]


def test_a_miss_is_not_cached() -> None:
    backing = CountingDict()
    cached = ReadCachedMapping(backing, max_entries=10)
    assert cached.get("a", 7) == 7
    backing["a"] = 1  # written by someone else
    assert cached.get("a") == 1


def test_the_least_recently_used_value_goes_first() -> None:
    backing = CountingDict(a=1, b=2, c=3)
    cached = ReadCachedMapping(backing, max_entries=2)
    cached.get("a")
    cached.get("b")
    cached.get("a")  # b is now the least recently used
    cached.get("c")
    assert cached.cached == 2
    reads = backing.reads
    cached.get("a")
    assert backing.reads == reads
    cached.get("b")
    assert backing.reads == reads + 1


class CopyingDict(dict[str, dict[str, int]]):
    """Hands out copies, as a store that decodes each read does."""

    def __getitem__(self, key: str) -> dict[str, int]:
        return dict(super().__getitem__(key))

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        if key not in self:
            return default
        return self[key]


def test_forget_and_clear_cache_drop_values_changed_in_place() -> None:
    cached = ReadCachedMapping(CopyingDict(s={"n": 1}, t={"n": 2}), max_entries=10)
    cached["s"]["n"] = 99  # changed in place, never written back
    assert cached["s"]["n"] == 99  # the cache hands out the changed object
    cached.forget("s")
    assert cached["s"]["n"] == 1
    cached["t"]["n"] = 99
    cached.clear_cache()
    assert cached.cached == 0
    assert cached["t"]["n"] == 2


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        ReadCachedMapping({}, max_entries=0)


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["get", "set", "del", "forget", "clear_cache", "contains"]),
        st.sampled_from("abcdef"),
        st.integers(0, 9),
    ),
    max_size=100,
)


@given(OPERATIONS, st.integers(1, 4))
def test_behaves_as_the_mapping_it_caches(
    operations: list[tuple[str, str, int]], size: int
) -> None:
    """Any sequence of reads, writes and deletes answers as a plain dict does, and the
    backing mapping ends equal to that dict."""
    oracle: dict[str, int] = {}
    backing: dict[str, int] = {}
    cached = ReadCachedMapping(backing, max_entries=size)
    for operation, key, value in operations:
        if operation == "get":
            assert cached.get(key) == oracle.get(key)
        elif operation == "set":
            cached[key] = oracle[key] = value
        elif operation == "del" and key in oracle:
            del cached[key]
            del oracle[key]
        elif operation == "forget":
            cached.forget(key)
        elif operation == "clear_cache":
            cached.clear_cache()
        elif operation == "contains":
            assert (key in cached) == (key in oracle)
        assert cached.cached <= size
    assert backing == oracle
    assert dict(cached.items()) == oracle
    assert len(cached) == len(oracle)
