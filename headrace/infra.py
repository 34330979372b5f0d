"""Local infrastructure for headrace: a Kafka broker, Redis and an S3 endpoint on loopback.

``python -m headrace.infra up|down|status [--state-dir DIR]`` starts, stops or reports

* **kafka**: Apache Kafka 4 in KRaft combined mode (one process that is both broker and
  controller). Its jars are assembled once from Maven Central with ``deploy/kafka/pom.xml``
  into ``<state>/kafka/libs``; the storage is formatted on the first start only.
* **redis**: Debian's ``redis-server``, in memory only (no RDB, no AOF).
* **s3**: moto in server mode (``python -m moto.server``), in memory.

Everything binds to 127.0.0.1. Ports and the state directory come from the environment:
``HEADRACE_STATE_DIR`` (default ``<repo>/.headrace``), ``HEADRACE_KAFKA_PORT`` (9092),
``HEADRACE_KAFKA_CONTROLLER_PORT`` (9093), ``HEADRACE_REDIS_PORT`` (6390) and
``HEADRACE_S3_PORT`` (5055).

``up`` is idempotent: a service whose pid file names a live process that answers on its port
is reused, and a port answered by a process headrace did not start is reported as running
(external) and left alone. ``down`` stops exactly the processes named in the pid files.

Only the standard library is imported; the health checks speak the Kafka, RESP and HTTP
protocols over plain sockets.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import http.client
import importlib.util
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator, Mapping, Sequence

__all__ = [
    "InfraError",
    "KafkaRestart",
    "Ports",
    "ServiceStatus",
    "bootstrap_servers",
    "default_state_dir",
    "down",
    "main",
    "redis_url",
    "restart_kafka",
    "s3_endpoint_url",
    "status",
    "up",
]

LOOPBACK: Final = "127.0.0.1"
PACKAGE_DIR: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = PACKAGE_DIR.parent
KAFKA_DEPLOY_DIR: Final = REPO_ROOT / "deploy" / "kafka"
KAFKA_POM: Final = KAFKA_DEPLOY_DIR / "pom.xml"
KAFKA_LOG4J2_CONFIG: Final = KAFKA_DEPLOY_DIR / "log4j2.properties"

MAVEN_DEPENDENCY_PLUGIN: Final = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
KAFKA_HEAP: Final = "512m"
MIN_JAVA_MAJOR: Final = 17
LIBS_MARKER: Final = ".pom.sha256"  # in libs: the hash of the pom the jars were copied for

KAFKA_START_TIMEOUT_S: Final = 90.0
KAFKA_STOP_TIMEOUT_S: Final = 20.0
REDIS_START_TIMEOUT_S: Final = 15.0
S3_START_TIMEOUT_S: Final = 45.0
STOP_TIMEOUT_S: Final = 10.0
PORT_CLOSE_TIMEOUT_S: Final = 10.0
MAVEN_TIMEOUT_S: Final = 900.0
POLL_INTERVAL_S: Final = 0.25
PROBE_TIMEOUT_S: Final = 2.0
LOG_TAIL_LINES: Final = 10

# The pid file's process must have this in its command line to count as ours: a pid file that
# outlived its process must not make ``down`` signal whatever process reused the pid.
KAFKA_MARKER: Final = "kafka.Kafka"
REDIS_MARKER: Final = "redis-server"
S3_MARKER: Final = "moto.server"

JAVA_HINT: Final = "install OpenJDK 17 (apt-get install -y openjdk-17-jre-headless)"
MAVEN_HINT: Final = "install Maven (apt-get install -y maven)"
REDIS_HINT: Final = "install it with `apt-get install -y redis-server`"
MOTO_HINT: Final = "install it with `pip install 'moto[server]'`"

# Starts a command in its own session with its output in a log file and exits at once, so the
# command is re-parented to init: the caller has no child to reap and no Popen object that
# would warn, at garbage collection, about a subprocess that is still running.
_DETACH: Final = """\
import os, subprocess, sys
with open(sys.argv[1], "ab") as log, open(os.devnull, "rb") as devnull:
    child = subprocess.Popen(
        sys.argv[2:], stdin=devnull, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, close_fds=True,
    )
