"""faust's monitor with only the figures faust itself reads.

faust adds its ``Monitor`` to every app's sensors and calls it for every message in and
out, every event a stream takes and hands back, every send and every table read: it
counts them by topic, stream and task and times each. headrace serves its own figures
(``streams.metrics``, at ``/metrics``), and faust's statistics pages, the only readers of
the monitor's counts, are off unless ``debug`` is set. Those calls were about 2.7% of a
draining worker's CPU time (``streams.sampler``).

``LeanMonitor`` keeps what faust reads while it runs:

* ``stream_inbound_time``, per partition, when a stream last took an event from it:
  the consumer's check for a stalled stream (``verify_event_path``) reads it;
* the partitions' end offsets and committed offsets (``track_tp_end_offset``,
  ``on_tp_commit``), updated once a fetch or a commit, as before;

and counts nothing per message, per event, per send or per table read.
"""

# Each method has the signature faust calls it with and reads little of it.
# ruff: noqa: ARG002

from __future__ import annotations

from time import monotonic
from typing import TYPE_CHECKING, Any

from faust.sensors.monitor import Monitor

if TYPE_CHECKING:
    from faust.types import TP


class LeanMonitor(Monitor):
    """faust's ``Monitor`` without its per-message, per-event and per-send counts."""

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        """Nothing: faust reads no count of received messages while it runs."""

    def on_stream_event_in(
        self, tp: TP, offset: int, stream: Any, event: Any
    ) -> dict[str, Any] | None:
        """When the partition's stream last took an event (the stall check's input)."""
        self.stream_inbound_time[tp] = monotonic()
        return None

    def on_stream_event_out(
        self,
        tp: TP,
        offset: int,
        stream: Any,
        event: Any,
        state: dict[str, Any] | None = None,
    ) -> None:
        """Nothing: no event is timed."""

    def on_message_out(self, tp: TP, offset: int, message: Any) -> None:
        """Nothing: no message is timed."""

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> Any:
        """Nothing: no send is counted or timed."""
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        """Nothing, as above."""

    def on_table_get(self, table: Any, key: Any) -> None:
        """Nothing: table reads are not counted."""

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        """Nothing: table writes are not counted."""

    def on_table_del(self, table: Any, key: Any) -> None:
        """Nothing: table deletes are not counted."""
