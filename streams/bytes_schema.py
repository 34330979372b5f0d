"""faust's schema for raw bytes keys and values, without its serializer registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import faust

if TYPE_CHECKING:
    from faust.types import AppT, Message


class BytesSchema(faust.Schema[bytes | None, bytes | None]):
    """Raw bytes keys and values, handed on as the consumer read them.

    faust decodes every message's key and value through its serializer registry, even
    with the ``raw`` codec, which gives back the bytes it is given: about 1.5% of a
    draining worker's CPU time (``streams.sampler``). A message's key and value are bytes
    or None, and these return them as they are, as the registry does. Sending still goes
    through the registry (``raw``: bytes as they are, text encoded).
    """

    def __init__(self) -> None:
        super().__init__(
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    # faust passes the app, and by keyword its registry's function and the serializer.
    def loads_key(self, app: AppT, message: Message, **_options: Any) -> bytes | None:  # noqa: ARG002
        key: bytes | None = message.key
        return key

    def loads_value(self, app: AppT, message: Message, **_options: Any) -> bytes | None:  # noqa: ARG002
        value: bytes | None = message.value
        return value
