"""``streamtask pipeline check`` and ``streamtask graph`` on workflow files and app refs:
"ok" or one problem per line with exit 1; errors are one line and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "examples/order_fulfillment.json"

BAD_APP = '''
from streamtask import App
from streamtask.model.pipeline import Switch

app = App("bad")
app.stage("a", output={"type": "record", "name": "Out",
                       "fields": [{"name": "id", "type": "long"}]},
          then=Switch("kind", {"x": "b", "y": "nowhere"}))(lambda task: task.payload)
app.stage("b", payload={"type": "record", "name": "In",
                        "fields": [{"name": "id", "type": "int"}]},
          then="a")(lambda task: task.payload)
'''


def streamtask(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath),
                                                          env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "streamtask", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def assert_one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for needle in needles:
        assert needle in lines[0]


def test_check_passes_the_example_as_a_file_and_as_an_app() -> None:
    for target in (EXAMPLE, "examples.order_fulfillment:app"):
        done = streamtask("pipeline", "check", target)
        assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


def test_check_prints_every_problem_on_its_own_line(tmp_path: Path) -> None:
    (tmp_path / "bad_pipeline.py").write_text(BAD_APP)
    done = streamtask("pipeline", "check", "bad_pipeline:app", pythonpath=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert "ok" not in lines
    assert any("switch target 'nowhere' is not a stage" in line for line in lines)
    assert any("'a' -> 'b': Out cannot be read as In" in line for line in lines)
    assert "warning: cycle a -> b -> a: tasks can go round it forever" in lines
    assert len(lines) == 3


def test_graph_prints_mermaid_and_writes_svg(tmp_path: Path) -> None:
    done = streamtask("graph", EXAMPLE)
    assert done.returncode == 0 and done.stdout.startswith("flowchart LR")
    assert "order_fulfillment_workflow.send_notification_join.dlq" in done.stdout
    out = tmp_path / "pipeline.svg"
    done = streamtask("graph", "examples.order_fulfillment:app", "--format", "svg",
                      "--output", str(out))
    assert done.returncode == 0, done.stderr
    texts = [t.text for t in ET.parse(out).getroot().iter("{http://www.w3.org/2000/svg}text")]
    assert "send_notification_join (join)" in texts


def test_workflow_file_errors_are_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "w", "tasks": [')
    assert_one_line_error(streamtask("pipeline", "check", str(broken)), "is not valid JSON")
    unsupported = tmp_path / "unsupported.json"
    unsupported.write_text('{"name": "w", "tasks": [{"name": "a"}, '
                           '{"name": "loop", "taskReferenceName": "l", "type": "DYNAMIC"}, '
                           '{"name": "pause", "taskReferenceName": "p", "type": "NOOP"}]}')
    assert_one_line_error(streamtask("graph", str(unsupported)),
                          "'loop' (ref 'l') (DYNAMIC)", "'pause' (ref 'p') (NOOP)")
    assert_one_line_error(streamtask("pipeline", "check", str(tmp_path / "none.json")),
                          "cannot read workflow file")


def test_bad_app_refs_and_outputs_are_one_line_errors(tmp_path: Path) -> None:
    assert_one_line_error(streamtask("pipeline", "check", "no_colon"), "module:attribute")
    assert_one_line_error(streamtask("graph", "no_such_module_xyz:app"), "cannot import")
    assert_one_line_error(streamtask("graph", EXAMPLE, "-o", str(tmp_path / "no" / "x.svg")),
                          "cannot write")


def test_unknown_format_is_a_usage_error() -> None:
    done = streamtask("graph", EXAMPLE, "--format", "png")
    assert done.returncode == 2 and "Traceback" not in done.stderr
