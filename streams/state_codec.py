"""The codec of the entity-state table: MessagePack, and JSON still read.

An entity's state (``tables.entity_state``) is encoded about once an event: written to
RocksDB and to the table's changelog at each batch's end. As JSON (faust's default codec,
orjson underneath) a state of about 800 bytes took 10-11 µs on this project's machines,
most of it in printing some sixty floats as shortest decimal text; as MessagePack
(ormsgpack) the floats are copied as 8-byte doubles and a state takes about 2 µs, in
about 670 bytes. A float comes back bit for bit either way.

Decoding takes both, so a worker upgraded over a changelog or RocksDB store written as JSON
by a worker before this codec reads it: a value of two bytes or more that starts with
``{`` is JSON. In MessagePack that byte is the integer 123, a value one byte long; any
longer value, a dict above all, starts with another byte.

Keys must be strings, as in JSON: ``ormsgpack`` refuses any other key rather than change
its type on the way back.
"""

from __future__ import annotations

from typing import Any

import orjson
import ormsgpack
from faust.serializers import codecs

NAME = "headrace-state"
_JSON_OBJECT = b"{"[0]


class StateCodec(codecs.Codec):
    """MessagePack out; MessagePack or JSON in."""

    def _dumps(self, obj: Any) -> bytes:
        return ormsgpack.packb(obj)

    def _loads(self, s: bytes) -> Any:
        if len(s) > 1 and s[0] == _JSON_OBJECT:
            return orjson.loads(s)
        return ormsgpack.unpackb(s)


codecs.register(NAME, StateCodec())


def state_table(app: Any, name: str, **kwargs: Any) -> Any:
    """``app.Table(name, **kwargs)``, its values written and read with this codec.

    faust takes a table's value codec from its ``value_type`` (a model's own) or else uses
    JSON: a plain dict value has no way to name another. The table's store and changelog
    topic take the codec from the table when they are made (the topic when the table is
    registered), and ``app.Table`` makes and registers it in one call: so this makes it,
    sets the codec, then registers it.
    """
    table = app.conf.Table(app, name=name, beacon=app.tables.beacon, **kwargs)
    table.value_serializer = NAME
    return app.tables.add(table)
