"""The topic registry: every topic the worker reads or writes, with raw-bytes codecs.

Values cross Kafka as bytes; the codecs module turns them into the core's types, so the
agents stay in control of serialisation cost and of what happens to undecodable input.
"""

from __future__ import annotations

from typing import Any

from streams.app import app, settings
from streams.bytes_schema import BytesSchema


def _bytes_topic(name: str, **options: Any) -> Any:
    return app.topic(
        name,
        schema=BytesSchema(),
        partitions=settings.partitions,
        internal=True,  # the worker creates its topics when they are missing
        **options,
    )


names = settings.topics
raw = _bytes_topic(names.raw)
valid = _bytes_topic(names.valid)
rejected = _bytes_topic(names.rejected)
features = _bytes_topic(names.features)
predictions = _bytes_topic(names.predictions)
labels = _bytes_topic(names.labels)
outcomes = _bytes_topic(names.outcomes)
review_queue = _bytes_topic(names.review_queue)
drift_reports = _bytes_topic(names.drift_reports)
alerts = _bytes_topic(names.alerts)
explanations = _bytes_topic(names.explanations)  # keyed by request id, a sampled share
# Predictions and labels are both keyed by request id and partitioned alike, so one
# agent reading both sees every request's two sides on the same worker: the join.
feedback = app.topic(
    names.predictions,
    names.labels,
    schema=BytesSchema(),
    partitions=settings.partitions,
    internal=True,  # the worker creates labels (and predictions) when they are missing
)


async def declare_output_topics() -> None:
    """Create the topics the worker only writes to, before its first write to them."""
    for topic in (outcomes, review_queue, drift_reports, alerts, labels, explanations):
        await topic.maybe_declare()


app.task(declare_output_topics)
