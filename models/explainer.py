"""Explanations in a process of their own, beside the worker: ``python -m models.explainer``.

An explanation is a few milliseconds of numpy and model calls (``models.explain``). In a
thread of the worker it shared the worker's GIL: every hand-over between the explaining
thread and the event loop's cost both of them, and on two cores the event loop's thread
spent about 50 µs more an event with 1% of the decisions explained (BENCHMARKS.md). A
child process computes the same explanation with the same code on its own interpreter.

The protocol is one JSON object a line. The worker writes a request::

    {"directory": ..., "version": ..., "backend": ..., "record": {...},
     "prediction": {...}, "computed_at": ms}

and the child answers ``{"explanation": {...}, "compute_ms": ...}`` or, for a request it
cannot explain, ``{"error": "..."}``, and reads the next. A request with a null record
only loads the version (``{"loaded": version}``). It loads each model version once
(from the artifact directory the worker serves it from, with the worker's backend where
this machine has it) and keeps the ``MODELS_KEPT`` it used last. It exits when its input
ends, so a worker that stops or is killed leaves no child behind; it ignores SIGINT,
which a terminal sends to the whole process group, and leaves stopping to the worker.

:class:`ExplainerProcess` is the worker's side: it starts the child on first use, sends
one request at a time, and starts a new child after one has died (the request in flight
fails and is counted by the caller). It starts the child ``NICENESS`` steps nicer than
itself, imports included: explanations are background work, and where the cores are
busy the scheduler gives them to the worker (and the broker) first.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import orjson

from models.explain import explain_prediction
from models.scoring import LoadedModel, load_served_model

READ_LIMIT = 4 * 1024 * 1024  # the longest reply line the worker reads
MODELS_KEPT = 4  # versions kept loaded (champion, canary, shadow, one retired), by last use
NICENESS = 10  # added to the child's scheduling niceness: serving goes first for the CPU
# The worker's command for the child: lower its priority first, then import (PyTorch and
# ONNX Runtime: about 1.7 s of CPU) and serve, as ``python -m models.explainer`` does.
_NICE_MAIN = (
    f"import os, sys; os.nice({NICENESS}); from models.explainer import main; sys.exit(main())"
)


class ExplainerError(RuntimeError):
    """The child could not explain a request, or died while explaining it."""


def load_for_explaining(directory: Path, version: str, backend: str | None) -> LoadedModel:
    """The model a worker serves from ``directory``, on the worker's backend where this
    machine has it (else the first available)."""
    try:
        return load_served_model(directory, version, backend)
    except ValueError:  # the worker's backend is not available here
        return load_served_model(directory, version)


def answer(request: Mapping[str, Any], models: dict[tuple[str, str], LoadedModel]) -> bytes:
    """The reply line to one request line's object; ``models`` caches loaded versions."""
    try:
        key = (str(request["directory"]), str(request["version"]))
        model = models.pop(key, None) or load_for_explaining(
            Path(key[0]), key[1], request.get("backend")
        )
        models[key] = model  # the most recently used last
        while len(models) > MODELS_KEPT:
            del models[next(iter(models))]
        if request.get("record") is None:  # load only: the version's first request waits less
            return orjson.dumps({"loaded": key[1]}) + b"\n"
        began = time.perf_counter()
        explanation = explain_prediction(
            model,
            request["record"],
            request["prediction"],
            computed_at=int(request["computed_at"]),
        )
        cost_ms = (time.perf_counter() - began) * 1000.0
    except Exception as error:  # noqa: BLE001 - the worker counts it; the next may do
        return orjson.dumps({"error": repr(error)}) + b"\n"
    return orjson.dumps({"explanation": explanation, "compute_ms": cost_ms}) + b"\n"


def serve(requests: IO[bytes], replies: IO[bytes]) -> int:
    """Answer request lines until the input ends (module doc)."""
    models: dict[tuple[str, str], LoadedModel] = {}
    for line in requests:
        try:
            request = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            reply = orjson.dumps({"error": f"not a JSON request: {error}"}) + b"\n"
        else:
            reply = answer(request, models)
        replies.write(reply)
        replies.flush()
    return 0


class ExplainerProcess:
    """The worker's side of the child (module doc)."""

    def __init__(self, *, python: str = sys.executable) -> None:
        self._python = python
        self._child: asyncio.subprocess.Process | None = None
        self.started = 0  # children started so far

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    async def explain(  # noqa: PLR0913 - one request's parts
        self,
        *,
        directory: Path,
        version: str,
        backend: str | None,
        record: Mapping[str, Any],
        prediction: Mapping[str, Any],
        computed_at: int,
    ) -> tuple[dict[str, Any], float]:
        """The explanation record and its compute milliseconds; :class:`ExplainerError`
        if the child could not explain it or died meanwhile."""
        reply = await self._ask(
            {
                "directory": str(directory),
                "version": version,
                "backend": backend,
                "record": record,
                "prediction": prediction,
                "computed_at": computed_at,
            }
        )
        return reply["explanation"], float(reply["compute_ms"])

    async def _ask(self, request: Mapping[str, Any]) -> dict[str, Any]:
        child = await self._running()
        if child.stdin is None or child.stdout is None:  # pragma: no cover - made with pipes
            raise ExplainerError("the explainer process has no pipes")
        try:
            child.stdin.write(orjson.dumps(request) + b"\n")
            await child.stdin.drain()
            line = await child.stdout.readline()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as error:
            await self._discard()
            raise ExplainerError(f"the explainer process failed: {error!r}") from error
        if not line:
            code = await self._discard()
            raise ExplainerError(f"the explainer process exited (code {code})")
        reply: dict[str, Any] = orjson.loads(line)
        if "error" in reply:
            raise ExplainerError(str(reply["error"]))
        return reply

    async def start(self) -> None:
        """Start the child now, if none is running (else it starts on first use)."""
        await self._running()

    async def load(self, *, directory: Path, version: str, backend: str | None) -> None:
        """Have the child load a version now, not on its first explanation."""
        await self._ask(
            {"directory": str(directory), "version": version, "backend": backend, "record": None}
        )

    async def close(self) -> None:
        """End the child's input and wait for it (killed after 5 s)."""
        await self._discard()

    async def _running(self) -> asyncio.subprocess.Process:
        if self._child is not None and self._child.returncode is None:
            return self._child
        if self._child is not None:
            await self._discard()
        self._child = await asyncio.create_subprocess_exec(
            self._python,
            "-c",
            _NICE_MAIN,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=READ_LIMIT,
        )
        self.started += 1
        return self._child

    async def _discard(self) -> int | None:
        child, self._child = self._child, None
        if child is None:
            return None
        if child.stdin is not None and not child.stdin.is_closing():
            child.stdin.close()
        try:
            return await asyncio.wait_for(child.wait(), timeout=5.0)
        except TimeoutError:
            child.kill()
            return await child.wait()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker stops it (module doc)
    # Replies go to the pipe the worker reads; anything a library prints goes to stderr.
    with os.fdopen(os.dup(sys.stdout.fileno()), "wb") as replies:
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        return serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    sys.exit(main())