sys.stdout.write(str(child.pid))
sys.stdout.flush()
os._exit(0)
"""


class InfraError(RuntimeError):
    """A service could not be started, stopped or configured; the message says why."""


@dataclass(frozen=True)
class ServiceStatus:
    """What ``up``, ``down`` and ``status`` report for one service."""

    name: str
    address: str
    running: bool
    pid: int | None
    detail: str


@dataclass(frozen=True)
class Ports:
    """The loopback ports of the services, from the environment."""

    kafka: int = 9092
    kafka_controller: int = 9093
    redis: int = 6390
    s3: int = 5055

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Ports:
        source = os.environ if env is None else env
        defaults = cls()
        ports = cls(
            kafka=_env_port(source, "HEADRACE_KAFKA_PORT", defaults.kafka),
            kafka_controller=_env_port(
                source, "HEADRACE_KAFKA_CONTROLLER_PORT", defaults.kafka_controller
            ),
            redis=_env_port(source, "HEADRACE_REDIS_PORT", defaults.redis),
            s3=_env_port(source, "HEADRACE_S3_PORT", defaults.s3),
        )
        values = [ports.kafka, ports.kafka_controller, ports.redis, ports.s3]
        if len(set(values)) != len(values):
            raise InfraError(
                "HEADRACE_KAFKA_PORT, HEADRACE_KAFKA_CONTROLLER_PORT, HEADRACE_REDIS_PORT and "
                f"HEADRACE_S3_PORT must differ, got {values}"
            )
        return ports


def _env_port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise InfraError(f"{name} must be a port number, got {raw!r}") from None
    if not 1 <= port <= 65535:
        raise InfraError(f"{name} must be between 1 and 65535, got {port}")
    return port


def default_state_dir() -> Path:
    """``HEADRACE_STATE_DIR``, or ``.headrace`` in the repository root."""
    raw = os.environ.get("HEADRACE_STATE_DIR", "").strip()
    return Path(raw).expanduser().resolve() if raw else REPO_ROOT / ".headrace"


def bootstrap_servers(state_dir: Path | None = None) -> str:
    """The Kafka bootstrap address, ``host:port``.

    With ``state_dir``, the address the broker there was last configured with (its
    ``server.properties``); without it, or before the first start, the one from the
    environment.
    """
    if state_dir is not None:
        advertised = _read_properties(_kafka_dir(state_dir) / "server.properties").get(
            "advertised.listeners", ""
        )
        match = re.search(r"PLAINTEXT://([^,\s]+)", advertised)
        if match:
            return match.group(1)
    return f"{LOOPBACK}:{Ports.from_env().kafka}"


def redis_url() -> str:
    return f"redis://{LOOPBACK}:{Ports.from_env().redis}/0"


def s3_endpoint_url() -> str:
    return f"http://{LOOPBACK}:{Ports.from_env().s3}"


# --------------------------------------------------------------------------------------------
# The public operations


def up(state_dir: Path, only: Collection[str] | None = None) -> list[ServiceStatus]:
    """Start whatever is not running yet and wait until every service answers.

    ``only`` names the services to consider (``kafka``, ``redis``, ``s3``); default all.
    """
    ports = Ports.from_env()
    state_dir = _prepare_state_dir(state_dir)
    services = _selected(_services(state_dir, ports), only)
    with _locked(state_dir):
        # name -> (pid if known yet, when the wait started, whether this call launched it)
        pending: dict[str, tuple[int | None, float, bool]] = {}
        results: dict[str, ServiceStatus] = {}
        # The quick services are launched first so that they boot while Kafka's jars are
        # assembled and its storage is formatted; then every launched service is waited for.
        ordered = sorted(services, key=lambda s: s.start_order)
        to_start: list[_Service] = []
        for service in ordered:
            pid = _owned_pid(service)
            if pid is not None:  # ours; answering already, or still starting
                pending[service.name] = (pid, time.monotonic(), False)
                continue
            service.pid_file.unlink(missing_ok=True)
            if _port_open(service.port):
                results[service.name] = _external(service)
            else:
                to_start.append(service)
        for service in to_start:  # every missing tool is reported before anything starts
            service.require()
        for service in to_start:
            service.prepare()
            started = time.monotonic()
            pending[service.name] = (service.launch(), started, True)
        for service in ordered:
            if service.name not in pending:
                continue
            known_pid, started, launched = pending[service.name]
            pid = _wait_ready(service, known_pid, started)
            elapsed = time.monotonic() - started
            detail = f"started, ready within {elapsed:.1f}s" if launched else "already running"
            results[service.name] = ServiceStatus(
                service.name, service.address, running=True, pid=pid, detail=detail
            )
    return [results[service.name] for service in services]


def down(state_dir: Path, only: Collection[str] | None = None) -> list[ServiceStatus]:
    """Stop the processes named in the pid files and wait for their ports to close.

    ``only`` names the services to stop (``kafka``, ``redis``, ``s3``); default all.
    """
    ports = Ports.from_env()
    state_dir = state_dir.expanduser().resolve()
    services = _selected(_services(state_dir, ports), only)
    if not state_dir.is_dir():
        return [_stopped_or_external(service, "stopped") for service in services]
    with _locked(state_dir):
        signalled: dict[str, int] = {}
        for service in services:
            pid = _owned_pid(service)
            if pid is None:
                service.pid_file.unlink(missing_ok=True)
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            signalled[service.name] = pid
        results: list[ServiceStatus] = []
        for service in services:
            pid = signalled.get(service.name)
            if pid is None:
                results.append(_stopped_or_external(service, "not running"))
                continue
            killed = _wait_exit(service, pid)
            service.pid_file.unlink(missing_ok=True)
            closed = _wait_port_closed(service.port, PORT_CLOSE_TIMEOUT_S)
            detail = f"stopped pid {pid}" + (" (SIGKILL after SIGTERM timed out)" if killed else "")
            if not closed:
                detail += f"; but {service.address} still answers"
            results.append(
                ServiceStatus(
                    service.name, service.address, running=not closed, pid=None, detail=detail
                )
            )
    return results


@dataclass(frozen=True)
class KafkaRestart:
    """How long the broker was gone: its stop, and its start until it answered again."""

    stopped: ServiceStatus
    started: ServiceStatus
    stop_s: float
    start_s: float

    @property
    def down_s(self) -> float:
        return self.stop_s + self.start_s


def restart_kafka(state_dir: Path, pause_s: float = 0.0) -> KafkaRestart:
    """Stop the broker (SIGTERM: a controlled shutdown), wait ``pause_s``, start it again
    with the same data, ports and configuration; Redis and S3 are left alone."""
    began = time.monotonic()
    [stopped] = down(state_dir, only={"kafka"})
    if stopped.running:
        raise InfraError(f"kafka did not stop: {stopped.detail}")
    stop_s = time.monotonic() - began
    time.sleep(pause_s)
    began = time.monotonic()
    [started] = up(state_dir, only={"kafka"})
    return KafkaRestart(stopped, started, stop_s, pause_s + time.monotonic() - began)


def _selected(services: list[_Service], only: Collection[str] | None) -> list[_Service]:
    if only is None:
        return services
    unknown = set(only) - {service.name for service in services}
    if unknown:
        raise InfraError(f"no such service: {', '.join(sorted(unknown))}")
    return [service for service in services if service.name in only]


def status(state_dir: Path) -> list[ServiceStatus]:
    """Report each service without changing anything."""
    ports = Ports.from_env()
    state_dir = state_dir.expanduser().resolve()
    results: list[ServiceStatus] = []
    for service in _services(state_dir, ports):
        pid = _owned_pid(service)
        healthy = _safe_probe(service)
        if pid is not None and healthy:
            results.append(
                ServiceStatus(
                    service.name, service.address, running=True, pid=pid, detail="running"
                )
            )
        elif pid is not None:
            detail = (
                f"process {pid} is alive but {service.address} does not answer"
                " (still starting, or started on another port)"
            )
            results.append(
                ServiceStatus(service.name, service.address, running=False, pid=pid, detail=detail)
            )
        else:
            results.append(_stopped_or_external(service, "stopped"))
    return results


# --------------------------------------------------------------------------------------------
# Services


@dataclass(frozen=True)
class _Service:
    name: str
    address: str
    port: int
    pid_file: Path
    log_files: tuple[Path, ...]
    marker: str
    start_order: int
    start_timeout_s: float
    stop_timeout_s: float
    probe: Callable[[], bool]
    require: Callable[[], None]  # cheap checks that the tools it needs are installed
    prepare: Callable[[], None]  # slow one-off work before the launch
    launch: Callable[[], int | None]


def _services(state_dir: Path, ports: Ports) -> list[_Service]:
    kafka_dir = _kafka_dir(state_dir)
    return [
        _Service(
            name="kafka",
            address=f"{LOOPBACK}:{ports.kafka}",
            port=ports.kafka,
            pid_file=state_dir / "kafka.pid",
            log_files=(kafka_dir / "kafka.out", kafka_dir / "logs" / "server.log"),
            marker=KAFKA_MARKER,
            start_order=2,
            start_timeout_s=KAFKA_START_TIMEOUT_S,
            stop_timeout_s=KAFKA_STOP_TIMEOUT_S,
            probe=lambda: _kafka_ready(ports.kafka),
            require=lambda: _require_kafka(state_dir),
            prepare=lambda: _prepare_kafka(state_dir, ports),
            launch=lambda: _launch_kafka(state_dir),
        ),
        _Service(
            name="redis",
            address=f"redis://{LOOPBACK}:{ports.redis}",
            port=ports.redis,
            pid_file=state_dir / "redis.pid",
            log_files=(state_dir / "redis.log",),
            marker=REDIS_MARKER,
            start_order=0,
            start_timeout_s=REDIS_START_TIMEOUT_S,
            stop_timeout_s=STOP_TIMEOUT_S,
            probe=lambda: _redis_ready(ports.redis),
            require=_require_redis,
            prepare=_nothing,
            launch=lambda: _launch_redis(state_dir, ports.redis),
        ),
        _Service(
            name="s3",
            address=f"http://{LOOPBACK}:{ports.s3}",
            port=ports.s3,
            pid_file=state_dir / "s3.pid",
            log_files=(state_dir / "s3.log",),
            marker=S3_MARKER,
            start_order=1,
            start_timeout_s=S3_START_TIMEOUT_S,
            stop_timeout_s=STOP_TIMEOUT_S,
            probe=lambda: _http_ok(ports.s3, "/"),
            require=_require_moto,
            prepare=_nothing,
            launch=lambda: _launch_s3(state_dir, ports.s3),
        ),
    ]


def _external(service: _Service) -> ServiceStatus:
    return ServiceStatus(
        service.name,
        service.address,
        running=True,
        pid=None,
        detail="external: the port is answered by a process headrace did not start; left alone",
    )


def _stopped_or_external(service: _Service, stopped_detail: str) -> ServiceStatus:
    if _port_open(service.port):
        return _external(service)
    return ServiceStatus(
        service.name, service.address, running=False, pid=None, detail=stopped_detail
    )


def _safe_probe(service: _Service) -> bool:
    try:
        return service.probe()
    except (OSError, ValueError, struct.error, http.client.HTTPException):
        return False


def _wait_ready(service: _Service, pid: int | None, started: float) -> int:
    """Poll until the service answers; its pid, once known. Raise if it dies or times out."""
    deadline = started + service.start_timeout_s
    while True:
        if pid is None:  # a self-daemonizing server writes its pid file once it runs
            pid = _read_pid(service.pid_file)
            if pid is not None and not _pid_alive(pid, service.marker):
                raise InfraError(_died_message(service, pid))
        elif not _pid_alive(pid, service.marker):
            service.pid_file.unlink(missing_ok=True)
            raise InfraError(_died_message(service, pid))
        if pid is not None and _safe_probe(service):
            return pid
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_INTERVAL_S)
    message = (
        f"{service.name} did not answer on {service.address} within {service.start_timeout_s:.0f}s"
    )
    if pid is not None:
        _terminate(service, pid)
        service.pid_file.unlink(missing_ok=True)
        message += f" (stopped pid {pid}; if you changed the port, run `down` first)"
    raise InfraError(message + _log_tails(service))


def _died_message(service: _Service, pid: int) -> str:
    return f"{service.name} (pid {pid}) exited during startup" + _log_tails(service)


def _log_tails(service: _Service) -> str:
    """The end of the first of the service's logs that has anything in it, stack frames left out."""
    for path in service.log_files:
        lines = _tail(path, LOG_TAIL_LINES)
        if lines:
            others = [str(other) for other in service.log_files if other != path]
            more = f"\n(more in {', '.join(others)})" if others else ""
            return f"\nlast lines of {path}:\n" + "\n".join(lines) + more
    return f"\n(no log output in {', '.join(map(str, service.log_files))})"


