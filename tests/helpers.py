"""Helpers for tests that run ``streamtask worker`` subprocesses on the recorder app.

A :class:`RecorderRun` is one test's setup: a unique app name, an execution log, the
environment the worker subprocesses import ``tests.apps.recorder`` with, and every process
it started. Use it as a context manager: on exit every process it started (and every process
in their process groups, e.g. a supervisor's children) is killed, even when the test failed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from streamtask import App
from streamtask.config import KafkaSettings, WorkerSettings
from streamtask.kafka import clients as kafka
from streamtask.kafka.topics import ensure

REPO_ROOT = Path(__file__).resolve().parent.parent
RECORDER_SOURCE = REPO_ROOT / "tests" / "apps" / "recorder.py"
RECORDER_REF = "tests.apps.recorder:app"


def load_app(source: Path, module_name: str, env: Mapping[str, str], prefix: str) -> App:
    """The ``app`` of the test app module at ``source``, imported afresh (not cached) with the
    variables of ``env`` named ``prefix*`` and ``STREAMTASK_BOOTSTRAP`` set meanwhile, as a
    worker subprocess started with ``env`` imports it."""
    spec = importlib.util.spec_from_file_location(module_name, source)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    keys = [k for k in env if k.startswith(prefix) or k == "STREAMTASK_BOOTSTRAP"]
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: env[k] for k in keys})
    try:
        spec.loader.exec_module(module)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    app = module.app
    assert isinstance(app, App)
    return app


@dataclass(frozen=True)
class Execution:
    """One line of the recorder's log: task ``n`` ran in process ``pid``."""

    n: int
    pid: int


def read_log(log: Path) -> list[Execution]:
    """Every execution recorded so far, in order (a partial last line is skipped)."""
    try:
        text = log.read_text()
    except FileNotFoundError:
        return []
    executions = []
    for line in text.splitlines(keepends=True):
        fields = line.split()
        if line.endswith("\n") and len(fields) == 2:
            executions.append(Execution(int(fields[0]), int(fields[1])))
    return executions


def duplicates(executions: list[Execution]) -> int:
    """How many executions repeated a task that had already run."""
    return len(executions) - len({e.n for e in executions})


def missing(executions: list[Execution], total: int) -> list[int]:
    """Task numbers in ``range(total)`` that never ran."""
    seen = {e.n for e in executions}
    return [n for n in range(total) if n not in seen]


