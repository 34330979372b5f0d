"""The floor under any faust worker: the worker's own app with one agent that forwards.

``headrace bench e2e`` drains the same pre-loaded payments through this app to measure
what faust itself costs a message here: the worker's faust settings (consumer, producer,
commit cadence: everything ``streams.app`` configures), one agent reading ``events.raw``
with ``stream.events()`` as the ingest agent does, and one ``Topic.send`` per message to
the predictions topic, keyed ``"<partition>:<offset>"`` so every message is counted
once. No decoding, no tables, no model: a headrace worker pays this at least once per
Kafka hop, and an event takes two (``events.raw`` and ``features``).

Run as ``python -m bench.faust_floor worker`` with a worker's environment.
"""

from __future__ import annotations

from typing import Any

from streams import topics
from streams.app import app, settings
from streams.event_loop import use_event_loop


@app.agent(topics.raw)
async def forward(stream: Any) -> None:
    async for event in stream.events():
        message = event.message
        await topics.predictions.send(
            key=f"{message.partition}:{message.offset}".encode(), value=event.value
        )


if __name__ == "__main__":
    use_event_loop(settings.event_loop)  # the worker's, as `headrace worker` does
    app.finalize()
    app.main()
