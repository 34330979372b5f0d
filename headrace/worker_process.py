"""A Faust worker as a child process: started, stopped gently, or killed with SIGKILL.

Used by the integration tests, the benchmarks and the demo, which all need a real worker
talking to the real broker, with its own topics, consumer group and state directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def process_rss_bytes(pid: int) -> int:
    """A process's resident set size in bytes, from ``/proc/<pid>/status`` (Linux)."""
    status = Path("/proc") / str(pid) / "status"
    for line in status.read_text(encoding="ascii", errors="replace").splitlines():
        if line.startswith("VmRSS:"):
            amount, unit = line.split()[1:3]
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r} in {status}")
            return int(amount) * 1024
    raise ValueError(f"no VmRSS in {status} (a zombie process?)")


def isolated_env(base_dir: Path, *, name: str | None = None, **extra: str) -> dict[str, str]:
    """Settings for a worker with its own topic prefix, app id, state, web port and registry."""
    run_id = name or uuid.uuid4().hex[:10]
    env = {
        "HEADRACE_APP_ID": f"headrace-{run_id}",
        "HEADRACE_TOPIC_PREFIX": f"{run_id}.",
        "HEADRACE_DATA_DIR": str(base_dir / run_id),
        "HEADRACE_WEB_PORT": str(free_port()),
        "HEADRACE_MLFLOW_URI": f"sqlite:///{base_dir / run_id / 'mlflow' / 'mlflow.db'}",
        "HEADRACE_MLFLOW_ARTIFACTS": str(base_dir / run_id / "mlflow" / "artifacts"),
    }
    env.update(extra)
    return env


@dataclass
class WorkerProcess:
    env: dict[str, str]
    log_path: Path
    loglevel: str = "warn"
    with_web: bool = False
    module: str = "headrace"  # run as ``python -m <module> worker``: a faust app's CLI
    process: subprocess.Popen[bytes] | None = None
    log_offset: int = 0  # where this run's output begins in the (appended) log file
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.log_offset = self._log.tell()
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                self.module,
                "worker",
                "-l",
                self.loglevel,
                "--with-web" if self.with_web else "--without-web",
            ],
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if the worker has not stopped within the timeout."""
        if self.process is None:
            return None
        if self.alive:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self._finish()

    def kill(self) -> int | None:
        """SIGKILL the worker and its children: no shutdown code runs."""
        if self.process is None:
            return None
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        return self._finish()

    def _finish(self) -> int | None:
        if self._log is not None:
            self._log.close()
            self._log = None
        return None if self.process is None else self.process.returncode

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def rss_bytes(self) -> int:
        """The worker's resident set size (``VmRSS`` in ``/proc/<pid>/status``), in bytes."""
        if self.process is None or not self.alive:
            raise RuntimeError("the worker is not running")
        return process_rss_bytes(self.process.pid)

    def log_since_start(self) -> bytes:
        """What this run of the worker has written to its log so far."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self.log_offset)
                return handle.read()
        except OSError:
            return b""

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