_STACK_FRAME: Final = re.compile(r"^\s+(at |\.\.\. \d+ more)")


def _tail(path: Path, count: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 256 * 1024))
            data = handle.read()
    except OSError:
        return []
    lines = [line.rstrip() for line in data.decode("utf-8", "replace").splitlines()]
    return [line for line in lines if line.strip() and not _STACK_FRAME.match(line)][-count:]


# --------------------------------------------------------------------------------------------
# Kafka


def _kafka_dir(state_dir: Path) -> Path:
    return state_dir / "kafka"


def _nothing() -> None:
    return None


def _require_kafka(state_dir: Path) -> None:
    _require_java()
    for path in (KAFKA_POM, KAFKA_LOG4J2_CONFIG):
        if not path.is_file():
            raise InfraError(f"{path} is missing: headrace.infra runs from a repository checkout")
    if not _kafka_libs_current(_kafka_dir(state_dir) / "libs") and shutil.which("mvn") is None:
        raise InfraError(f"mvn not found (needed once, to fetch Kafka's jars): {MAVEN_HINT}")


def _kafka_libs_current(libs: Path) -> bool:
    marker = libs / LIBS_MARKER
    pom_hash = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == pom_hash


def _prepare_kafka(state_dir: Path, ports: Ports) -> None:
    java = _require_java()
    kafka_dir = _kafka_dir(state_dir)
    (kafka_dir / "logs").mkdir(parents=True, exist_ok=True)
    libs = _assemble_kafka_libs(kafka_dir)
    config = kafka_dir / "server.properties"
    data_dir = kafka_dir / "data"
    _write_if_changed(config, _server_properties(ports, data_dir))
    if (data_dir / "meta.properties").is_file():
        return  # formatted on an earlier start; formatting again would lose the cluster id
    cluster_id = _run_java_tool(java, libs, state_dir, "random-uuid").strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id):
        raise InfraError(f"kafka-storage random-uuid printed {cluster_id!r}, not a cluster id")
    _run_java_tool(java, libs, state_dir, "format", "-t", cluster_id, "-c", str(config))
    (kafka_dir / "cluster.id").write_text(cluster_id + "\n", encoding="utf-8")


