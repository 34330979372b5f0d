"""The Faust application: one per worker process, configured from the environment."""

from __future__ import annotations

import asyncio
import ctypes
import logging
from typing import Any

import faust
import structlog
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer

from streams import commits
from streams.event_loop import loop_name
from streams.garbage import tune_collector
from streams.lean_monitor import LeanMonitor
from streams.metrics import METRICS
from streams.partitioner import CachedPartitioner
from streams.settings import Settings

# Structured logs go through the standard library, so the worker's -l level applies.
structlog.configure(
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
    cache_logger_on_first_use=True,
)

# faust builds its consumer with fetch_max_wait_ms=1500 and no setting to change it. The
# consumer keeps one fetch in flight per broker and sends none while any partition on
# that broker still holds fetched records, so a fetch parked on a quiet partition (the
# features topic, waiting for ingest) holds back events.raw for up to 1.5 s: at a steady
# 500 events/s the worker sat at a third of a core while its lag grew by seconds. A short
# wait keeps every partition's records flowing; an idle worker polls 50 times a second.
FETCH_MAX_WAIT_MS = 20
_create_worker_consumer = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer  # noqa: SLF001


def _worker_consumer(thread: Any, transport: Any) -> Any:
    consumer = _create_worker_consumer(thread, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # noqa: SLF001 - read when it starts
    return consumer


faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _worker_consumer  # type: ignore[method-assign,assignment]  # noqa: SLF001


# faust counts the messages its streams skip in a rebalance as processed, and commits over
# a single unacknowledged message: offsets are committed only past processed messages.
commits.install(faust_aiokafka.Consumer)

# faust's own table writes (``table[key] = value``) queue their changelog records in its
# ProducerBuffer; past 100 queued records the stream pauses until 100 are handed to the
# producer, one wait at a time. The feedback agent's joins and the ingest agent's outlier
# checkpoints still take that path (the ingest agent's other writes go through
# ``streams.table_batch``); with 100, a worker writing two keys an event paused every 50.
CHANGELOG_BUFFER_MESSAGES = 5_000
ProducerBuffer.max_messages = CHANGELOG_BUFFER_MESSAGES


# Before every message reaches a stream, faust asks the buffer's size, which reads
# ``app.conf.producer_threaded``; with ``create_event`` below, two reads a message through
# faust's settings registry (which records each access), about 1.8% of a draining
# worker's CPU. headrace never sets ``producer_threaded``, so the buffer is the
# producer's own queue (``tests/unit/test_faust_costs.py`` checks both).
def _buffer_size(buffer: ProducerBuffer) -> int:
    return buffer.pending.qsize()


ProducerBuffer.size = property(_buffer_size)  # type: ignore[assignment,method-assign]


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (as ``MALLOC_ARENA_MAX`` would) before threads start.

    A worker allocates from its event loop, aiokafka's and RocksDB's threads, ONNX
    Runtime's pool and the explainer's thread. glibc gives threads arenas of their own
    (up to eight per core) and rarely returns their memory: in a 240 s soak the worker's
    RSS grew by about 1 MB/s with the default and 0.2 MB/s with two arenas. False where
    the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


M_ARENA_MAX = -8  # glibc's mallopt parameter number
limit_malloc_arenas()

settings = Settings.from_env()
settings.data_dir.mkdir(parents=True, exist_ok=True)

app = faust.App(
    settings.app_id,
    broker=settings.broker,
    store=settings.store,
    datadir=str(settings.data_dir / settings.app_id),
    web_port=settings.web_port,
    web_host="127.0.0.1",
    web_bind=settings.web_bind,
    topic_partitions=settings.partitions,
    topic_replication_factor=1,
    autodiscover=False,
    origin="streams.app",
    consumer_auto_offset_reset="earliest",
    # At-least-once with idempotent keys; see DESIGN.md section 5 on exactly_once.
    processing_guarantee="at_least_once",
    broker_commit_every=2_000,
    # A worker that dies is noticed within 10 s, so its partitions move on quickly.
    broker_session_timeout=10.0,
    broker_heartbeat_interval=3.0,
    broker_commit_interval=1.0,
    producer_linger_ms=settings.producer_linger_ms,
    stream_buffer_maxsize=8_192,
    # faust's own counts per message, event and send, which nothing here reads
    # (streams.lean_monitor), and each key's partition hashed once (streams.partitioner).
    monitor=LeanMonitor(),
    producer_partitioner=CachedPartitioner(),
)


class _EventFactory:
    """``app.create_event`` with the event class read from the settings once, at the
    first message (faust reads ``app.conf.Event`` at every one)."""

    def __init__(self, owner: faust.App) -> None:
        self.owner = owner
        self.event_type: Any = None

    def __call__(self, key: Any, value: Any, headers: Any, message: Any) -> Any:
        if self.event_type is None:
            self.event_type = self.owner.conf.Event
        return self.event_type(self.owner, key, value, headers, message)


app.create_event = _EventFactory(app)  # type: ignore[method-assign]

MIB = 1024 * 1024


def table_options() -> dict[str, int]:
    """RocksDB options for each table partition (``app.Table(..., options=...)``).

    faust's defaults are sized for one big table: 64 MiB write buffers, up to three of
    them, and a 2 GiB block cache, per partition. A worker has a dozen partitions of
    small, hot tables, so its memory grew by about 6 KB an event until memtables
    flushed, gigabytes later. These keep each partition to a few MiB; the tables are
    read through faust's own key index and the entity's state is small.
    """
    return {
        "write_buffer_size": 2 * MIB,
        "max_write_buffer_number": 2,
        "block_cache_size": 4 * MIB,
    }


async def restore_root_log_level() -> None:
    """Undo the start-up spinner's DEBUG root level once the worker runs.

    With ``-l warn`` (or higher) faust's worker lowers the root logger to DEBUG so that its
    terminal spinner turns on every record; it never raises it again, and every debug call
    in aiokafka then builds a LogRecord: about a tenth of the agent's time. The first
    handler carries the level asked for on the command line.
    """
    root = logging.getLogger()
    if root.handlers and root.handlers[0].level > root.level:
        root.setLevel(root.handlers[0].level)


app.task(restore_root_log_level)


async def note_event_loop() -> None:
    """Say which event loop the worker runs on (``HEADRACE_EVENT_LOOP``), in its log and
    as ``headrace_worker_info``."""
    METRICS.event_loop = loop_name(asyncio.get_running_loop())
    structlog.get_logger(__name__).info("worker.event_loop", event_loop=METRICS.event_loop)


app.task(note_event_loop)


async def tune_garbage_collector() -> None:
    """Freeze start-up's objects and raise the first GC threshold
    (``HEADRACE_GC_THRESHOLD``, ``streams.garbage``)."""
    thresholds = tune_collector(settings.gc_threshold)
    structlog.get_logger(__name__).info("worker.gc", thresholds=list(thresholds))


app.task(tune_garbage_collector)