def summary(executions: list[Execution], total: int) -> str:
    """A short description of a log for assertion messages."""
    lost = missing(executions, total)
    repeated = {n: c for n, c in Counter(e.n for e in executions).items() if c > 1}
    by_pid = Counter(e.pid for e in executions)
    return (f"{len(executions)} executions of {total} tasks; {len(lost)} never ran "
            f"(first: {lost[:10]}); {len(repeated)} ran more than once "
            f"(e.g. {dict(list(repeated.items())[:5])}); executions per pid: {dict(by_pid)}")


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc, all of its threads)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children.extend(int(c) for c in (task / "children").read_text().split())
    return sorted(set(children))


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               diagnose: Callable[[], str] = lambda: "", interval: float = 0.02) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` and ``diagnose()`` after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting until {what}\n"
                                 f"{diagnose()}")
        time.sleep(interval)


class WorkerProcess:
    """One ``streamtask worker`` subprocess (its own process group), output kept in a file."""

    def __init__(self, args: list[str], env: Mapping[str, str], output: Path) -> None:
        self.output_path = output
        self.args = args
        with output.open("wb") as out:
            self.process = subprocess.Popen(
                args, cwd=REPO_ROOT, env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        try:
            return self.output_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self) -> str:
        code = self.process.poll()
        state = "running" if code is None else f"exited with {code}"
        return f"--- worker pid {self.pid} ({state}), output:\n{self.output()}--- end"

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signum)

    def kill9(self) -> int:
        """SIGKILL the process (not its children) and reap it; returns its exit code."""
        self.signal(signal.SIGKILL)
        return self.process.wait(timeout=10)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker pid {self.pid} did not exit within {timeout}s\n"
                                 f"{self.describe()}") from None

    def kill_group(self) -> None:
        """SIGKILL every process of this worker's process group and reap the leader."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


class EosPipeline:
    """The exactly-once pipeline of ``tests.apps.eos_app`` (double -> add_one -> publish ->
    results) with its topics created and ``tasks`` tasks sent to ``double``; it starts the
    stages' worker subprocesses."""

    def __init__(self, name: str, bootstrap: str, tasks: int, tmp_path: Path) -> None:
        from tests.apps.eos_app import build

        self.app = build(name, bootstrap)
        ensure(self.app)
        with self.app.producer() as producer:
            producer.send_many("double", [{"n": n} for n in range(tasks)])
        self.env = {**os.environ, "EOS_APP": name, "STREAMTASK_BOOTSTRAP": bootstrap}
        self.tmp_path = tmp_path

    def start_worker(self, stage: str, output: str, *options: str) -> WorkerProcess:
        """``streamtask worker`` of ``stage``, its instance id the stage's name, committing
        every 0.3 s with 2 threads; its output goes to ``output`` in the test's directory."""
        return WorkerProcess(
            [sys.executable, "-m", "streamtask", "worker", "tests.apps.eos_app:app",
             "--stage", stage, "--commit-interval", "0.3", "--instance-id", stage,
             "--concurrency", "2", *options],
            self.env, self.tmp_path / output)


class RecorderRun:
    """One test's recorder app: its topics, its tasks, its worker subprocesses and its log."""

    def __init__(self, bootstrap: str, name: str, tmp_path: Path, *, sleep: float = 0.0,
                 partitions: int = 8, fail_every: int = 0, emit: bool = False) -> None:
        self.bootstrap = bootstrap
        self.name = name
        self.tmp_path = tmp_path
        self.log = tmp_path / "executions.log"
        self.env = {**os.environ,
                    "RECORDER_APP": name,
                    "RECORDER_LOG": str(self.log),
                    "RECORDER_SLEEP": repr(sleep),
                    "RECORDER_PARTITIONS": str(partitions),
                    "RECORDER_FAIL_EVERY": str(fail_every),
                    "RECORDER_EMIT": "1" if emit else "0",
                    "STREAMTASK_BOOTSTRAP": bootstrap,
                    "PYTHONUNBUFFERED": "1"}
        self.workers: list[WorkerProcess] = []
        self.app = self._load_app()
        self.stage = self.app.get_stage("work")
        self._offsets_reader: Any = None

    # -- setup -------------------------------------------------------------------------------

    def _load_app(self) -> App:
        app = load_app(RECORDER_SOURCE, f"recorder_{self.name}", self.env, "RECORDER_")
        assert app.name == self.name
        return app

    def ensure_topics(self) -> None:
        ensure(self.app)

    def send(self, count: int, start: int = 0) -> None:
        """Send tasks ``{"n": i}`` for i in ``start .. start+count-1`` and wait for their acks."""
        with self.app.producer() as producer:
            producer.send_many("work", ({"n": i} for i in range(start, start + count)))

    # -- workers -----------------------------------------------------------------------------

    def start_worker(self, *options: str) -> WorkerProcess:
        """Start ``streamtask worker tests.apps.recorder:app OPTIONS``."""
        index = len(self.workers)
        args = [sys.executable, "-m", "streamtask", "worker", RECORDER_REF,
                "--bootstrap", self.bootstrap, *options]
        worker = WorkerProcess(args, self.env, self.tmp_path / f"worker-{index}.out")
        self.workers.append(worker)
        return worker

    def describe_workers(self) -> str:
        return "\n".join(worker.describe() for worker in self.workers)

    def kill_all(self) -> None:
        for worker in self.workers:
            worker.kill_group()
        if self._offsets_reader is not None:
            self._offsets_reader.close()
            self._offsets_reader = None

    def __enter__(self) -> RecorderRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.kill_all()

    # -- progress ----------------------------------------------------------------------------

    def committed(self) -> int:
        """Sum of the offsets the workers' group committed on the stage's topic (0 if none).

        Read with a consumer of the same group that never subscribes, so it does not join.
        """
        if self._offsets_reader is None:
            self._offsets_reader = kafka.consumer(self.app.kafka, self.stage.group)
        partitions = [kafka.TopicPartition(self.stage.topic, p)
                      for p in range(self.stage.partitions)]
        committed = self._offsets_reader.committed(partitions, timeout=10)
        return sum(tp.offset for tp in committed if tp.offset >= 0)

    def wait_for_commit_beyond(self, offsets: int, timeout: float = 60.0, *,
                               watch: list[WorkerProcess] | None = None) -> int:
        """Wait until the group's committed offsets sum to more than ``offsets``; return it."""
        latest = offsets

        def advanced() -> bool:
            nonlocal latest
            for worker in watch or ():
                if not worker.running():
                    raise AssertionError(f"worker pid {worker.pid} exited unexpectedly\n"
                                         f"{worker.describe()}")
            latest = self.committed()
            return latest > offsets

        wait_until(advanced, timeout, f"the group commits more than {offsets} offsets",
                   self.describe_workers, interval=0.05)
        return latest

    # -- the log -----------------------------------------------------------------------------

    def executions(self) -> list[Execution]:
        return read_log(self.log)

    def wait_for_executions(self, count: int, timeout: float = 60.0, *,
                            watch: list[WorkerProcess] | None = None,
                            pid: int | None = None) -> None:
        """Wait until the log holds ``count`` executions (only those by ``pid`` if given).

        Fails at once with the worker's output when a process in ``watch`` exits meanwhile.
        """
        def done() -> bool:
            for worker in watch or ():
                if not worker.running():
                    raise AssertionError(f"worker pid {worker.pid} exited unexpectedly\n"
                                         f"{worker.describe()}")
            executions = self.executions()
            if pid is not None:
                executions = [e for e in executions if e.pid == pid]
            return len(executions) >= count

        who = f" by pid {pid}" if pid is not None else ""
        wait_until(done, timeout, f"{count} executions{who} are logged",
                   lambda: f"log has {len(self.executions())} lines\n{self.describe_workers()}")

    def wait_until_all_ran(self, total: int, timeout: float = 60.0, *,
                           watch: list[WorkerProcess] | None = None) -> None:
        """Wait until every task of ``range(total)`` ran at least once."""
        def done() -> bool:
            for worker in watch or ():
                if not worker.running():
                    raise AssertionError(f"worker pid {worker.pid} exited unexpectedly\n"
                                         f"{worker.describe()}")
            return len({e.n for e in self.executions()}) >= total

        wait_until(done, timeout, f"all {total} tasks ran",
                   lambda: f"{summary(self.executions(), total)}\n{self.describe_workers()}",
                   interval=0.1)


@contextlib.contextmanager
def recorder_run(bootstrap: str, unique: str, tmp_path: Path, *, sleep: float = 0.0,
                 partitions: int = 8, fail_every: int = 0,
                 emit: bool = False) -> Iterator[RecorderRun]:
    """A :class:`RecorderRun` named ``t<unique>`` with its topics created."""
    with RecorderRun(bootstrap, f"t{unique}", tmp_path, sleep=sleep,
                     partitions=partitions, fail_every=fail_every, emit=emit) as run:
        run.ensure_topics()
        yield run


def _watermarks(reader: Any, tp: Any, timeout: float = 30.0) -> tuple[int, int]:
    """A partition's watermarks; a topic created a moment ago may have no leader yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = reader.get_watermark_offsets(tp, timeout=10, cached=False)
            return int(low), int(high)
        except kafka.KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_for_leaders(bootstrap: str, topics: list[str], timeout: float = 30.0) -> None:
    """Wait until every partition of ``topics`` answers for its offsets: a topic created a
    moment ago may have no leader yet (``NOT_LEADER_FOR_PARTITION``)."""
    reader = kafka.consumer(KafkaSettings(bootstrap=bootstrap), "leaders")
    try:
        for topic in topics:
            for partition in reader.list_topics(topic, timeout=10).topics[topic].partitions:
                _watermarks(reader, kafka.TopicPartition(topic, partition), timeout)
    finally:
        reader.close()


def read_to_end(bootstrap: str, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every record of ``topic`` up to the end offsets it has now, in offset order per
    partition. Unlike a timed read, it cannot miss a record that is there: it reads until
    each partition reaches the high watermark taken at the start (and fails if it cannot)."""
    reader = kafka.consumer(KafkaSettings(bootstrap=bootstrap), f"read-{topic}",
                            **{"isolation.level": "read_uncommitted"})
    try:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        ends, start = {}, []
        for partition in partitions:
            low, high = _watermarks(reader, kafka.TopicPartition(topic, partition))
            if high > low:
                ends[partition] = high
                start.append(kafka.TopicPartition(topic, partition, low))
        records: list[Any] = []
        if not start:
            return records
        reader.assign(start)
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic} to its end timed out; still to read: "
                                     f"{ends} ({len(records)} records read)")
            message = reader.poll(0.2)
            if message is not None and message.error() is None:
                records.append(message)
            # Positions, not the last record's offset: a transaction's commit marker may be
            # the last offset, and a consumer never returns it.
            for position in reader.position([kafka.TopicPartition(topic, p) for p in ends]):
                if position.offset >= ends[position.partition]:
                    ends.pop(position.partition)
        return records
    finally:
        reader.close()


def wait_for_assignment(worker: WorkerProcess, topic: str, timeout: float = 30.0) -> None:
    """Wait until the worker logged an assignment holding a partition of ``topic``.

    A worker also reads its retry levels (another group), so an assignment of those alone
    does not mean it shares the input topic yet.
    """
    wanted = f"{topic}["

    def assigned() -> bool:
        if not worker.running():
            raise AssertionError(f"worker pid {worker.pid} exited\n{worker.describe()}")
        return any("partitions.assigned" in line and wanted in line
                   for line in worker.output().splitlines())

    wait_until(assigned, timeout, f"worker pid {worker.pid} is assigned partitions of {topic}",
               worker.describe, interval=0.05)


def duplicate_bound(kills: int, settings: WorkerSettings) -> tuple[int, str]:
    """Most duplicates ``kills`` hard kills may cause, with the formula for messages.

    Each kill may lose the record of (at most) the tasks held in memory
    (``max_buffered``) plus those finished since the last commit (``commit_every``).
    """
    per_kill = settings.max_buffered + settings.commit_every
    return kills * per_kill, (f"{kills} kills x (max_buffered {settings.max_buffered} + "
                              f"commit_every {settings.commit_every}) = {kills * per_kill}")


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample on ``/metrics``, by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


class Kept(logging.Handler):
    """Keeps the messages of the log records at ``level`` or above that reach it."""

    def __init__(self, level: int = logging.ERROR) -> None:
        super().__init__(level)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