def _server_properties(ports: Ports, data_dir: Path) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{LOOPBACK}:{ports.kafka_controller}",
        "listeners": (
            f"PLAINTEXT://{LOOPBACK}:{ports.kafka},CONTROLLER://{LOOPBACK}:{ports.kafka_controller}"
        ),
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{ports.kafka}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": "168",
    }
    lines = [
        "# Written by headrace.infra on every start; edits are overwritten.",
        *(f"{key}={value}" for key, value in settings.items()),
    ]
    return "\n".join(lines) + "\n"


def _assemble_kafka_libs(kafka_dir: Path) -> Path:
    """Copy Kafka's jars from Maven Central into ``libs`` unless the same pom did already."""
    libs = kafka_dir / "libs"
    if _kafka_libs_current(libs):
        return libs
    pom_hash = hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError(f"mvn not found (needed once, to fetch Kafka's jars): {MAVEN_HINT}")
    partial = kafka_dir / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(KAFKA_POM),
        f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={partial}",
        "-DincludeScope=runtime",
    ]
    try:
        completed = subprocess.run(  # noqa: S603 - fixed command line, no shell
            command,
            capture_output=True,
            text=True,
            check=False,
            timeout=MAVEN_TIMEOUT_S,
            cwd=KAFKA_DEPLOY_DIR,
        )
    except subprocess.TimeoutExpired:
        raise InfraError(f"mvn copy-dependencies ran over {MAVEN_TIMEOUT_S:.0f}s") from None
    jars = list(partial.glob("*.jar")) if partial.is_dir() else []
    if completed.returncode != 0 or not jars:
        output = _last_lines(completed.stdout + completed.stderr)
        raise InfraError(
            f"mvn copy-dependencies failed (exit {completed.returncode}) for {KAFKA_POM}:\n"
            + output
        )
    (partial / LIBS_MARKER).write_text(pom_hash + "\n", encoding="utf-8")
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    return libs


