"""A sampling profiler of the process's main thread, by CPU time, from inside it.

Every ``interval_s`` of CPU time the process spends (every thread), the kernel sends
``SIGPROF``; the interpreter runs the handler in the main thread between two bytecodes,
with the frame that was running, and the handler counts that frame's stack. A call into C
(a RocksDB put, a socket write) is charged to the Python line that made it.

Why not py-spy here: in blocking mode it stops the process to read a consistent stack, and
on these virtual machines the stop lands almost always at a system call. A loop spending
2% of its time in ``os.getpid()`` was profiled as 99.6% ``getpid`` (``--nonblocking``: 6.5%,
this sampler: within a point of the truth; ``tests/unit/test_sampler.py``). Profiles
of the worker taken that way put a fifth of its samples at ``asyncio.get_event_loop``
(a ``getpid`` inside) and socket writes.

Stacks are folded as py-spy's raw format writes them: root first, frames separated by
``;``, each ``function (file:line)``, then a space and the count; ``flamegraph.pl`` and
speedscope read it.
"""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from types import CodeType, FrameType

MAX_DEPTH = 128  # frames kept from the innermost; deeper stacks are cut at the root side
MAX_SECONDS = 300.0  # the longest profile one request may ask for


def profile_seconds(text: str) -> float:
    """A profile's length from a request's text: seconds, more than 0, at most 300."""
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"seconds must be a number, got {text!r}") from None
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be more than 0 and at most {MAX_SECONDS:g}, got {text}")
    return seconds


def short_path(path: str) -> str:
    """A code file's path relative to the ``sys.path`` entry holding it."""
    best = path
    for entry in sys.path:
        if entry and path.startswith(entry.rstrip("/") + "/"):
            candidate = path[len(entry.rstrip("/")) + 1 :]
            if len(candidate) < len(best):
                best = candidate
    return best


class StackSampler:
    """Counts the main thread's stacks on ``SIGPROF``; one sampler runs at a time."""

    def __init__(self, interval_s: float = 0.002) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = interval_s
        self.counts: Counter[str] = Counter()
        self.samples = 0
        self._names: dict[tuple[CodeType, int], str] = {}
        self._files: dict[str, str] = {}
        self._deadline: float | None = None
        self._previous: object = None
        self.running = False

    def start(self, seconds: float | None = None) -> None:
        """Sample from now, until :meth:`stop` or, with ``seconds``, that much wall time.
        Only the main thread may start it (signal handlers are set there)."""
        if self.running:
            raise RuntimeError("the sampler is already running")
        if seconds is not None and not seconds > 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        self._deadline = None if seconds is None else time.monotonic() + seconds
        self._previous = signal.signal(signal.SIGPROF, self._on_signal)
        signal.siginterrupt(signal.SIGPROF, False)  # noqa: FBT003 - system calls resume (SA_RESTART)
        signal.setitimer(signal.ITIMER_PROF, self.interval_s, self.interval_s)
        self.running = True

    def stop(self) -> None:
        if not self.running:
            return
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, self._previous or signal.SIG_DFL)  # type: ignore[arg-type]
        self.running = False

    def _on_signal(self, _signum: int, frame: FrameType | None) -> None:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self.stop()
            return
        if frame is not None:
            self.counts[self._stack(frame)] += 1
            self.samples += 1

    def _name(self, frame: FrameType) -> str:
        code, line = frame.f_code, frame.f_lineno or 0
        name = self._names.get((code, line))
        if name is None:
            path = self._files.get(code.co_filename)
            if path is None:
                path = self._files[code.co_filename] = short_path(code.co_filename)
            qualname = getattr(code, "co_qualname", code.co_name)
            name = self._names[code, line] = f"{qualname} ({path}:{line})"
        return name

    def _stack(self, frame: FrameType) -> str:
        names: list[str] = []
        current: FrameType | None = frame
        while current is not None and len(names) < MAX_DEPTH:
            names.append(self._name(current))
            current = current.f_back
        names.reverse()
        return ";".join(names)

    def folded(self) -> str:
        """The stacks counted so far, one a line, most frequent first."""
        return "".join(f"{stack} {count}\n" for stack, count in self.counts.most_common())


def self_shares(folded: str, top: int = 20) -> list[tuple[str, float]]:
    """The innermost frames' shares of the samples in folded stacks, largest first."""
    return _shares(folded, top, inclusive=False)


def inclusive_shares(folded: str, top: int = 20) -> list[tuple[str, float]]:
    """Each frame's share of the samples whose stack holds it, largest first."""
    return _shares(folded, top, inclusive=True)


def _shares(folded: str, top: int, *, inclusive: bool) -> list[tuple[str, float]]:
    counts: Counter[str] = Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for name in set(frames) if inclusive else frames[-1:]:
            counts[name] += count
    if not total:
        return []
    return [(name, count / total) for name, count in counts.most_common(top)]
