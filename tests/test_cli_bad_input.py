"""Every bad input the CLI audit found ends a command with one line and a non-zero exit.

A table of (command line, environment) -> (exit code, words the line must hold). Each case
runs the console script's entry point (``streamtask.cli.main``) with its arguments in a
process of its own, forked from this one after streamtask was imported: the command line
is the user's, only Python's start-up (seconds each on a loaded box) is shared. The
working directory holds broken user modules and files. Exit 2 is a wrong command line
(the line ends pointing at ``--help``), 1 any other error. A case passes only if the
process printed exactly one non-blank line on stderr, no traceback, and did not hang.
``tests/test_cli_errors.py`` runs a few of the same through ``python -m streamtask``.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import sys
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streamtask.cli import main

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = str(ROOT / "tests" / "workflows" / "shipping.json")


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


DEAD = _closed_port()
"""A port nothing listens on (bound and released): an unreachable broker."""
QUICK = {"STREAMTASK_CONNECT_TIMEOUT": "1"}
"""Unreachable-broker cases give up after 1 s instead of 15."""


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    code: int
    needle: str
    env: dict[str, str] = field(default_factory=dict)


def case(id: str, *args: str, code: int = 1, needle: str,
         env: dict[str, str] | None = None) -> Case:
    return Case(id, args, code, needle, env or {})


R = "probe_app:app"
CASES = [
    # the command line itself
    case("unknown-command", "nosuch", code=2, needle="No such command 'nosuch'"),
    case("unknown-top-option", "--nosuch", code=2, needle="streamtask --help"),
    case("missing-app-ref", "worker", code=2, needle="Missing argument 'APP_REF'"),
    case("unknown-option", "worker", R, "--no-such-option", code=2,
         needle="streamtask worker --help"),
    case("zero-concurrency", "worker", R, "--concurrency", "0", code=2, needle="--concurrency"),
    case("negative-concurrency", "worker", R, "--concurrency", "-1", code=2,
         needle="--concurrency"),
    case("huge-concurrency", "worker", R, "--concurrency", "99999999999999999999999", code=2,
         needle="--concurrency"),
    case("text-concurrency", "worker", R, "--concurrency", "abc", code=2,
         needle="--concurrency"),
    case("zero-processes", "worker", R, "--processes", "0", code=2, needle="--processes"),
    case("negative-drain", "worker", R, "--drain-timeout", "-5", code=2,
         needle="--drain-timeout"),
    case("infinite-drain", "worker", R, "--drain-timeout", "inf", code=2,
         needle="not a finite number"),
    case("nan-commit-interval", "worker", R, "--commit-interval", "nan", code=2,
         needle="--commit-interval"),
    case("zero-commit-interval", "worker", R, "--commit-interval", "0", code=2,
         needle="--commit-interval"),
    case("zero-max-tasks", "worker", R, "--max-tasks", "0", code=2, needle="--max-tasks"),
    case("bad-log-level", "worker", R, "--log-level", "LOUD", needle="use DEBUG, INFO"),
    case("bad-log-format", "worker", R, "--log-format", "xml", code=2, needle="--log-format"),
    case("metrics-port-range", "worker", R, "--metrics-port", "70000", code=2,
         needle="--metrics-port"),
    case("unknown-stage", "worker", R, "--stage", "nope", needle="has no stage 'nope'"),
    case("unknown-stage-supervised", "worker", R, "--processes", "2", "--stage", "nope",
         needle="has no stage 'nope'"),
    case("zero-count", "send", R, "work", "{}", "--count", "0", code=2, needle="--count"),
    case("huge-count", "send", R, "work", "{}", "--count", "99999999999999999999", code=2,
         needle="--count"),
    case("negative-delay", "send", R, "work", "{}", "--delay", "-1", code=2, needle="--delay"),
    case("infinite-delay", "send", R, "work", "{}", "--delay", "inf", code=2,
         needle="not a finite number"),
    case("payload-not-json", "send", R, "work", "{bad", needle="payload is not valid JSON"),
    case("send-unknown-stage", "send", R, "nope", "{}", needle="has no stage 'nope'"),
    case("window-zero", "status", R, "--window", "0", needle="--window"),
    case("window-nan", "status", R, "--window", "nan", code=2, needle="--window"),
    case("window-huge", "status", R, "--window", "1e12", code=2, needle="--window"),
    case("window-env-inf", "status", R, code=2, needle="STREAMTASK_STATUS_WINDOW",
         env={"STREAMTASK_STATUS_WINDOW": "inf"}),
    case("watch-and-json", "status", R, "--watch", "--json", needle="do not combine"),
    case("graph-format", "graph", R, "-f", "png", code=2, needle="--format"),
    case("graph-output-dir", "graph", R, "-o", "adir.json", needle="Is a directory"),
    case("graph-task-defs-for-app", "graph", R, "--task-defs", "x.json",
         needle="go with a workflow FILE"),
    case("ui-port-range", "ui", R, "--port", "70000", code=2, needle="--port"),
    case("ui-negative-port", "ui", R, "--port", "-1", code=2, needle="--port"),
    case("ui-designer-dir-missing", "ui", R, "--designer-dir", "no/such/dir",
         needle="is not a directory"),
    case("ui-workflow-is-dir", "ui", R, "--workflow", "adir.json", needle="is not a file"),
    case("ui-status-interval", "ui", R, "--status-interval", "0", code=2,
         needle="--status-interval"),
    case("signal-status", "signal", WORKFLOW, "r1", "t1", "--status", "DONE", code=2,
         needle="--status"),
    case("signal-output-not-object", "signal", WORKFLOW, "r1", "t1", "--output", "[1]",
         needle="must be a JSON object"),
    case("workflow-input-not-json", "workflow", "start", WORKFLOW, "--input", "{bad",
         needle="--input is not valid JSON"),
    case("workflow-start-app", "workflow", "start", R, needle="is not a workflow app"),
    case("dlq-limit-zero", "dlq", "ls", R, "--limit", "0", needle="--limit 0"),
    case("dlq-since", "dlq", "replay", R, "work", "--since", "yesterday",
         needle="--since 'yesterday'"),
    case("dlq-rate", "dlq", "replay", R, "work", "--rate", "0", needle="--rate"),
    case("dlq-rate-nan", "dlq", "replay", R, "work", "--rate", "nan", code=2,
         needle="not a finite number"),
    case("runs-outcome", "runs", "ls", "probe", "--outcome", "bogus", needle="--outcome"),
    case("runs-since", "runs", "ls", "probe", "--since", "bogus", needle="--since 'bogus'"),
    case("runs-bad-name", "runs", "ls", "bad name!", needle="app name 'bad name!'"),
    case("acls-role", "acls", "show", R, "--role", "king", code=2, needle="--role"),
    case("acls-no-role", "acls", "show", R, code=2, needle="--role"),
    case("password-file-missing", "acls", "add-user", "u", "--password-file", "none.txt",
         needle="cannot read none.txt"),
    case("password-file-binary", "acls", "add-user", "u", "--password-file", "binary.json",
         needle="not a text file"),
    case("kafka-port-zero", "kafka", "up", "--port", "0", code=2, needle="--port"),
    case("kafka-security", "kafka", "up", "--security", "foo", code=2, needle="--security"),
    case("kafka-timeout", "kafka", "up", "--timeout", "-1", code=2, needle="--timeout"),
    case("bench-scenario", "bench", "--scenario", "x", code=2, needle="--scenario"),
    case("bench-rate-inf", "bench", "--scenario", "latency", "--rate", "inf", code=2,
         needle="not a finite number"),
    case("bench-rate-scenario", "bench", "--rate", "5", needle="latency scenario only"),
    case("demo-uploads", "demo", "--uploads", "0", code=2, needle="--uploads"),
    # app references, wrong in each way
    case("ref-no-colon", "graph", "nocolon", needle="must look like module:attribute"),
    case("ref-no-attribute-part", "graph", "probe_app:", needle="module:attribute"),
    case("ref-module-missing", "graph", "no_such_module_xyz:app", needle="cannot import module"),
    case("ref-module-raises", "graph", "raises_mod:app",
         needle="importing 'raises_mod' failed: RuntimeError: boom at import"),
    case("ref-syntax-error", "pipeline", "check", "syntax_mod:app",
         needle="SyntaxError: invalid syntax"),
    case("ref-dependency-missing", "topics", "ensure", "imports_missing:app",
         needle="imports 'no_such_dependency_xyz', which is not installed"),
    case("ref-attribute-missing", "dlq", "ls", "probe_app:missing",
         needle="has no attribute 'missing'"),
    case("ref-not-an-app", "status", "probe_app:notapp", needle="not a streamtask.App"),
    case("ref-invalid-app", "send", "bad_def:app", "work", "{}",
         needle="app name 'probe bad name' is not valid"),
    case("ref-from-env", "status", needle="must look like module:attribute",
         env={"STREAMTASK_APP": "nocolon"}),
    # workflow files
    case("workflow-missing", "graph", "missing.json", needle="No such file or directory"),
    case("workflow-dir", "graph", "adir.json", needle="Is a directory"),
    case("workflow-empty", "graph", "empty.json", needle="is not valid JSON"),
    case("workflow-not-json", "ui", "notjson.json", needle="is not valid JSON"),
    case("workflow-binary", "pipeline", "check", "binary.json", needle="not UTF-8"),
    case("workflow-bad-utf8", "signal", "badutf8.json", "r", "t", needle="not UTF-8"),
    case("workflow-list", "workflow", "start", "list.json", needle="must be a JSON object"),
    case("task-defs-binary", "graph", WORKFLOW, "--task-defs", "binary.json",
         needle="not UTF-8"),
    # configuration: environment and config file
    case("env-concurrency", "worker", R, code=2, needle="STREAMTASK_CONCURRENCY",
         env={"STREAMTASK_CONCURRENCY": "zero"}),
    case("env-trail", "worker", R, code=2, needle="--trail", env={"STREAMTASK_TRAIL": "maybe"}),
    case("env-connect-timeout", "send", R, "work", "{}", needle="STREAMTASK_CONNECT_TIMEOUT",
         env={"STREAMTASK_CONNECT_TIMEOUT": "abc"}),
    case("env-connect-timeout-nan", "dlq", "ls", R, needle="connect_timeout",
         env={"STREAMTASK_CONNECT_TIMEOUT": "nan"}),
    case("env-protocol", "send", R, "work", "{}", needle="security protocol 'BOGUS'",
         env={"STREAMTASK_SECURITY_PROTOCOL": "BOGUS"}),
    case("env-password-alone", "send", R, "work", "{}", needle="no user name",
         env={"STREAMTASK_SASL_PASSWORD": "p"}),
    case("env-password-file-binary", "send", R, "work", "{}", needle="is not text",
         env={"STREAMTASK_SASL_USERNAME": "u", "STREAMTASK_SASL_PASSWORD_FILE": "binary.json"}),
    case("config-missing", "send", R, "work", "{}", needle="cannot read config file",
         env={"STREAMTASK_CONFIG": "none.toml"}),
    case("config-binary", "send", R, "work", "{}", needle="is not TOML text",
         env={"STREAMTASK_CONFIG": "binary.json"}),
    case("config-not-toml", "send", R, "work", "{}", needle="is not valid TOML",
         env={"STREAMTASK_CONFIG": "broken.toml"}),
    case("config-kafka-not-table", "send", R, "work", "{}", needle="kafka must be a table",
         env={"STREAMTASK_CONFIG": "scalar.toml"}),
    case("config-unknown-key", "send", R, "work", "{}", needle="unknown setting(s) bootstrapp",
         env={"STREAMTASK_CONFIG": "typo.toml"}),
    case("config-wrong-type", "send", R, "work", "{}",
         needle="kafka.connect_timeout must be a number",
         env={"STREAMTASK_CONFIG": "wrongtype.toml"}),
    case("bootstrap-port", "worker", R, "-b", "host:notaport", needle="are not valid"),
    case("bootstrap-port-range", "send", R, "work", "{}", "-b", "a:1,b:70000",
         needle="are not valid"),
    # an unreachable broker: one line naming the address, quickly
    *(case(f"unreachable-{'-'.join(args[:2])}", *args, "-b", DEAD, needle=DEAD, env=QUICK)
      for args in [("worker", R), ("send", R, "work", "{}"), ("status", R), ("dlq", "ls", R),
                   ("dlq", "replay", R, "work"), ("runs", "ls", "probe"),
                   ("runs", "show", "probe", "r1"), ("topics", "ensure", R),
                   ("workflow", "start", WORKFLOW), ("demo", "--uploads", "1")]),
]

FILES = {
    "probe_app.py": "from streamtask import App, KafkaSettings\n"
                    "app = App('probe', kafka=KafkaSettings('127.0.0.1:1'))\n"
                    "notapp = 42\n"
                    "@app.stage('work')\n"
                    "def work(task):\n"
                    "    pass\n",
    "raises_mod.py": "raise RuntimeError('boom at import')\n",
    "syntax_mod.py": "def f(:\n    pass\n",
    "imports_missing.py": "import no_such_dependency_xyz\n",
    "bad_def.py": "from streamtask import App, KafkaSettings\n"
                  "app = App('probe bad name', kafka=KafkaSettings('127.0.0.1:1'))\n",
    "empty.json": "",
    "notjson.json": "not json\n",
    "list.json": "[1, 2]\n",
    "broken.toml": "[kafka\n",
    "scalar.toml": "kafka = 3\n",
    "typo.toml": "[kafka]\nbootstrapp = 'x'\n",
    "wrongtype.toml": "[kafka]\nconnect_timeout = 'soon'\n",
}
BINARY = {"binary.json": b"\xff\xfe\x00\x01binary", "badutf8.json": b'{"name": "x"\xff}'}


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


def run(args: tuple[str, ...], cwd: Path, env: dict[str, str], timeout: float = 60) -> Done:
    """``streamtask ARGS`` in a forked process: its exit code and what it printed."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    with warnings.catch_warnings():  # Python >= 3.12 warns of fork in a threaded process;
        warnings.simplefilter("ignore", DeprecationWarning)  # the child only runs main()
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        _child(args, cwd, env, out_w, err_w, (out_r, err_r))
    os.close(out_w)
    os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    with selectors.DefaultSelector() as selector:
        for fd in chunks:
            selector.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                else:
                    selector.unregister(key.fd)
    hung = bool(selector.get_map())
    if hung:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    for fd in chunks:
        os.close(fd)
    text = {fd: b"".join(parts).decode(errors="replace") for fd, parts in chunks.items()}
    code = -1 if hung else os.waitstatus_to_exitcode(status)
    return Done(code, text[out_r], text[err_r] + (" HUNG" if hung else ""))