def _java_options(state_dir: Path) -> list[str]:
    return [
        f"-Dlog4j2.configurationFile={KAFKA_LOG4J2_CONFIG}",
        f"-Dkafka.logs.dir={_kafka_dir(state_dir) / 'logs'}",
        "-Djava.awt.headless=true",
    ]


def _run_java_tool(java: str, libs: Path, state_dir: Path, *args: str) -> str:
    command = [
        java,
        "-Xmx256m",
        *_java_options(state_dir),
        "-cp",
        f"{libs}/*",
        "kafka.tools.StorageTool",
        *args,
    ]
    try:
        completed = subprocess.run(  # noqa: S603 - fixed command line, no shell
            command, capture_output=True, text=True, check=False, timeout=120
        )
    except subprocess.TimeoutExpired:
        raise InfraError(f"kafka-storage {args[0]} ran over 120s") from None
    if completed.returncode != 0:
        raise InfraError(
            f"kafka-storage {args[0]} failed (exit {completed.returncode}):\n"
            + _last_lines(completed.stdout + completed.stderr)
        )
    return completed.stdout


def _launch_kafka(state_dir: Path) -> int:
    kafka_dir = _kafka_dir(state_dir)
    command = [
        shutil.which("java") or "java",
        f"-Xms{KAFKA_HEAP}",
        f"-Xmx{KAFKA_HEAP}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        *_java_options(state_dir),
        "-cp",
        f"{kafka_dir / 'libs'}/*",
        KAFKA_MARKER,
        str(kafka_dir / "server.properties"),
    ]
    return _detach(command, kafka_dir / "kafka.out", state_dir / "kafka.pid", cwd=kafka_dir)


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise InfraError(f"java not found: {JAVA_HINT}")
    try:
        completed = subprocess.run(  # noqa: S603 - fixed command line, no shell
            [java, "-version"], capture_output=True, text=True, check=False, timeout=60
        )
    except subprocess.TimeoutExpired:
        raise InfraError(f"`{java} -version` did not finish within 60s") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', completed.stderr + completed.stdout)
    if match is None:
        raise InfraError(f"could not tell the version of {java}: {JAVA_HINT}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392" style
        major = int(match.group(2))
    if major < MIN_JAVA_MAJOR:
        raise InfraError(f"{java} is Java {major}; Kafka 4 needs {MIN_JAVA_MAJOR}+: {JAVA_HINT}")
    return java


# The Kafka protocol, just enough of it: ApiVersions v0 to learn which Metadata versions the
# broker speaks, then a non-flexible Metadata request (v1 to v8). The broker is ready once the
# response lists at least one broker, i.e. it has registered with the controller.
_API_METADATA: Final = 3
_API_API_VERSIONS: Final = 18
_CLIENT_ID: Final = b"headrace-infra"


def _kafka_ready(port: int) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=PROBE_TIMEOUT_S) as sock:
        sock.settimeout(PROBE_TIMEOUT_S)
        body = _kafka_call(sock, _API_API_VERSIONS, 0, 1, b"")
        error_code, count = struct.unpack_from(">hi", body, 0)
        if error_code != 0:
            return False
        versions = {
            key: (low, high)
            for key, low, high in (
                struct.unpack_from(">hhh", body, 6 + 6 * index) for index in range(count)
            )
        }
        low, high = versions.get(_API_METADATA, (0, -1))
        version = min(high, 8)
        if version < max(low, 1):
            return False
        request = struct.pack(">i", -1)  # null topic list: all topics
        if version >= 4:
            request += b"\x00"  # allow_auto_topic_creation
        if version >= 8:
            request += b"\x00\x00"  # include cluster/topic authorized operations
        body = _kafka_call(sock, _API_METADATA, version, 2, request)
        offset = 4 if version >= 3 else 0  # throttle_time_ms
        (brokers,) = struct.unpack_from(">i", body, offset)
        return bool(brokers > 0)


