"""Processes the benchmarks, the ``demo`` command and the integration tests run: a
``leadstream worker`` (or any other command, such as a Prometheus) started as a
subprocess in its own session with its output in a log file, waited for, its metrics
scraped, stopped by its PID within a timeout, its log read back.

A worker gets its settings through the environment (:func:`worker_env`): the broker,
topic prefix, web port, home and data directory of ``s``, and every other setting that
was set explicitly on ``s``; it is ready when ``GET /health/ready`` answers 200.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import SecretStr

from leadstream.contract.settings import Settings
from leadstream.scrape import Samples, parse
from leadstream.scrape import total as _total


class ProcessFailed(RuntimeError):
    """A process exited, or did not get where it was waited for in time (with its log)."""


def worker_env(s: Settings, extra: dict[str, str] | None = None,
               inherit: bool = False) -> dict[str, str]:
    """The environment of a worker (or any command) run with settings ``s``: this
    process's environment without its ``LEADSTREAM_`` variables (with them, when
    ``inherit``), the broker, topic prefix, web port, home and data directory of ``s``,
    every other setting set explicitly on ``s``, then ``extra``.

    >>> env = worker_env(Settings(kafka_bootstrap="k:9092", topic_prefix="t-", top_k=5),
    ...                  {"LEADSTREAM_TOP_K": "7"})
    >>> [env[f"LEADSTREAM_{k}"] for k in ("KAFKA_BOOTSTRAP", "TOPIC_PREFIX", "TOP_K")]
    ['k:9092', 't-', '7']
    """
    env = {k: v for k, v in os.environ.items() if inherit or not k.startswith("LEADSTREAM_")}
    env.update(LEADSTREAM_KAFKA_BOOTSTRAP=s.kafka_bootstrap or "",
               LEADSTREAM_TOPIC_PREFIX=s.topic_prefix, LEADSTREAM_WEB_PORT=str(s.web_port),
               LEADSTREAM_HOME=str(s.home))
    if s.worker_data_dir is not None:
        env["LEADSTREAM_WORKER_DATA_DIR"] = str(s.worker_data_dir)
    for name in s.model_fields_set:  # whatever else was set explicitly
        value = getattr(s, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env.setdefault(f"LEADSTREAM_{name.upper()}", str(value))
    env.update(extra or {})
    return env


class Process:
    """A subprocess in its own session, its stdout and stderr appended to ``log``, stopped
    by its PID."""

    what = "process"

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None,
                 stdout_pipe: bool = False):
        """``stdout_pipe``: the process's stdout is ``self.proc.stdout``, only its stderr
        goes to the log."""
        self.log = Path(log)
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE if stdout_pipe else fh,
                stderr=fh if stdout_pipe else subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def check_alive(self) -> None:
        """Raise :class:`ProcessFailed` (with the log's end) if the process has exited."""
        if self.proc.poll() is not None:
            raise ProcessFailed(f"{self.what} exited with {self.proc.returncode}:\n"
                                + self.log_tail())

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 90,
                 what: str = "condition", every: float = 0.5) -> None:
        """Until ``predicate()`` is true (an ``OSError`` of it counts as false), while the
        process runs, for at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if predicate():
                    return
            except OSError:
                pass
            time.sleep(every)
        raise ProcessFailed(f"timed out waiting for {what}{self.detail()}:\n"
                            + self.log_tail())

    def detail(self) -> str:
        """What a timeout says besides the log (a worker: its event counters)."""
        return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` (SIGTERM) to the process, SIGKILL it if it still runs ``timeout``
        seconds later; its exit code."""
        stop_all([self], sig, timeout)
        return self.proc.returncode


def stop_all(processes: Iterable[Process], sig: int = signal.SIGTERM,
             timeout: float = 30) -> None:
    """Signal every process first, then wait for each (SIGKILL after ``timeout`` s)."""
    processes = list(processes)
    for p in processes:
        if p.proc.poll() is None:
            p.proc.send_signal(sig)
    for p in processes:
        try:
            p.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait(10)


class Worker(Process):
    """A ``leadstream worker`` subprocess with settings ``s`` (:func:`worker_env`, then
    ``extra_env``), logging to ``log``; not yet waited for (:meth:`wait_ready`)."""

    what = "worker"

    def __init__(self, s: Settings, log: Path, extra_env: dict[str, str] | None = None,
                 loglevel: str | None = None, inherit_env: bool = False):
        self.s = s
        self.url = f"http://127.0.0.1:{s.web_port}"
        cmd = [sys.executable, "-m", "leadstream", "worker"]
        super().__init__(cmd + (["--loglevel", loglevel] if loglevel else []), log,
                         env=worker_env(s, extra_env, inherit=inherit_env))

    def get(self, path: str) -> tuple[int, bytes]:
        """(status, body) of ``GET path`` on the worker's web server."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def ready(self) -> bool:
        return self.get("/health/ready")[0] == 200

    def wait_ready(self, timeout: float = 60) -> None:
        wait_ready([self], timeout)

    def metrics(self) -> Samples:
        return parse(self.get("/metrics")[1].decode())

    def total(self, name: str, **labels) -> float:
        return _total(self.metrics(), name, **labels)

    def detail(self) -> str:
        return "; metrics: " + str({k: v for k, v in self.metrics().items()
                                    if k[0].startswith("leadstream_events")})

    def errors(self, since: int = 0) -> list[str]:
        """Error lines (and tracebacks) the worker logged after byte ``since``."""
        with open(self.log, "rb") as fh:
            fh.seek(since)
            text = fh.read().decode(errors="replace")
        return [ln for ln in text.splitlines()
                if "[ERROR]" in ln or "[CRITICAL]" in ln or ln.startswith("Traceback")]


def wait_ready(workers: list[Worker], timeout: float = 60) -> None:
    """Until every worker answers ``/health/ready`` with 200; :class:`ProcessFailed` as
    soon as any of them exits, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for w in workers:
        while True:
            for other in workers:
                other.check_alive()
            try:
                if w.ready():
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ProcessFailed(f"worker at {w.url} not ready:\n" + w.log_tail())
            time.sleep(0.3)


def start_worker(s: Settings, log: Path, extra_env: dict[str, str] | None = None,
                 timeout: float = 120, loglevel: str | None = None) -> Worker:
    """A worker, once ready (killed if it never gets there)."""
    w = Worker(s, log, extra_env, loglevel=loglevel)
    try:
        w.wait_ready(timeout)
    except BaseException:
        w.stop(signal.SIGKILL)
        raise
    return w