def _child(args: tuple[str, ...], cwd: Path, env: dict[str, str], out_w: int, err_w: int,
           unused: tuple[int, int]) -> None:  # pragma: no cover - runs after fork
    code = 99
    try:
        for fd in unused:
            os.close(fd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        sys.stdin = open(0)  # noqa: SIM115 - the child's own streams, closed by _exit
        sys.stdout = open(1, "w", buffering=1)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1)  # noqa: SIM115
        logging.getLogger().handlers.clear()  # a fresh process has none (pytest's are here)
        for name in [k for k in os.environ if k.startswith("STREAMTASK_")]:
            del os.environ[name]
        os.environ.update({"COLUMNS": "200", **env})
        os.chdir(cwd)
        sys.argv = ["streamtask", *args]
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of broken user modules and files, the working directory of every case."""
    root = tmp_path_factory.mktemp("bad-input")
    for name, text in FILES.items():
        (root / name).write_text(text)
    for name, data in BINARY.items():
        (root / name).write_bytes(data)
    (root / "adir.json").mkdir()
    return root


def assert_one_line(done: Done, code: int, needle: str) -> None:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert len(lines) == 1, done.stderr
    assert done.returncode == code, (done.returncode, done.stderr)
    assert needle in lines[0], lines[0]
    if code == 2:
        assert lines[0].rstrip().endswith("--help)"), lines[0]


def test_the_cases_have_unique_names() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line(bad: Case, workdir: Path) -> None:
    assert_one_line(run(bad.args, workdir, bad.env), bad.code, bad.needle)


def test_an_unknown_option_is_one_line_for_every_command(workdir: Path) -> None:
    """Generated from the CLI itself, so a command added later is covered too."""
    import typer.main

    from streamtask.cli import app

    def paths(command: Any, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
        subs = getattr(command, "commands", None)
        if not subs:
            return [prefix]
        return [p for name, sub in sorted(subs.items()) for p in paths(sub, (*prefix, name))]

    commands = paths(typer.main.get_command(app), ())
    assert len(commands) > 20
    for path in commands:
        result = run((*path, "--no-such-option"), workdir, {})
        assert_one_line(result, 2, "No such option: --no-such-option")
        assert f"streamtask {' '.join(path)} --help" in result.stderr


# With a broker: topics that do not exist (one shared broker, an app of its own per run).

BROKER_APP = """from streamtask import App, KafkaSettings
import os
app = App(os.environ['PROBE_APP'], kafka=KafkaSettings(os.environ['PROBE_BOOTSTRAP']))
@app.stage('work')
def work(task):
    pass
"""
BROKER_CASES = [
    case("worker-missing-topics", "worker", "broker_app:app",
         needle="do not exist; create them with `streamtask topics ensure"),
    case("replay-missing-dlq", "dlq", "replay", "broker_app:app", "work",
         needle="dead-letter topic"),
    case("runs-unknown-run", "runs", "show", "broker_app:app", "r1", needle="no events of run r1"),
    case("signal-unknown-task", "signal", WORKFLOW, "r1", "nope",
         needle="has no WAIT, HUMAN or asyncComplete task 'nope'"),
]


@pytest.mark.timeout(240)
def test_bad_input_against_a_broker(kafka: Any, workdir: Path) -> None:
    (workdir / "broker_app.py").write_text(BROKER_APP)
    env = {"PROBE_APP": f"probe-{uuid.uuid4().hex[:8]}", "PROBE_BOOTSTRAP": kafka.bootstrap}
    for bad in BROKER_CASES:
        args = (*bad.args, "-b", kafka.bootstrap) if bad.args[0] == "signal" else bad.args
        assert_one_line(run(args, workdir, env), bad.code, bad.needle)