def _kafka_call(
    sock: socket.socket, api_key: int, version: int, correlation_id: int, body: bytes
) -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation_id, len(_CLIENT_ID)) + _CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
    response = _recv_exactly(sock, size)
    (answered,) = struct.unpack_from(">i", response, 0)
    if answered != correlation_id:
        raise ValueError(f"kafka answered correlation id {answered}, expected {correlation_id}")
    return response[4:]


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    if not 0 <= size <= 16 * 1024 * 1024:
        raise ValueError(f"implausible kafka response size {size}")
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            raise ConnectionError("kafka closed the connection mid-response")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------------------------
# Redis


def _require_redis() -> None:
    if shutil.which("redis-server") is None:
        raise InfraError(f"redis-server not found: {REDIS_HINT}")


def _launch_redis(state_dir: Path, port: int) -> None:
    """Start redis-server, which daemonizes itself and writes its own pid file."""
    command = [
        shutil.which("redis-server") or "redis-server",
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
        "--daemonize",
        "yes",
        "--save",
        "",
        "--appendonly",
        "no",
        "--pidfile",
        str(state_dir / "redis.pid"),
        "--logfile",
        str(state_dir / "redis.log"),
        "--dir",
        str(state_dir),
    ]
    try:
        completed = subprocess.run(  # noqa: S603 - fixed command line, no shell
            command,
            capture_output=True,
            text=True,
            check=False,
            timeout=REDIS_START_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        message = f"redis-server did not daemonize within {REDIS_START_TIMEOUT_S:.0f}s"
        raise InfraError(message) from None
    if completed.returncode != 0:
        output = _last_lines(completed.stdout + completed.stderr)
        logged = "\n".join(_tail(state_dir / "redis.log", LOG_TAIL_LINES))
        raise InfraError(f"redis-server failed (exit {completed.returncode}):\n{output}{logged}")


def _redis_ready(port: int) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=PROBE_TIMEOUT_S) as sock:
        sock.settimeout(PROBE_TIMEOUT_S)
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(256)
            if not chunk:
                break
            reply += chunk
        return reply.startswith(b"+PONG")


# --------------------------------------------------------------------------------------------
# S3, served by moto


def _require_moto() -> None:
    for module in ("moto", "flask", "werkzeug"):
        if importlib.util.find_spec(module) is None:
            raise InfraError(f"{module} not found in {sys.executable}: {MOTO_HINT}")


def _launch_s3(state_dir: Path, port: int) -> int:
    command = [sys.executable, "-m", S3_MARKER, "-H", LOOPBACK, "-p", str(port)]
    return _detach(command, state_dir / "s3.log", state_dir / "s3.pid", cwd=state_dir)


def _http_ok(port: int, path: str) -> bool:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=PROBE_TIMEOUT_S)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status == http.HTTPStatus.OK
    finally:
        connection.close()


# --------------------------------------------------------------------------------------------
# Processes, pid files, ports


def _prepare_state_dir(state_dir: Path) -> Path:
    state_dir = state_dir.expanduser().resolve()
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InfraError(f"cannot create state directory {state_dir}: {error}") from None
    return state_dir


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialize ``up`` and ``down`` across processes sharing a state directory."""
    with (state_dir / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _detach(command: Sequence[str], log: Path, pid_file: Path, cwd: Path) -> int:
    try:
        completed = subprocess.run(  # noqa: S603 - fixed command line, no shell
            [sys.executable, "-c", _DETACH, str(log), *command],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise InfraError(f"could not start {command[0]} within 30s") from None
    if completed.returncode != 0 or not completed.stdout.strip().isdigit():
        raise InfraError(
            f"could not start {command[0]}:\n" + _last_lines(completed.stdout + completed.stderr)
        )
    pid = int(completed.stdout.strip())
    _write_if_changed(pid_file, f"{pid}\n")
    return pid


def _read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _owned_pid(service: _Service) -> int | None:
    """The pid in the service's pid file, if that process is alive and is the service."""
    pid = _read_pid(service.pid_file)
    return pid if pid is not None and _pid_alive(pid, service.marker) else None


def _pid_alive(pid: int, marker: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process reused the pid; ours would be signalable
    proc = Path("/proc") / str(pid)
    if not proc.is_dir():
        return True  # no procfs to double-check with: trust the pid file
    try:
        stat = (proc / "stat").read_text(encoding="utf-8", errors="replace")
        cmdline = (proc / "cmdline").read_bytes()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it happens to be our child
        return False
    return marker.encode() in cmdline


def _terminate(service: _Service, pid: int) -> bool:
    """SIGTERM, then SIGKILL after the service's stop timeout; whether SIGKILL was needed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return _wait_exit(service, pid)


def _wait_exit(service: _Service, pid: int) -> bool:
    if _poll(lambda: not _pid_alive(pid, service.marker), service.stop_timeout_s):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _poll(lambda: not _pid_alive(pid, service.marker), STOP_TIMEOUT_S):
        raise InfraError(f"{service.name} (pid {pid}) survived SIGKILL")
    return True


def _poll(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL_S)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0):
            return True
    except OSError:
        return False


def _wait_port_closed(port: int, timeout_s: float) -> bool:
    return _poll(lambda: not _port_open(port), timeout_s)


def _write_if_changed(path: Path, text: str) -> None:
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _read_properties(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


def _last_lines(text: str, count: int = LOG_TAIL_LINES) -> str:
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-count:]) or "(no output)"


# --------------------------------------------------------------------------------------------
# Command line


def _format(service: ServiceStatus) -> str:
    state = "running" if service.running else "stopped"
    pid = str(service.pid) if service.pid is not None else "-"
    return f"{service.name:<6} {state:<8} {service.address:<26} pid={pid:<8} {service.detail}"


def main(argv: list[str] | None = None) -> int:
    """``python -m headrace.infra up|down|status [--state-dir DIR]``.

    Prints one line per service. ``up`` and ``down`` exit 0 on success; ``status`` exits 0
    when every service is running and 1 otherwise. Errors are one line on stderr, exit 2 for
    usage, 1 for anything else.
    """
    parser = argparse.ArgumentParser(
        prog="python -m headrace.infra",
        description="Start, stop or report the local Kafka broker, Redis and S3 endpoint.",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where pid files, logs, Kafka's jars and data live "
        "(default: $HEADRACE_STATE_DIR or <repo>/.headrace)",
    )
    args = parser.parse_args(argv)
    operations: dict[str, Callable[[Path], list[ServiceStatus]]] = {
        "up": up,
        "down": down,
        "status": status,
    }
    try:
        state_dir: Path = args.state_dir if args.state_dir is not None else default_state_dir()
        results = operations[args.command](state_dir)
    except (InfraError, OSError) as error:
        flat = " | ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"headrace.infra {args.command}: {flat}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"headrace.infra {args.command}: interrupted", file=sys.stderr)
        return 130
    for result in results:
        print(_format(result))
    if args.command == "status" and not all(result.running for result in results):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
